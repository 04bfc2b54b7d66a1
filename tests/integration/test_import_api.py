"""The import API's front door: uploads, limits, listing, abort — with no worker running.

Processing is tested in test_import_pipeline.py; here imports stay waiting (EVENTPORT_WORKERS=0).
"""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from eventport.imports.worker import ImportWorker
from tests.conftest import Server, running_server
from tests.importing import ok, setup_package, upload
from tests.openapi_check import SpecDrift, assert_log_matches_spec, assert_matches_spec

NDJSON = b'{"$time":"2024-06-04T00:00:00Z","$unique_id":"a"}\n{"$time":1717459200}\n'


def test_upload_queues_an_import(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    started = ok(upload(alice, f"/v2/packages/alice/{package_id}/import", NDJSON))
    assert started["status"] == "importing"
    assert started["state"] == "waiting"
    assert started["owner"] == "alice"
    assert started["bytes_total"] == len(NDJSON)
    assert (started["events_total"], started["percent_complete"]) == (0, 0.0)
    fetched = ok(alice.get(f"/v2/imports/alice/{started['id']}"))
    assert fetched["id"] == started["id"]
    listed = ok(alice.get("/v2/imports/alice"))["event_imports"]
    assert [i["id"] for i in listed] == [started["id"]]
    spooled = list((server.settings.spool_dir).glob(f"{started['id']}*"))
    assert [p.read_bytes() for p in spooled] == [NDJSON]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-ndjson",
        "application/ndjson",
        "application/json",
        "text/csv",
        "application/x-ndjson; charset=utf-8",
        # Parameters that say how the body is read, with what the server reads.
        "text/csv; charset=utf-8",
        'text/csv; charset="UTF-8"; header=present',
        "application/json; charset=us-ascii",
    ],
)
def test_accepted_content_types(server: Server, content_type: str) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    body = b"$time\n2024-06-04T00:00:00Z\n" if content_type.startswith("text/csv") else NDJSON
    ok(upload(alice, f"/v2/packages/alice/{package_id}/import", body, content_type))


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"Content-Type": "text/plain"}, 415, "Content-Type"),
        ({"Content-Type": "application/xml"}, 415, "Content-Type"),
        (
            {"Content-Type": "application/x-ndjson", "Content-Encoding": "br"},
            415,
            "Content-Encoding",
        ),
        # Parameters that would change how the body is read, which the server would ignore.
        ({"Content-Type": "text/csv; charset=iso-8859-1"}, 415, "charset='iso-8859-1'"),
        ({"Content-Type": 'application/x-ndjson; charset="UTF-16"'}, 415, "UTF-8"),
        ({"Content-Type": "text/csv; header=absent"}, 415, "header row"),
    ],
)
def test_refused_uploads(
    server: Server, headers: dict[str, str], status: int, message: str
) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    response = alice.post(
        f"/v2/packages/alice/{package_id}/import", content=NDJSON, headers=headers
    )
    assert response.status_code == status
    assert message in response.json()["message"]
    assert ok(alice.get("/v2/imports/alice"))["event_imports"] == []
    assert list(server.settings.spool_dir.glob("*")) == []


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        # Two Content-Encoding lines are two codings (RFC 9110), as "gzip, gzip" is: the
        # second line was overlooked and the still-coded body read as text.
        (
            [("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")],
            "Content-Encoding 'gzip, gzip'",
        ),
        (
            [("Content-Type", "application/x-ndjson"), ("Content-Type", "text/csv")],
            "2 different Content-Type headers",
        ),
    ],
)
def test_repeated_headers_are_read_whole(
    server: Server, headers: list[tuple[str, str]], message: str
) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    if not any(name == "Content-Type" for name, _ in headers):
        headers = [("Content-Type", "application/x-ndjson"), *headers]
    response = alice.post(
        f"/v2/packages/alice/{package_id}/import",
        content=gzip.compress(gzip.compress(NDJSON)),
        headers=headers,
    )
    assert response.status_code == 415, response.text
    assert message in response.json()["message"]
    assert ok(alice.get("/v2/imports/alice"))["event_imports"] == []


