"""Shared fixtures: both control-store backends, and a real HTTP server on each.

Every storage and API test takes the ``backend`` parameter, so it runs once on SQLite (a real
file in a temporary directory) and once on a real PostgreSQL database created for this test
session and dropped after it. Where no PostgreSQL answers, the PostgreSQL half is skipped with
the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from eventport.api.app import create_app
from eventport.api.protocol import http_protocol
from eventport.control import accounts
from eventport.control.database import ControlDatabase
from eventport.control.models import Base
from eventport.events.store import is_postgres_url
from eventport.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "EVENTPORT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_database() -> Iterator[str]:
    """A new PostgreSQL database's URL, dropped after (skips the test when PostgreSQL is not
    reachable)."""
    name = f"eventport_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc.__class__.__name__}: {exc}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The database URL of one control-store backend, migrated to the newest schema."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "control.sqlite3"
        yield f"sqlite:///{path}"
    else:
        yield from postgres_database()


@pytest.fixture(scope="session")
def store_database(backend: str) -> Iterator[str | None]:
    """A PostgreSQL database for tests of the event store alone (None on the embedded
    backend). Not the session's: the shared live server keeps its event store there, and those
    tests drop event tables and partitions, which that store would then meet as missing."""
    if is_postgres_url(backend):
        yield from postgres_database()
    else:
        yield None


@pytest.fixture(scope="session")
def control(backend: str) -> Iterator[ControlDatabase]:
    db = ControlDatabase(backend)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
def own_control(backend: str, tmp_path: Path) -> Iterator[ControlDatabase]:
    """A migrated control store no other test's server uses (its workers would claim imports
    the test makes): a SQLite file, or a PostgreSQL database of its own."""
    urls = (
        iter([f"sqlite:///{tmp_path / 'control.sqlite3'}"])
        if backend.startswith("sqlite")
        else postgres_database()
    )
    for url in urls:
        db = ControlDatabase(url)
        db.migrate()
        try:
            yield db
        finally:
            db.dispose()


def truncate_all(db: ControlDatabase) -> None:
    with db.session() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(table.delete())


@pytest.fixture
def store(control: ControlDatabase) -> ControlDatabase:
    """The control store, emptied before the test."""
    truncate_all(control)
    return control


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    base_url: str
    control: ControlDatabase
    settings: Settings
    app: FastAPI
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def user(self, name: str, email: str | None = None) -> httpx.Client:
        """Create a user straight in the store and return a client that acts as them."""
        with self.control.session() as session:
            _, token = accounts.create_user(session, name, email or f"{name}@example.com")
        return self.client(token)


@contextmanager
def running_server(settings: Settings, control: ControlDatabase) -> Iterator[Server]:
    """A real uvicorn server on a free port, in a thread, serving the app with ``settings``."""
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        http=http_protocol(),  # as eventport serve runs it
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", control, settings=settings, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(
    backend: str, control: ControlDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The shared server on this backend, with no import workers (imports stay waiting)."""
    data_dir: Path = tmp_path_factory.mktemp("data")
    settings = Settings(database_url=backend, data_dir=data_dir, workers=0)
    with running_server(settings, control) as server:
        yield server


@pytest.fixture
def server(live_server: Server) -> Iterator[Server]:
    """The live server with an empty store and spool; clients made in the test are closed after."""
    shutil.rmtree(live_server.settings.spool_dir, ignore_errors=True)
    yield from _emptied(live_server)


def _emptied(server: Server) -> Iterator[Server]:
    truncate_all(server.control)
    yield server
    for client in server.clients:
        client.close()
    server.clients.clear()


@pytest.fixture(scope="module")
def worker_server(
    backend: str, control: ControlDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of the test module's own on this backend, with one in-process import worker
    and default settings (a module may define its own, with other settings)."""
    settings = Settings(
        database_url=backend, data_dir=tmp_path_factory.mktemp("worker-data"), workers=1
    )
    with running_server(settings, control) as server:
        yield server


@pytest.fixture
def api(worker_server: Server) -> Iterator[Server]:
    """The worker server with an empty store; clients made in the test are closed after."""
    yield from _emptied(worker_server)
