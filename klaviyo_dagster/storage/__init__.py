"""The ingest store: CSV objects (Supabase Storage or a folder) and the dashboard tables (Postgres or SQLite)."""
