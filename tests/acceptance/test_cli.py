"""Drive the installed ``eventport`` command in subprocesses, as a user would."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
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
        said = log.read_text()
        assert "shutdown complete" in said
        # uvicorn's lines, its requests' too, in eventport's format: time, level, logger.
        stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO "
        for logger, what in (
            ("uvicorn.error", "Application startup complete."),
            ("uvicorn.access", '"GET /healthz HTTP/1.1" 200 OK'),
            ("uvicorn.error", "Application shutdown complete."),
        ):
            assert re.search(f"{stamp}{re.escape(logger)}: .*{re.escape(what)}$", said, re.M), said


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
    if args[0] == "tokens":  # about the token, in a data dir that is there
        first = _unique("first")
        run("users", "create", first, "--email", f"{first}@example.com", env=env)
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


def test_compact_of_a_store_it_does_not_know_says_only_that(
    env: dict[str, str], backend: str
) -> None:
    """No server runs: the refusal does not tell the operator to stop one (an upgrade hunt
    found it saying so after every refusal)."""
    if backend.startswith("postgresql"):
        pytest.skip("compact is for the embedded store")
    from eventport.events.duckdb_layout import ROWS_TABLE
    from eventport.events.duckdb_store import DuckDBEventStore
    from tests.integration.test_duckdb_layout import made_older
    from tests.integration.test_event_store import checkpoint, make_batch

    path = Path(env["EVENTPORT_DATA_DIR"]) / "events.duckdb"
    store = DuckDBEventStore(path)
    store.setup()
    store.write_batch("owner-a", make_batch(["a"]), checkpoint(line=2))
    store.close()
    made_older(path, f"ALTER TABLE {ROWS_TABLE} ADD COLUMN later_column VARCHAR")
    result = run("compact", env=env, check=False)
    assert result.returncode == 1
    assert "does not know" in result.stderr
    assert "stop `eventport serve`" not in result.stderr
    assert "Traceback" not in result.stderr


# --- mistakes in the environment, and stopping (found by running the CLI as an operator) ----


@pytest.mark.parametrize(
    ("command", "settings", "message"),
    [
        (
            ("users", "create", "ann", "--email", "a@example.com"),
            {"DATA_DIR": "{file}"},
            "file exists",
        ),
        (("tokens", "list", "ann"), {"DATA_DIR": "{file}/sub"}, "not a directory"),
        (("serve", "--port", "0"), {"DATA_DIR": "{file}"}, "file exists"),
        (("tokens", "list", "ann"), {"DATABASE_URL": "not a url"}, "not a database url"),
        (("tokens", "list", "ann"), {"DATABASE_URL": "mysql://x@localhost/db"}, "unsupported"),
        (("tokens", "list", "ann"), {"DATABASE_URL": "sqlite://"}, "in-memory"),
        (
            ("tokens", "list", "ann"),
            {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
            "cannot use the control database",
        ),
        (("serve", "--port", "0"), {"ORIGIN_SECRET": "short"}, "origin_secret"),
        (("worker",), {"ORIGIN_SECRET": "short"}, "origin_secret"),
        (("enrichment", "info"), {"ORIGIN_SECRET": "short"}, "origin_secret"),
        (("serve", "--port", "0"), {"ORIGIN_SECRET": "x" * 65}, "at most 64 bytes"),
        (("serve", "--port", "0"), {"GEOIP_CITY_DATABASE": "/no/such.mmdb"}, "no file at"),
        # A file that is no MaxMind database (the server's start-up printed a traceback).
        (
            ("serve", "--port", "0"),
            {"GEOIP_CITY_DATABASE": "{file}"},
            "eventport_geoip_city_database: cannot read maxmind database",
        ),
        (
            ("serve", "--port", "0"),
            {"GEOIP_ASN_DATABASE": "{file}"},
            "eventport_geoip_asn_database: cannot read maxmind database",
        ),
        # A spool that cannot be written (every upload was a 500).
        (("serve", "--port", "0"), {"DATA_DIR": "{spooled}"}, "cannot write uploads to the spool"),
        (("tokens", "list", "ann"), {"PORT": "abc"}, "eventport_port: input should be"),
        (("tokens", "list", "ann"), {"DATA_DIR": ""}, "data_dir is empty"),
        # found by an operations hunt, each a traceback before
        (
            ("tokens", "list", "ann"),
            {"DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:5432/x"},
            "names a driver eventport does not ship",
        ),
        (
            ("tokens", "list", "ann"),
            {"DATABASE_URL": "sqlite:///{file}"},  # a file that is no database
            "file is not a database",
        ),
        (
            ("serve", "--port", "0"),
            {"DUCKDB_MEMORY_MB": "9999999999999999999999"},
            "cannot open the event store",
        ),
        (("serve", "--port", "0"), {"DATA_DIR": "{eventsdir}"}, "cannot open the event store"),
    ],
)
def test_environment_mistakes_are_one_line(
    env: dict[str, str],
    tmp_path: Path,
    backend: str,
    command: tuple[str, ...],
    settings: dict[str, str],
    message: str,
) -> None:
    """A user's mistake ends the command with one line that says what is wrong (it was a
    Python traceback for each of these), and a non-zero exit. (On the embedded default: each
    case names its own database URL where it is about one.)"""
    if not backend.startswith("sqlite"):
        pytest.skip("the cases set their own database; once is enough")
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "spooled").mkdir()
    (tmp_path / "spooled" / "spool").write_text("a file where the spool's directory goes")
    (tmp_path / "eventsdir" / "events.duckdb").mkdir(parents=True)  # a directory
    given = {
        f"EVENTPORT_{k}": v.format(
            file=tmp_path / "afile",
            spooled=tmp_path / "spooled",
            eventsdir=tmp_path / "eventsdir",
        )
        for k, v in settings.items()
    }
    result = run(*command, env={**env, **given}, check=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr.lower(), result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr  # the line (and a warning)


def test_an_unknown_setting_is_warned_about(env: dict[str, str]) -> None:
    result = run("tokens", "list", "nobody", env={**env, "EVENTPORT_WORKER": "0"}, check=False)
    assert "EVENTPORT_WORKER is not an eventport setting" in result.stderr


def test_a_second_server_on_the_same_embedded_store_is_one_line(
    env: dict[str, str], serve: str, backend: str
) -> None:
    if not backend.startswith("sqlite"):
        pytest.skip("PostgreSQL is shared by any number of servers")
    result = run("serve", "--port", str(free_port()), env=env, check=False)
    assert result.returncode == 1
    assert "cannot open the event store" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_new_version_leaves_a_running_older_servers_control_database_as_it_is(
    env: dict[str, str], backend: str
) -> None:
    """An upgrade's server started while an older one still runs on the data dir is refused
    (the event store is the other's), and migrates nothing: migrated first, the older server
    ran on a schema it did not know and could not start again (an upgrade hunt)."""
    if not backend.startswith("sqlite"):
        pytest.skip("PostgreSQL deployments stop older processes before migrating (README)")
    from alembic import command

    from eventport.control.database import ControlDatabase, alembic_config
    from eventport.events.duckdb_store import DuckDBEventStore

    run("users", "create", _unique("old"), "--email", "old@example.com", env=env)
    data = Path(env["EVENTPORT_DATA_DIR"])
    control = ControlDatabase(f"sqlite:///{data / 'control.sqlite3'}")
    try:
        command.downgrade(alembic_config(control.engine), "-1")  # as an older version left it
        with control.engine.connect() as conn:
            older = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        running = DuckDBEventStore(data / "events.duckdb")  # the older server's, held
        try:
            result = run("serve", "--port", str(free_port()), env=env, check=False)
            # nor does a command of the new version (users create, as the README runs it)
            made = run(
                "users", "create", _unique("new"), "--email", "n@example.com", env=env, check=False
            )
        finally:
            running.close()
        assert result.returncode == 1, result.stderr
        assert "cannot open the event store" in result.stderr
        assert made.returncode == 1, made.stderr
        assert "a server of that version still runs on it" in made.stderr
        assert "Traceback" not in made.stderr
        with control.engine.connect() as conn:
            now = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert now == older
        # with the older server stopped, the command upgrades the database and goes on
        run("users", "create", _unique("new"), "--email", "n@example.com", env=env)
        with control.engine.connect() as conn:
            upgraded = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert upgraded != older
    finally:
        control.dispose()


def test_a_second_embedded_server_on_a_shared_sqlite_control_file_is_one_line(
    env: dict[str, str], tmp_path: Path, backend: str
) -> None:
    """Two servers with data dirs of their own and one SQLite control file each took the
    other's imports into its own DuckDB file, where the other's exports never looked: every
    import done, half the owners' events not found (an operations hunt)."""
    if not backend.startswith("sqlite"):
        pytest.skip("PostgreSQL is shared by any number of servers")
    shared = {**env, "EVENTPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}"}
    first = {**shared, "EVENTPORT_DATA_DIR": str(tmp_path / "a"), "EVENTPORT_WORKERS": "0"}
    port, log = free_port(), tmp_path / "first.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [EVENTPORT, "serve", "--port", str(port)], env=first, stdout=output, stderr=output
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", process, log)
        second = {**shared, "EVENTPORT_DATA_DIR": str(tmp_path / "b")}
        result = run("serve", "--port", str(free_port()), env=second, check=False)
        assert result.returncode == 1, result.stderr
        assert "another eventport process uses the control database" in result.stderr
        assert str(tmp_path / "a" / "events.duckdb") in result.stderr  # whose it is
        # and what to do, whole (a verification hunt: cut at 300 characters)
        assert "for both control data and events" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    # Once the first has stopped, the control file may go with another data dir.
    port, log = free_port(), tmp_path / "second.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [EVENTPORT, "serve", "--port", str(port)],
            env={**second, "EVENTPORT_WORKERS": "0"},
            stdout=output,
            stderr=output,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def test_a_token_label_cannot_forge_a_line_of_the_listing(env: dict[str, str]) -> None:
    name = _unique("lab")
    run("users", "create", name, "--email", f"{name}@example.com", env=env)
    run("tokens", "create", name, "--label", "one\nfake-id\t2020-01-01\tactive", env=env)
    listed = run("tokens", "list", name, env=env).stdout.strip().splitlines()
    assert len(listed) == 2
    assert listed[-1].endswith("one\\nfake-id\\t2020-01-01\\tactive")


def test_the_cli_module_offers_every_command(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventport.cli", "enrichment", "info"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "enrichment: on" in result.stdout


def test_the_log_level_applies_to_eventports_own_messages(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A file no import owns, left for hours in the spool: the sweep deletes it at start-up and
    says so at info level, which EVENTPORT_LOG_LEVEL=info shows and =warning hides."""
    spool = Path(env["EVENTPORT_DATA_DIR"]) / "spool"
    for level, shown in (("info", True), ("warning", False)):
        spool.mkdir(parents=True, exist_ok=True)
        stale = spool / "11111111-2222-3333-4444-555555555555.upload"
        stale.write_text("x")
        os.utime(stale, (time.time() - 4 * 3600,) * 2)
        log = tmp_path / f"serve-{level}.log"
        port = free_port()
        with log.open("wb") as output:
            process = subprocess.Popen(
                [EVENTPORT, "serve", "--port", str(port)],
                env={**env, "EVENTPORT_LOG_LEVEL": level},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", process, log)
            deadline = time.monotonic() + 10
            while stale.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        assert not stale.exists()
        assert ("INFO eventport" in log.read_text()) is shown, log.read_text()


def test_a_stalled_upload_does_not_keep_the_server_from_stopping(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A client that announced a body and stopped sending: SIGTERM still stops the server,
    after its graceful wait (it waited for the client for ever), and the upload leaves
    nothing in the spool."""
    name = _unique("stall")
    token = run("users", "create", name, "--email", f"{name}@example.com", env=env).stdout.split()[
        -1
    ]
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [EVENTPORT, "serve", "--port", str(port)],
            env={**env, "EVENTPORT_WORKERS": "0"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, process, log)
    auth = {"Authorization": f"Bearer {token}"}
    package = httpx.post(
        f"{url}/v2/packages/{name}", json={"name": "x", "type": "npm"}, headers=auth
    )
    head = (
        f"POST /v2/packages/{name}/{package.json()['id']}/import HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\n"
        "Content-Length: 20000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as stalled:
        stalled.sendall(head + b'{"$time":1}\n' * 10_000)
        spool = Path(env["EVENTPORT_DATA_DIR"]) / "spool"
        deadline = time.monotonic() + 10
        while not any(spool.glob("*.upload")) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError("the server did not stop while an upload stalled") from None
        answer = stalled.recv(65536)
    assert code in (0, -signal.SIGTERM)
    assert list(spool.glob("*.upload")) == []
    # The API's error, not uvicorn's plain-text 500 and a traceback (an operations hunt).
    head_lines, _, body = answer.partition(b"\r\n\r\n")
    assert head_lines.startswith(b"HTTP/1.1 503"), answer
    assert b"retry-after: 5" in head_lines.lower(), answer
    assert orjson.loads(body)["code"] == "server-shutting-down"
    assert "Traceback" not in log.read_text()


def test_an_empty_data_dir_flag_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    """click reads --data-dir "" as the working directory: the server made its files there."""
    result = run("tokens", "list", "ann", "--data-dir", "", env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert "--data-dir': is empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_a_newer_version_migrated_is_one_line(
    env: dict[str, str], tmp_path: Path, backend: str
) -> None:
    """It refused with alembic's ~100-line traceback (an operations hunt)."""
    if not backend.startswith("sqlite"):
        pytest.skip("the embedded control file is enough to show it")
    run("users", "create", "ann", "--email", "ann@example.com", env=env)
    control = sqlite3.connect(tmp_path / "data" / "control.sqlite3")
    with control:
        control.execute("UPDATE alembic_version SET version_num = '0099_future'")
    control.close()
    for command in (("tokens", "list", "ann"), ("serve", "--port", "0")):
        result = run(*command, env=env, check=False)
        assert result.returncode == 1, result.stderr
        assert "a newer version of eventport has migrated" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line(env: dict[str, str], backend: str) -> None:
    """uvicorn started the app, then said "address already in use" and exited with 3 (an
    operations hunt). And no worker with the embedded store is said to leave uploads waiting
    (it was accepted silently)."""
    if not backend.startswith("sqlite"):
        pytest.skip("once is enough")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "serve", "--port", str(port), env={**env, "EVENTPORT_WORKERS": "0"}, check=False
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "EVENTPORT_WORKERS=0 with the embedded store" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mistyped_data_dir_is_not_made(env: dict[str, str], tmp_path: Path, backend: str) -> None:
    """A command about what a data dir holds made an empty one there, and answered "no user
    named …" (an operations hunt)."""
    if not backend.startswith("sqlite"):
        pytest.skip("the embedded store's data dir")
    typo = tmp_path / "dat"
    for command in (("tokens", "list", "ann"), ("tokens", "revoke", "x")):
        result = run(*command, "--data-dir", str(typo), env=env, check=False)
        assert result.returncode == 1, result.stderr
        assert f"no eventport data at {typo}" in result.stderr
    assert not typo.exists()
