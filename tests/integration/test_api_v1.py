"""Scarf's v1 management API under /api/v1, with the paths and JSON fields of seed 002.

Every test runs against a live server on SQLite and on PostgreSQL (see ``tests/conftest.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import Server

ORGANIZATION_FIELDS = {"name", "description", "website", "billingEmail", "createdAt", "updatedAt"}
MEMBER_FIELDS = {"organizationName", "username", "role"}
PACKAGE_FIELDS = {
    "uuid",
    "owner",
    "name",
    "shortDescription",
    "createdAt",
    "longDescription",
    "website",
    "libraryType",
}
PERMISSION_FIELDS = {"username", "permissionLevel"}
ROUTE_FIELDS = {"id", "outgoingUrl", "templatePath"}
DOMAIN_FIELDS = {"id", "name"}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: " + (
        response.text
    )
    return response.json() if response.content else None


def failed(response: httpx.Response, status: int, fragment: str) -> dict[str, Any]:
    """An error answer: the status, and a JSON message that says what was wrong."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["message"], str)
    assert fragment.lower() in body["message"].lower(), body
    return body


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def organization_body(name: str = "acme", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": "Acme developer tools",
        "billingEmail": "billing@acme.example",
        **extra,
    }


def package_body(name: str, library_type: str | None = "npm", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "shortDescription": f"the {name} package", **extra}
    if library_type is not None:
        body["libraryType"] = library_type
    return body


def make_org(client: httpx.Client, name: str = "acme") -> dict[str, Any]:
    body: dict[str, Any] = ok(client.post("/api/v1/organizations", json=organization_body(name)))
    return body


