"""The migrations produce exactly the schema the models declare, on every backend."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from eventport.control.database import ControlDatabase, control_objects_only
from eventport.control.models import Base


def test_migrations_match_models(control: ControlDatabase) -> None:
    with control.engine.connect() as connection:
        options = {"compare_type": True, "include_object": control_objects_only}
        context = MigrationContext.configure(connection, opts=options)
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_every_model_table_exists(control: ControlDatabase) -> None:
    tables = set(inspect(control.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrate_twice_is_harmless(control: ControlDatabase) -> None:
    control.migrate()
    with control.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() is not None


def test_sqlite_pragmas(control: ControlDatabase) -> None:
    if control.backend.name != "sqlite":
        pytest.skip("pragmas apply to SQLite only")
    with control.engine.connect() as connection:
        driver = connection.connection.dbapi_connection
        assert driver is not None
        cursor = driver.cursor()
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
