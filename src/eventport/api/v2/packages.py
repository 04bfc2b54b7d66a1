"""v2 packages, their domains, routes and permissions."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query, Request, Response

from eventport.api.deps import Actor, Db, Events, forget_events
from eventport.api.errors import error_response
from eventport.api.pagination import After, PerPage, links, page
from eventport.api.routing import ControlRoute, register_segment
from eventport.api.v2 import shapes
from eventport.api.v2.bodies import DomainBody, PackageBody, PackageType, PermissionBody, RouteBody
from eventport.control import packages as store
from eventport.control import pixels as pixel_store
from eventport.control.packages import PackageFields
from eventport.domain.access import Access, PermissionLevel
from eventport.domain.errors import InvalidInput

router = APIRouter(prefix="/v2/packages", tags=["v2 packages"], route_class=ControlRoute)


def _fields(body: PackageBody) -> PackageFields:
    return PackageFields(
        name=body.name,
        type=body.type,
        short_description=body.short_description,
        long_description=body.long_description,
        website=body.website,
        backend_registry=body.backend_registry,
        repository_url=body.repository_url,
        domains=[body.domain] if body.domain is not None else [],
        incoming_path=body.incoming_path,
        outgoing_url=body.outgoing_url,
    )


@router.get("/{owner}")
def list_packages(
    owner: str,
    request: Request,
    db: Db,
    actor: Actor,
    type: Annotated[list[PackageType] | None, Query()] = None,
    permission: Annotated[Literal["member", "admin", "owner"] | None, Query()] = None,
    after: After = None,
    per_page: PerPage = None,
) -> dict[str, Any]:
    with db.session() as s:
        rows = store.list_owner_packages(s, actor, owner, list(type) if type else None)
        if permission is not None:
            wanted = {"member": Access.READ, "admin": Access.ADMIN, "owner": Access.OWNER}
            floor = wanted[permission]
            rows = [p for p in rows if store.access_to(s, actor, p) >= floor]
        chunk, next_after = page(rows, after, per_page, lambda p: (p.id, p.name))
        return {
            "results": [shapes.package(request, p) for p in chunk],
            "_links": links(request, next_after),
        }


@router.post("/{owner}", status_code=201)
def create_package(owner: str, body: PackageBody, request: Request, db: Db, actor: Actor) -> Any:
    if body.type == "file" and (body.incoming_path is None or body.outgoing_url is None):
        missing = "incoming_path" if body.incoming_path is None else "outgoing_url"
        code = (
            "incoming-path-must-not-be-empty"
            if missing == "incoming_path"
            else ("outgoing-url-must-not-be-empty")
        )
        raise InvalidInput(f"a file package needs {missing}", code=code)
    with db.session() as s:
        return shapes.package(request, store.create_package(s, actor, owner, _fields(body)))


# A path segment naming a package type. A package id is a UUID, so never one of these.
register_segment("package_type", "|".join(get_args(PackageType)))


# Before the /{owner}/{package_id}/... routes: an npm package may be named "routes" or "domains",
# and a docker one "domains/x"; by type and name, those are packages, not sub-resources.
@router.get("/{owner}/{package_type:package_type}/{package_name:path}")
def get_package_by_name(
    owner: str, package_type: PackageType, package_name: str, request: Request, db: Db, actor: Actor
) -> Any:
    with db.session() as s:
        package = store.package_by_type_and_name(s, actor, owner, package_type, package_name)
        return shapes.package(request, package)


@router.get("/{owner}/{package_id}/tracking-pixels")
def package_pixels(
    owner: str,
    package_id: str,
    db: Db,
    actor: Actor,
    after: After = None,
    per_page: PerPage = None,
) -> list[dict[str, Any]]:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        rows = pixel_store.list_package_pixels(s, package.id)
        chunk, _ = page(rows, after, per_page, lambda p: (p.id,))
        return [shapes.pixel(p) for p in chunk]


@router.get("/{owner}/{package_id}/domains")
def list_domains(owner: str, package_id: str, request: Request, db: Db, actor: Actor) -> Any:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        return [shapes.domain(request, package, d) for d in store.list_domains(s, package)]


@router.post("/{owner}/{package_id}/domains", status_code=201)
def create_domain(
    owner: str, package_id: str, body: DomainBody, request: Request, db: Db, actor: Actor
) -> Any:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.ADMIN)
        return shapes.domain(request, package, store.create_domain(s, package, body.name))


@router.get("/{owner}/{package_id}/domains/{domain_id}")
def get_domain(
    owner: str, package_id: str, domain_id: str, request: Request, db: Db, actor: Actor
) -> Any:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        return shapes.domain(request, package, store.get_domain(s, package, domain_id))


@router.delete("/{owner}/{package_id}/domains/{domain_id}", status_code=204)
def delete_domain(owner: str, package_id: str, domain_id: str, db: Db, actor: Actor) -> Response:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.ADMIN)
        store.delete_domain(s, package, domain_id)
    return Response(status_code=204)


@router.get("/{owner}/{package_id}/routes")
def list_routes(
    owner: str,
    package_id: str,
    request: Request,
    db: Db,
    actor: Actor,
    after: After = None,
    per_page: PerPage = None,
) -> Any:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        chunk, _ = page(store.list_routes(s, package), after, per_page, lambda r: (r.id,))
        return [shapes.route(request, package, r) for r in chunk]


@router.post("/{owner}/{package_id}/routes", status_code=201)
def create_route(
    owner: str, package_id: str, body: RouteBody, request: Request, db: Db, actor: Actor
) -> Any:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.ADMIN)
        route = store.create_route(s, package, body.incoming_path, body.outgoing_url)
        return shapes.route(request, package, route)


@router.get("/{owner}/{package_id}/routes/{route_id}")
def get_route(
    owner: str, package_id: str, route_id: str, request: Request, db: Db, actor: Actor
) -> Any:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        return shapes.route(request, package, store.get_route(s, package, route_id))


@router.delete("/{owner}/{package_id}/routes/{route_id}", status_code=204)
def delete_route(owner: str, package_id: str, route_id: str, db: Db, actor: Actor) -> Response:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.ADMIN)
        store.delete_route(s, package, route_id)
    return Response(status_code=204)


@router.get("/{owner}/{package_id}/permissions")
def list_permissions(
    owner: str,
    package_id: str,
    db: Db,
    actor: Actor,
    per_page: PerPage = None,
    after: After = None,
) -> Any:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        rows = store.effective_permissions(s, package)
        chunk, _ = page(rows, after, per_page, lambda pair: (pair[0].id, pair[0].name))
        return [shapes.permission(user, level) for user, level in chunk]


@router.post("/{owner}/{package_id}/permissions", status_code=204)
def set_permission(
    owner: str, package_id: str, body: PermissionBody, db: Db, actor: Actor
) -> Response:
    with db.session() as s:
        # Changing grants is for the package's admins; giving up one's own grant is for
        # anyone who holds one (store.set_permission decides).
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        level = PermissionLevel(body.permission_level)
        store.set_permission(s, actor, package, body.username, level)
    return Response(status_code=204)


@router.delete("/{owner}/{package_id}/permissions/{username}", status_code=204)
def delete_permission(owner: str, package_id: str, username: str, db: Db, actor: Actor) -> Response:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        store.delete_permission(s, actor, package, username)  # an admin's, or one's own
    return Response(status_code=204)


@router.get("/{owner}/{package_id}")
def get_package(owner: str, package_id: str, request: Request, db: Db, actor: Actor) -> Any:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.READ)
        return shapes.package(request, package)


@router.put("/{owner}/{package_id}")
def update_package(
    owner: str, package_id: str, body: PackageBody, request: Request, db: Db, actor: Actor
) -> Any:
    package_type: str | None = None
    try:
        with db.session() as s:
            package = store.owned_package_for(s, actor, owner, package_id, Access.ADMIN)
            package_type = package.type
            fields = _fields(body)
            fields.domains = []
            body.keep_omitted(fields, package, "short_description", "long_description", "website")
            return shapes.package(request, store.update_package(s, actor, package, fields))
    except InvalidInput as exc:
        if package_type is None:
            raise
        # Scarf's UpdatePackageError is discriminated by the type of the package being updated.
        return error_response(422, exc.message, exc.code, type=package_type)


@router.delete("/{owner}/{package_id}", status_code=204)
def delete_package(owner: str, package_id: str, db: Db, actor: Actor, events: Events) -> Response:
    with db.session() as s:
        package = store.owned_package_for(s, actor, owner, package_id, Access.ADMIN)
        deleted = store.delete_package(s, actor, package)
    forget_events(events, deleted)
    return Response(status_code=204)
