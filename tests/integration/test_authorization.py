"""The authorization matrix: every API route, every role, one expected answer each.

The world: organization ``acme`` (owner ``boss``, admin ``adm``, members ``mem``, ``mem2`` and
``blk``) owns an npm package and a file package, with a domain, a route and a tracking pixel.
``padm`` belongs to no organization but holds an explicit ``admin`` permission on both
packages; ``blk`` is an organization member whom both packages block; ``out`` has no relation
at all. A role that may not see a resource gets 404, one that sees it but may not change it
gets 403. ``test_every_route_has_a_row`` fails when a route is added without a row here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from eventport.api.app import create_app
from eventport.control import accounts, imports, packages, pixels
from eventport.control.accounts import OrganizationFields
from eventport.control.packages import PackageFields
from eventport.domain.access import OrgRole, PermissionLevel
from tests.conftest import Server
from tests.openapi_check import documented_statuses

ROLES = ("boss", "adm", "mem", "blk", "padm", "out", "anonymous")

OK, FORBIDDEN, HIDDEN = "ok", 403, 404
# Policy -> what each role gets. "ok" means the route's own success status.
POLICIES: dict[str, dict[str, Any]] = {
    "any-user": dict.fromkeys(ROLES[:-1], OK),
    "org-read": {"boss": OK, "adm": OK, "mem": OK, "blk": OK, "padm": HIDDEN, "out": HIDDEN},
    "org-admin": {
        "boss": OK,
        "adm": OK,
        "mem": FORBIDDEN,
        "blk": FORBIDDEN,
        "padm": HIDDEN,
        "out": HIDDEN,
    },
    "org-owner": {
        "boss": OK,
        "adm": FORBIDDEN,
        "mem": FORBIDDEN,
        "blk": FORBIDDEN,
        "padm": HIDDEN,
        "out": HIDDEN,
    },
    # Listing an owner's packages or pixels: members, and anyone holding a grant there.
    "owner-list": {"boss": OK, "adm": OK, "mem": OK, "blk": OK, "padm": OK, "out": HIDDEN},
    "package-read": {"boss": OK, "adm": OK, "mem": OK, "blk": HIDDEN, "padm": OK, "out": HIDDEN},
    "package-admin": {
        "boss": OK,
        "adm": OK,
        "mem": FORBIDDEN,
        "blk": HIDDEN,
        "padm": OK,
        "out": HIDDEN,
    },
    # An import is seen by whoever started it and by the owner's admins (the world's import
    # was started by boss).
    # A multi-artifact import: whoever may write some package or pixel of the owner.
    "owner-import": {
        "boss": OK,
        "adm": OK,
        "mem": FORBIDDEN,
        "blk": FORBIDDEN,
        "padm": OK,
        "out": HIDDEN,
    },
    "import-admin": {
        "boss": OK,
        "adm": OK,
        "mem": HIDDEN,
        "blk": HIDDEN,
        "padm": HIDDEN,
        "out": HIDDEN,
    },
    "self": {
        "boss": OK,
        "adm": HIDDEN,
        "mem": HIDDEN,
        "blk": HIDDEN,
        "padm": HIDDEN,
        "out": HIDDEN,
    },
}


@dataclass(frozen=True)
class Row:
    policy: str
    success: int
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    query: dict[str, str] | None = None


PKG = {"package_id": "{npm}"}
FILE = {"package_id": "{file}"}
ORG = {"owner": "acme"}
DATES = {"start_date": "2024-06-01", "end_date": "2024-07-01"}
DATES_V1 = {"startDate": "2024-06-01", "endDate": "2024-07-01"}
CSV_FILE = {"filename": "export"}


MATRIX: dict[tuple[str, str], Row] = {
    # --- v1 organizations
    ("POST", "/api/v1/organizations"): Row(
        "any-user",
        200,
        body={"name": "neworg-{role}", "description": "d", "billingEmail": "b@example.com"},
    ),
    ("GET", "/api/v1/organizations/{organization_name}"): Row("org-read", 200),
    ("PUT", "/api/v1/organizations/{organization_name}"): Row(
        "org-admin", 200, body={"name": "acme", "description": "new", "billingEmail": "b@acme.io"}
    ),
    # Like v2's list of an owner's packages: a grant's holder sees the packages granted.
    ("GET", "/api/v1/organizations/{organization_name}/packages"): Row("owner-list", 200),
    ("POST", "/api/v1/{organization_name}/packages"): Row(
        "org-admin", 200, body={"name": "made-in-v1", "shortDescription": "s", "libraryType": "npm"}
    ),
    ("GET", "/api/v1/{organization_name}/users"): Row("org-read", 200),
    ("POST", "/api/v1/{organization_name}/users"): Row(
        "org-admin", 200, body={"username": "newbie", "role": "member"}
    ),
    ("DELETE", "/api/v1/{organization_name}/users/{username}"): Row(
        "org-admin", 204, {"username": "mem2"}
    ),
    # --- v1 packages
    ("GET", "/api/v1/packages"): Row("any-user", 200),
    ("POST", "/api/v1/packages"): Row(
        "any-user", 200, body={"name": "mine", "shortDescription": "s", "libraryType": "npm"}
    ),
    ("GET", "/api/v1/packages/{package_ref}"): Row("package-read", 200, {"package_ref": "{npm}"}),
    # a scoped npm package by name ("@acme/routes": not the routes of a package "@acme")
    ("GET", "/api/v1/packages/{scope}/{name}"): Row(
        "package-read", 200, {"scope": "@acme", "name": "routes"}
    ),
    ("PUT", "/api/v1/packages/{package_ref}"): Row(
        "package-admin",
        200,
        {"package_ref": "{npm}"},
        body={"name": "widget", "shortDescription": "changed"},
    ),
    ("DELETE", "/api/v1/packages/{package_ref}"): Row(
        "package-admin", 204, {"package_ref": "{npm}"}
    ),
    ("GET", "/api/v1/packages/{package_id}/permissions"): Row("package-read", 200, PKG),
    ("POST", "/api/v1/packages/{package_id}/permissions"): Row(
        "package-admin", 200, PKG, body={"userQuery": "newbie", "permissionLevel": "member"}
    ),
    ("GET", "/api/v1/packages/{package_id}/routes"): Row("package-read", 200, FILE),
    ("POST", "/api/v1/packages/{package_id}/routes"): Row(
        "package-admin",
        200,
        FILE,
        body={"templatePath": "/v/{version}", "outgoingUrl": "https://x.example/{version}"},
    ),
    ("DELETE", "/api/v1/packages/{package_id}/routes/{route_id}"): Row("package-admin", 204, FILE),
    ("GET", "/api/v1/packages/{package_id}/domains"): Row("package-read", 200, PKG),
    ("POST", "/api/v1/packages/{package_id}/domains"): Row(
        "package-admin", 200, PKG, body={"name": "new.widget.example"}
    ),
    ("DELETE", "/api/v1/packages/{package_id}/domains/{domain_id}"): Row("package-admin", 204, PKG),
    # --- v1 data export (an owner's export covers the packages the caller may read: blk's is
    # empty; the pixel export covers every pixel the caller may read, of any owner)
    ("GET", "/api/v1/organizations/{organization_name}/aggregates"): Row(
        "owner-list", 200, query=DATES_V1
    ),
    ("GET", "/api/v1/users/{username}/aggregates"): Row(
        "self", 200, {"username": "boss"}, query=DATES_V1
    ),
    ("GET", "/api/v1/packages/{package_id}/events/{filename}.csv"): Row(
        "package-read", 200, {**PKG, **CSV_FILE}, query=DATES_V1
    ),
    ("GET", "/api/v1/pixels/events/{filename}.csv"): Row("any-user", 200, CSV_FILE, query=DATES_V1),
    # --- v2 packages
    ("GET", "/v2/packages/{owner}"): Row("owner-list", 200, ORG),
    ("POST", "/v2/packages/{owner}"): Row(
        "org-admin", 201, ORG, body={"name": "made-in-v2", "type": "npm"}
    ),
    ("GET", "/v2/packages/{owner}/{package_type}/{package_name}"): Row(
        "package-read", 200, {**ORG, "package_type": "npm", "package_name": "widget"}
    ),
    ("GET", "/v2/packages/{owner}/{package_id}"): Row("package-read", 200, {**ORG, **PKG}),
    ("PUT", "/v2/packages/{owner}/{package_id}"): Row(
        "package-admin", 200, {**ORG, **PKG}, body={"name": "widget", "type": "npm"}
    ),
    ("DELETE", "/v2/packages/{owner}/{package_id}"): Row("package-admin", 204, {**ORG, **PKG}),
    ("GET", "/v2/packages/{owner}/{package_id}/tracking-pixels"): Row(
        "package-read", 200, {**ORG, **PKG}
    ),
    ("GET", "/v2/packages/{owner}/{package_id}/domains"): Row("package-read", 200, {**ORG, **PKG}),
    ("POST", "/v2/packages/{owner}/{package_id}/domains"): Row(
        "package-admin", 201, {**ORG, **PKG}, body={"name": "v2.widget.example"}
    ),
    ("GET", "/v2/packages/{owner}/{package_id}/domains/{domain_id}"): Row(
        "package-read", 200, {**ORG, **PKG}
    ),
    ("DELETE", "/v2/packages/{owner}/{package_id}/domains/{domain_id}"): Row(
        "package-admin", 204, {**ORG, **PKG}
    ),
    ("GET", "/v2/packages/{owner}/{package_id}/routes"): Row("package-read", 200, {**ORG, **FILE}),
    ("POST", "/v2/packages/{owner}/{package_id}/routes"): Row(
        "package-admin",
        201,
        {**ORG, **FILE},
        body={"incoming_path": "/w/{v}", "outgoing_url": "https://x.example/{v}"},
    ),
    ("GET", "/v2/packages/{owner}/{package_id}/routes/{route_id}"): Row(
        "package-read", 200, {**ORG, **FILE}
    ),
    ("DELETE", "/v2/packages/{owner}/{package_id}/routes/{route_id}"): Row(
        "package-admin", 204, {**ORG, **FILE}
    ),
    ("GET", "/v2/packages/{owner}/{package_id}/permissions"): Row(
        "package-read", 200, {**ORG, **PKG}
    ),
    ("POST", "/v2/packages/{owner}/{package_id}/permissions"): Row(
        "package-admin",
        204,
        {**ORG, **PKG},
        body={"username": "newbie", "permission_level": "member"},
    ),
    ("DELETE", "/v2/packages/{owner}/{package_id}/permissions/{username}"): Row(
        "package-admin", 204, {**ORG, **PKG, "username": "grantee"}
    ),
    # --- v2 data export
    ("GET", "/v2/packages/{owner}/events"): Row("owner-list", 200, ORG, query=DATES),
    ("GET", "/v2/packages/{owner}/aggregates"): Row("owner-list", 200, ORG, query=DATES),
    ("GET", "/v2/packages/{owner}/{package_id}/events"): Row(
        "package-read", 200, {**ORG, **PKG}, query=DATES
    ),
    ("GET", "/v2/tracking-pixels/{owner}/events"): Row("owner-list", 200, ORG, query=DATES),
    # --- v2 tracking pixels (the pixel belongs to the npm package)
    ("GET", "/v2/tracking-pixels/{owner}"): Row("owner-list", 200, ORG),
    ("POST", "/v2/tracking-pixels/{owner}"): Row(
        "org-admin", 201, ORG, body={"name": "docs-{role}"}
    ),
    ("GET", "/v2/tracking-pixels/{owner}/{tracking_pixel_id}"): Row("package-read", 200, ORG),
    ("PUT", "/v2/tracking-pixels/{owner}/{tracking_pixel_id}"): Row(
        "package-admin", 200, ORG, body={"name": "renamed", "package_id": "{npm}"}
    ),
    ("DELETE", "/v2/tracking-pixels/{owner}/{tracking_pixel_id}"): Row("package-admin", 204, ORG),
    # --- v2 event import
    ("POST", "/v2/packages/{owner}/{package_id}/import"): Row(
        "package-admin", 200, {**ORG, **PKG}, body={"$time": "2024-06-04T00:00:00Z"}
    ),
    ("POST", "/v2/tracking-pixels/{owner}/{tracking_pixel_id}/import"): Row(
        "package-admin", 200, ORG, body={"$time": "2024-06-04T00:00:00Z"}
    ),
    ("POST", "/v2/{owner}/import"): Row(
        "owner-import", 200, ORG, body={"$time": "2024-06-04T00:00:00Z", "$package": "{npm}"}
    ),
    ("GET", "/v2/imports/{owner}"): Row("owner-list", 200, ORG),
    ("GET", "/v2/imports/{owner}/{event_import_id}"): Row("import-admin", 200, ORG),
    ("GET", "/v2/imports/{owner}/{event_import_id}/log"): Row("import-admin", 200, ORG),
    ("POST", "/v2/imports/{owner}/{event_import_id}/abort"): Row("import-admin", 204, ORG),
    # --- v2 event settings (eventport's own)
    ("GET", "/v2/{owner}/settings"): Row("org-read", 200, ORG),
    ("PATCH", "/v2/{owner}/settings"): Row(
        "org-admin", 200, ORG, body={"exclude_bots": False, "excluded_user_agents": ["curl/"]}
    ),
    # --- v2 organizations, members, users
    ("GET", "/v2/organizations/{organization_name}"): Row("org-read", 200),
    ("PUT", "/v2/organizations/{organization_name}"): Row(
        "org-admin", 200, body={"name": "acme", "billing_email": "b@acme.io"}
    ),
    ("GET", "/v2/organizations/{organization_name}/members"): Row("org-read", 200),
    ("POST", "/v2/organizations/{organization_name}/members"): Row(
        "org-admin", 201, body={"username": "newbie", "role": "member"}
    ),
    ("GET", "/v2/organizations/{organization_name}/members/{organization_member}"): Row(
        "org-read", 200
    ),
    ("PUT", "/v2/organizations/{organization_name}/members/{organization_member}"): Row(
        "org-admin", 200, body={"role": "admin"}
    ),
    ("DELETE", "/v2/organizations/{organization_name}/members/{organization_member}"): Row(
        "org-admin", 204
    ),
    # Public information (id, name, type, dates), as on Scarf: any signed-in user may look.
    ("GET", "/v2/users/{username}"): Row("any-user", 200, {"username": "boss"}),
    ("GET", "/v2/users/{username}/organizations"): Row("self", 200, {"username": "boss"}),
}

# Extra rows for the same routes where the body or the owner changes who may act: only owners
# grant ownership; a user's own settings are theirs alone.
EXTRA_ROWS: list[tuple[tuple[str, str], Row]] = [
    # A package's export also takes a tracking pixel's id (the world's pixel is the npm
    # package's, so it shares the package's access).
    (
        ("GET", "/v2/packages/{owner}/{package_id}/events"),
        Row("package-read", 200, {**ORG, "package_id": "{tracking_pixel_id}"}, query=DATES),
    ),
    (
        ("POST", "/v2/organizations/{organization_name}/members"),
        Row("org-owner", 201, body={"username": "newbie", "role": "owner"}),
    ),
    (
        ("POST", "/api/v1/{organization_name}/users"),
        Row("org-owner", 200, body={"username": "mem2", "role": "owner"}),
    ),
    (
        ("PUT", "/v2/organizations/{organization_name}/members/{organization_member}"),
        Row("org-owner", 200, body={"role": "owner"}),
    ),
    (("GET", "/v2/{owner}/settings"), Row("self", 200, {"owner": "boss"})),
    (
        ("PATCH", "/v2/{owner}/settings"),
        Row("self", 200, {"owner": "boss"}, body={"exclude_bots": False}),
    ),
]


def api_routes() -> set[tuple[str, str]]:
    """Every (method, path) the app serves under the APIs, read from its own OpenAPI schema."""
    return {
        (method.upper(), path)
        for path, operations in create_app().openapi()["paths"].items()
        if path.startswith(("/api/", "/v2/"))
        for method in operations
    }


def test_every_route_has_a_row() -> None:
    routes = api_routes()
    assert routes - MATRIX.keys() == set(), "routes without an authorization row"
    assert MATRIX.keys() - routes == set(), "rows for routes that do not exist"


def build_world(server: Server) -> dict[str, str]:
    """Create the world straight in the store; return tokens and ids by name."""
    world: dict[str, str] = {}
    with server.control.session() as s:
        for name in ("boss", "adm", "mem", "mem2", "blk", "padm", "out", "newbie", "grantee"):
            _, world[name] = accounts.create_user(s, name, f"{name}@example.com")
        boss = accounts.account_by_name(s, "boss")
        assert boss is not None
        accounts.create_organization(
            s, boss, OrganizationFields("acme", "Acme", None, "billing@acme.io")
        )
        for name, role in (
            ("adm", "admin"),
            ("mem", "member"),
            ("mem2", "member"),
            ("blk", "member"),
            ("grantee", "member"),
        ):
            accounts.upsert_member(s, boss, "acme", name, OrgRole(role))
        npm = packages.create_package(s, boss, "acme", PackageFields(name="widget", type="npm"))
        file = packages.create_package(
            s,
            boss,
            "acme",
            PackageFields(
                name="tarballs",
                type="file",
                incoming_path="/d/{version}",
                outgoing_url="https://dl.example/{version}",
            ),
        )
        scoped = packages.create_package(
            s, boss, "acme", PackageFields(name="@acme/routes", type="npm")
        )
        for package in (npm, file, scoped):
            packages.set_permission(s, boss, package, "padm", PermissionLevel.ADMIN)
            packages.set_permission(s, boss, package, "blk", PermissionLevel.BLOCKED)
        for package in (npm, scoped):
            packages.set_permission(s, boss, package, "grantee", PermissionLevel.MEMBER)
        world["npm"], world["file"] = npm.id, file.id
        world["domain_id"] = packages.create_domain(s, npm, "widget.example").id
        world["route_id"] = packages.list_routes(s, file)[0].id
        world["tracking_pixel_id"] = pixels.create_pixel(s, boss, "acme", "docs", npm.id).id
        world["event_import_id"] = str(uuid.uuid4())
        new = imports.NewImport(
            world["event_import_id"],
            npm.owner,
            "package",
            npm.id,
            None,
            "ndjson",
            "identity",
            "/nonexistent/spool",
            0,
        )
        imports.create_import(s, boss, new, limit=15)
    return world


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _substitute(value: Any, world: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, world)
    if isinstance(value, dict):
        return {k: _substitute(v, world) for k, v in value.items()}
    return value


CASES = [(key, row, role) for key, row in [*sorted(MATRIX.items()), *EXTRA_ROWS] for role in ROLES]


@pytest.mark.parametrize(
    ("key", "row", "role"),
    CASES,
    ids=[f"{m} {p} {row.policy} as {r}" for (m, p), row, r in CASES],
)
def test_matrix(server: Server, key: tuple[str, str], row: Row, role: str) -> None:
    method, template = key
    world = build_world(server)
    values = {
        "organization_name": "acme",
        "organization_member": "mem2",
        **{k: world[k] for k in ("domain_id", "route_id", "tracking_pixel_id", "event_import_id")},
        **_substitute(row.params, world),
        "role": role,
    }
    path = _fill(template, values)
    body = _substitute(row.body, {**world, "role": role})
    client = server.client(None if role == "anonymous" else world[role])
    response = client.request(method, path, json=body, params=row.query)
    expected = 401 if role == "anonymous" else POLICIES[row.policy][role]
    expected = row.success if expected == OK else expected
    assert response.status_code == expected, (
        f"{method} {path} as {role}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code >= 400:
        assert isinstance(response.json()["message"], str)
    documented = documented_statuses(method, path)
    assert documented is not None, f"{method} {path}: no operation in the OpenAPI document"
    assert str(response.status_code) in documented, documented
