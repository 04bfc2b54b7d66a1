"""Grants that others make, and what a user sees once they lose access (an authorization hunt
found each of these broken: every test here failed before its fix)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from eventport.control import accounts
from eventport.control.models import Account
from eventport.domain.access import OrgRole
from eventport.domain.errors import NotFound
from tests.conftest import Server
from tests.integration.test_api_v2 import create_org, create_package, expect


def _member(client: Any, org: str, username: str, role: str) -> None:
    body = {"username": username, "role": role}
    expect(client.post(f"/v2/organizations/{org}/members", json=body), 201)


def _grant(client: Any, package_id: str, user: str, level: str) -> Any:
    url = f"/api/v1/packages/{package_id}/permissions"
    return client.post(url, json={"userQuery": user, "permissionLevel": level})


def _started_import(client: Any, package_id: str) -> str:
    """The URL of an import of one event into acme's package, started by ``client``."""
    started = expect(
        client.post(
            f"/v2/packages/acme/{package_id}/import",
            content=b'{"$time": "2026-01-01T00:00:00Z"}\n',
            headers={"Content-Type": "application/x-ndjson"},
        ),
        200,
    )
    return f"/v2/imports/acme/{started['id']}"


def test_anyone_may_give_up_a_grant_made_to_them(server: Server) -> None:
    """Anyone may grant anyone their package, with no consent: the grantee's v1 look-up by
    name then answered 422 ambiguous-package-name, and they could not remove the grant (403)."""
    victim, mallory = server.user("victim"), server.user("mallory")
    outsider = server.user("outsider")
    create_org(victim, "vorg")
    theirs = create_package(victim, "vorg", "tool")
    planted = create_package(mallory, "mallory", "tool")
    assert _grant(mallory, planted["id"], "victim@example.com", "member").status_code == 200

    # The look-up by name prefers the organization the caller belongs to.
    found = victim.get("/api/v1/packages/tool")
    assert found.status_code == 200, found.text
    assert found.json()["uuid"] == theirs["id"], found.text

    # Nobody else may drop someone's grant; the grantee may drop their own.
    url = f"/v2/packages/mallory/{planted['id']}"
    assert _grant(mallory, planted["id"], "outsider", "member").status_code == 200
    expect(outsider.delete(f"{url}/permissions/victim"), 403)
    expect(victim.delete(f"{url}/permissions/outsider"), 403)
    expect(victim.delete(f"{url}/permissions/victim"), 204)
    expect(victim.get(url), 404)

    # v1: "default" for oneself, by name or by email; the answer shows nothing once the
    # package is out of sight.
    assert _grant(mallory, planted["id"], "victim", "admin").status_code == 200
    expect(victim.get(url), 200)
    dropped = _grant(victim, planted["id"], "VICTIM@example.com", "default")
    assert (dropped.status_code, dropped.json()) == (200, []), dropped.text
    expect(victim.get(url), 404)
    names = [p["username"] for p in expect(mallory.get(f"{url}/permissions"), 200)]
    assert "victim" not in names
    assert "outsider" in names

    # Giving up is all a plain grant allows: not a grant for oneself, nor lifting a block.
    assert _grant(mallory, planted["id"], "victim", "member").status_code == 200
    raised = _grant(victim, planted["id"], "victim", "admin")
    assert raised.status_code == 403, raised.text
    create_org(mallory, "morg")
    blocked_in = create_package(mallory, "morg", "blocked-in")
    _member(mallory, "morg", "victim", "member")
    assert _grant(mallory, blocked_in["id"], "victim", "blocked").status_code == 200
    expect(victim.delete(f"/v2/packages/morg/{blocked_in['id']}/permissions/victim"), 404)
    expect(victim.get(f"/v2/packages/morg/{blocked_in['id']}"), 404)


def test_a_blocked_grant_shows_nothing_of_the_owner(server: Server) -> None:
    """A user blocked on one package of an owner they do not belong to got 200 (empty) on the
    owner's listings, where any other stranger gets 404."""
    alice, bob = server.user("alice"), server.user("bob")
    create_org(alice, "acme")
    package = create_package(alice, "acme", "acme-cli")
    assert _grant(alice, package["id"], "bob", "blocked").status_code == 200
    for url in ("/v2/packages/acme", "/v2/tracking-pixels/acme", "/v2/imports/acme"):
        expect(bob.get(url), 404)
    assert _grant(alice, package["id"], "bob", "member").status_code == 200
    assert [p["id"] for p in expect(bob.get("/v2/packages/acme"), 200)["results"]] == [
        package["id"]
    ]


def test_a_removed_member_no_longer_sees_the_imports_they_started(server: Server) -> None:
    """Removed from an organization, a user still read the imports they had started there
    (and their logs) and could abort them, while every other route of it answered 404."""
    alice, bob = server.user("alice"), server.user("bob")
    create_org(alice, "acme")
    _member(alice, "acme", "bob", "admin")
    package = create_package(alice, "acme", "acme-cli")
    url = _started_import(bob, package["id"])
    expect(bob.get(url), 200)  # the shared server runs no workers: it waits
    expect(alice.delete("/v2/organizations/acme/members/bob"), 204)
    for response in (bob.get(url), bob.get(f"{url}/log"), bob.post(f"{url}/abort")):
        expect(response, 404)
    assert expect(alice.get(url), 200)["status"] == "importing"


