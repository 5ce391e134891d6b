-- A snapshot's series rows by date (contracts/supabase.md, "Snapshot processing", History): each
-- publish reads, for every earlier snapshot of the account, only the rows of its own window (and of
-- the days between windows), a date range of that snapshot; without this index it would read every
-- row each snapshot carries. Harmless for the dashboard; safe to rerun ("if not exists").

create index if not exists snapshot_series_snapshot_date_idx on public.snapshot_series (snapshot_id, date);
