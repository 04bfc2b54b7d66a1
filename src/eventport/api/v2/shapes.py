"""v2 response bodies. Absent optional fields are left out: the spec allows no nulls."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request

from eventport.control.models import (
    Account,
    Membership,
    Package,
    PackageDomain,
    PackageRoute,
    TrackingPixel,
)
from eventport.domain.access import ACCESS_LEVEL_NAME, Access


def timestamp(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def package_url(request: Request, package: Package) -> str:
    return f"{_base(request)}/v2/packages/{package.owner.name}/{package.id}"


def package_identifier(package: Package) -> dict[str, Any]:
    return {
        "id": package.id,
        "name": package.name,
        "owner": package.owner.name,
        "type": package.type,
    }


def package(request: Request, p: Package) -> dict[str, Any]:
    url = package_url(request, p)
    body = {
        **package_identifier(p),
        "short_description": p.short_description,
        "long_description": p.long_description,
        "website": p.website,
        "created_at": timestamp(p.created_at),
        "updated_at": timestamp(p.updated_at),
        "_links": {"self": url, "domains": f"{url}/domains"},
    }
    if p.type == "docker":
        body["backend_registry"] = p.backend_registry
        body["repository_name"] = p.repository_name
    if p.type == "python":
        body["repository_url"] = p.repository_url
    return _compact(body)


def domain(request: Request, p: Package, d: PackageDomain) -> dict[str, Any]:
    links = {"self": f"{package_url(request, p)}/domains/{d.id}"}
    return {
        "id": d.id,
        "name": d.name,
        "owner": p.owner.name,
        "package_id": p.id,
        "created_at": timestamp(d.created_at),
        "links": links,
        "_links": links,
    }


def route(request: Request, p: Package, r: PackageRoute) -> dict[str, Any]:
    return {
        "id": r.id,
        "incoming_path": r.incoming_path,
        "outgoing_url": r.outgoing_url,
        "owner": p.owner.name,
        "package_id": p.id,
        "created_at": timestamp(r.created_at),
        "_links": {"self": f"{package_url(request, p)}/routes/{r.id}"},
    }


def permission(user: Account, access: Access) -> dict[str, Any]:
    return {
        "user_id": user.id,
        "username": user.name,
        "permission_level": ACCESS_LEVEL_NAME[access],
    }


def organization(org: Account) -> dict[str, Any]:
    return _compact(
        {
            "id": org.id,
            "name": org.name,
            "description": org.description,
            "billing_email": org.billing_email,
            "website": org.website,
            "created_at": timestamp(org.created_at),
            "updated_at": timestamp(org.updated_at),
        }
    )


def member(m: Membership) -> dict[str, Any]:
    return {"user_id": m.user_id, "username": m.user.name, "role": m.role}


def membership(m: Membership) -> dict[str, Any]:
    return _compact(
        {
            "organization_id": m.organization_id,
            "organization_name": m.organization.name,
            "organization_description": m.organization.description,
            "organization_website": m.organization.website,
            "role": m.role,
        }
    )


def user(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "type": account.kind,
        "created_at": timestamp(account.created_at),
        "updated_at": timestamp(account.updated_at),
    }


def pixel(p: TrackingPixel) -> dict[str, Any]:
    return _compact(
        {
            "id": p.id,
            "owner": p.owner.name,
            "name": p.name,
            "package": package_identifier(p.package) if p.package is not None else None,
            "created_at": timestamp(p.created_at),
            "updated_at": timestamp(p.updated_at),
        }
    )
