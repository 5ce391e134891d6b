-- Each Klaviyo account's timezone, for scheduling: a partition date is requested only once its day
-- has ended in the account's zone (contracts/csv.md, "Partition window"). Owned by this project, not
-- read by the dashboard; written when an account is discovered (one Klaviyo call) and refreshed by
-- every live run, read by the schedule and the catch-up sensor in one query per evaluation.
-- In its own schema: Supabase's Data API exposes `public` only, so the table stays off it without
-- any policy. Safe to rerun: every statement is "if not exists".

create schema if not exists klaviyo_dagster;

create table if not exists klaviyo_dagster.account_timezones (
  account_id uuid primary key,
  timezone text not null,
  fallback_reason text,
  source text not null check (source in ('discovery', 'run')),
  updated_at timestamptz not null default now()
);
