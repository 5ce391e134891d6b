-- The dashboard's tables that the ingest pipeline writes (contracts/supabase.md, "Tables").
-- Safe on a fresh database and on the dashboard's existing one: every statement is "if not exists".

create table if not exists public.accounts (
  id uuid primary key default gen_random_uuid(),
  owner_user_id uuid not null,
  name text not null,
  company text,
  country text,
  store_url text,
  deleted_at timestamptz,
  created_at timestamptz default now()
);

create table if not exists public.uploads (
  id uuid primary key,
  account_id uuid references public.accounts(id) on delete cascade,
  status text not null check (status in ('preauth', 'bound', 'processing', 'processed', 'error', 'expired')),
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  expires_at timestamptz,
  error text
);

create table if not exists public.snapshots (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references public.accounts(id) on delete cascade,
  upload_id uuid references public.uploads(id) on delete set null,
  label text not null,
  last_email_date date,
  status text not null default 'ready' check (status in ('ready', 'error')),
  created_at timestamptz default now(),
  metadata jsonb default '{}'
);

create table if not exists public.snapshot_totals (
  snapshot_id uuid references public.snapshots(id) on delete cascade,
  metric_key text,
  value numeric,
  primary key (snapshot_id, metric_key)
);

create table if not exists public.snapshot_series (
  id bigserial primary key,
  snapshot_id uuid references public.snapshots(id) on delete cascade,
  metric_key text,
  date date,
  value numeric,
  unique (snapshot_id, metric_key, date)
);

create table if not exists public.account_integrations (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references public.accounts(id) on delete cascade,
  provider text not null check (provider in ('klaviyo')),
  encrypted_api_key text not null,
  enabled boolean not null default true,
  last_run_at timestamptz,
  last_error text,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  unique (account_id, provider)
);

-- Finding "the account's snapshot with the latest earlier partition date" and "the snapshot of an
-- upload" stays fast as snapshots accumulate.
create index if not exists snapshots_upload_id_idx on public.snapshots (upload_id);
create index if not exists snapshots_account_id_idx on public.snapshots (account_id);
