"""v2 organizations, their members, and users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from eventport.api.deps import Actor, Db
from eventport.api.pagination import After, PerPage, links, page
from eventport.api.routing import ControlRoute
from eventport.api.v2 import shapes
from eventport.api.v2.bodies import MemberBody, OrganizationBody, RoleBody
from eventport.control import accounts as store
from eventport.control.accounts import OrganizationFields
from eventport.domain.access import Access, OrgRole
from eventport.domain.errors import InvalidInput, NotFound

router = APIRouter(prefix="/v2", tags=["v2 organizations and users"], route_class=ControlRoute)


@router.get("/organizations/{organization_name}")
def get_organization(organization_name: str, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        return shapes.organization(store.organization_for(s, actor, organization_name, Access.READ))


@router.put("/organizations/{organization_name}")
def update_organization(
    organization_name: str, body: OrganizationBody, db: Db, actor: Actor
) -> dict[str, Any]:
    fields = OrganizationFields(body.name, body.description, body.website, body.billing_email)
    with db.session() as s:
        org = store.organization_for(s, actor, organization_name, Access.ADMIN)
        body.keep_omitted(fields, org, "description", "website")
        return shapes.organization(store.update_organization(s, org, fields))


@router.get("/organizations/{organization_name}/members")
def list_members(
    organization_name: str,
    request: Request,
    db: Db,
    actor: Actor,
    after: After = None,
    per_page: PerPage = None,
) -> dict[str, Any]:
    with db.session() as s:
        rows = store.list_members(s, actor, organization_name)
        chunk, next_after = page(rows, after, per_page, lambda m: (m.user_id, m.user.name))
        return {"results": [shapes.member(m) for m in chunk], "_links": links(request, next_after)}


@router.post("/organizations/{organization_name}/members", status_code=201)
def add_member(organization_name: str, body: MemberBody, db: Db, actor: Actor) -> dict[str, Any]:
    try:
        with db.session() as s:
            membership = store.upsert_member(
                s, actor, organization_name, body.username, OrgRole(body.role)
            )
            return shapes.member(membership)
    except InvalidInput as exc:
        if exc.code != "user-not-found":
            raise
        # Scarf's spec answers an unknown user with 404; its 422 codes are about ownership.
        raise NotFound(exc.message) from None


@router.get("/organizations/{organization_name}/members/{organization_member}")
def get_member(
    organization_name: str, organization_member: str, db: Db, actor: Actor
) -> dict[str, Any]:
    with db.session() as s:
        return shapes.member(store.get_member(s, actor, organization_name, organization_member))


@router.put("/organizations/{organization_name}/members/{organization_member}")
def update_member_role(
    organization_name: str, organization_member: str, body: RoleBody, db: Db, actor: Actor
) -> dict[str, Any]:
    with db.session() as s:
        membership = store.set_member_role(
            s, actor, organization_name, organization_member, OrgRole(body.role)
        )
        return shapes.member(membership)


@router.delete("/organizations/{organization_name}/members/{organization_member}", status_code=204)
def remove_member(
    organization_name: str, organization_member: str, db: Db, actor: Actor
) -> Response:
    with db.session() as s:
        store.remove_member(s, actor, organization_name, organization_member)
    return Response(status_code=204)


@router.get("/users/{username}")
def get_user(username: str, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        return shapes.user(store.public_account(s, username))


@router.get("/users/{username}/organizations")
def user_organizations(
    username: str,
    request: Request,
    db: Db,
    actor: Actor,
    organization_id: Annotated[str | None, Query()] = None,
    per_page: PerPage = None,
    after: After = None,
) -> dict[str, Any]:
    with db.session() as s:
        rows = store.organizations_of(s, actor, username)
        if organization_id is not None:
            rows = [m for m in rows if m.organization_id == organization_id]
        # The spec lists no `after` here, but `_links.next` must lead to the next page.
        chunk, next_after = page(rows, after, per_page, lambda m: (m.organization_id,))
        return {
            "results": [shapes.membership(m) for m in chunk],
            "_links": links(request, next_after),
        }
