"""Scarf's v1 management API (seed 002): camelCase fields under /api/v1."""