def add_member(client: httpx.Client, org: str, username: str, role: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(
        client.post(f"/api/v1/{org}/users", json={"username": username, "role": role})
    )
    return body


def make_package(client: httpx.Client, body: dict[str, Any], org: str | None = None) -> Any:
    path = f"/api/v1/{org}/packages" if org else "/api/v1/packages"
    return ok(client.post(path, json=body))


# --- organizations ---------------------------------------------------------------------------


def test_organization_create_get_and_rename(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    created = ok(
        alice.post(
            "/api/v1/organizations",
            json=organization_body(website="https://acme.example"),
        )
    )
    assert set(created) == ORGANIZATION_FIELDS
    assert created["name"] == "acme"
    assert created["description"] == "Acme developer tools"
    assert created["website"] == "https://acme.example"
    assert created["billingEmail"] == "billing@acme.example"
    assert parse_time(created["updatedAt"]) >= parse_time(created["createdAt"])

    assert ok(alice.get("/api/v1/organizations/acme")) == created
    # The creator is the owner, and the only member.
    assert ok(alice.get("/api/v1/acme/users")) == [
        {"organizationName": "acme", "username": "alice", "role": "owner"}
    ]
    # Someone outside the organization does not learn that it exists.
    failed(bob.get("/api/v1/organizations/acme"), 404, "not found")
    failed(bob.put("/api/v1/organizations/acme", json=organization_body()), 404, "not found")

    updated = ok(
        alice.put(
            "/api/v1/organizations/acme",
            json={
                "name": "acme-labs",
                "description": "Renamed",
                "billingEmail": "Money@Acme.example",
            },
        )
    )
    assert set(updated) == ORGANIZATION_FIELDS
    assert updated["name"] == "acme-labs"
    assert updated["description"] == "Renamed"
    assert updated["website"] == "https://acme.example"  # left out, so kept
    assert updated["billingEmail"] == "money@acme.example"
    assert updated["createdAt"] == created["createdAt"]
    assert parse_time(updated["updatedAt"]) >= parse_time(created["updatedAt"])
    # null clears the website.
    body = organization_body("acme-labs", description="Renamed", website=None)
    body["billingEmail"] = "Money@Acme.example"
    updated = ok(alice.put("/api/v1/organizations/acme-labs", json=body))
    assert updated["website"] is None

    failed(alice.get("/api/v1/organizations/acme"), 404, "acme")
    assert ok(alice.get("/api/v1/organizations/acme-labs")) == updated
    assert ok(alice.get("/api/v1/acme-labs/users")) == [
        {"organizationName": "acme-labs", "username": "alice", "role": "owner"}
    ]
    # The old name is free again; taken names (users or organizations) are not.
    assert ok(bob.post("/api/v1/organizations", json=organization_body("acme")))["name"] == "acme"
    failed(bob.post("/api/v1/organizations", json=organization_body("alice")), 422, "taken")
    failed(
        alice.put("/api/v1/organizations/acme-labs", json=organization_body("acme")),
        422,
        "already taken",
    )


def test_member_cannot_update_organization(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    make_org(alice)
    add_member(alice, "acme", "bob", "member")
    assert ok(bob.get("/api/v1/organizations/acme"))["name"] == "acme"
    failed(bob.put("/api/v1/organizations/acme", json=organization_body()), 403, "acme")
    add_member(alice, "acme", "bob", "admin")
    renamed = ok(bob.put("/api/v1/organizations/acme", json=organization_body(description="x")))
    assert renamed["description"] == "x"


def test_organization_packages(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    make_org(alice)
    created = make_package(alice, package_body("widget"), org="acme")
    assert set(created) == PACKAGE_FIELDS
    assert created["owner"] == "acme"
    assert created["libraryType"] == "npm"
    make_package(alice, package_body("personal"))  # alice's own: not the organization's

    listed = ok(alice.get("/api/v1/organizations/acme/packages"))
    assert listed == [created]

    # An outsider sees neither the list nor may create in it.
    failed(bob.get("/api/v1/organizations/acme/packages"), 404, "acme")
    failed(bob.post("/api/v1/acme/packages", json=package_body("sneaky")), 404, "acme")
    # A plain member reads but may not create; an admin may.
    add_member(alice, "acme", "bob", "member")
    assert [p["name"] for p in ok(bob.get("/api/v1/organizations/acme/packages"))] == ["widget"]
    failed(bob.post("/api/v1/acme/packages", json=package_body("sneaky")), 403, "acme")
    add_member(alice, "acme", "bob", "admin")
    made = make_package(bob, package_body("gadget", "pypi"), org="acme")
    assert (made["owner"], made["libraryType"]) == ("acme", "pypi")
    names = [p["name"] for p in ok(alice.get("/api/v1/organizations/acme/packages"))]
    assert names == ["gadget", "widget"]
    failed(alice.get("/api/v1/organizations/nowhere/packages"), 404, "nowhere")


# --- members ---------------------------------------------------------------------------------


def test_members_roles_and_last_owner(server: Server) -> None:
    alice, bob, carol = server.user("alice"), server.user("bob"), server.user("carol")
    server.user("dave")
    make_org(alice)

    member = add_member(alice, "acme", "bob", "member")
    assert set(member) == MEMBER_FIELDS
    assert member == {"organizationName": "acme", "username": "bob", "role": "member"}
    add_member(alice, "acme", "carol", "admin")
    assert ok(alice.get("/api/v1/acme/users")) == [
        {"organizationName": "acme", "username": "alice", "role": "owner"},
        {"organizationName": "acme", "username": "bob", "role": "member"},
        {"organizationName": "acme", "username": "carol", "role": "admin"},
    ]
    # Upsert: posting an existing member changes the role.
    assert add_member(alice, "acme", "bob", "admin")["role"] == "admin"
    assert add_member(alice, "acme", "bob", "member")["role"] == "member"

    # A member reads the list but changes nothing; an admin adds members but not owners.
    assert len(ok(bob.get("/api/v1/acme/users"))) == 3
    failed(
        bob.post("/api/v1/acme/users", json={"username": "dave", "role": "member"}), 403, "may not"
    )
    assert add_member(carol, "acme", "dave", "member")["username"] == "dave"
    failed(
        carol.post("/api/v1/acme/users", json={"username": "dave", "role": "owner"}),
        403,
        "owner",
    )
    failed(carol.delete("/api/v1/acme/users/alice"), 403, "acme")

    # The last owner can be neither demoted nor removed.
    failed(
        alice.post("/api/v1/acme/users", json={"username": "alice", "role": "admin"}),
        422,
        "last owner",
    )
    failed(alice.delete("/api/v1/acme/users/alice"), 422, "last owner")
    # With a second owner, the first may step down and then leave.
    add_member(alice, "acme", "bob", "owner")
    assert add_member(alice, "acme", "alice", "admin")["role"] == "admin"
    ok(alice.delete("/api/v1/acme/users/alice"), 204)
    failed(alice.get("/api/v1/acme/users"), 404, "acme")
    assert [m["username"] for m in ok(bob.get("/api/v1/acme/users"))] == ["bob", "carol", "dave"]

    ok(bob.delete("/api/v1/acme/users/dave"), 204)
    failed(bob.delete("/api/v1/acme/users/dave"), 404, "not a member")
    failed(
        bob.post("/api/v1/acme/users", json={"username": "nobody", "role": "member"}),
        422,
        "nobody",
    )
    roles = {m["username"]: m["role"] for m in ok(bob.get("/api/v1/acme/users"))}
    assert roles == {"bob": "owner", "carol": "admin"}


# --- packages --------------------------------------------------------------------------------


def test_package_crud(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    created = make_package(
        alice,
        package_body(
            "left-pad",
            longDescription="Pads strings on the left.",
            website="https://left-pad.example",
        ),
    )
    assert set(created) == PACKAGE_FIELDS
    assert created["owner"] == "alice"
    assert created["name"] == "left-pad"
    assert created["shortDescription"] == "the left-pad package"
    assert created["longDescription"] == "Pads strings on the left."
    assert created["website"] == "https://left-pad.example"
    assert created["libraryType"] == "npm"
    parse_time(created["createdAt"])
    uuid = created["uuid"]

    assert ok(alice.get(f"/api/v1/packages/{uuid}")) == created
    assert ok(alice.get("/api/v1/packages/left-pad")) == created
    assert ok(alice.get("/api/v1/packages")) == [created]
    # Another user neither sees nor finds it, by uuid or by name.
    assert ok(bob.get("/api/v1/packages")) == []
    failed(bob.get(f"/api/v1/packages/{uuid}"), 404, "not found")
    failed(bob.get("/api/v1/packages/left-pad"), 404, "not found")
    failed(bob.put(f"/api/v1/packages/{uuid}", json=package_body("left-pad")), 404, "not found")
    failed(bob.delete(f"/api/v1/packages/{uuid}"), 404, "not found")

    # libraryType may be omitted or repeated, never changed.
    updated = ok(
        alice.put(
            f"/api/v1/packages/{uuid}",
            json={"name": "left-pad", "shortDescription": "Left padding", "website": None},
        )
    )
    assert updated["uuid"] == uuid
    assert updated["shortDescription"] == "Left padding"
    # A field left out keeps its value; null clears it.
    assert updated["longDescription"] == "Pads strings on the left."
    assert updated["website"] is None
    assert updated["libraryType"] == "npm"
    assert updated["createdAt"] == created["createdAt"]
    body = {"name": "left-pad", "shortDescription": "t", "longDescription": None}
    assert ok(alice.put(f"/api/v1/packages/{uuid}", json=body))["longDescription"] is None
    renamed = ok(alice.put(f"/api/v1/packages/{uuid}", json=package_body("right-pad", "npm")))
    assert renamed["name"] == "right-pad"
    failed(
        alice.put(f"/api/v1/packages/{uuid}", json=package_body("right-pad", "pypi")),
        422,
        "libraryType cannot change",
    )
    assert ok(alice.get(f"/api/v1/packages/{uuid}"))["libraryType"] == "npm"

    ok(alice.delete(f"/api/v1/packages/{uuid}"), 204)
    failed(alice.get(f"/api/v1/packages/{uuid}"), 404, "not found")
    failed(alice.delete(f"/api/v1/packages/{uuid}"), 404, "not found")
    assert ok(alice.get("/api/v1/packages")) == []


def test_package_defaults_to_other_and_accepts_every_library_type(server: Server) -> None:
    alice = server.user("alice")
    plain = make_package(alice, package_body("thing", None))
    assert plain["libraryType"] == "other"
    assert plain["longDescription"] is None
    assert plain["website"] is None
    for kind in ("npm", "hackage", "pypi", "other", "file"):
        assert make_package(alice, package_body(f"{kind}-pkg", kind))["libraryType"] == kind
    docker = make_package(
        alice, package_body("image", "docker", backendUrl="https://registry.example/org/image")
    )
    assert docker["libraryType"] == "docker"
    listed = ok(alice.get("/api/v1/packages"))
    assert sorted(p["libraryType"] for p in listed) == sorted(
        ["other", "npm", "hackage", "pypi", "other", "file", "docker"]
    )


def test_list_covers_own_organization_and_granted_packages(server: Server) -> None:
    alice, bob, carol = server.user("alice"), server.user("bob"), server.user("carol")
    make_org(alice)
    add_member(alice, "acme", "bob", "member")
    mine = make_package(bob, package_body("bobs"))
    orgs = make_package(alice, package_body("acmes"), org="acme")
    alices = make_package(alice, package_body("alices"))
    carols = make_package(carol, package_body("carols"))
    ok(
        carol.post(
            f"/api/v1/packages/{carols['uuid']}/permissions",
            json={"userQuery": "bob", "permissionLevel": "member"},
        )
    )
    listed = {p["uuid"] for p in ok(bob.get("/api/v1/packages"))}
    assert listed == {mine["uuid"], orgs["uuid"], carols["uuid"]}
    assert alices["uuid"] not in listed


def test_get_by_name_disambiguates_with_package_type(server: Server) -> None:
    alice = server.user("alice")
    npm = make_package(alice, package_body("tool", "npm"))
    pypi = make_package(alice, package_body("tool", "pypi"))
    assert npm["uuid"] != pypi["uuid"]
    failed(alice.get("/api/v1/packages/tool"), 422, "packageType")
    assert ok(alice.get("/api/v1/packages/tool", params={"packageType": "npm"})) == npm
    assert ok(alice.get("/api/v1/packages/tool", params={"packageType": "pypi"})) == pypi
    failed(alice.get("/api/v1/packages/tool", params={"packageType": "docker"}), 404, "tool")
    failed(alice.get("/api/v1/packages/tool", params={"packageType": "cargo"}), 400, "packageType")
    # Once one is gone the name alone is enough again.
    ok(alice.delete(f"/api/v1/packages/{npm['uuid']}"), 204)
    assert ok(alice.get("/api/v1/packages/tool")) == pypi


@pytest.mark.parametrize("name", ["routes", "domains", "permissions", "tool"])
def test_a_scoped_npm_package_is_found_by_name(server: Server, name: str) -> None:
    """ "@acme/routes" (its %2F decoded before routing) was taken for the routes of a package
    "@acme": 404 (a compatibility hunt)."""
    alice = server.user("alice")
    scoped = make_package(alice, package_body(f"@acme/{name}", "npm"))
    for path in (f"/api/v1/packages/@acme/{name}", f"/api/v1/packages/%40acme%2F{name}"):
        assert ok(alice.get(path)) == scoped
        assert ok(alice.get(path, params={"packageType": "npm"})) == scoped
    failed(server.user("bob").get(f"/api/v1/packages/@acme/{name}"), 404, "not found")


def test_the_package_list_with_a_trailing_slash_is_redirected(server: Server) -> None:
    """As every route's trailing slash is; it was a 404 "package '' not found" (a compatibility
    hunt)."""
    alice = server.user("alice")
    make_package(alice, package_body("tool", "npm"))
    response = alice.get("/api/v1/packages/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"].endswith("/api/v1/packages")
    assert [p["name"] for p in ok(alice.get("/api/v1/packages/", follow_redirects=True))] == [
        "tool"
    ]


def test_docker_urls(server: Server) -> None:
    alice = server.user("alice")
    created = make_package(
        alice,
        package_body(
            "app",
            "docker",
            backendUrl="https://registry.example.com/acme/app",
            publicUrl="https://docker.acme.example/acme/app",
        ),
    )
    assert created["libraryType"] == "docker"
    # The backend URL becomes the v2 registry and repository; the public host a domain.
    v2 = ok(alice.get(f"/v2/packages/alice/{created['uuid']}"))
    assert v2["type"] == "docker"
    assert v2["backend_registry"] == "registry.example.com"
    assert v2["repository_name"] == "acme/app"
    domains = ok(alice.get(f"/api/v1/packages/{created['uuid']}/domains"))
    assert [d["name"] for d in domains] == ["docker.acme.example"]
    # An update without backendUrl keeps it; a new one replaces it.
    ok(alice.put(f"/api/v1/packages/{created['uuid']}", json=package_body("app", "docker")))
    assert ok(alice.get(f"/v2/packages/alice/{created['uuid']}"))["repository_name"] == "acme/app"
    ok(
        alice.put(
            f"/api/v1/packages/{created['uuid']}",
            json=package_body("app", "docker", backendUrl="https://ghcr.example:5000/acme/app2"),
        )
    )
    v2 = ok(alice.get(f"/v2/packages/alice/{created['uuid']}"))
    assert (v2["backend_registry"], v2["repository_name"]) == ("ghcr.example:5000", "acme/app2")


@pytest.mark.parametrize(
    ("urls", "fragment"),
    [
        pytest.param({}, "needs backendUrl", id="no-backendUrl"),
        pytest.param({"backendUrl": "https://registry.example"}, "path component", id="no-path"),
        pytest.param({"backendUrl": "https://registry.example/"}, "path component", id="slash"),
        pytest.param(
            {"backendUrl": "https://registry.example/Acme/app"}, "'Acme'", id="uppercase-part"
        ),
        pytest.param(
            {"backendUrl": "https://registry.example/acme/-app"}, "'-app'", id="leading-dash"
        ),
        pytest.param({"backendUrl": "https://registry.example/a..b"}, "'a..b'", id="double-dot"),
        pytest.param({"backendUrl": "https://registry.example/a//b"}, "''", id="empty-part"),
        pytest.param({"backendUrl": "https:///acme/app"}, "not a valid URL", id="no-host"),
        pytest.param({"backendUrl": "https://bad host/acme"}, "not a valid URL", id="space"),
        pytest.param(
            {"backendUrl": "https://registry.example:99999/acme"}, "valid URL", id="bad-port"
        ),
        pytest.param(
            {
                "backendUrl": "https://registry.example/acme/app",
                "publicUrl": "https://docker.acme.example/acme/other",
            },
            "must match backendUrl",
            id="public-path-differs",
        ),
        pytest.param(
            {
                "backendUrl": "https://registry.example/acme/app",
                "publicUrl": "https://docker.acme.example",
            },
            "publicUrl must have at least one path component",
            id="public-no-path",
        ),
    ],
)
def test_docker_url_rules(server: Server, urls: dict[str, str], fragment: str) -> None:
    alice = server.user("alice")
    body = failed(
        alice.post("/api/v1/packages", json=package_body("app", "docker", **urls)), 422, fragment
    )
    assert body["code"].startswith("invalid-")
    assert ok(alice.get("/api/v1/packages")) == []


# --- permissions -----------------------------------------------------------------------------


def test_permissions_block_an_organization_member(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    make_org(alice)
    add_member(alice, "acme", "bob", "member")
    package = make_package(alice, package_body("secret"), org="acme")
    uuid = package["uuid"]
    assert ok(alice.get(f"/api/v1/packages/{uuid}/permissions")) == []
    assert ok(bob.get(f"/api/v1/packages/{uuid}"))["name"] == "secret"

    answer = ok(
        alice.post(
            f"/api/v1/packages/{uuid}/permissions",
            json={"userQuery": "bob", "permissionLevel": "blocked"},
        )
    )
    assert answer == [{"username": "bob", "permissionLevel": "blocked"}]
    assert all(set(p) == PERMISSION_FIELDS for p in answer)
    assert ok(alice.get(f"/api/v1/packages/{uuid}/permissions")) == answer

    # Blocked: the package is gone for bob, everywhere, though he is still a member.
    failed(bob.get(f"/api/v1/packages/{uuid}"), 404, "not found")
    failed(bob.get("/api/v1/packages/secret"), 404, "not found")
    failed(bob.get(f"/api/v1/packages/{uuid}/permissions"), 404, "not found")
    failed(bob.get(f"/v2/packages/acme/{uuid}"), 404, "not found")
    assert ok(bob.get("/api/v1/packages")) == []
    assert ok(bob.get("/api/v1/organizations/acme/packages")) == []
    assert ok(bob.get("/api/v1/organizations/acme"))["name"] == "acme"
    # The owner cannot be blocked out of the organization's package.
    failed(
        alice.post(
            f"/api/v1/packages/{uuid}/permissions",
            json={"userQuery": "alice@example.com", "permissionLevel": "blocked"},
        ),
        422,
        "owner",
    )

    # "default" removes the explicit permission: membership applies again.
    answer = ok(
        alice.post(
            f"/api/v1/packages/{uuid}/permissions",
            json=[{"userQuery": "bob@example.com", "permissionLevel": "default"}],
        )
    )
    assert answer == []
    assert ok(bob.get(f"/api/v1/packages/{uuid}"))["uuid"] == uuid


def test_permissions_admin_lets_a_non_member_manage(server: Server) -> None:
    alice, dave, erin = server.user("alice"), server.user("dave"), server.user("erin")
    server.user("frank")
    make_org(alice)
    package = make_package(alice, package_body("files", "file"), org="acme")
    uuid = package["uuid"]
    failed(dave.get(f"/api/v1/packages/{uuid}"), 404, "not found")

    # An array sets several at once; users are found by email or by username.
    answer = ok(
        alice.post(
            f"/api/v1/packages/{uuid}/permissions",
            json=[
                {"userQuery": "dave@example.com", "permissionLevel": "admin"},
                {"userQuery": "erin", "permissionLevel": "member"},
            ],
        )
    )
    assert answer == [
        {"username": "dave", "permissionLevel": "admin"},
        {"username": "erin", "permissionLevel": "member"},
    ]

    # dave, an admin of the package only, manages it without seeing the organization.
    assert [p["uuid"] for p in ok(dave.get("/api/v1/packages"))] == [uuid]
    updated = ok(
        dave.put(
            f"/api/v1/packages/{uuid}", json=package_body("files", "file", shortDescription="new")
        )
    )
    assert updated["shortDescription"] == "new"
    route = ok(
        dave.post(
            f"/api/v1/packages/{uuid}/routes",
            json={"outgoingUrl": "https://cdn.example/{v}.tgz", "templatePath": "/get/{v}"},
        )
    )
    assert route["templatePath"] == "/get/{v}"
    granted = ok(
        dave.post(
            f"/api/v1/packages/{uuid}/permissions",
            json={"userQuery": "frank", "permissionLevel": "member"},
        )
    )
    assert {p["username"] for p in granted} == {"dave", "erin", "frank"}
    failed(dave.get("/api/v1/organizations/acme"), 404, "acme")
    # The organization's list shows him the package he holds a grant on (as v2's does),
    # and nothing else of it; someone with no grant gets 404.
    assert [p["uuid"] for p in ok(dave.get("/api/v1/organizations/acme/packages"))] == [uuid]
    failed(server.user("gina").get("/api/v1/organizations/acme/packages"), 404, "acme")

    # erin, a package member, reads but may not change it.
    assert ok(erin.get(f"/api/v1/packages/{uuid}"))["shortDescription"] == "new"
    assert len(ok(erin.get(f"/api/v1/packages/{uuid}/routes"))) == 1
    failed(erin.put(f"/api/v1/packages/{uuid}", json=package_body("files")), 403, "may not")
    failed(
        erin.post(
            f"/api/v1/packages/{uuid}/permissions",
            json={"userQuery": "erin", "permissionLevel": "admin"},
        ),
        403,
        "may not",
    )
    failed(erin.delete(f"/api/v1/packages/{uuid}/routes/{route['id']}"), 403, "may not")
    failed(erin.delete(f"/api/v1/packages/{uuid}"), 403, "may not")


def test_permission_body_errors_change_nothing(server: Server) -> None:
    alice = server.user("alice")
    server.user("bob")
    uuid = make_package(alice, package_body("lib"))["uuid"]
    failed(
        alice.post(
            f"/api/v1/packages/{uuid}/permissions",
            json=[
                {"userQuery": "bob", "permissionLevel": "member"},
                {"userQuery": "ghost@example.com", "permissionLevel": "member"},
            ],
        ),
        422,
        "ghost@example.com",
    )
    assert ok(alice.get(f"/api/v1/packages/{uuid}/permissions")) == []
    failed(
        alice.post(
            f"/api/v1/packages/{uuid}/permissions",
            json={"userQuery": "bob", "permissionLevel": "owner"},
        ),
        400,
        "permissionLevel",
    )


# --- file-package routes and domains ---------------------------------------------------------


def test_file_package_routes(server: Server) -> None:
    alice = server.user("alice")
    uuid = make_package(alice, package_body("downloads", "file"))["uuid"]
    assert ok(alice.get(f"/api/v1/packages/{uuid}/routes")) == []
    first = ok(
        alice.post(
            f"/api/v1/packages/{uuid}/routes",
            json={
                "outgoingUrl": "https://github.example/releases/{version}/tool-{version}.tgz",
                "templatePath": "/tool/{version}.tgz",
            },
        )
    )
    assert set(first) == ROUTE_FIELDS
    assert first["outgoingUrl"] == "https://github.example/releases/{version}/tool-{version}.tgz"
    assert first["templatePath"] == "/tool/{version}.tgz"
    second = ok(
        alice.post(
            f"/api/v1/packages/{uuid}/routes",
            json={"outgoingUrl": "https://static.example/logo.png", "templatePath": "/logo.png"},
        )
    )
    assert ok(alice.get(f"/api/v1/packages/{uuid}/routes")) == [first, second]
    failed(
        alice.post(
            f"/api/v1/packages/{uuid}/routes",
            json={"outgoingUrl": "https://elsewhere.example/x", "templatePath": "/logo.png"},
        ),
        422,
        "already has a route",
    )
    failed(
        alice.post(
            f"/api/v1/packages/{uuid}/routes",
            json={"outgoingUrl": "https://x.example/{name}", "templatePath": "/files/{version}"},
        ),
        422,
        "{name}",
    )

    ok(alice.delete(f"/api/v1/packages/{uuid}/routes/{first['id']}"), 204)
    assert ok(alice.get(f"/api/v1/packages/{uuid}/routes")) == [second]
    failed(alice.delete(f"/api/v1/packages/{uuid}/routes/{first['id']}"), 404, "route")

    # Routes belong to file packages only, and to the package they were made in.
    other = make_package(alice, package_body("lib", "npm"))["uuid"]
    failed(
        alice.post(
            f"/api/v1/packages/{other}/routes",
            json={"outgoingUrl": "https://x.example/a", "templatePath": "/a"},
        ),
        422,
        "file packages",
    )
    failed(alice.delete(f"/api/v1/packages/{other}/routes/{second['id']}"), 422, "file packages")
    other_files = make_package(alice, package_body("more", "file"))["uuid"]
    failed(alice.delete(f"/api/v1/packages/{other_files}/routes/{second['id']}"), 404, "route")
    assert ok(alice.get(f"/api/v1/packages/{uuid}/routes")) == [second]


def test_package_domains(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    uuid = make_package(alice, package_body("downloads", "file"))["uuid"]
    assert ok(alice.get(f"/api/v1/packages/{uuid}/domains")) == []
    first = ok(alice.post(f"/api/v1/packages/{uuid}/domains", json={"name": "dl.example.com"}))
    assert set(first) == DOMAIN_FIELDS
    assert first["name"] == "dl.example.com"
    second = ok(alice.post(f"/api/v1/packages/{uuid}/domains", json={"name": "get.example.com"}))
    assert ok(alice.get(f"/api/v1/packages/{uuid}/domains")) == [first, second]

    # A domain name is unique across every package and owner.
    bobs = make_package(bob, package_body("mirror", "file"))["uuid"]
    failed(
        bob.post(f"/api/v1/packages/{bobs}/domains", json={"name": "dl.example.com"}),
        422,
        "already in use",
    )
    failed(bob.get(f"/api/v1/packages/{uuid}/domains"), 404, "not found")
    failed(bob.delete(f"/api/v1/packages/{uuid}/domains/{first['id']}"), 404, "not found")

    ok(alice.delete(f"/api/v1/packages/{uuid}/domains/{first['id']}"), 204)
    assert ok(alice.get(f"/api/v1/packages/{uuid}/domains")) == [second]
    failed(alice.delete(f"/api/v1/packages/{uuid}/domains/{first['id']}"), 404, "domain")
    # Freed, the name may be used again.
    assert ok(bob.post(f"/api/v1/packages/{bobs}/domains", json={"name": "dl.example.com"}))


def test_deleting_a_package_removes_its_routes_domains_and_permissions(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    uuid = make_package(alice, package_body("downloads", "file"))["uuid"]
    ok(alice.post(f"/api/v1/packages/{uuid}/domains", json={"name": "dl.example.com"}))
    ok(
        alice.post(
            f"/api/v1/packages/{uuid}/routes",
            json={"outgoingUrl": "https://x.example/a", "templatePath": "/a"},
        )
    )
    ok(
        alice.post(
            f"/api/v1/packages/{uuid}/permissions",
            json={"userQuery": "bob", "permissionLevel": "admin"},
        )
    )
    ok(alice.delete(f"/api/v1/packages/{uuid}"), 204)
    assert ok(bob.get("/api/v1/packages")) == []
    # The domain is free again.
    again = make_package(alice, package_body("downloads", "file"))["uuid"]
    assert ok(alice.post(f"/api/v1/packages/{again}/domains", json={"name": "dl.example.com"}))
    assert ok(alice.get(f"/api/v1/packages/{again}/routes")) == []
    assert ok(alice.get(f"/api/v1/packages/{again}/permissions")) == []


# --- v1 and v2 share one store ---------------------------------------------------------------


def test_v1_and_v2_are_the_same_data(server: Server) -> None:
    alice = server.user("alice")
    make_org(alice)
    made_in_v1 = make_package(
        alice,
        package_body("requests", "pypi", longDescription="HTTP for humans", website="https://r.io"),
        org="acme",
    )
    v2 = ok(alice.get(f"/v2/packages/acme/{made_in_v1['uuid']}"))
    assert v2["id"] == made_in_v1["uuid"]
    assert (v2["owner"], v2["name"], v2["type"]) == ("acme", "requests", "python")
    assert v2["short_description"] == made_in_v1["shortDescription"]
    assert v2["long_description"] == "HTTP for humans"
    assert v2["website"] == "https://r.io"
    assert v2["created_at"] == made_in_v1["createdAt"]
    assert ok(alice.get("/v2/packages/acme/python/requests"))["id"] == made_in_v1["uuid"]
    assert ok(alice.get("/v2/organizations/acme"))["name"] == "acme"

    made_in_v2 = ok(alice.post("/v2/packages/acme", json={"name": "flask", "type": "python"}), 201)
    as_v1 = ok(alice.get(f"/api/v1/packages/{made_in_v2['id']}"))
    assert (as_v1["owner"], as_v1["name"], as_v1["libraryType"]) == ("acme", "flask", "pypi")
    listed = ok(alice.get("/api/v1/organizations/acme/packages"))
    assert {p["name"] for p in listed} == {"requests", "flask"}

    # A change through one version shows through the other.
    ok(
        alice.put(
            f"/api/v1/packages/{made_in_v1['uuid']}",
            json=package_body("requests", "pypi", shortDescription="changed in v1"),
        )
    )
    assert ok(alice.get(f"/v2/packages/acme/{made_in_v1['uuid']}"))["short_description"] == (
        "changed in v1"
    )
    ok(alice.delete(f"/v2/packages/acme/{made_in_v2['id']}"), 204)
    failed(alice.get(f"/api/v1/packages/{made_in_v2['id']}"), 404, "not found")
    # Members added in v1 are members in v2.
    server.user("bob")
    add_member(alice, "acme", "bob", "admin")
    members = ok(alice.get("/v2/organizations/acme/members"))["results"]
    assert {(m["username"], m["role"]) for m in members} == {("alice", "owner"), ("bob", "admin")}


# --- rules a live probe found broken ---------------------------------------------------------


def test_a_name_shared_with_an_organizations_package_finds_the_callers_own(
    server: Server,
) -> None:
    """By name, the caller's own package wins over one an organization (or a grant) lets
    them see; where only an id can tell them apart, the error says so (it sent the client
    to ?packageType=, which answered the same error)."""
    alice, bob = server.user("alice"), server.user("bob")
    make_org(alice)
    add_member(alice, "acme", "bob", "admin")
    theirs = make_package(alice, package_body("pkg1", "file"), org="acme")
    mine = make_package(bob, package_body("pkg1", "file"))
    assert ok(bob.get("/api/v1/packages/pkg1"))["uuid"] == mine["uuid"]
    assert ok(bob.get("/api/v1/packages/pkg1?packageType=file"))["uuid"] == mine["uuid"]
    assert ok(alice.get("/api/v1/packages/pkg1"))["uuid"] == theirs["uuid"]
    make_org(alice, "beta")
    add_member(alice, "beta", "bob", "member")
    make_package(alice, package_body("pkg2", "file"), org="acme")
    make_package(alice, package_body("pkg2", "file"), org="beta")
    body = failed(bob.get("/api/v1/packages/pkg2?packageType=file"), 422, "use the package's id")
    assert body["code"] == "ambiguous-package-name"
    assert "acme, beta" in body["message"]


def test_an_owner_gets_no_lower_grant_than_ownership(server: Server) -> None:
    alice = server.user("alice")
    package = make_package(alice, package_body("pkg1"))
    grant = {"userQuery": "alice", "permissionLevel": "admin"}
    failed(alice.post(f"/api/v1/packages/{package['uuid']}/permissions", json=grant), 422, "owns")
    assert ok(alice.get(f"/api/v1/packages/{package['uuid']}/permissions")) == []


def test_docker_urls_are_checked_on_update_and_refused_for_other_types(server: Server) -> None:
    alice = server.user("alice")
    docker = package_body(
        "dimg",
        "docker",
        backendUrl="https://ghcr.io/alice/dimg",
        publicUrl="https://d.alice.example/alice/dimg",
    )
    created = make_package(alice, docker)
    url = f"/api/v1/packages/{created['uuid']}"
    moved = {**docker, "publicUrl": "https://d3.alice.example/other/path"}
    failed(alice.put(url, json=moved), 422, "must match")
    elsewhere = {**docker, "publicUrl": "https://d2.alice.example/alice/dimg"}
    failed(alice.put(url, json=elsewhere), 422, "add it with POST")
    ok(alice.post(f"{url}/domains", json={"name": "d2.alice.example"}))
    ok(alice.put(url, json=elsewhere))
    npm = package_body("left-pad", "npm", backendUrl="https://ghcr.io/alice/x")
    failed(alice.post("/api/v1/packages", json=npm), 422, "belong to docker packages")