def test_an_upload_its_client_cuts_off_keeps_nothing_and_logs_no_error(
    server: Server, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client went away mid-upload: logged as an unhandled ERROR with two tracebacks."""
    # (the CLI's tests, run in this process, may have kept eventport's log to themselves)
    monkeypatch.setattr(logging.getLogger("eventport"), "propagate", True)
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    token = alice.headers["Authorization"].split()[1]
    host, port = server.base_url.removeprefix("http://").split(":")
    request = (
        f"POST /v2/packages/alice/{package_id}/import HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/x-ndjson\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="eventport"):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(request + NDJSON)
            deadline = time.monotonic() + 10
            while not list(server.settings.spool_dir.glob("*.upload")):
                assert time.monotonic() < deadline, "the upload never reached the spool"
                time.sleep(0.02)
        deadline = time.monotonic() + 10
        while "cut off by its client" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert list(server.settings.spool_dir.glob("*")) == []
    assert ok(alice.get("/v2/imports/alice"))["event_imports"] == []


def test_a_transfer_coding_besides_chunked_is_refused(server: Server) -> None:
    """uvicorn undoes only the chunking of ``Transfer-Encoding: gzip, chunked``: the body would
    be spooled still compressed and read as text. (Sent over a socket: httpx will not.)"""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    packed = gzip.compress(NDJSON)
    url = httpx.URL(server.base_url)
    request = (
        f"POST /v2/packages/alice/{package_id}/import HTTP/1.1\r\n"
        f"Host: {url.host}:{url.port}\r\n"
        f"Authorization: {alice.headers['Authorization']}\r\n"
        "Content-Type: application/x-ndjson\r\n"
        "Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 415"), answer[:300]
    assert b"Transfer-Encoding" in body
    assert ok(alice.get("/v2/imports/alice"))["event_imports"] == []


def test_gzip_upload_is_spooled_as_sent(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    body = gzip.compress(NDJSON)
    started = ok(
        upload(
            alice, f"/v2/packages/alice/{package_id}/import", body, **{"Content-Encoding": "gzip"}
        )
    )
    assert started["bytes_total"] == len(body)


def test_every_import_route(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    pixel = alice.post("/v2/tracking-pixels/alice", json={"name": "docs"}).json()
    one = ok(upload(alice, f"/v2/tracking-pixels/alice/{pixel['id']}/import", NDJSON))
    many = ok(
        upload(alice, "/v2/alice/import", b'{"$time":1,"$package":"%s"}' % package_id.encode())
    )
    assert {one["id"], many["id"]} == {
        i["id"] for i in ok(alice.get("/v2/imports/alice"))["event_imports"]
    }


def test_unknown_targets_are_not_found(server: Server) -> None:
    alice = server.user("alice")
    server.user("bob")
    missing = "00000000-0000-0000-0000-000000000000"
    for path in (
        f"/v2/packages/alice/{missing}/import",
        f"/v2/tracking-pixels/alice/{missing}/import",
        "/v2/nobody/import",
        "/v2/bob/import",
    ):
        response = upload(alice, path, NDJSON)
        assert response.status_code == 404, path
        assert "not found" in response.json()["message"]


def test_abort_a_waiting_import(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    started = ok(upload(alice, f"/v2/packages/alice/{package_id}/import", NDJSON))
    response = alice.post(f"/v2/imports/alice/{started['id']}/abort")
    assert response.status_code == 204
    assert_matches_spec(response)
    after = ok(alice.get(f"/v2/imports/alice/{started['id']}"))
    assert after["status"] == "aborted"
    assert after["finished_at"] is not None
    # Aborting again is harmless; filters see it where it belongs.
    assert alice.post(f"/v2/imports/alice/{started['id']}/abort").status_code == 204
    assert ok(alice.get("/v2/imports/alice", params={"status": "importing"}))["event_imports"] == []
    aborted = ok(alice.get("/v2/imports/alice", params={"status": "aborted"}))["event_imports"]
    assert [i["id"] for i in aborted] == [started["id"]]


def test_log_of_a_new_import_is_empty_ndjson(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    started = ok(upload(alice, f"/v2/packages/alice/{package_id}/import", NDJSON))
    assert assert_log_matches_spec(alice.get(f"/v2/imports/alice/{started['id']}/log")) == []


def test_others_cannot_see_an_import(server: Server) -> None:
    alice = server.user("alice")
    bob = server.user("bob")
    package_id = setup_package(alice, "alice")
    started = ok(upload(alice, f"/v2/packages/alice/{package_id}/import", NDJSON))
    for method, path in (
        ("GET", f"/v2/imports/alice/{started['id']}"),
        ("GET", f"/v2/imports/alice/{started['id']}/log"),
        ("POST", f"/v2/imports/alice/{started['id']}/abort"),
        ("GET", "/v2/imports/alice"),
    ):
        assert bob.request(method, path).status_code == 404


def test_list_pagination_newest_first(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    ids = [
        ok(upload(alice, f"/v2/packages/alice/{package_id}/import", NDJSON))["id"] for _ in range(5)
    ]
    first = ok(alice.get("/v2/imports/alice", params={"per_page": 2}))["event_imports"]
    rest = ok(alice.get("/v2/imports/alice", params={"per_page": 10, "after": first[-1]["id"]}))
    seen = [i["id"] for i in first + rest["event_imports"]]
    assert seen == list(reversed(ids))


def test_paging_through_a_status_while_imports_leave_it(server: Server) -> None:
    """The cursor names an import the filter no longer lists (it has ended since): the next page
    still starts after it, not with a 400."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    ids = [
        ok(upload(alice, f"/v2/packages/alice/{package_id}/import", NDJSON))["id"] for _ in range(4)
    ]
    running = {"status": "importing", "per_page": 2}
    first = [i["id"] for i in ok(alice.get("/v2/imports/alice", params=running))["event_imports"]]
    assert first == [ids[3], ids[2]]
    assert alice.post(f"/v2/imports/alice/{ids[2]}/abort").status_code == 204
    rest = ok(alice.get("/v2/imports/alice", params={**running, "after": ids[2]}))
    assert [i["id"] for i in rest["event_imports"]] == [ids[1], ids[0]]
    # A cursor naming no import of the owner (or not one alice may see) is still refused.
    bob = server.user("bob")
    bobs = ok(upload(bob, f"/v2/packages/bob/{setup_package(bob, 'bob')}/import", NDJSON))["id"]
    for unknown in (bobs, "00000000-0000-0000-0000-000000000000", "not-an-id"):
        refused = alice.get("/v2/imports/alice", params={**running, "after": unknown})
        assert refused.status_code == 400, refused.text
        assert "unknown cursor" in refused.json()["message"]


