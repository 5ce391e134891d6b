-- Klaviyo answers shared by one account's runs of one UTC day (a backfill, a catch-up): GET answers
-- that are "as of the run" (account, metrics, flows, campaigns, list and segment names), daily
-- flow-series reports over a batch of windows, and the record of the day's shared subscribers.csv
-- (klaviyo_dagster/producers/shared.py, klaviyo_dagster/storage/fetch_cache.py). Owned by this
-- project, never read by the dashboard; only the current UTC day is read, and earlier days are
-- deleted by the account's first write of a new day. Safe to rerun: every statement is "if not exists".

create schema if not exists klaviyo_dagster;

create table if not exists klaviyo_dagster.klaviyo_fetch_cache (
  account_id text not null,
  fetched_on date not null,
  cache_key text not null,
  payload text not null,
  created_at timestamptz not null default now(),
  primary key (account_id, fetched_on, cache_key)
);
