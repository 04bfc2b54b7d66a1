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
