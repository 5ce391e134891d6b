-- The same tables as supabase/migrations/*.sql, in SQLite's dialect, for the local store.
pragma foreign_keys = on;

create table if not exists accounts (
  id text primary key,
  owner_user_id text not null,
  name text not null,
  company text,
  country text,
  store_url text,
  deleted_at text,
  created_at text default current_timestamp
);

create table if not exists uploads (
  id text primary key,
  account_id text references accounts(id) on delete cascade,
  status text not null check (status in ('preauth', 'bound', 'processing', 'processed', 'error', 'expired')),
  created_at text default current_timestamp,
  updated_at text default current_timestamp,
  expires_at text,
  error text
);

create table if not exists snapshots (
  id text primary key,
  account_id text not null references accounts(id) on delete cascade,
  upload_id text references uploads(id) on delete set null,
  label text not null,
  last_email_date text,
  status text not null default 'ready' check (status in ('ready', 'error')),
  created_at text default current_timestamp,
  metadata text default '{}'
);

create table if not exists snapshot_totals (
  snapshot_id text references snapshots(id) on delete cascade,
  metric_key text,
  value real,
  primary key (snapshot_id, metric_key)
);

create table if not exists snapshot_series (
  id integer primary key autoincrement,
  snapshot_id text references snapshots(id) on delete cascade,
  metric_key text,
  date text,
  value real,
  unique (snapshot_id, metric_key, date)
);

create table if not exists account_integrations (
  id text primary key,
  account_id text not null references accounts(id) on delete cascade,
  provider text not null check (provider in ('klaviyo')),
  encrypted_api_key text not null,
  enabled integer not null default 1,
  last_run_at text,
  last_error text,
  created_at text default current_timestamp,
  updated_at text default current_timestamp,
  unique (account_id, provider)
);

create index if not exists snapshots_upload_id_idx on snapshots (upload_id);
create index if not exists snapshots_account_id_idx on snapshots (account_id);

-- supabase/migrations/20261130000000_account_timezones.sql (Postgres keeps it in schema klaviyo_dagster).
create table if not exists klaviyo_account_timezones (
  account_id text primary key,
  timezone text not null,
  fallback_reason text,
  source text not null check (source in ('discovery', 'run')),
  updated_at text not null default current_timestamp
);

-- supabase/migrations/20261202000000_klaviyo_report_calls.sql (Postgres keeps it in schema
-- klaviyo_dagster): the report call ledger, times as UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ'.
create table if not exists klaviyo_report_calls (
  id integer primary key autoincrement,
  account_id text not null,
  rate_limit_group text not null,
  sent_at text not null,
  released_at text,
  run_id text
);

create index if not exists klaviyo_report_calls_key_sent_at_idx
  on klaviyo_report_calls (account_id, rate_limit_group, sent_at);

-- supabase/migrations/20261205000000_snapshot_series_by_date.sql: a snapshot's series rows by date.
create index if not exists snapshot_series_snapshot_date_idx on snapshot_series (snapshot_id, date);
