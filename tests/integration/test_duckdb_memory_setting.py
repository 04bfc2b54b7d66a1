"""EVENTPORT_DUCKDB_MEMORY_MB reaches the embedded store's DuckDB, through a real server."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from eventport.control.accounts import account_by_name
from eventport.control.database import ControlDatabase
from eventport.events.duckdb_store import DuckDBEventStore
from eventport.settings import Settings
from tests.conftest import running_server
from tests.importing import setup_package
from tests.integration.test_event_store import T0, checkpoint, make_batch


def _shown(limit: str, setting: str = "memory_limit") -> str:
    """How DuckDB shows a memory size (a memory limit) it was given as ``limit``."""
    with duckdb.connect(config={setting: limit}) as con:
        shown: str = con.execute("SELECT current_setting(?)", [setting]).fetchone()[0]
    return shown


@pytest.mark.parametrize(("environment", "expected"), [(None, "128MB"), ("48", "48MB")])
def test_the_server_opens_duckdb_with_the_configured_buffer_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: str | None, expected: str
) -> None:
    monkeypatch.delenv("EVENTPORT_DATABASE_URL", raising=False)
    if environment is None:
        monkeypatch.delenv("EVENTPORT_DUCKDB_MEMORY_MB", raising=False)
    else:
        monkeypatch.setenv("EVENTPORT_DUCKDB_MEMORY_MB", environment)
    settings = Settings(data_dir=tmp_path, workers=0)
    control = ControlDatabase(settings.resolved_database_url())
    control.migrate()
    try:
        with running_server(settings, control) as server:
            events = server.app.state.events
            assert isinstance(events, DuckDBEventStore)
            cursor = events._connection().cursor()
            try:
                limit = cursor.execute("SELECT current_setting('memory_limit')").fetchone()
            finally:
                cursor.close()
    finally:
        control.dispose()
    assert limit is not None
    assert limit[0] == _shown(expected)
    assert _shown("48MB") != _shown("128MB")  # the check tells them apart


def test_a_buffer_pool_under_32_mb_is_refused() -> None:
    """At 16 MB an import's commit ran out of memory after a few batches, even with the write
    limit widened to the full one (found running a real server with 300,000 events)."""
    for too_small in (8, 16, 31):
        with pytest.raises(ValueError, match="duckdb_memory_mb"):
            Settings(duckdb_memory_mb=too_small)
    assert Settings(duckdb_memory_mb=32).duckdb_memory_mb == 32


def test_a_request_beyond_the_memory_limit_is_a_503_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export that needs more than DuckDB may use (here: one window of 40,000 events of
    4 kB each within 32 MB) is refused with a JSON 503 that says what to do, not a 500."""
    monkeypatch.delenv("EVENTPORT_DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path, workers=0, duckdb_memory_mb=32)
    control = ControlDatabase(settings.resolved_database_url())
    control.migrate()
    try:
        with running_server(settings, control) as server:
            alice = server.user("alice")
            package_id = setup_package(alice, "alice")
            with control.session() as s:
                account = account_by_name(s, "alice")
                assert account is not None
                owner_id = account.id
            events = server.app.state.events
            assert isinstance(events, DuckDBEventStore)
            query = {"start_date": "2023-11-14", "end_date": "2023-11-15"}
            for first in range(0, 40_000, 2_000):  # batches small enough for 32 MB
                batch = make_batch(
                    [f"e{i}" for i in range(first, first + 2_000)],
                    owner=owner_id,
                    first_line=first + 1,
                    time=T0 + first,
                    package_id=package_id,
                    variables="x=" + "a" * 4_000,
                )
                events.write_batch(owner_id, batch, checkpoint(line=first + 2_001))
                if first == 0:
                    answer = alice.get(f"/v2/packages/alice/{package_id}/events", params=query)
                    assert answer.status_code == 200, answer.text[:200]
                    assert answer.text.count("\n") == 2_001  # the header and the events
            answer = alice.get(f"/v2/packages/alice/{package_id}/events", params=query)

            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["code"] == "out-of-memory"
            assert "EVENTPORT_DUCKDB_MEMORY_MB" in body["message"]
            assert "32MB" in body["message"]
            alice.close()
    finally:
        control.dispose()