@pytest.fixture
def strict_server(server: Server) -> Iterator[Server]:
    """The same store behind a server with tiny limits: 2 active imports, 1 KiB uploads."""
    settings = server.settings.model_copy(
        update={"max_active_imports": 2, "max_import_bytes": 1024}
    )
    with running_server(settings, server.control) as strict:
        yield strict
        for client in strict.clients:
            client.close()


def test_too_many_active_imports(strict_server: Server) -> None:
    alice = strict_server.user("alice")
    package_id = setup_package(alice, "alice")
    path = f"/v2/packages/alice/{package_id}/import"
    first = ok(upload(alice, path, NDJSON))
    ok(upload(alice, path, NDJSON))
    refused = upload(alice, path, NDJSON)
    assert refused.status_code == 422
    assert refused.json()["message"] == "too many active imports"
    # A finished (here: aborted) import frees its place.
    assert alice.post(f"/v2/imports/alice/{first['id']}/abort").status_code == 204
    ok(upload(alice, path, NDJSON))


def test_the_active_imports_limit_holds_for_uploads_at_once(strict_server: Server) -> None:
    """Twelve uploads that end together: the limit (2 here) admits two of them, where each
    counted the others' imports before any was written (21-28 of 40 past a limit of 15)."""
    alice = strict_server.user("alice")
    path = f"/v2/packages/alice/{setup_package(alice, 'alice')}/import"
    token = alice.headers["Authorization"].split()[1]
    clients = [strict_server.client(token) for _ in range(12)]
    start = threading.Barrier(len(clients))

    def send(client: httpx.Client) -> httpx.Response:
        start.wait()
        return upload(client, path, NDJSON)

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        statuses = sorted(r.status_code for r in pool.map(send, clients))
    assert statuses == [200, 200] + [422] * 10
    active = alice.get("/v2/imports/alice", params={"status": "importing"}).json()
    assert len(active["event_imports"]) == 2


