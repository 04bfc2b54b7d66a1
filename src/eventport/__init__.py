"""eventport: a self-hosted, Scarf-compatible server for bulk event import and usage analytics."""

__version__ = "0.1.0"
