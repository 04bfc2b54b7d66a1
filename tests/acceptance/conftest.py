"""Fixtures the acceptance tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def pg_env(tmp_path: Path, backend: str) -> dict[str, str]:
    """The environment of server and `eventport worker` processes sharing PostgreSQL (the test
    is skipped on the embedded backend, whose DuckDB file one process holds)."""
    if not backend.startswith("postgresql"):
        pytest.skip("separate worker processes share the store through PostgreSQL")
    return {
        **os.environ,
        "EVENTPORT_DATA_DIR": str(tmp_path / "data"),
        "EVENTPORT_DATABASE_URL": backend,
        "EVENTPORT_LEASE_SECONDS": "2",
        "EVENTPORT_LOG_LEVEL": "warning",
    }
