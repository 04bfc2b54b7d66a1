"""The control store: accounts, organizations, packages, pixels (and later, imports).

One SQLAlchemy code path serves SQLite (embedded default) and PostgreSQL; the few dialect
differences live in :mod:`eventport.control.database`.
"""
