"""PostgreSQL out of reach for a moment (a restart, a failover): every request answers 503
``database-unavailable`` with a Retry-After, and the server works again once it is back. A
scale-out hunt saw 500 ``internal-error`` on every route during a restart, and connections
dropped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from eventport.control import accounts
from eventport.control.database import ControlDatabase
from eventport.imports import worker
from eventport.settings import Settings
from tests.conftest import PG_ADMIN_URL, postgres_database, running_server


@pytest.fixture
def database_url() -> Iterator[str]:
    yield from postgres_database()


def _accepting(name: str, accepting: bool) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {accepting}'))
            if not accepting:  # and those open now go, as in a restart
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
    finally:
        admin.dispose()


def test_a_database_out_of_reach_answers_503_then_recovers(
    database_url: str, tmp_path: Path
) -> None:
    control = ControlDatabase(database_url)
    control.migrate()
    with control.session() as s:
        _, token = accounts.create_user(s, "alice", "alice@example.com")
    name = database_url.rsplit("/", 1)[1]
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data", workers=0)
    try:
        with running_server(settings, control) as server:
            client = httpx.Client(
                base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}
            )
            with client:
                assert client.get("/v2/packages/alice").status_code == 200
                _accepting(name, False)
                try:
                    for method, url, body in (
                        ("GET", "/v2/packages/alice", None),
                        ("POST", "/v2/packages/alice", {"name": "x", "type": "npm"}),
                        ("GET", "/v2/imports/alice", None),
                    ):
                        response = client.request(method, url, json=body)
                        assert response.status_code == 503, response.text
                        assert response.json()["code"] == "database-unavailable"
                        assert response.headers["Retry-After"] == "5"
                finally:
                    _accepting(name, True)
                assert client.get("/v2/packages/alice").status_code == 200
    finally:
        control.dispose()


def test_only_a_database_out_of_reach_is_a_503(database_url: str, tmp_path: Path) -> None:
    """A statement that is wrong (a missing table, a deadlock) raises the same classes as a
    database out of reach: those stay 500s, with their traceback in the log, not a 503 that
    says to try again."""
    import sqlite3

    import psycopg
    from sqlalchemy.exc import OperationalError

    from eventport.control.database import database_unreachable

    def raised(url: str, statement: str) -> BaseException:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        except Exception as exc:
            return exc
        finally:
            engine.dispose()
        raise AssertionError(f"{statement} raised nothing")

    sqlite_url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    missing = raised(sqlite_url, "SELECT nothing FROM nowhere")
    assert isinstance(missing, OperationalError)
    assert not database_unreachable(missing)
    locked = OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked"))
    assert database_unreachable(locked)
    deadlock = raised(database_url, "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END $$")
    assert isinstance(deadlock, OperationalError)
    assert isinstance(deadlock.orig, psycopg.errors.DeadlockDetected)
    assert not database_unreachable(deadlock)
    refused = raised("postgresql+psycopg://postgres@127.0.0.1:1/none", "SELECT 1")
    assert database_unreachable(refused)
    shutdown = raised(database_url, "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '57P01'; END $$")
    assert database_unreachable(shutdown)


def test_idle_workers_say_once_that_the_database_is_out_of_reach(
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each look for new imports logged a full traceback, twice a second a worker: ~27,000
    lines a minute with two (an operations hunt). Now one line a worker, no traceback, and one
    when the database is back."""
    monkeypatch.setattr(worker, "SCHEMA_CHECK_SECONDS", 0.5)  # a look at each turn
    control = ControlDatabase(database_url)
    control.migrate()
    name = database_url.rsplit("/", 1)[1]
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data", workers=2)
    try:
        with running_server(settings, control), caplog.at_level("INFO", "eventport"):
            time.sleep(0.5)
            _accepting(name, False)
            try:
                time.sleep(4)  # ~16 looks at the old pace
            finally:
                _accepting(name, True)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and caplog.text.count("database is back") < 2:
                time.sleep(0.2)
        workers = [r for r in caplog.records if r.name == "eventport.imports.worker"]
        out = [r for r in workers if "out of reach" in r.getMessage()]
        assert len(out) == 2, [r.getMessage() for r in workers]
        # nor every 10 s that the schema's version could not be read (a verification hunt)
        assert not [r for r in workers if "schema" in r.getMessage()]
        assert all(r.exc_info is None for r in workers), [r.getMessage() for r in workers]
        assert len([r for r in workers if "database is back" in r.getMessage()]) == 2
    finally:
        control.dispose()
