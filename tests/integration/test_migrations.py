"""The migrations produce exactly the schema the models declare, on every backend."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from eventport.control import accounts
from eventport.control.database import (
    ControlDatabase,
    alembic_config,
    control_names_only,
    control_objects_only,
)
from eventport.control.event_settings import ExclusionRules, exclusion_rules
from eventport.control.models import Base, Import
from tests.conftest import postgres_database


def test_migrations_match_models(control: ControlDatabase) -> None:
    with control.engine.connect() as connection:
        options = {
            "compare_type": True,
            "include_object": control_objects_only,
            "include_name": control_names_only,
        }
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


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database on this backend, for walking the migrations step by step."""
    if backend.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        yield from postgres_database()


def test_event_settings_migration_keeps_existing_rows(fresh_url: str) -> None:
    """0003 gives accounts and imports that existed before it their defaults, and going back
    down drops only its columns: on SQLite, rebuilding `accounts` would cascade into the
    tables that refer to it."""
    db = ControlDatabase(fresh_url)
    before_0003 = [
        "INSERT INTO accounts (id, name, kind, email, created_at, updated_at) "
        "VALUES ('u1', 'alice', 'user', 'alice@example.com', :now, :now)",
        "INSERT INTO api_tokens (id, user_id, token_hash, created_at) "
        "VALUES ('t1', 'u1', :digest, :now)",
        "INSERT INTO imports (id, owner_id, created_by, target, state, format, compression, "
        "spool_path, bytes_total, bytes_processed, lines_processed, events_total, "
        "events_imported, events_failed, warnings, abort_requested, attempts, created_at, "
        "updated_at) VALUES ('i1', 'u1', 'u1', 'multi', 'done', 'ndjson', 'identity', "
        "'/spool', 0, 0, 0, 5, 5, 0, 0, false, 1, :now, :now)",
    ]
    values = {"now": datetime.now(UTC), "digest": accounts.hash_token("ep_old")}
    try:
        command.upgrade(alembic_config(db.engine), "0002")
        with db.engine.begin() as connection:
            for statement in before_0003:
                connection.execute(text(statement), values)

        command.upgrade(alembic_config(db.engine), "head")
        with db.session() as s:
            assert exclusion_rules(s, "u1") == ExclusionRules(True, ())
            row = s.get(Import, "i1")
            assert row is not None
            assert (row.excluded, row.do_not_track, row.events_imported) == (0, 0, 5)

        command.downgrade(alembic_config(db.engine), "0002")
        inspector = inspect(db.engine)
        assert not {"exclude_bots", "excluded_user_agents"} & {
            c["name"] for c in inspector.get_columns("accounts")
        }
        assert not {"excluded", "do_not_track"} & {
            c["name"] for c in inspector.get_columns("imports")
        }
        with db.engine.connect() as connection:
            for table in ("accounts", "api_tokens", "imports"):
                assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1

        command.upgrade(alembic_config(db.engine), "head")
        with db.session() as s:
            user = accounts.authenticate(s, "ep_old")
            assert user is not None
            assert (user.exclude_bots, user.excluded_user_agents) == (True, [])
    finally:
        db.dispose()


def test_processes_starting_together_migrate_one_at_a_time(fresh_url: str) -> None:
    """Servers and workers started at once on a new PostgreSQL database each migrate it at
    start: they take turns (before, 1-2 of 3 died on alembic_version's unique key)."""
    if not fresh_url.startswith("postgresql"):
        pytest.skip("one process migrates an embedded (SQLite) store")
    script = (
        "import sys; from eventport.control.database import ControlDatabase; "
        "ControlDatabase(sys.argv[1]).migrate()"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, fresh_url], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors
    db = ControlDatabase(fresh_url)
    try:
        with db.engine.connect() as connection:
            (version,) = connection.execute(text("SELECT version_num FROM alembic_version")).one()
        head = ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()
        assert version == head
    finally:
        db.dispose()
