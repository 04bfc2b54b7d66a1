"""Data export: events as CSV and aggregates as NDJSON (issue 5)."""
