"""v1 organizations and their members."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from eventport.api.deps import Actor, Db
from eventport.api.routing import ControlRoute
from eventport.api.v1 import shapes
from eventport.api.v1.packages import create_in
from eventport.control import accounts as store
from eventport.control import packages as package_store
from eventport.control.accounts import OrganizationFields
from eventport.domain.access import Access, OrgRole
from eventport.domain.errors import NotFound

router = APIRouter(prefix="/api/v1", tags=["v1 organizations"], route_class=ControlRoute)


def _fields(body: shapes.OrganizationUpsert) -> OrganizationFields:
    return OrganizationFields(body.name, body.description, body.website, body.billing_email)


@router.post("/organizations")
def create_organization(body: shapes.OrganizationUpsert, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        return shapes.organization(store.create_organization(s, actor, _fields(body)))


@router.get("/organizations/{organization_name}")
def get_organization(organization_name: str, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        return shapes.organization(store.organization_for(s, actor, organization_name, Access.READ))


@router.put("/organizations/{organization_name}")
def update_organization(
    organization_name: str, body: shapes.OrganizationUpsert, db: Db, actor: Actor
) -> dict[str, Any]:
    with db.session() as s:
        fields = _fields(body)
        org = store.organization_for(s, actor, organization_name, Access.ADMIN)
        body.keep_omitted(fields, org, "website")
        org = store.update_organization(s, org, fields)
        return shapes.organization(org)


@router.get("/organizations/{organization_name}/packages")
def list_organization_packages(
    organization_name: str, db: Db, actor: Actor
) -> list[dict[str, Any]]:
    with db.session() as s:  # visible to members and to holders of a grant, as in v2
        account = package_store.owner_for_listing(s, actor, organization_name)
        if not account.is_organization:
            raise NotFound(f"organization {organization_name!r} not found")
        return [shapes.package(p) for p in package_store.packages_of(s, actor, account)]


@router.post("/{organization_name}/packages")
def create_organization_package(
    organization_name: str, body: shapes.PackageUpsert, db: Db, actor: Actor
) -> dict[str, Any]:
    with db.session() as s:
        store.organization_for(s, actor, organization_name, Access.READ)
        return shapes.package(create_in(s, actor, organization_name, body))


@router.get("/{organization_name}/users")
def list_members(organization_name: str, db: Db, actor: Actor) -> list[dict[str, Any]]:
    with db.session() as s:
        return [shapes.member(m) for m in store.list_members(s, actor, organization_name)]


@router.post("/{organization_name}/users")
def upsert_member(
    organization_name: str, body: shapes.MemberUpsert, db: Db, actor: Actor
) -> dict[str, Any]:
    with db.session() as s:
        membership = store.upsert_member(
            s, actor, organization_name, body.username, OrgRole(body.role)
        )
        return shapes.member(membership)


@router.delete("/{organization_name}/users/{username}", status_code=204)
def remove_member(organization_name: str, username: str, db: Db, actor: Actor) -> Response:
    with db.session() as s:
        store.remove_member(s, actor, organization_name, username)
    return Response(status_code=204)
