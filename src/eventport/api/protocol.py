"""uvicorn's HTTP protocol, with its one answer of its own in the API's error body.

uvicorn refuses a request its HTTP parser cannot read (a Content-Length twice or negative, a
transfer coding it does not know, a control character in a header, a URL past its limit) before
the app sees it, with a plain-text 400. The API promises JSON ``{"message", "code"}`` for every
error: these classes send that instead, and are otherwise uvicorn's own.
"""

from __future__ import annotations

import asyncio

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

MALFORMED_CODE = "malformed-request"


def json_400(msg: str) -> bytes:
    """The body of uvicorn's 400, as the API's error body."""
    return orjson.dumps(
        {
            "message": f"the HTTP request could not be read: {msg.rstrip('.')}",
            "code": MALFORMED_CODE,
        }
    )


def _head(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
    ]


class JsonH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json_400(msg)
        event = h11.Response(status_code=400, headers=_head(body), reason=b"Bad Request")
        for output in (
            self.conn.send(event),
            self.conn.send(h11.Data(data=body)),
            self.conn.send(h11.EndOfMessage()),
        ):
            if output:
                self.transport.write(output)
        self.transport.close()


def http_protocol() -> type[asyncio.Protocol]:
    """The protocol uvicorn's ``http="auto"`` would choose (httptools when installed), with
    the API's error body."""
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:  # httptools is not installed: uvicorn uses h11
        return JsonH11Protocol

    class JsonHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            body = json_400(msg)
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            for name, value in _head(body):
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([b"\r\n", body])
            self.transport.write(b"".join(content))
            self.transport.close()

    return JsonHttpToolsProtocol
