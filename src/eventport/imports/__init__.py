"""Bulk event import: reading uploads (formats) and what each line means (records)."""
