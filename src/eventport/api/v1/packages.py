"""v1 packages, permissions, file-package routes and domains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response
from sqlalchemy.orm import Session

from eventport.api.deps import Actor, Db, Events, forget_events
from eventport.api.routing import ControlRoute, register_segment
from eventport.api.v1 import shapes
from eventport.control import packages as store
from eventport.control.accounts import namespace_access
from eventport.control.models import Account, Package
from eventport.control.packages import PackageFields
from eventport.domain import names
from eventport.domain.access import Access, PermissionLevel
from eventport.domain.errors import InvalidInput, NotFound

router = APIRouter(prefix="/api/v1/packages", tags=["v1 packages"], route_class=ControlRoute)


def _fields(
    body: shapes.PackageUpsert, existing: Package | None, domains: Sequence[str] = ()
) -> PackageFields:
    """The store's fields from a v1 body; ``existing`` and its ``domains`` on update."""
    library = body.library_type or (
        shapes.V1_TYPE.get(existing.type, existing.type) if existing else "other"
    )
    fields = PackageFields(
        name=body.name,
        type=shapes.STORE_TYPE.get(library, library),
        short_description=body.short_description,
        long_description=body.long_description,
        website=body.website,
    )
    if fields.type != "docker" and (body.backend_url or body.public_url):
        raise InvalidInput(
            f"backendUrl and publicUrl belong to docker packages, not to {library} ones",
            code="invalid-backendUrl",
        )
    if fields.type != "docker":
        return fields
    path = existing.repository_name if existing is not None else None
    if body.backend_url or existing is None:
        if not body.backend_url:
            raise InvalidInput("a docker package needs backendUrl", code="invalid-backendUrl")
        registry, path = names.docker_url_parts(body.backend_url, "backendUrl")
        fields.backend_registry, fields.repository_name = registry, path
    if body.public_url:
        public_host, public_path = names.docker_url_parts(body.public_url, "publicUrl")
        if public_path != path:
            raise InvalidInput(
                f"publicUrl path {public_path!r} must match backendUrl path {path!r}",
                code="invalid-publicUrl",
            )
        host = public_host.split(":")[0]
        if existing is None:
            fields.domains = [host]
        elif host not in domains:  # an update does not change domains: say so, not ignore it
            raise InvalidInput(
                f"publicUrl's host {host!r} is not a domain of this package: add it with "
                f"POST /api/v1/packages/{existing.id}/domains first",
                code="invalid-publicUrl",
            )
    return fields


def create_in(s: Session, actor: Account, owner: str, body: shapes.PackageUpsert) -> Package:
    return store.create_package(s, actor, owner, _fields(body, None))


def _package(
    s: Session, actor: Account, ref: str, package_type: str | None, needed: Access
) -> Package:
    """v1 finds a package by uuid, or by name (``packageType`` picks among same-named ones)."""
    try:
        return store.package_for(s, actor, ref, needed)
    except NotFound:
        pass
    wanted = shapes.STORE_TYPE.get(package_type, package_type) if package_type else None
    matches = store.find_packages_by_name(s, actor, ref, wanted)
    if not matches:
        raise NotFound(f"package {ref[:80]!r} not found")
    if len(matches) > 1:
        # The caller's own package wins over same-named ones others let them see, and an
        # organization's they belong to over one only a grant shows them: anyone may grant
        # anyone a package, and such a grant must not break the caller's scripts.
        own = [p for p in matches if p.owner_id == actor.id]
        joined = [p for p in matches if namespace_access(s, actor, p.owner) > Access.NONE]
        matches = own or joined or matches
    if len(matches) > 1:
        kinds = sorted({shapes.V1_TYPE.get(p.type, p.type) for p in matches})
        if len(kinds) > 1 and package_type is None:
            advice = "add ?packageType= to choose"
        else:  # the type cannot tell them apart: only the id can
            owners = ", ".join(sorted({p.owner.name for p in matches}))
            advice = f"they belong to {owners}: use the package's id"
        raise InvalidInput(
            f"several packages are named {ref!r} ({', '.join(kinds)}): {advice}",
            code="ambiguous-package-name",
        )
    return store.package_for(s, actor, matches[0].id, needed)


@router.get("")
def list_packages(db: Db, actor: Actor) -> list[dict[str, Any]]:
    with db.session() as s:
        return [shapes.package(p) for p in store.list_visible_packages(s, actor)]