def test_uploads_being_received_count_against_the_limit(strict_server: Server) -> None:
    """Two uploads still arriving hold the limit's two places: a third is refused before its
    body is read. Counted only once their imports were made, the third was admitted, and all
    of them past the limit were spooled whole before being refused (a resource hunt). Once
    the two have arrived, their imports hold the places."""
    alice = strict_server.user("alice")
    path = f"/v2/packages/alice/{setup_package(alice, 'alice')}/import"
    token = alice.headers["Authorization"].split()[1]
    arriving = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield NDJSON[:10]
        arriving.wait(30)
        yield NDJSON[10:]

    def send_slowly(client: httpx.Client) -> httpx.Response:
        return client.post(
            path, content=slow_body(), headers={"Content-Type": "application/x-ndjson"}
        )

    spool = strict_server.settings.spool_dir
    before = set(spool.glob("*.upload"))
    slow = [strict_server.client(token) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(send_slowly, client) for client in slow]
        deadline = time.monotonic() + 10
        while len(set(spool.glob("*.upload")) - before) < 2:  # both are being received
            assert time.monotonic() < deadline, "the two uploads never started"
            time.sleep(0.02)
        third = upload(alice, path, NDJSON)
        arriving.set()
        answers = [future.result(timeout=30) for future in pending]
    assert third.status_code == 422
    assert third.json()["message"] == "too many active imports"
    assert [answer.status_code for answer in answers] == [200, 200]
    assert upload(alice, path, NDJSON).status_code == 422  # now their imports hold them


def test_upload_over_the_cap(strict_server: Server) -> None:
    alice = strict_server.user("alice")
    package_id = setup_package(alice, "alice")
    path = f"/v2/packages/alice/{package_id}/import"
    big = b'{"$time":1}\n' * 200
    declared = upload(alice, path, big)
    assert declared.status_code == 413
    assert "limit of 1024 bytes" in declared.json()["message"]

    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b'{"$time":1}\n'

    streamed = alice.post(path, content=chunks(), headers={"Content-Type": "application/x-ndjson"})
    assert streamed.status_code == 413
    assert ok(alice.get("/v2/imports/alice"))["event_imports"] == []
    assert list(strict_server.settings.spool_dir.glob("*")) == []


def test_spec_check_catches_a_bad_import(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    response = upload(alice, f"/v2/packages/alice/{package_id}/import", NDJSON)
    body = response.json()
    body["status"] = "queued"
    doctored = httpx.Response(200, json=body, request=response.request)
    with pytest.raises(SpecDrift, match="queued"):
        assert_matches_spec(doctored)


@pytest.mark.parametrize("target", ["package", "pixel"])
def test_an_import_whose_target_was_deleted_fails_saying_so(server: Server, target: str) -> None:
    """The package (or pixel) deleted between the upload and the worker: the import fails
    with an artifact-not-found entry, where it was 'done' with its events stored under an
    id no export finds."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    if target == "package":
        path, gone = f"/v2/packages/alice/{package_id}/import", f"/v2/packages/alice/{package_id}"
    else:
        pixel = alice.post("/v2/tracking-pixels/alice", json={"name": "docs"}).json()["id"]
        path, gone = (
            f"/v2/tracking-pixels/alice/{pixel}/import",
            f"/v2/tracking-pixels/alice/{pixel}",
        )
    started = ok(upload(alice, path, NDJSON))
    assert alice.delete(gone).status_code == 204
    worker = ImportWorker(server.control, server.app.state.events, lease=timedelta(seconds=15))
    assert worker.run_once()
    done = assert_matches_spec(alice.get(f"/v2/imports/alice/{started['id']}")).json()
    assert (done["status"], done["events_successfully_imported"]) == ("failed", 0)
    assert "deleted after the upload" in done["failure_reason"]
    (entry,) = done["error_log_sample"]
    assert entry["type"] == "artifact-not-found"
    assert server.app.state.events.count(import_id=started["id"]) == 0


def test_a_spool_that_cannot_be_written_is_a_clear_503(server: Server, tmp_path: Path) -> None:
    """The data dir's spool became unwritable after the server started (``serve`` checks it at
    start): each upload says so, where it was a bare 500, and leaves no import behind."""
    settings = server.settings.model_copy(update={"data_dir": tmp_path, "workers": 0})
    with running_server(settings, server.control) as broken:
        alice = broken.user("alice")
        package_id = setup_package(alice, "alice")
        spool = settings.spool_dir
        if spool.exists():
            spool.rmdir()
        spool.write_text("a file where the spool's directory goes")
        response = upload(alice, f"/v2/packages/alice/{package_id}/import", NDJSON)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "spool-unavailable"
        assert "nothing was imported" in response.json()["message"]
        assert alice.get("/v2/imports/alice").json()["event_imports"] == []
        for client in broken.clients:
            client.close()
