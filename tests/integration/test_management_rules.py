"""Rules of the management API that a live probe once found broken (each test failed before
its fix): values that change when stored, fields that belong to another package type, updates
that must keep what they do not name, and who may detach a pixel."""

from __future__ import annotations

from typing import Any

import pytest

from eventport.control import accounts, models
from eventport.domain.errors import NotFound
from tests.conftest import Server
from tests.integration.test_api_v2 import create_org, create_package, expect


def test_an_email_that_grows_when_lowercased_is_measured_as_stored(server: Server) -> None:
    """'İ' lowercases to two characters: 252 of them become 500, past the 254 allowed (a
    500 on PostgreSQL's column, a too-long value kept on SQLite)."""
    alice = server.user("alice")
    email = "a@" + "\u0130" * 248 + ".c"
    body = {"name": "acme", "description": "d", "billingEmail": email}
    v1 = alice.post("/api/v1/organizations", json=body)
    assert (v1.status_code, v1.json()["code"]) == (422, "invalid-billing-email"), v1.text
    create_org(alice, "acme")
    put = {"name": "acme", "billing_email": email}
    expect(alice.put("/v2/organizations/acme", json=put), 422, "invalid-billing-email")


def test_route_fields_of_a_package_that_is_not_a_file_package_are_refused(
    server: Server,
) -> None:
    alice = server.user("alice")
    body = {
        "name": "left-pad",
        "type": "npm",
        "incoming_path": "no-slash {x}",
        "outgoing_url": "javascript:alert(1)",
    }
    expect(alice.post("/v2/packages/alice", json=body), 422, "package-is-conflicting")
    assert expect(alice.get("/v2/packages/alice"), 200)["results"] == []


def test_an_update_keeps_a_python_packages_repository(server: Server) -> None:
    alice = server.user("alice")
    mirror = "https://pypi.example.org/simple/"
    created = create_package(alice, "alice", "private-lib", type="python", repository_url=mirror)
    v1 = alice.put(
        f"/api/v1/packages/{created['id']}",
        json={"name": "private-lib", "shortDescription": "new words"},
    )
    assert v1.status_code == 200, v1.text
    url = f"/v2/packages/alice/{created['id']}"
    assert expect(alice.get(url), 200)["repository_url"] == mirror
    v2 = {"name": "private-lib", "type": "python", "short_description": "newer"}
    assert expect(alice.put(url, json=v2), 200)["repository_url"] == mirror
    other = "https://other.example.org/simple/"
    changed = {**v2, "repository_url": other}
    assert expect(alice.put(url, json=changed), 200)["repository_url"] == other


def test_a_docker_package_renamed_follows_the_image_name_rules(server: Server) -> None:
    alice = server.user("alice")
    docker = {"type": "docker", "backend_registry": "ghcr.io"}
    created = create_package(alice, "alice", "org/img", **docker)
    url = f"/v2/packages/alice/{created['id']}"
    bad = {"name": "UPPER@Case~x", **docker}
    expect(alice.put(url, json=bad), 422, "docker-image-name-has-invalid-characters")
    renamed = expect(alice.put(url, json={"name": "org/img2", **docker}), 200)
    assert (renamed["name"], renamed["repository_name"]) == ("org/img2", "org/img2")


def test_only_a_namespace_admin_detaches_a_pixel(server: Server) -> None:
    """A package's admin may attach pixels to it, but a pixel without a package is the
    owner's own: detaching one needs what creating one needs."""
    alice, bob = server.user("alice"), server.user("bob")
    package = create_package(alice, "alice", "left-pad")
    grant = {"username": "bob", "permission_level": "admin"}
    expect(alice.post(f"/v2/packages/alice/{package['id']}/permissions", json=grant), 204)
    expect(bob.post("/v2/tracking-pixels/alice", json={"name": "bobs"}), 404)
    attached = {"name": "bobs", "package_id": package["id"]}
    pixel = expect(bob.post("/v2/tracking-pixels/alice", json=attached), 201)
    url = f"/v2/tracking-pixels/alice/{pixel['id']}"
    detach = {"name": "bobs", "package_id": None}  # left out, the package is kept
    assert "package" in expect(bob.put(url, json={"name": "bobs"}), 200)
    expect(bob.put(url, json=detach), 404)
    assert "package" in expect(alice.get(url), 200)
    assert "package" not in expect(alice.put(url, json=detach), 200)


def test_names_and_addresses_that_cannot_work_are_refused(server: Server) -> None:
    alice = server.user("alice")
    for name in ["\u200b", "\u00a0\u200b", "a\x7fb", "x\x85"]:
        response = alice.post("/v2/tracking-pixels/alice", json={"name": name})
        assert response.status_code == 422, (name, response.text)
    for name in ["a/../b", "a/./b", "a/.."]:
        response = alice.post("/v2/packages/alice", json={"name": name, "type": "npm"})
        assert (response.status_code, response.json()["code"]) == (422, "invalid-package-name")
    for registry in ["docker.io:99999", "docker.io:0", "docker.io:065536"]:
        body = {"name": "org/app", "type": "docker", "backend_registry": registry}
        response = alice.post("/v2/packages/alice", json=body)
        expect(response, 422, "backend-registry-has-invalid-characters")
    route = {
        "name": "tool",
        "type": "file",
        "incoming_path": "/t.tgz",
        "outgoing_url": "https://x:0/t.tgz",
    }
    expect(alice.post("/v2/packages/alice", json=route), 422, "outgoing-url-must-be-absolute")
    empty = {"name": "org/app", "type": "docker", "backend_registry": "docker.io", "domain": ""}
    expect(alice.post("/v2/packages/alice", json=empty), 422, "public-domain-is-empty")
    for website in ["javascript:alert(1)", "data:text/html,hi"]:
        body = {"name": "left-pad", "type": "npm", "website": website}
        response = alice.post("/v2/packages/alice", json=body)
        assert (response.status_code, response.json()["code"]) == (422, "invalid-website")
    assert expect(alice.get("/v2/packages/alice"), 200)["results"] == []
    kept = {"name": "left-pad", "type": "npm", "website": "localhost:8080/docs"}
    assert expect(alice.post("/v2/packages/alice", json=kept), 201)["website"] == kept["website"]


