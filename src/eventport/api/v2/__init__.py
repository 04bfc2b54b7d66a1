"""Scarf's v2 management API, as published in api-v2-public.json."""
