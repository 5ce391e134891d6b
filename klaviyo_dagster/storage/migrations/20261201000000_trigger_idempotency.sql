-- The trigger's idempotency keys (README, "The old trigger endpoint"): a live call claims its
-- (account, key) here with `insert ... on conflict do nothing` before launching, so two trigger
-- processes given the same key at once launch one run. Holds the request's parameters (a reused key
-- with other parameters is refused, naming the difference) and, once launched, the run id. Owned by
-- this project, not read by the dashboard; in its own schema, off Supabase's Data API. Safe to
-- rerun: every statement is "if not exists".

create schema if not exists klaviyo_dagster;

create table if not exists klaviyo_dagster.trigger_idempotency (
  account_id text not null,
  idempotency_key text not null,
  fingerprint text not null,
  parameters text not null,
  run_id text,
  claim_token text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (account_id, idempotency_key)
);
