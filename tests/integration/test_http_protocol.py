"""What uvicorn's HTTP parser refuses before the app sees it is answered in the API's error
body too (a fuzz hunt got ``Invalid HTTP request received.`` as text/plain), with either of
uvicorn's protocols."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
import uvicorn

from eventport.api.protocol import MALFORMED_CODE, JsonH11Protocol, http_protocol
from tests.conftest import Server, free_port

MALFORMED = [
    pytest.param(
        b"POST /v2/alice/import HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab",
        id="content-length-twice",
    ),
    pytest.param(
        b"POST /v2/alice/import HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nab",
        id="transfer-coding-gzip-alone",
    ),
    pytest.param(b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", id="NUL-in-target"),
]


@contextmanager
def serving(server: Server, protocol: type[asyncio.Protocol]) -> Iterator[int]:
    """The live server's app behind a uvicorn of its own, with ``protocol``."""
    port = free_port()
    config = uvicorn.Config(
        server.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", http=protocol
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        running.should_exit = True
        thread.join(10)


def answer(port: int, request: bytes) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("request_bytes", MALFORMED)
@pytest.mark.parametrize("protocol", ["auto", "h11"])
def test_a_request_the_parser_refuses_gets_a_json_400(
    server: Server, request_bytes: bytes, protocol: str
) -> None:
    chosen = http_protocol() if protocol == "auto" else JsonH11Protocol
    with serving(server, chosen) as port:
        head, body = answer(port, request_bytes)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"content-type: application/json" in head.lower(), head
    error = orjson.loads(body)
    assert error["code"] == MALFORMED_CODE
    assert error["message"].startswith("the HTTP request could not be read")
