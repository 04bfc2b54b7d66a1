"""v1 bodies in and out. v1 names ``python`` packages ``pypi``; everything else is shared."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from eventport.api.v2.bodies import Body as StrictBody
from eventport.api.v2.shapes import timestamp
from eventport.control.models import Account, Membership, Package, PackageDomain, PackageRoute

V1_TYPE = {"python": "pypi"}
STORE_TYPE = {"pypi": "python"}

LibraryType = Literal["docker", "npm", "hackage", "pypi", "other", "file"]


class Body(StrictBody):
    """v1 bodies are camelCase; their Python fields are snake_case aliases."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


class OrganizationUpsert(Body):
    name: str
    description: str
    website: str | None = None
    billing_email: str = Field(alias="billingEmail")


class MemberUpsert(Body):
    username: str
    role: Literal["member", "admin", "owner"]


class PackageUpsert(Body):
    name: str
    short_description: str = Field(alias="shortDescription")
    long_description: str | None = Field(None, alias="longDescription")
    website: str | None = None
    library_type: LibraryType | None = Field(None, alias="libraryType")
    backend_url: str | None = Field(None, alias="backendUrl")
    public_url: str | None = Field(None, alias="publicUrl")


class PermissionSet(Body):
    user_query: str = Field(alias="userQuery")
    permission_level: Literal["blocked", "default", "member", "admin"] = Field(
        alias="permissionLevel"
    )


class RouteCreate(Body):
    outgoing_url: str = Field(alias="outgoingUrl")
    template_path: str = Field(alias="templatePath")


class DomainCreate(Body):
    name: str


def organization(org: Account) -> dict[str, Any]:
    return {
        "name": org.name,
        "description": org.description or "",
        "website": org.website,
        "billingEmail": org.billing_email,
        "createdAt": timestamp(org.created_at),
        "updatedAt": timestamp(org.updated_at),
    }


def member(m: Membership) -> dict[str, Any]:
    return {"organizationName": m.organization.name, "username": m.user.name, "role": m.role}


def package(p: Package) -> dict[str, Any]:
    return {
        "uuid": p.id,
        "owner": p.owner.name,
        "name": p.name,
        "shortDescription": p.short_description or "",
        "createdAt": timestamp(p.created_at),
        "longDescription": p.long_description,
        "website": p.website,
        "libraryType": V1_TYPE.get(p.type, p.type),
    }


def route(r: PackageRoute) -> dict[str, Any]:
    return {"id": r.id, "outgoingUrl": r.outgoing_url, "templatePath": r.incoming_path}


def domain(d: PackageDomain) -> dict[str, Any]:
    return {"id": d.id, "name": d.name}
