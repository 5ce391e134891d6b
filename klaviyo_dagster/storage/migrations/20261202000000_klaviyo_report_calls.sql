-- The report call ledger (klaviyo_dagster/klaviyo/ledger.py, storage/call_ledger.py): one row per call
-- to a Klaviyo report endpoint (flow series, flow values, campaign values), so that every run and
-- process calling an account counts against the same 1/s, 2/min and 225/day quotas
-- (contracts/klaviyo-api.md, "Rate limits"). A call is admitted in a short transaction serialized per
-- (account, group) by an advisory lock, which inserts its row (`sent_at`); its release sets
-- `released_at`. Rows older than two days are pruned as calls are admitted. Owned by this project, not
-- read by the dashboard; in its own schema, off Supabase's Data API. Safe to rerun: every statement
-- is "if not exists".

create schema if not exists klaviyo_dagster;

create table if not exists klaviyo_dagster.klaviyo_report_calls (
  id bigserial primary key,
  account_id text not null,
  rate_limit_group text not null,
  sent_at timestamptz not null,
  released_at timestamptz,
  run_id text
);

create index if not exists klaviyo_report_calls_key_sent_at_idx
  on klaviyo_dagster.klaviyo_report_calls (account_id, rate_limit_group, sent_at);