def test_an_update_keeps_a_website_an_older_version_accepted(server: Server) -> None:
    """An older eventport took any text as a website; after the upgrade, an update that
    leaves the website out keeps it and succeeds (it failed with invalid-website, about a
    field the client never sent); one that changes it is checked as on create."""
    alice = server.user("alice")
    package = expect(alice.post("/v2/packages/alice", json={"name": "old", "type": "npm"}), 201)
    with server.control.session() as s:  # as the older version stored it
        stored = s.get(models.Package, package["id"])
        assert stored is not None
        stored.website = "javascript:alert(1)"
    path = f"/v2/packages/alice/{package['id']}"
    changed = {"name": "old", "type": "npm", "short_description": "changed"}
    updated = expect(alice.put(path, json=changed), 200)
    assert (updated["short_description"], updated["website"]) == ("changed", "javascript:alert(1)")
    fixed = expect(alice.put(path, json={**changed, "website": "https://example.com"}), 200)
    assert fixed["website"] == "https://example.com"


def test_only_the_namespace_s_owners_and_admins_block_or_unblock(server: Server) -> None:
    """A package's admin grant lets its holder grant and revoke access, but not block (an
    outsider holding it blocked an organization's admin out of the package, who could then
    neither see nor undo it) nor lift a block the organization set."""
    alice, bob, dave = server.user("alice"), server.user("bob"), server.user("dave")
    carol = server.user("carol")
    create_org(alice, "acme")
    for name, role in (("bob", "admin"), ("carol", "member")):
        member = {"username": name, "role": role}
        expect(alice.post("/v2/organizations/acme/members", json=member), 201)
    package = create_package(alice, "acme", "acme-cli")
    v1 = f"/api/v1/packages/{package['id']}/permissions"
    url = f"/v2/packages/acme/{package['id']}"

    def grant(client: Any, user: str, level: str) -> Any:
        return client.post(v1, json={"userQuery": user, "permissionLevel": level})

    def answered(response: Any, status: int, words: str = "") -> None:  # v1: not Scarf's v2
        assert response.status_code == status, response.text
        assert words in response.text

    answered(grant(alice, "dave", "admin"), 200)  # dave is no member of acme
    answered(grant(dave, "bob", "blocked"), 403, "may block")
    expect(bob.get(url), 200)  # bob still sees it
    answered(grant(dave, "carol", "admin"), 200)  # granting stays open to the grant's holder
    answered(grant(alice, "carol", "blocked"), 200)
    answered(grant(dave, "carol", "default"), 403, "lift a block")
    answered(dave.delete(f"{url}/permissions/carol"), 403, "lift a block")
    expect(carol.get(url), 404)  # still blocked
    answered(grant(bob, "carol", "default"), 200)  # the organization's admin may
    expect(carol.get(url), 200)


def test_deleting_a_package_deletes_its_pixels(server: Server) -> None:
    """A pixel attached to a deleted package went free, and with it the events it recorded as
    the package's, to users the package was kept from (one blocked on it got the pixel, its
    past events and the right to change it)."""
    alice, bob = server.user("alice"), server.user("bob")
    create_org(alice, "acme")
    expect(
        alice.post("/v2/organizations/acme/members", json={"username": "bob", "role": "admin"}), 201
    )
    package = create_package(alice, "acme", "secret-cli")
    pixel = expect(
        alice.post(
            "/v2/tracking-pixels/acme", json={"name": "secret", "package_id": package["id"]}
        ),
        201,
    )
    block = {"userQuery": "bob", "permissionLevel": "blocked"}
    assert (
        alice.post(f"/api/v1/packages/{package['id']}/permissions", json=block).status_code == 200
    )
    expect(bob.get(f"/v2/tracking-pixels/acme/{pixel['id']}"), 404)
    expect(alice.delete(f"/v2/packages/acme/{package['id']}"), 204)
    expect(bob.get(f"/v2/tracking-pixels/acme/{pixel['id']}"), 404)
    expect(alice.get(f"/v2/tracking-pixels/acme/{pixel['id']}"), 404)
    assert expect(alice.get("/v2/tracking-pixels/acme"), 200)["results"] == []


@pytest.mark.parametrize("spelled", [str.upper, lambda i: i.replace("-", ""), "{{{}}}".format])
def test_a_token_is_revoked_by_its_id_however_spelled(server: Server, spelled: Any) -> None:
    """Only the id exactly as printed was found; another spelling was "no token with id"
    (an operations hunt)."""
    with server.control.session() as s:
        accounts.create_user(s, "tokened", "tokened@example.com")
        row, _ = accounts.issue_token(s, "tokened")
        revoked = accounts.revoke_token(s, spelled(row.id))
        assert (revoked.id, revoked.revoked_at is not None) == (row.id, True)
        with pytest.raises(NotFound, match="no token with id"):
            accounts.revoke_token(s, "not-a-token")
