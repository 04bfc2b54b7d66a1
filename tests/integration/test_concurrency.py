"""Many clients at once: every write lands, none fails with a lock error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.conftest import Server


def test_concurrent_writes_all_land(server: Server) -> None:
    alice = server.user("alice")
    count = 40

    def create(i: int) -> int:
        response = alice.post("/v2/packages/alice", json={"name": f"pkg-{i}", "type": "npm"})
        return response.status_code

    def rename_org(i: int) -> int:
        body = {"name": "acme", "billing_email": f"b{i}@acme.io"}
        return alice.put("/v2/organizations/acme", json=body).status_code

    org = {"name": "acme", "description": "d", "billingEmail": "b@acme.io"}
    assert alice.post("/api/v1/organizations", json=org).status_code == 200
    with ThreadPoolExecutor(max_workers=16) as pool:
        created = list(pool.map(create, range(count)))
        updated = list(pool.map(rename_org, range(count)))
    assert created == [201] * count
    assert updated == [200] * count
    listed = alice.get("/v2/packages/alice", params={"per_page": 100}).json()["results"]
    assert sorted(p["name"] for p in listed) == sorted(f"pkg-{i}" for i in range(count))
