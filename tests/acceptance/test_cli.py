"""Drive the installed ``eventport`` command in subprocesses, as a user would."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import free_port

EVENTPORT = str(Path(sys.executable).with_name("eventport"))


def run(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [EVENTPORT, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def env(tmp_path: Path, backend: str) -> dict[str, str]:
    """Environment for the CLI: a fresh data dir; the backend's database URL for PostgreSQL."""
    values = {**os.environ, "EVENTPORT_DATA_DIR": str(tmp_path / "data")}
    values.pop("EVENTPORT_DATABASE_URL", None)
    if backend.startswith("postgresql"):
        values["EVENTPORT_DATABASE_URL"] = backend
    return values


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``python -m eventport serve`` in its own process, stopped with SIGTERM afterwards."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "eventport",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env={**env, "EVENTPORT_WORKERS": "0"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn exits by re-raising the signal once its graceful shutdown is complete.
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
        assert "shutdown complete" in log.read_text()


def _unique(name: str) -> str:
    return f"{name}{os.getpid() % 1000}{time.monotonic_ns() % 100000}"


def test_users_tokens_and_serve(env: dict[str, str], serve: str) -> None:
    name = _unique("ann")
    created = run("users", "create", name, "--email", f"{name}@example.com", env=env)
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("ep_")

    me = httpx.get(f"{serve}/v2/users/{name}", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["name"] == name

    issued = run("tokens", "create", name, "--label", "ci", env=env).stdout.strip().splitlines()
    second, token_id = issued[-1], issued[0].split()[-1]
    auth = {"Authorization": f"Bearer {second}"}
    assert httpx.get(f"{serve}/v2/users/{name}", headers=auth).status_code == 200

    listed = run("tokens", "list", name, env=env).stdout
    assert token_id in listed
    assert "active" in listed

    run("tokens", "revoke", token_id, env=env)
    refused = httpx.get(f"{serve}/v2/users/{name}", headers=auth)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["message"]
    assert "revoked" in run("tokens", "list", name, env=env).stdout
    # The first token still works: revoking one token leaves the others alone.
    assert httpx.get(
        f"{serve}/v2/users/{name}", headers={"Authorization": f"Bearer {token}"}
    ).is_success


def test_docs_and_openapi(serve: str) -> None:
    spec = httpx.get(f"{serve}/openapi.json").json()
    assert "/v2/packages/{owner}" in spec["paths"]
    assert "/api/v1/packages" in spec["paths"]
    assert "swagger" in httpx.get(f"{serve}/docs").text.lower()
    # Errors are documented as the API sends them: {message, code}, bad input a 400 (FastAPI's
    # own 422 shape is never sent, so it is not documented either).
    assert "HTTPValidationError" not in json.dumps(spec)
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["message", "code"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith(("/api/", "/v2/")):
                for status in ("400", "401", "403", "404", "413", "422"):
                    content = operation["responses"][status]["content"]
                    assert content["application/json"]["schema"] == error, (method, path, status)
    upload = spec["paths"]["/v2/{owner}/import"]["post"]
    assert set(upload["requestBody"]["content"]) == {
        "application/x-ndjson",
        "application/ndjson",
        "application/json",
        "text/csv",
    }
    assert {"415", "507"} <= set(upload["responses"])
    # Every export route declares its two dates required, as Scarf's schema does, and once.
    exports = [
        operation
        for operations in spec["paths"].values()
        for operation in operations.values()
        if any(tag.endswith("data export") for tag in operation["tags"])
    ]
    assert len(exports) == 8
    for operation in exports:
        dates = [p for p in operation["parameters"] if p["name"].lower().endswith("date")]
        assert [p["name"] for p in dates] in (["start_date", "end_date"], ["startDate", "endDate"])
        for parameter, example in zip(dates, ("2026-01-01", "2026-01-08"), strict=True):
            assert parameter["required"] is True
            assert parameter["schema"] == {"type": "string", "format": "date", "example": example}


def test_tokens_are_stored_hashed(env: dict[str, str], backend: str) -> None:
    name = _unique("bo")
    token = run("users", "create", name, "--email", f"{name}@example.com", env=env).stdout.split()[
        -1
    ]
    url = (
        backend
        if backend.startswith("postgresql")
        else (f"sqlite:///{Path(env['EVENTPORT_DATA_DIR']) / 'control.sqlite3'}")
    )
    engine = create_engine(url)
    with engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT t.* FROM api_tokens t JOIN accounts a ON a.id = t.user_id WHERE a.name = :n"
            ),
            {"n": name},
        ).one()
    engine.dispose()
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert not any(token[3:] in str(value) for value in stored)
    if backend.startswith("sqlite"):
        files = Path(env["EVENTPORT_DATA_DIR"]).glob("control.sqlite3*")
        assert token[3:].encode() not in b"".join(p.read_bytes() for p in files)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("users", "create", "Bad Name", "--email", "x@example.com"), "invalid name"),
        (("users", "create", "okname", "--email", "not-an-email"), "invalid email"),
        (("tokens", "create", "nobody-here"), "no user named"),
        (("tokens", "revoke", "00000000-0000-0000-0000-000000000000"), "no token"),
        (("serve", "--port", "99999999"), "port"),
    ],
)
def test_cli_errors_are_clear(env: dict[str, str], args: tuple[str, ...], message: str) -> None:
    result = run(*args, env=env, check=False)
    assert result.returncode != 0
    assert message in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_compact_rewrites_the_embedded_store(env: dict[str, str], backend: str) -> None:
    if backend.startswith("postgresql"):
        result = run("compact", env=env, check=False)
        assert result.returncode != 0
        assert "compact is for the embedded DuckDB store" in result.stderr
        return
    from eventport.events.duckdb_store import DuckDBEventStore
    from tests.integration.test_event_store import checkpoint, make_batch

    store = DuckDBEventStore(Path(env["EVENTPORT_DATA_DIR"]) / "events.duckdb")
    store.setup()
    store.write_batch("owner-a", make_batch(["b", "a"]), checkpoint(line=3))
    held = run("compact", env=env, check=False)  # the file is this process's while open
    assert held.returncode != 0
    assert "stop `eventport serve` first" in held.stderr
    store.close()

    result = run("compact", env=env)
    assert result.stdout.startswith("2 events rewritten in time order in ")
    again = DuckDBEventStore(Path(env["EVENTPORT_DATA_DIR"]) / "events.duckdb")
    try:
        assert {row["id"] for row in again.rows("owner-a")} == {"a", "b"}
    finally:
        again.close()
