"""The event store: where imported events live (DuckDB embedded, or PostgreSQL)."""
