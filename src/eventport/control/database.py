"""Engine set-up per backend, sessions, and running migrations on start."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import psycopg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class Backend:
    """What differs between the databases we run on, declared once."""

    name: str
    engine_options: dict[str, Any]


def backend_for(url: str) -> Backend:
    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError(
            "an in-memory SQLite database is one connection's own, and the server has many: "
            "give a file (sqlite:///path) or leave EVENTPORT_DATABASE_URL unset"
        )
    if dialect == "sqlite":
        return Backend("sqlite", {"connect_args": {"check_same_thread": False, "timeout": 30}})
    if dialect == "postgresql":
        return Backend("postgresql", {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20})
    raise ValueError(f"unsupported database {dialect!r}: use sqlite or postgresql")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class ControlDatabase:
    """The control store's connection: one per process, shared by API routes and workers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.backend = backend_for(url)
        if self.backend.name == "sqlite":
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url, **self.backend.engine_options)
        if self.backend.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest migration. Safe to call on every start."""
        from alembic import command

        command.upgrade(alembic_config(self.engine), "head")

    def schema_is_older(self) -> bool:
        """Whether this database was migrated by an older eventport (some of this version's
        migrations are still to run): False for a new one, and for a newer version's."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with self.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        heads = set(ScriptDirectory.from_config(_migrations_config()).get_heads())
        return bool(current) and current != heads and current <= known_revisions()

    def schema_is_newer(self) -> bool:
        """Whether a newer eventport has migrated this database past what this version knows:
        then this process must not go on writing as the older schema wanted (on PostgreSQL, an
        upgrade's process started beside this one migrates the database under it)."""
        with self.engine.connect() as conn:
            found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        return any(version not in known_revisions() for version in found)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def is_event_store_table(name: str | None) -> bool:
    """Tables the PostgreSQL event store keeps beside ours: not the migrations' business."""
    return name is not None and (
        name in ("events", "event_ids", "event_import_checkpoints") or name.startswith("events_")
    )


def control_objects_only(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: compare and generate only the control store's own tables."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return not is_event_store_table(table)


def control_names_only(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic filter by name, before reflecting: the event store's tables are not even read
    (one per month; and SQLAlchemy cannot reflect the default partition's ``NOT VALID`` check)."""
    return type_ != "table" or not is_event_store_table(name)


@cache
def known_revisions() -> frozenset[str]:
    """Every migration revision this version of eventport has."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_migrations_config()).walk_revisions()
    return frozenset(script.revision for script in scripts)


def alembic_config(engine: Engine) -> Any:
    config = _migrations_config()
    config.attributes["engine"] = engine
    return config


def _migrations_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


# SQLSTATEs of a database out of reach for a while: connection exceptions (class 08), an
# administrator's or a crash's shutdown, a server starting up, too many connections.
_UNREACHABLE_STATES: Final = ("08", "57P01", "57P02", "57P03", "53300")


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached now (a restart, a failover, SQLite
    locked by another process past the wait), rather than that a statement was wrong."""
    if isinstance(exc, SQLAlchemyOperationalError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc.orig, sqlite3.OperationalError):
            return str(exc.orig).startswith(("database is locked", "database table is locked"))
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(_UNREACHABLE_STATES)
    return False
