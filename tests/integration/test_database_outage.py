"""PostgreSQL out of reach for a moment (a restart, a failover): every request answers 503
``database-unavailable`` with a Retry-After, and the server works again once it is back. A
scale-out hunt saw 500 ``internal-error`` on every route during a restart, and connections
dropped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from eventport.control import accounts
from eventport.control.database import ControlDatabase
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
