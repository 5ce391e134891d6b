"""Producers: from a Klaviyo client, a partition window and options to the dashboard's CSV files.

Plain Python, no Dagster. One module per file (``flows``, ``campaigns``, ``subscribers``), plus the
shared pieces: ``options`` (what a run may ask for), ``window`` (which days a partition reads),
``account`` (timezone and conversion metric lookups) and ``csvfile`` (byte-exact CSV writing).
"""
