from __future__ import annotations

from tests.conftest import Server


def test_health_and_auth(server: Server) -> None:
    anonymous = server.client()
    assert anonymous.get("/healthz").status_code == 200
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
