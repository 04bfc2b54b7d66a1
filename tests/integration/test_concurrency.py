"""Many clients at once: every write lands, none fails with a lock error."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

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


def _at_once(
    clients: list[httpx.Client], method: str, paths: list[str], body: Any = None
) -> list[httpx.Response]:
    """Client i sends ``method`` to ``paths[i]``, all together (each waits for all to be
    ready before it sends)."""
    start = threading.Barrier(len(clients))

    def send(i: int) -> httpx.Response:
        start.wait()
        return clients[i].request(method, paths[i], json=body)

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        return list(pool.map(send, range(len(clients))))


def _one_wins(responses: list[httpx.Response], won: int, code: str, lost: int = 422) -> None:
    """One request succeeded; every other got what it gets once that one has (never a 500)."""
    statuses = sorted(r.status_code for r in responses)
    assert statuses == sorted([won] + [lost] * (len(responses) - 1)), [r.text for r in responses]
    assert {r.json()["code"] for r in responses if r.status_code == lost} == {code}


def test_the_same_name_created_at_once_is_taken_once(server: Server) -> None:
    """Requests that race for one name: one creates it, the others get the 422 they would
    get a moment later (the loser's unit of work runs again and sees the winner's row)."""
    alice = server.user("alice")
    clients = [server.client(alice.headers["Authorization"].split()[1]) for _ in range(6)]

    def race(path: str, body: dict[str, str]) -> list[httpx.Response]:
        return _at_once(clients, "POST", [path] * len(clients), body)

    for round_ in range(3):
        org = {"name": f"o{round_}", "description": "d", "billingEmail": "b@acme.io"}
        _one_wins(race("/api/v1/organizations", org), 200, "entity-already-exists")
        package = {"name": f"pkg-{round_}", "type": "npm"}
        _one_wins(race("/v2/packages/alice", package), 201, "package-already-exists")
        pixel = {"name": f"px-{round_}"}
        _one_wins(race("/v2/tracking-pixels/alice", pixel), 201, "name-already-exists")
    docker = alice.post(
        "/v2/packages/alice",
        json={"name": "library/app", "type": "docker", "backend_registry": "docker.io"},
    )
    assert docker.status_code == 201, docker.text
    domains = f"/v2/packages/alice/{docker.json()['id']}/domains"
    _one_wins(race(domains, {"name": "cr.alice.dev"}), 201, "domain-is-already-in-use")
    assert [d["name"] for d in alice.get(domains).json()] == ["cr.alice.dev"]
    orgs = alice.get("/v2/users/alice/organizations").json()["results"]
    assert sorted(o["organization_name"] for o in orgs) == ["o0", "o1", "o2"]


def test_two_owners_leaving_at_once_leave_one(server: Server) -> None:
    """The last-owner rule holds under a race: of two owners who leave (or demote each
    other) at the same moment, one succeeds and the other is refused."""
    alice, bob = server.user("alice"), server.user("bob")
    for round_ in range(6):
        name = f"acme{round_}"
        body = {"name": name, "description": "d", "billingEmail": f"b@{name}.io"}
        assert alice.post("/api/v1/organizations", json=body).status_code == 200
        base = f"/v2/organizations/{name}/members"
        added = alice.post(base, json={"username": "bob", "role": "owner"})
        assert added.status_code == 201, added.text
        if round_ % 2:  # each leaves
            paths = [f"{base}/alice", f"{base}/bob"]
            responses = _at_once([alice, bob], "DELETE", paths)
            _one_wins(responses, 204, "cannot-delete-owner")
        else:  # each demotes the other
            paths = [f"{base}/bob", f"{base}/alice"]
            responses = _at_once([alice, bob], "PUT", paths, {"role": "member"})
            # Whoever is demoted first is no owner any more, so may not demote the other.
            _one_wins(responses, 200, "forbidden", lost=403)
        # Bob is still a member unless he left; alice unless she left.
        still = alice if round_ % 2 and responses[0].status_code == 422 else bob
        members = still.get(base).json()["results"]
        assert [m["role"] for m in members].count("owner") == 1, members
