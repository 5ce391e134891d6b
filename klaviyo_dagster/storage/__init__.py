"""The ingest store: CSV objects (Supabase Storage or a folder) and the dashboard tables (Postgres or SQLite).

It keeps what the other packages produce and computes none of it: no module here imports processing,
producers, publishing or the trigger, nor the Klaviyo client (``klaviyo_dagster_tests/test_layers.py``).
"""