@router.post("")
def create_package(body: shapes.PackageUpsert, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        return shapes.package(create_in(s, actor, actor.name, body))


# The scope of an npm package's name (``@acme`` of ``@acme/routes``): no package id, and no
# name of its own (npm's names put no ``@`` first but a scope's).
register_segment("npm_scope", "@[^/]+")


# Before the /{package_id}/... routes: a scoped npm package may be named "@acme/routes" (its
# %2F decoded before routing), a package by name, not the routes of a package "@acme".
@router.get("/{scope:npm_scope}/{name:path}")
def get_scoped_package(
    scope: str,
    name: str,
    db: Db,
    actor: Actor,
    package_type: Annotated[shapes.LibraryType | None, Query(alias="packageType")] = None,
) -> dict[str, Any]:
    return get_package(f"{scope}/{name}", db, actor, package_type)


@router.get("/{package_id}/permissions")
def get_permissions(package_id: str, db: Db, actor: Actor) -> list[dict[str, Any]]:
    with db.session() as s:
        package = store.package_for(s, actor, package_id, Access.READ)
        return [
            {"username": p.user.name, "permissionLevel": p.level}
            for p in store.explicit_permissions(s, package)
        ]


@router.post("/{package_id}/permissions")
def set_permissions(
    package_id: str,
    body: Annotated[shapes.PermissionSet | list[shapes.PermissionSet], Body()],
    db: Db,
    actor: Actor,
) -> list[dict[str, Any]]:
    changes = body if isinstance(body, list) else [body]
    with db.session() as s:
        # Admins change grants; anyone may give up their own (store.set_permission decides).
        package = store.package_for(s, actor, package_id, Access.READ)
        for change in changes:
            level = PermissionLevel(change.permission_level)
            store.set_permission(s, actor, package, change.user_query, level)
        if store.access_to(s, actor, package) < Access.READ:
            return []  # the caller gave up the grant that let them see the package
        return [
            {"username": p.user.name, "permissionLevel": p.level}
            for p in store.explicit_permissions(s, package)
        ]


@router.get("/{package_id}/routes")
def list_routes(package_id: str, db: Db, actor: Actor) -> list[dict[str, Any]]:
    with db.session() as s:
        package = store.package_for(s, actor, package_id, Access.READ)
        return [shapes.route(r) for r in store.list_routes(s, package)]


@router.post("/{package_id}/routes")
def create_route(package_id: str, body: shapes.RouteCreate, db: Db, actor: Actor) -> dict[str, Any]:
    with db.session() as s:
        package = store.package_for(s, actor, package_id, Access.ADMIN)
        return shapes.route(store.create_route(s, package, body.template_path, body.outgoing_url))


@router.delete("/{package_id}/routes/{route_id}", status_code=204)
def delete_route(package_id: str, route_id: str, db: Db, actor: Actor) -> Response:
    with db.session() as s:
        package = store.package_for(s, actor, package_id, Access.ADMIN)
        store.delete_route(s, package, route_id)
    return Response(status_code=204)


@router.get("/{package_id}/domains")
def list_domains(package_id: str, db: Db, actor: Actor) -> list[dict[str, Any]]:
    with db.session() as s:
        package = store.package_for(s, actor, package_id, Access.READ)
        return [shapes.domain(d) for d in store.list_domains(s, package)]


@router.post("/{package_id}/domains")
def create_domain(
    package_id: str, body: shapes.DomainCreate, db: Db, actor: Actor
) -> dict[str, Any]:
    with db.session() as s:
        package = store.package_for(s, actor, package_id, Access.ADMIN)
        return shapes.domain(store.create_domain(s, package, body.name))


@router.delete("/{package_id}/domains/{domain_id}", status_code=204)
def delete_domain(package_id: str, domain_id: str, db: Db, actor: Actor) -> Response:
    with db.session() as s:
        package = store.package_for(s, actor, package_id, Access.ADMIN)
        store.delete_domain(s, package, domain_id)
    return Response(status_code=204)


@router.put("/{package_ref}")
def update_package(
    package_ref: Annotated[str, Path(description="The package's id")],
    body: shapes.PackageUpsert,
    db: Db,
    actor: Actor,
) -> dict[str, Any]:
    with db.session() as s:
        package = store.package_for(s, actor, package_ref, Access.ADMIN)
        requested = body.library_type
        if requested is not None and shapes.STORE_TYPE.get(requested, requested) != package.type:
            raise InvalidInput(
                "libraryType cannot change after the package is created",
                code="library-type-is-immutable",
            )
        domains = [d.name for d in store.list_domains(s, package)]
        fields = _fields(body, package, domains)
        body.keep_omitted(fields, package, "long_description", "website")
        return shapes.package(store.update_package(s, actor, package, fields))


@router.delete("/{package_ref}", status_code=204)
def delete_package(
    package_ref: Annotated[str, Path(description="The package's id")],
    db: Db,
    actor: Actor,
    events: Events,
) -> Response:
    with db.session() as s:
        package = store.package_for(s, actor, package_ref, Access.ADMIN)
        deleted = store.delete_package(s, actor, package)
    forget_events(events, deleted)
    return Response(status_code=204)


# A name with a slash ("@acme/tool", "acme/app"), never none: "/api/v1/packages/" is redirected
# to the list, as every route's trailing slash is (it was a 404 "package '' not found").
register_segment("package_ref", ".+")


@router.get("/{package_ref:package_ref}")
def get_package(
    package_ref: str,
    db: Db,
    actor: Actor,
    package_type: Annotated[shapes.LibraryType | None, Query(alias="packageType")] = None,
) -> dict[str, Any]:
    with db.session() as s:
        return shapes.package(_package(s, actor, package_ref, package_type, Access.READ))
