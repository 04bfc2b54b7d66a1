"""EVENTPORT_DUCKDB_MEMORY_MB reaches the embedded store's DuckDB, through a real server."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from eventport.control.database import ControlDatabase
from eventport.events.duckdb_store import DuckDBEventStore
from eventport.settings import Settings
from tests.conftest import running_server


def _shown(limit: str) -> str:
    """How DuckDB shows a memory limit it was given as ``limit``."""
    with duckdb.connect(config={"memory_limit": limit}) as con:
        shown: str = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
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


def test_a_buffer_pool_under_16_mb_is_refused() -> None:
    with pytest.raises(ValueError, match="duckdb_memory_mb"):
        Settings(duckdb_memory_mb=8)
