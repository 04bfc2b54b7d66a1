"""A corpus of bad requests to the v1 and v2 APIs: each gets its 4xx and a message that says why.

Every case runs against a small valid world (users, an organization, packages, a route, a
domain, a pixel, a permission) built straight in the store. The final test sends the whole corpus
to one world, asserts that nothing answered 5xx, and that the world is exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from eventport.control import accounts, packages, pixels
from eventport.control.accounts import OrganizationFields
from eventport.control.packages import PackageFields
from eventport.domain.access import OrgRole, PermissionLevel
from tests.conftest import Server
from tests.openapi_check import documented_statuses

NOTHING: Any = object()
UNKNOWN_UUID = "0b6d5c8e-3f1a-4c2b-9d7e-5a4f3e2d1c0b"


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    message: str  # a piece of the error message, compared case-insensitively
    json: Any = NOTHING
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: str = "alice"  # alice | bob | carol | none | bogus | revoked | basic | empty


def case(case_id: str, request: str, status: int, message: str, **kw: Any) -> Any:
    """One corpus entry: ``request`` is "METHOD /path", the path may name world ids: {npm}."""
    method, path = request.split(" ", 1)
    return pytest.param(Case(method, path, status, message, **kw), id=case_id)


def raw(text: str) -> dict[str, Any]:
    """A body sent byte for byte as JSON (for what httpx's encoder would refuse or fix)."""
    return {"content": text.encode("utf-8", "surrogatepass")}


def org(name: str = "newco", **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "d", "billingEmail": "billing@newco.example", **extra}


def v2_org(name: str = "acme", **extra: Any) -> dict[str, Any]:
    return {"name": name, "billing_email": "billing@acme.example", **extra}


def pkg(name: str = "new-pkg", library_type: str = "npm", **extra: Any) -> dict[str, Any]:
    return {"name": name, "shortDescription": "s", "libraryType": library_type, **extra}


def v2_pkg(name: str = "new-pkg", type_: str = "npm", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def docker(**urls: str) -> dict[str, Any]:
    return pkg("image", "docker", **urls)


def route(template: str = "/new/{v}", outgoing: str = "https://cdn.example/{v}") -> Any:
    return {"templatePath": template, "outgoingUrl": outgoing}


def v2_route(incoming: str = "/new/{v}", outgoing: str = "https://cdn.example/{v}") -> Any:
    return {"incoming_path": incoming, "outgoing_url": outgoing}


def perm(user: str, level: str = "member") -> dict[str, Any]:
    return {"userQuery": user, "permissionLevel": level}


JSON_TYPE = {"Content-Type": "application/json"}
V1_PKG = "/api/v1/packages/{npm}"
V1_FILES = "/api/v1/packages/{files}"
V2_PKG = "/v2/packages/alice/{npm}"
V2_FILES = "/v2/packages/alice/{files}"
PIXELS = "/v2/tracking-pixels/alice"

# fmt: off
CORPUS = [
    # --- the body is not JSON at all --------------------------------------------------------
    case("v1-org-create-truncated-json", "POST /api/v1/organizations", 400, "not valid JSON",
         content=b'{"name": "x",'),
    case("v2-package-create-single-quotes", "POST /v2/packages/alice", 400, "not valid JSON",
         content=b"{'name': 'x', 'type': 'npm'}"),
    case("v2-pixel-create-trailing-garbage", f"POST {PIXELS}", 400, "not valid JSON",
         content=b'{"name": "p"} and more'),
    case("v1-member-invalid-utf8", "POST /api/v1/acme/users", 400, "not UTF-8",
         content=b'\xff\xfe{"username": "bob"}'),
    case("v2-member-invalid-utf8-in-string", "POST /v2/organizations/acme/members", 400,
         "not UTF-8", content=b'{"username": "b\xffb", "role": "member"}'),
    case("v1-permissions-truncated-array", f"POST {V1_PKG}/permissions", 400, "not valid JSON",
         content=b'[{"userQuery": "bob"'),
    case("v1-package-create-empty-body", "POST /api/v1/packages", 400, "body is required",
         content=b""),
    case("v2-route-create-no-body", f"POST {V2_FILES}/routes", 400, "body is required"),
    case("v2-org-update-deeply-nested", "PUT /v2/organizations/acme", 400, "nested too deeply",
         content=b"[" * 100_000),
    # --- JSON, but not an object ------------------------------------------------------------
    case("v1-org-create-array", "POST /api/v1/organizations", 400, "must be a JSON object",
         json=[org()]),
    case("v1-org-update-number", "PUT /api/v1/organizations/acme", 400, "must be a JSON object",
         json=42),
    case("v1-package-update-null", f"PUT {V1_PKG}", 400, "must be a JSON object", content=b"null"),
    case("v2-package-create-array", "POST /v2/packages/alice", 400, "must be a JSON object",
         json=["new-pkg"]),
    case("v2-member-add-string", "POST /v2/organizations/acme/members", 400,
         "must be a JSON object", json="bob"),
    case("v2-domain-create-true", f"POST {V2_FILES}/domains", 400, "must be a JSON object",
         json=True),
    case("v1-permissions-number", f"POST {V1_PKG}/permissions", 400, "valid list", json=7),
    case("v1-permissions-string-for-list", f"POST {V1_PKG}/permissions", 400, "valid list",
         json="bob"),
    case("v1-permissions-array-of-strings", f"POST {V1_PKG}/permissions", 400, "valid dictionary",
         json=["bob"]),
    # --- required fields missing ------------------------------------------------------------
    case("v1-org-create-empty-object", "POST /api/v1/organizations", 400, "name is required",
         json={}),
    case("v1-org-create-no-billingEmail", "POST /api/v1/organizations", 400,
         "billingEmail is required", json={"name": "newco", "description": "d"}),
    case("v1-package-create-no-shortDescription", "POST /api/v1/packages", 400,
         "shortDescription is required", json={"name": "x", "libraryType": "npm"}),
    case("v1-org-package-create-no-name", "POST /api/v1/acme/packages", 400, "name is required",
         json={"shortDescription": "s"}),
    case("v1-member-no-role", "POST /api/v1/acme/users", 400, "role is required",
         json={"username": "bob"}),
    case("v1-permission-no-userQuery", f"POST {V1_PKG}/permissions", 400, "userQuery is required",
         json={"permissionLevel": "member"}),
    case("v1-route-no-templatePath", f"POST {V1_FILES}/routes", 400, "templatePath is required",
         json={"outgoingUrl": "https://cdn.example/x"}),
    case("v1-domain-no-name", f"POST {V1_FILES}/domains", 400, "name is required",
         json={"domain": "x.example.com"}),
    case("v2-package-no-type", "POST /v2/packages/alice", 400, "type is required",
         json={"name": "new-pkg"}),
    case("v2-org-update-no-billing_email", "PUT /v2/organizations/acme", 400,
         "billing_email is required", json={"name": "acme"}),
    case("v2-pixel-no-name", f"POST {PIXELS}", 400, "name is required", json={"package_id": None}),
    case("v2-route-no-outgoing_url", f"POST {V2_FILES}/routes", 400, "outgoing_url is required",
         json={"incoming_path": "/x"}),
    case("v2-permission-no-permission_level", f"POST {V2_PKG}/permissions", 400,
         "permission_level is required", json={"username": "bob"}),
    case("v2-file-package-no-incoming_path", "POST /v2/packages/alice", 422, "needs incoming_path",
         json=v2_pkg("f", "file", outgoing_url="https://cdn.example/f")),
    # --- fields of the wrong type -----------------------------------------------------------
    case("v1-org-name-number", "POST /api/v1/organizations", 400,
         "name: Input should be a valid string", json=org(5)),
    case("v1-org-billingEmail-null", "POST /api/v1/organizations", 400, "billingEmail",
         json=org(billingEmail=None)),
    case("v1-package-shortDescription-list", "POST /api/v1/packages", 400,
         "shortDescription: Input should be a valid string", json=pkg(shortDescription=["s"])),
    case("v1-package-libraryType-number", "POST /api/v1/packages", 400, "libraryType",
         json=pkg(libraryType=1)),
    case("v1-member-username-number", "POST /api/v1/acme/users", 400,
         "username: Input should be a valid string", json={"username": 7, "role": "member"}),
    case("v1-route-outgoingUrl-object", f"POST {V1_FILES}/routes", 400, "outgoingUrl",
         json={"templatePath": "/x", "outgoingUrl": {"url": "https://cdn.example/x"}}),
    case("v2-package-name-number", "POST /v2/packages/alice", 400,
         "name: Input should be a valid string", json=v2_pkg(123)),
    case("v2-package-website-bool", "POST /v2/packages/alice", 400, "website",
         json=v2_pkg(website=True)),
    case("v2-org-name-float", "PUT /v2/organizations/acme", 400,
         "name: Input should be a valid string", json=v2_org(1.5)),
    case("v2-pixel-package_id-number", f"POST {PIXELS}", 400, "package_id",
         json={"name": "p2", "package_id": 12}),
    case("v2-member-username-list", "POST /v2/organizations/acme/members", 400, "username",
         json={"username": ["bob"], "role": "member"}),
    case("v2-pixel-name-nan", f"POST {PIXELS}", 400, "name: Input should be a valid string",
         content=b'{"name": NaN}'),
    # --- values outside an enumeration ------------------------------------------------------
    case("v1-package-libraryType-rust", "POST /api/v1/packages", 400,
         "libraryType: Input should be 'docker'", json=pkg(library_type="rust")),
    case("v1-package-libraryType-v2-python", "POST /api/v1/packages", 400, "libraryType",
         json=pkg(library_type="python")),
    case("v2-package-type-v1-pypi", "POST /v2/packages/alice", 400,
         "type: Input should be 'docker'", json=v2_pkg(type_="pypi")),
    case("v1-get-packageType-cargo", "GET /api/v1/packages/left-pad?packageType=cargo", 400,
         "packageType"),
    case("v2-list-type-cargo", "GET /v2/packages/alice?type=npm&type=cargo", 400, "type"),
    case("v2-list-permission-superuser", "GET /v2/packages/alice?permission=superuser", 400,
         "permission"),
    # v1's grant levels are no v2 filter (Scarf's PackagePermissionLevel: member, admin, owner).
    case("v2-list-permission-blocked", "GET /v2/packages/alice?permission=blocked", 400,
         "permission: Input should be 'member', 'admin' or 'owner'"),
    case("v2-by-name-type-cargo", "GET /v2/packages/alice/cargo/left-pad", 404,
         "no such endpoint: GET /v2/packages/alice/cargo/left-pad"),
    case("v1-member-role-superuser", "POST /api/v1/acme/users", 400,
         "role: Input should be 'member', 'admin' or 'owner'",
         json={"username": "bob", "role": "superuser"}),
    case("v1-member-role-capitalised", "POST /api/v1/acme/users", 400, "role",
         json={"username": "bob", "role": "Admin"}),
    case("v2-member-role-boss", "POST /v2/organizations/acme/members", 400, "role",
         json={"username": "bob", "role": "boss"}),
    case("v2-member-role-empty", "PUT /v2/organizations/acme/members/carol", 400, "role",
         json={"role": ""}),
    case("v1-permission-level-owner", f"POST {V1_PKG}/permissions", 400,
         "permissionLevel: Input should be 'blocked', 'default', 'member' or 'admin'",
         json=perm("bob", "owner")),
    case("v1-permission-level-read-in-array", f"POST {V1_PKG}/permissions", 400, "permissionLevel",
         json=[perm("bob", "read")]),
    case("v2-permission-level-blocked", f"POST {V2_PKG}/permissions", 400, "permission_level",
         json={"username": "bob", "permission_level": "blocked"}),
    # --- account names ----------------------------------------------------------------------
    case("v1-org-name-40-chars", "POST /api/v1/organizations", 422, "1 to 39", json=org("a" * 40)),
    case("v1-org-name-uppercase", "POST /api/v1/organizations", 422, "lowercase",
         json=org("NewCo")),
    case("v1-org-name-space", "POST /api/v1/organizations", 422, "invalid name",
         json=org("new co")),
    case("v1-org-name-leading-dash", "POST /api/v1/organizations", 422, "starting and ending",
         json=org("-newco")),
    case("v1-org-name-trailing-underscore", "POST /api/v1/organizations", 422, "invalid name",
         json=org("newco_")),
    case("v1-org-name-empty", "POST /api/v1/organizations", 422, "invalid name", json=org("")),
    case("v1-org-name-accent", "POST /api/v1/organizations", 422, "invalid name",
         json=org("newcé")),
    case("v1-org-name-reserved-api", "POST /api/v1/organizations", 422, "reserved",
         json=org("api")),
    case("v1-org-name-reserved-organizations", "POST /api/v1/organizations", 422, "reserved",
         json=org("organizations")),
    case("v2-org-rename-reserved-v2", "PUT /v2/organizations/acme", 422, "reserved",
         json=v2_org("v2")),
    case("v1-org-rename-uppercase", "PUT /api/v1/organizations/acme", 422, "lowercase",
         json=org("ACME")),
    case("v1-org-name-nul", "POST /api/v1/organizations", 400, "NUL", json=org("new\x00co")),
    case("v1-org-name-bell", "POST /api/v1/organizations", 422, "invalid name",
         json=org("new\x07co")),
    case("v1-org-name-lone-surrogate", "POST /api/v1/organizations", 400, "Unicode",
         **raw('{"name": "\\ud800", "description": "d", "billingEmail": "b@x.example"}')),
    # --- other organization fields ----------------------------------------------------------
    case("v1-org-description-escape", "POST /api/v1/organizations", 422,
         "description contains control characters", json=org(description="\x1b[31mred")),
    case("v1-org-description-too-long", "POST /api/v1/organizations", 422,
         "description is too long", json=org(description="x" * 10_001)),
    case("v1-org-description-lone-surrogate", "POST /api/v1/organizations", 400,
         "description: must be valid Unicode",
         **raw('{"name": "newco", "description": "\\udfff", "billingEmail": "b@x.example"}')),
    case("v1-org-billingEmail-invalid", "POST /api/v1/organizations", 422, "invalid email address",
         json=org(billingEmail="not-an-email")),
    case("v1-org-billingEmail-nul", "POST /api/v1/organizations", 400,
         "billingEmail: must not contain NUL", json=org(billingEmail="b\x00@x.example")),
    case("v2-org-billing_email-control", "PUT /v2/organizations/acme", 422, "invalid email",
         json=v2_org(billing_email="b\x01@x.example")),
    case("v1-org-website-space", "POST /api/v1/organizations", 422, "no spaces",
         json=org(website="https://new co.example")),
    # --- package names and fields -----------------------------------------------------------
    case("v1-package-name-215-chars", "POST /api/v1/packages", 422, "package name is too long",
         json=pkg("p" * 215)),
    case("v1-package-name-space", "POST /api/v1/packages", 422, "invalid package name",
         json=pkg("left pad")),
    case("v1-package-name-leading-dash", "POST /api/v1/packages", 422, "invalid package name",
         json=pkg("-pad")),
    case("v1-package-name-empty", "POST /api/v1/packages", 422, "package name is empty",
         json=pkg("")),
    case("v1-package-name-nul", "POST /api/v1/packages", 400, "name: must not contain NUL",
         json=pkg("pad\x00")),
    case("v1-package-name-newline", "POST /api/v1/packages", 422, "invalid package name",
         json=pkg("left\npad")),
    case("v1-package-name-trailing-slash", "POST /api/v1/packages", 422, "invalid package name",
         json=pkg("pad/")),
    case("v1-package-shortDescription-nul", "POST /api/v1/packages", 400,
         "shortDescription: must not contain NUL", json=pkg(shortDescription="a\x00b")),
    case("v1-package-longDescription-control", "POST /api/v1/packages", 422,
         "long_description contains control characters", json=pkg(longDescription="\x01")),
    case("v1-package-update-rename-invalid", f"PUT {V1_PKG}", 422, "invalid package name",
         json=pkg("left pad")),
    case("v2-package-name-unit-separator", "POST /v2/packages/alice", 422, "invalid package name",
         json=v2_pkg("pad\x1f")),
    case("v2-python-name-trailing-underscore", "POST /v2/packages/alice", 422,
         "Python project name", json=v2_pkg("pad_", "python")),
    case("v2-python-repository-http", "POST /v2/packages/alice", 422, "https",
         json=v2_pkg("pyx", "python", repository_url="http://pypi.example/simple/")),
    case("v2-python-repository-bad-ipv6", "POST /v2/packages/alice", 422, "not a valid URL",
         json=v2_pkg("pyx", "python", repository_url="https://[pypi/")),
    case("v2-docker-name-uppercase", "POST /v2/packages/alice", 422, "docker image name",
         json=v2_pkg("App", "docker", backend_registry="registry.example")),
    case("v2-docker-registry-too-long", "POST /v2/packages/alice", 422, "backend_registry",
         json=v2_pkg("app", "docker", backend_registry="r" * 250 + ".io:12345")),
    case("v2-docker-registry-missing", "POST /v2/packages/alice", 422, "backend_registry is empty",
         json=v2_pkg("app", "docker")),
    # --- v1 docker URLs ---------------------------------------------------------------------
    case("v1-docker-no-backendUrl", "POST /api/v1/packages", 422, "needs backendUrl",
         json=docker()),
    case("v1-docker-no-path", "POST /api/v1/packages", 422, "at least one path component",
         json=docker(backendUrl="https://registry.example")),
    case("v1-docker-uppercase-path", "POST /api/v1/packages", 422, "'App' must match",
         json=docker(backendUrl="https://registry.example/App")),
    case("v1-docker-public-path-differs", "POST /api/v1/packages", 422, "must match backendUrl",
         json=docker(backendUrl="https://registry.example/a/b", publicUrl="https://pub.example/a/c")),
    case("v1-docker-port-out-of-range", "POST /api/v1/packages", 422, "Port out of range",
         json=docker(backendUrl="https://registry.example:99999/a")),
    case("v1-docker-bad-ipv6", "POST /api/v1/packages", 422, "not a valid URL",
         json=docker(backendUrl="https://[registry/a")),
    case("v1-docker-path-too-long", "POST /api/v1/packages", 422, "longer than 255",
         json=docker(backendUrl="https://registry.example/" + "a" * 300)),
    case("v1-docker-public-domain-taken", "POST /api/v1/packages", 422, "already in use",
         json=docker(backendUrl="https://registry.example/a", publicUrl="https://dl.example.com/a")),
    # --- pixel names ------------------------------------------------------------------------
    case("v2-pixel-name-empty", f"POST {PIXELS}", 422, "name is empty", json={"name": ""}),
    case("v2-pixel-name-blank", f"POST {PIXELS}", 422, "name is empty", json={"name": "   "}),
    case("v2-pixel-name-201-chars", f"POST {PIXELS}", 422, "name is too long",
         json={"name": "p" * 201}),
    case("v2-pixel-name-nul", f"POST {PIXELS}", 400, "name: must not contain NUL",
         json={"name": "p\x00"}),
    case("v2-pixel-name-escape", f"POST {PIXELS}", 422, "control characters",
         json={"name": "\x1b[2J"}),
    case("v2-pixel-rename-nul", f"PUT {PIXELS}/{{pixel}}", 400, "NUL", json={"name": "\x00"}),
    # --- domains ----------------------------------------------------------------------------
    case("v1-domain-uppercase", f"POST {V1_FILES}/domains", 422, "not a valid domain",
         json={"name": "Get.Example.com"}),
    case("v1-domain-no-dot", f"POST {V1_FILES}/domains", 422, "not a valid domain",
         json={"name": "localhost"}),
    case("v1-domain-empty", f"POST {V1_FILES}/domains", 422, "domain is empty", json={"name": ""}),
    case("v1-domain-nul", f"POST {V1_FILES}/domains", 400, "NUL",
         json={"name": "get\x00.example.com"}),
    case("v1-domain-url", f"POST {V1_FILES}/domains", 422, "not a valid domain",
         json={"name": "https://get.example.com"}),
    case("v2-domain-space", f"POST {V2_FILES}/domains", 422, "not a valid domain",
         json={"name": "get example.com"}),
    # --- file-package routes ----------------------------------------------------------------
    case("v1-route-relative-template", f"POST {V1_FILES}/routes", 422, "must start with '/'",
         json=route("new/{v}")),
    case("v1-route-relative-outgoing", f"POST {V1_FILES}/routes", 422, "absolute http(s) URL",
         json=route(outgoing="/elsewhere/{v}")),
    case("v1-route-undefined-variable", f"POST {V1_FILES}/routes", 422,
         "{name} which incoming_path does not define",
         json=route(outgoing="https://cdn.example/{name}")),
    case("v1-route-unbalanced-brace", f"POST {V1_FILES}/routes", 422, "unbalanced",
         json=route("/new/{v")),
    case("v1-route-bad-ipv6", f"POST {V1_FILES}/routes", 422, "not a valid URL",
         json=route(outgoing="https://[cdn/{v}")),
    case("v1-route-on-npm-package", f"POST {V1_PKG}/routes", 422, "file packages", json=route()),
    case("v2-route-incoming-is-url", f"POST {V2_FILES}/routes", 422, "must be a path",
         json=v2_route("https://x.example/{v}")),
    case("v2-route-nul", f"POST {V2_FILES}/routes", 400, "NUL", json=v2_route("/new/\x00{v}")),
    # --- duplicates -------------------------------------------------------------------------
    case("v1-org-duplicate", "POST /api/v1/organizations", 422, "already taken", json=org("acme")),
    case("v1-org-named-like-a-user", "POST /api/v1/organizations", 422, "already taken",
         json=org("bob")),
    case("v1-org-rename-onto-user", "PUT /api/v1/organizations/acme", 422, "already taken",
         json=org("bob")),
    case("v2-org-rename-onto-user", "PUT /v2/organizations/acme", 422, "already taken",
         json=v2_org("carol")),
    case("v1-package-duplicate", "POST /api/v1/packages", 422,
         "already has a npm package named 'left-pad'", json=pkg("left-pad")),
    case("v1-org-package-duplicate", "POST /api/v1/acme/packages", 422,
         "already has a python package", json=pkg("widget", "pypi")),
    case("v1-package-rename-onto-sibling", f"PUT {V1_PKG}", 422, "already has",
         json=pkg("right-pad")),
    case("v2-package-duplicate", "POST /v2/packages/alice", 422, "already has",
         json=v2_pkg("left-pad")),
    case("v2-pixel-duplicate", f"POST {PIXELS}", 422, "already has a tracking pixel",
         json={"name": "docs-pixel"}),
    case("v1-domain-duplicate", f"POST {V1_FILES}/domains", 422, "already in use",
         json={"name": "dl.example.com"}),
    case("v2-domain-duplicate", f"POST {V2_FILES}/domains", 422, "already in use",
         json={"name": "dl.example.com"}),
    case("v1-route-duplicate", f"POST {V1_FILES}/routes", 422, "already has a route",
         json=route("/get/{v}")),
    # --- ids that are not uuids, or name nothing --------------------------------------------
    case("v1-permissions-bad-uuid", "GET /api/v1/packages/not-a-uuid/permissions", 404,
         "not found"),
    case("v1-package-put-bad-uuid", "PUT /api/v1/packages/12345", 404, "not found", json=pkg()),
    case("v1-package-delete-bad-uuid", "DELETE /api/v1/packages/not-a-uuid", 404, "not found"),
    case("v1-package-get-unknown-uuid", f"GET /api/v1/packages/{UNKNOWN_UUID}", 404, "not found"),
    case("v1-package-get-someone-elses", "GET /api/v1/packages/{bobs}", 404, "not found"),
    case("v1-route-delete-bad-id", f"DELETE {V1_FILES}/routes/route-1", 404, "route"),
    case("v1-domain-delete-bad-id", f"DELETE {V1_FILES}/domains/12", 404, "domain"),
    case("v1-domain-delete-unknown-uuid", f"DELETE {V1_FILES}/domains/{UNKNOWN_UUID}", 404,
         "domain"),
    case("v1-domain-delete-via-other-package", f"DELETE {V1_PKG}/domains/{{domain}}", 404,
         "domain"),
    case("v2-package-get-bad-uuid", "GET /v2/packages/alice/not-a-uuid", 404, "not found"),
    case("v2-package-under-wrong-owner", "GET /v2/packages/acme/{npm}", 404, "not found"),
    case("v2-pixel-get-bad-uuid", f"GET {PIXELS}/zzz", 404, "tracking pixel"),
    case("v2-pixel-create-bad-package_id", f"POST {PIXELS}", 404, "package",
         json={"name": "p2", "package_id": "nope"}),
    case("v2-route-get-bad-uuid", f"GET {V2_FILES}/routes/xyz", 404, "route"),
    case("v2-domain-get-bad-uuid", f"GET {V2_FILES}/domains/xyz", 404, "domain"),
    # --- users and accounts that do not exist -----------------------------------------------
    case("v1-member-add-unknown-user", "POST /api/v1/acme/users", 422, "no user named 'nobody'",
         json={"username": "nobody", "role": "member"}),
    case("v1-member-add-an-organization", "POST /api/v1/acme/users", 422, "no user named 'acme'",
         json={"username": "acme", "role": "member"}),
    case("v1-member-remove-unknown", "DELETE /api/v1/acme/users/nobody", 404, "not a member"),
    case("v1-member-remove-non-member", "DELETE /api/v1/acme/users/bob", 404, "not a member"),
    case("v1-members-of-unknown-org", "GET /api/v1/nowhere/users", 404, "nowhere"),
    case("v1-org-get-unknown", "GET /api/v1/organizations/nowhere", 404, "nowhere"),
    case("v2-member-add-unknown-user", "POST /v2/organizations/acme/members", 404, "no user named",
         json={"username": "nobody", "role": "member"}),
    case("v2-member-get-unknown", "GET /v2/organizations/acme/members/nobody", 404, "not a member"),
    case("v1-permission-unknown-user", f"POST {V1_PKG}/permissions", 422,
         "no user matches 'nobody'", json=perm("nobody")),
    case("v1-permission-unknown-email", f"POST {V1_PKG}/permissions", 422,
         "no user matches 'ghost@example.com'", json=perm("ghost@example.com")),
    case("v1-permission-array-one-unknown", f"POST {V1_PKG}/permissions", 422,
         "no user matches 'nobody'", json=[perm("bob"), perm("nobody")]),
    case("v1-permission-an-organization", f"POST {V1_PKG}/permissions", 422,
         "no user matches 'acme'", json=perm("acme")),
    case("v2-permission-unknown-user", f"POST {V2_PKG}/permissions", 422, "no user matches",
         json={"username": "nobody", "permission_level": "member"}),
    case("v2-permission-delete-unknown", f"DELETE {V2_PKG}/permissions/nobody", 404, "nobody"),
    case("v2-list-unknown-owner", "GET /v2/packages/nowhere", 404, "nowhere"),
    case("v2-pixel-for-unknown-owner", "POST /v2/tracking-pixels/nowhere", 404, "nowhere",
         json={"name": "p"}),
    # --- changes that would lose an owner or a type -----------------------------------------
    case("v1-remove-last-owner", "DELETE /api/v1/acme/users/alice", 422, "last owner"),
    case("v1-demote-last-owner", "POST /api/v1/acme/users", 422, "last owner",
         json={"username": "alice", "role": "member"}),
    case("v2-demote-last-owner", "PUT /v2/organizations/acme/members/alice", 422, "last owner",
         json={"role": "admin"}),
    case("v1-block-the-owner", "POST /api/v1/packages/{widget}/permissions", 422,
         "an owner's access cannot be lowered",
         json=perm("alice", "blocked")),
    case("v1-change-libraryType", f"PUT {V1_PKG}", 422, "libraryType cannot change",
         json=pkg("left-pad", "pypi")),
    case("v2-change-type", f"PUT {V2_PKG}", 422, "type cannot change",
         json=v2_pkg("left-pad", "hackage")),
    # --- paging -----------------------------------------------------------------------------
    case("v2-packages-per_page-0", "GET /v2/packages/alice?per_page=0", 400,
         "per_page must be between 1 and 1000"),
    case("v2-packages-per_page-negative", "GET /v2/packages/alice?per_page=-1", 400,
         "between 1 and 1000"),
    case("v2-packages-per_page-1001", "GET /v2/packages/alice?per_page=1001", 400,
         "between 1 and 1000"),
    case("v2-packages-per_page-huge", f"GET /v2/packages/alice?per_page={10**30}", 400,
         "between 1 and 1000"),
    case("v2-packages-per_page-word", "GET /v2/packages/alice?per_page=ten", 400,
         "per_page: Input should be a valid integer"),
    case("v2-packages-per_page-fraction", "GET /v2/packages/alice?per_page=1.5", 400, "per_page"),
    case("v2-packages-per_page-empty", "GET /v2/packages/alice?per_page=", 400, "per_page"),
    case("v2-members-per_page-0", "GET /v2/organizations/acme/members?per_page=0", 400,
         "between 1 and 1000"),
    case("v2-pixels-per_page-word", f"GET {PIXELS}?per_page=all", 400, "per_page"),
    case("v2-routes-per_page-5000", f"GET {V2_FILES}/routes?per_page=5000", 400,
         "between 1 and 1000"),
    case("v2-permissions-per_page-0", f"GET {V2_PKG}/permissions?per_page=0", 400,
         "between 1 and 1000"),
    case("v2-user-organizations-per_page-0", "GET /v2/users/alice/organizations?per_page=0", 400,
         "between 1 and 1000"),
    case("v2-package-pixels-per_page-0", f"GET {V2_PKG}/tracking-pixels?per_page=0", 400,
         "between 1 and 1000"),
    case("v2-packages-after-unknown", "GET /v2/packages/alice?after=no-such-cursor", 400,
         "unknown cursor"),
    # --- Content-Type -----------------------------------------------------------------------
    case("v1-org-create-text-plain", "POST /api/v1/organizations", 400,
         "Content-Type: application/json", content=json.dumps(org()).encode(),
         headers={"Content-Type": "text/plain"}),
    case("v1-permissions-text-plain", f"POST {V1_PKG}/permissions", 400,
         "Content-Type: application/json", content=json.dumps(perm("bob")).encode(),
         headers={"Content-Type": "text/plain"}),
    case("v2-package-create-form", "POST /v2/packages/alice", 400, "Content-Type",
         content=b"name=new-pkg&type=npm",
         headers={"Content-Type": "application/x-www-form-urlencoded"}),
    case("v2-pixel-create-xml", f"POST {PIXELS}", 400, "Content-Type",
         content=b"<pixel><name>p</name></pixel>", headers={"Content-Type": "application/xml"}),
    # --- authentication ---------------------------------------------------------------------
    case("v1-no-token-list", "GET /api/v1/packages", 401, "missing API token", auth="none"),
    case("v1-no-token-create-org", "POST /api/v1/organizations", 401, "missing API token",
         json=org(), auth="none"),
    case("v2-no-token-list", "GET /v2/packages/alice", 401, "missing API token", auth="none"),
    case("v1-bogus-token", "GET /api/v1/organizations/acme", 401, "invalid or revoked",
         auth="bogus"),
    case("v2-bogus-token-create", "POST /v2/packages/alice", 401, "invalid or revoked",
         json=v2_pkg(), auth="bogus"),
    case("v1-revoked-token", "GET /api/v1/packages", 401, "invalid or revoked", auth="revoked"),
    case("v2-revoked-token-create-pixel", "POST /v2/tracking-pixels/mallory", 401,
         "invalid or revoked", json={"name": "p"}, auth="revoked"),
    case("v1-basic-auth", "GET /api/v1/packages", 401, "Bearer", auth="basic"),
    case("v2-empty-bearer", "GET /v2/packages/alice", 401, "missing API token", auth="empty"),
    # --- NUL in the URL (PostgreSQL cannot even compare it) ---------------------------------
    case("v1-org-get-nul", "GET /api/v1/organizations/ac%00me", 400, "NUL"),
    case("v1-package-by-name-nul", "GET /api/v1/packages/left%00pad", 400, "NUL"),
    case("v1-member-delete-nul", "DELETE /api/v1/acme/users/car%00ol", 400, "NUL"),
    case("v2-owner-nul", "GET /v2/packages/ali%00ce", 400, "NUL"),
    case("v2-by-name-nul", "GET /v2/packages/alice/npm/left%00pad", 400, "NUL"),
    case("v2-cursor-nul", "GET /v2/packages/alice?after=%00", 400, "NUL"),
    # --- allowed to see, not to change ------------------------------------------------------
    case("v1-member-adds-member", "POST /api/v1/acme/users", 403, "may not",
         json={"username": "bob", "role": "member"}, auth="carol"),
    case("v1-member-updates-org", "PUT /api/v1/organizations/acme", 403, "may not",
         json=org("acme"), auth="carol"),
    case("v2-member-creates-org-package", "POST /v2/packages/acme", 403, "may not", json=v2_pkg(),
         auth="carol"),
    case("v1-outsider-reads-org", "GET /api/v1/organizations/acme", 404, "not found", auth="bob"),
    # --- routing ----------------------------------------------------------------------------
    case("unknown-route", "GET /api/v3/packages", 404, "no such endpoint: GET /api/v3/packages"),
    case("method-not-allowed", "PATCH /api/v1/organizations/acme", 405,
         "method not allowed: PATCH /api/v1/organizations/acme",
         json=org("acme")),
]
# fmt: on


@dataclass
class World:
    http: httpx.Client
    ids: dict[str, str]
    auth: dict[str, dict[str, str]]  # the Authorization header of each way to authenticate

    def request(self, auth: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.auth[auth], **kw.pop("headers", {})}
        return self.http.request(method, path.format(**self.ids), headers=headers, **kw)

    def get(self, auth: str, path: str) -> httpx.Response:
        return self.request(auth, "GET", path)


@pytest.fixture(scope="module")
def http(live_server: Server) -> Iterator[httpx.Client]:
    """One client for the module: each takes ~20 ms to make, and the corpus is long."""
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def world(server: Server, http: httpx.Client) -> World:
    """A valid data set, made straight in the store, that no case in the corpus may change."""
    with server.control.session() as s:
        alice, alice_token = accounts.create_user(s, "alice", "alice@example.com")
        bob, bob_token = accounts.create_user(s, "bob", "bob@example.com")
        _, carol_token = accounts.create_user(s, "carol", "carol@example.com")
        accounts.create_user(s, "mallory", "mallory@example.com")
        revoked, revoked_token = accounts.issue_token(s, "mallory", label="leaked")
        accounts.revoke_token(s, revoked.id)
        accounts.create_organization(
            s, alice, OrganizationFields("acme", "Acme", None, "billing@acme.example")
        )
        accounts.upsert_member(s, alice, "acme", "carol", OrgRole.MEMBER)
        npm = packages.create_package(s, alice, "alice", PackageFields("left-pad", "npm"))
        packages.create_package(s, alice, "alice", PackageFields("right-pad", "npm"))
        widget = packages.create_package(s, alice, "acme", PackageFields("widget", "python"))
        files = packages.create_package(
            s,
            alice,
            "alice",
            PackageFields(
                "downloads",
                "file",
                incoming_path="/get/{v}",
                outgoing_url="https://cdn.example/{v}.tgz",
            ),
        )
        domain = packages.create_domain(s, files, "dl.example.com")
        packages.set_permission(s, alice, files, "bob", PermissionLevel.MEMBER)
        bobs = packages.create_package(s, bob, "bob", PackageFields("bobs-lib", "npm"))
        pixel = pixels.create_pixel(s, alice, "alice", "docs-pixel", npm.id)
        ids = {
            "npm": npm.id,
            "widget": widget.id,
            "files": files.id,
            "bobs": bobs.id,
            "domain": domain.id,
            "route": packages.list_routes(s, files)[0].id,
            "pixel": pixel.id,
        }
    tokens = {
        "alice": alice_token,
        "bob": bob_token,
        "carol": carol_token,
        "bogus": "ep_this-token-was-never-issued",
        "revoked": revoked_token,
    }
    auth = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    auth |= {
        "none": {},
        "basic": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "empty": {"Authorization": "Bearer"},
    }
    return World(http, ids, auth)


def send(world: World, bad: Case) -> httpx.Response:
    if bad.json is not NOTHING:
        return world.request(bad.auth, bad.method, bad.path, json=bad.json, headers=bad.headers)
    if bad.content is not None:
        headers = {**JSON_TYPE, **bad.headers}
        return world.request(bad.auth, bad.method, bad.path, content=bad.content, headers=headers)
    return world.request(bad.auth, bad.method, bad.path, headers=bad.headers)


@pytest.mark.parametrize("bad", CORPUS)
def test_bad_request_is_refused_with_a_reason(world: World, bad: Case) -> None:
    response = send(world, bad)
    assert response.status_code == bad.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["message"], str), body
    assert isinstance(body["code"], str), body
    assert bad.message.lower() in body["message"].lower(), body
    if bad.status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if bad.status == 405:  # RFC 9110: a 405 names the methods the resource takes
        assert response.headers["allow"] == "GET, PUT"
        return
    # The answer is one the route's own OpenAPI entry documents (with the error body).
    path = bad.path.format(**world.ids).partition("?")[0]
    documented = documented_statuses(bad.method, path)
    if documented is None:  # only a path that no route serves
        assert bad.message.startswith("no such endpoint"), f"{bad.method} {path}: undocumented"
    else:
        assert str(bad.status) in documented, (path, documented)


def snapshot(world: World) -> dict[str, Any]:
    """Everything the world holds, as its users see it through both API versions."""
    ids = world.ids
    paths = [
        "/api/v1/packages",
        "/api/v1/organizations/acme",
        "/api/v1/acme/users",
        "/api/v1/organizations/acme/packages",
        *(f"/api/v1/packages/{ids[k]}/permissions" for k in ("npm", "widget", "files")),
        f"/api/v1/packages/{ids['files']}/routes",
        f"/api/v1/packages/{ids['files']}/domains",
        "/v2/packages/alice",
        "/v2/packages/acme",
        "/v2/tracking-pixels/alice",
        "/v2/users/alice/organizations",
    ]
    state: dict[str, Any] = {}
    for path in paths:
        response = world.get("alice", path)
        assert response.status_code == 200, (path, response.text)
        state[path] = response.json()
    for name in ("bob", "carol"):
        response = world.get(name, "/api/v1/packages")
        assert response.status_code == 200, response.text
        state[f"{name}: /api/v1/packages"] = response.json()
    return state


def test_no_bad_request_is_a_server_error_or_changes_anything(world: World) -> None:
    before = snapshot(world)
    assert len(before["/api/v1/packages"]) == 4
    assert [m["username"] for m in before["/api/v1/acme/users"]] == ["alice", "carol"]
    assert before[f"/api/v1/packages/{world.ids['files']}/permissions"] == [
        {"username": "bob", "permissionLevel": "member"}
    ]
    server_errors = []
    for param in CORPUS:
        (bad,) = param.values
        response = send(world, bad)
        if response.status_code >= 500:
            server_errors.append((param.id, response.status_code, response.text[:200]))
    assert server_errors == []
    assert snapshot(world) == before
    # Every token but the revoked one still works.
    for name in ("alice", "bob", "carol"):
        assert world.get(name, "/api/v1/packages").status_code == 200
    assert world.get("revoked", "/api/v1/packages").status_code == 401