def test_a_role_change_sent_as_the_member_leaves_does_not_add_them_back(
    server: Server,
) -> None:
    """The role change checked the membership before it took the members' lock: sent while
    the member left, it created a membership anew."""
    alice = server.user("alice")
    server.user("bob")
    create_org(alice, "acme")
    _member(alice, "acme", "bob", "admin")
    removed = threading.Event()
    outcome: list[BaseException | None] = []

    def leave_slowly() -> None:
        with server.control.session() as s:
            org = accounts.account_by_name(s, "acme")
            leaver = accounts.account_by_name(s, "bob")
            assert org is not None
            assert leaver is not None
            accounts.remove_member(s, leaver, "acme", "bob")  # holds the members' lock
            removed.set()
            time.sleep(1.0)  # the role change arrives meanwhile

    def change_role() -> None:
        removed.wait(10)
        try:
            with server.control.session() as s:
                owner = accounts.account_by_name(s, "alice")
                assert isinstance(owner, Account)
                accounts.set_member_role(s, owner, "acme", "bob", OrgRole.MEMBER)
            outcome.append(None)
        except BaseException as exc:  # the test looks at it
            outcome.append(exc)

    threads = [threading.Thread(target=leave_slowly), threading.Thread(target=change_role)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(outcome) == 1, outcome
    assert isinstance(outcome[0], NotFound), outcome
    members = expect(alice.get("/v2/organizations/acme/members"), 200)["results"]
    assert [m["username"] for m in members] == ["alice"]


@pytest.mark.parametrize("level", ["member", "admin"])
def test_a_grant_holder_still_cannot_change_other_grants_below_admin(
    server: Server, level: str
) -> None:
    """Giving up one's own grant opened the permission routes to grant holders below admin:
    only that, not a grant for anyone else."""
    alice, bob = server.user("alice"), server.user("bob")
    server.user("carol")
    package = create_package(alice, "alice", "tool")
    assert _grant(alice, package["id"], "bob", level).status_code == 200
    answer = _grant(bob, package["id"], "carol", "member")
    assert answer.status_code == (200 if level == "admin" else 403), answer.text


def test_a_block_set_as_its_holder_gives_up_the_grant_is_never_lost(server: Server) -> None:
    """A block and its holder's giving up of their grant, sent at once, both read the grant
    before either wrote: the block answered 200 and the deletion then took it (bob kept his
    organization's access to the package), or one of them answered 500."""
    alice, bob = server.user("alice"), server.user("bob")
    create_org(alice, "acme")
    _member(alice, "acme", "bob", "member")
    package = create_package(alice, "acme", "acme-cli")
    url = f"/v2/packages/acme/{package['id']}"
    for attempt in range(30):
        assert _grant(alice, package["id"], "bob", "member").status_code == 200
        answers: dict[str, int] = {}
        go = threading.Barrier(2)

        def block(go: threading.Barrier = go, answers: dict[str, int] = answers) -> None:
            go.wait()
            answers["block"] = _grant(alice, package["id"], "bob", "blocked").status_code

        def give_up(go: threading.Barrier = go, answers: dict[str, int] = answers) -> None:
            go.wait()
            answers["give_up"] = bob.delete(f"{url}/permissions/bob").status_code

        threads = [threading.Thread(target=block), threading.Thread(target=give_up)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert answers["block"] == 200, (attempt, answers)
        assert answers["give_up"] in (204, 404), (attempt, answers)  # 404: blocked by then
        assert bob.get(url).status_code == 404, (attempt, answers)  # the block holds
        lift = {"userQuery": "bob", "permissionLevel": "default"}
        assert (
            alice.post(f"/api/v1/packages/{package['id']}/permissions", json=lift).status_code
            == 200
        )


def test_a_user_blocked_on_a_package_no_longer_sees_their_import_into_it(
    server: Server,
) -> None:
    """bob, blocked on package A but holding a grant on package B of the same owner, still
    read his import into A and its log (which names A's events)."""
    alice, bob = server.user("alice"), server.user("bob")
    create_org(alice, "acme")
    a = create_package(alice, "acme", "a")
    b = create_package(alice, "acme", "b")
    for package in (a, b):
        assert _grant(alice, package["id"], "bob", "admin").status_code == 200
    url = _started_import(bob, a["id"])
    expect(bob.get(url), 200)
    assert _grant(alice, a["id"], "bob", "blocked").status_code == 200
    for response in (bob.get(url), bob.get(f"{url}/log"), bob.post(f"{url}/abort")):
        expect(response, 404)
    assert expect(bob.get("/v2/imports/acme"), 200)["event_imports"] == []
    expect(bob.get("/v2/packages/acme"), 200)  # b is still his to see
    expect(alice.delete(f"/v2/packages/acme/{a['id']}"), 204)
    expect(bob.get(url), 200)  # gone: the import says why it failed
