from __future__ import annotations

from tests.conftest import Server


def test_health_and_auth(server: Server) -> None:
    anonymous = server.client()
    assert anonymous.get("/healthz").status_code == 200
    head = anonymous.head("/healthz")  # uptime checks probe with HEAD
    assert (head.status_code, head.content) == (200, b"")
    response = anonymous.get("/v2/packages/alice")
    assert response.status_code == 401
    assert "token" in response.json()["message"]
    alice = server.user("alice")
    created = alice.post("/v2/packages/alice", json={"name": "left-pad", "type": "npm"})
    assert created.status_code == 201, created.text
    listed = alice.get("/v2/packages/alice").json()
    assert [p["name"] for p in listed["results"]] == ["left-pad"]


def test_oversized_management_body_is_refused(server: Server) -> None:
    alice = server.user("alice")
    huge = {"name": "big", "type": "npm", "long_description": "x" * (2 * 1024 * 1024)}
    response = alice.post("/v2/packages/alice", json=huge)
    assert response.status_code == 413
    assert "larger than" in response.json()["message"]

    def chunks() -> object:
        yield b'{"name": "big", "type": "npm", "long_description": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    streamed = alice.post(
        "/v2/packages/alice", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert alice.get("/v2/packages/alice").json()["results"] == []


def test_a_management_route_for_a_name_import_keeps_the_body_cap(server: Server) -> None:
    """Only the bulk import routes stream big bodies; a management route whose organization,
    owner or pixel is named ``import`` is capped like any other, before its authorization
    runs (an anonymous client must not make the server read and parse gigabytes)."""
    anonymous = server.client()
    big = b'{"name": "x", "description": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    def chunks() -> object:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    for method, path in [
        ("PUT", "/v2/organizations/import"),
        ("PUT", "/api/v1/organizations/import"),
        ("POST", "/v2/packages/import"),
        ("POST", "/v2/tracking-pixels/import"),
        ("PUT", "/v2/tracking-pixels/alice/import"),
        ("PUT", "/v2/organizations/acme/members/import"),
    ]:
        headers = {"Content-Type": "application/json"}
        declared = anonymous.request(method, path, content=big, headers=headers)
        assert declared.status_code == 413, (method, path, declared.text)
        streamed = anonymous.request(method, path, content=chunks(), headers=headers)
        assert streamed.status_code == 413, (method, path, streamed.text)
        assert "larger than" in streamed.json()["message"]
    # The import routes themselves still take a body past the cap (and ask for a token first).
    upload = anonymous.post(
        "/v2/alice/import", content=big, headers={"Content-Type": "application/x-ndjson"}
    )
    assert upload.status_code == 401, upload.text


def test_a_request_without_a_valid_token_gets_401_before_its_body_is_judged(
    server: Server,
) -> None:
    """A malformed body or parameter sent with no token (or a wrong one) is answered 401, as
    any other request without one is: the body is not judged for a caller not let in."""
    alice = server.user("alice")
    for client in (server.client(), server.client("ep_not-a-token")):
        for method, path, body in (
            ("POST", "/v2/packages/alice", b"{bad"),
            ("POST", "/v2/packages/alice", b'{"name": 1}'),
            ("GET", "/v2/packages/alice?per_page=abc", None),
            ("POST", "/api/v1/organizations", b"\xff\xfe"),
        ):
            response = client.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 401, (method, path, body, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
    # With a token, the same requests are judged on their bodies.
    response = alice.post(
        "/v2/packages/alice", content=b"{bad", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


def test_every_get_route_answers_head(server: Server) -> None:
    """As GET, without the body (a compatibility hunt: every route but /healthz answered 405,
    a CSV export's too)."""
    alice = server.user("alice")
    created = alice.post("/v2/packages/alice", json={"name": "head-pad", "type": "npm"})
    assert created.status_code == 201, created.text
    for path in (
        "/v2/packages/alice",
        f"/v2/packages/alice/{created.json()['id']}",
        "/v2/packages/alice/events?start_date=2024-06-01&end_date=2024-06-02",
        "/api/v1/packages",
        "/v2/packages/nobody",  # an error too
    ):
        got, head = alice.get(path), alice.head(path)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if "content-length" in got.headers:
            assert head.headers["content-length"] == got.headers["content-length"], path
    refused = alice.head("/v2/imports/alice/none/abort")  # a POST route: not a GET
    assert (refused.status_code, refused.headers["allow"]) == (405, "POST")
