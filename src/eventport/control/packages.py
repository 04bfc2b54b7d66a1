"""Packages of every type, their permissions, file-package routes and domains."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from eventport.control.accounts import (
    account_by_name,
    hold_account,
    namespace_access,
    require,
    user_by_query,
)
from eventport.control.models import (
    Account,
    Import,
    Membership,
    Package,
    PackageDomain,
    PackagePermission,
    PackageRoute,
    TrackingPixel,
    clock,
    utcnow,
)
from eventport.domain import names
from eventport.domain.access import ROLE_ACCESS, Access, OrgRole, PermissionLevel, package_access
from eventport.domain.errors import Forbidden, InvalidInput, NotFound

PACKAGE_TYPES = ("docker", "file", "python", "npm", "hackage", "other")
DEFAULT_PYTHON_REPOSITORY = "https://pypi.org/simple/"


@dataclass
class PackageFields:
    """What a create or update may set; the API layers translate v1 and v2 bodies into this."""

    name: str
    type: str
    short_description: str | None = None
    long_description: str | None = None
    website: str | None = None
    backend_registry: str | None = None
    repository_name: str | None = None
    repository_url: str | None = None
    domains: list[str] = field(default_factory=list)
    incoming_path: str | None = None
    outgoing_url: str | None = None


def parse_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(f"{what} {value[:80]!r} not found") from None


# --- access ----------------------------------------------------------------------------------


def explicit_grant(session: Session, package: Package, user: Account) -> PermissionLevel | None:
    row = session.get(PackagePermission, (package.id, user.id))
    return PermissionLevel(row.level) if row is not None else None


def access_to(session: Session, actor: Account, package: Package) -> Access:
    return package_access(
        namespace_access(session, actor, package.owner), explicit_grant(session, package, actor)
    )


def writes_every_artifact(session: Session, actor: Account, account: Account) -> bool:
    """Whether ``actor`` may write every package and tracking pixel of ``account``: an admin of
    its namespace blocked on none of its packages (a block binds all but the owner)."""
    access = namespace_access(session, actor, account)
    if access is not Access.ADMIN:
        return access is Access.OWNER
    return not _holds_grant(session, actor, account, PermissionLevel.BLOCKED)


def writes_some_artifact(session: Session, actor: Account, account: Account) -> bool:
    """Whether ``actor`` may import into any package or tracking pixel of ``account``: an
    admin of its namespace, or the holder of an ``admin`` grant on one of its packages."""
    if namespace_access(session, actor, account) >= Access.ADMIN:
        return True
    return _holds_grant(session, actor, account, PermissionLevel.ADMIN)


def _holds_grant(
    session: Session,
    actor: Account,
    account: Account,
    level: PermissionLevel,
    *,
    other_than: bool = False,
) -> bool:
    """Whether ``actor`` holds a ``level`` grant (``other_than``: a grant of another level)
    on some package of ``account``."""
    found = session.scalar(
        select(PackagePermission.package_id)
        .join(Package, Package.id == PackagePermission.package_id)
        .where(
            Package.owner_id == account.id,
            PackagePermission.user_id == actor.id,
            (PackagePermission.level != level.value)
            if other_than
            else (PackagePermission.level == level.value),
        )
        .limit(1)
    )
    return found is not None


def package_for(session: Session, actor: Account, package_id: str, needed: Access) -> Package:
    package = session.get(Package, parse_uuid(package_id, "package"))
    if package is None:
        raise NotFound(f"package {package_id[:80]!r} not found")
    require(access_to(session, actor, package), needed, f"package {package_id!r}")
    return package


def owned_package_for(
    session: Session, actor: Account, owner: str, package_id: str, needed: Access
) -> Package:
    """A package addressed under its owner, as v2 does: the owner must match."""
    package = package_for(session, actor, package_id, Access.READ)
    if package.owner.name != owner:
        raise NotFound(f"package {package_id[:80]!r} not found")
    require(access_to(session, actor, package), needed, f"package {package_id!r}")
    return package


def _visible(session: Session, actor: Account, packages: Iterable[Package]) -> list[Package]:
    return [p for p in packages if access_to(session, actor, p) >= Access.READ]


def list_visible_packages(session: Session, actor: Account) -> list[Package]:
    """Every package the user can read: their own, their organizations', explicit grants."""
    org_ids = select(Membership.organization_id).where(Membership.user_id == actor.id)
    granted = select(PackagePermission.package_id).where(PackagePermission.user_id == actor.id)
    rows = session.scalars(
        select(Package)
        .where(
            (Package.owner_id == actor.id) | Package.owner_id.in_(org_ids) | Package.id.in_(granted)
        )
        .order_by(Package.name, Package.type, Package.id)
    )
    return _visible(session, actor, rows)


def owner_for_listing(session: Session, actor: Account, owner: str) -> Account:
    """The owner whose packages are listed: visible through membership or through a grant."""
    account = account_by_name(session, owner)
    if account is None or not sees_owner(session, actor, account):
        raise NotFound(f"owner {owner!r} not found")
    return account


def sees_owner(session: Session, actor: Account, account: Account) -> bool:
    """Whether ``actor`` may know of ``account``'s packages at all: a member of its namespace,
    or the holder of a grant (other than a block) on one of its packages."""
    if namespace_access(session, actor, account) is not Access.NONE:
        return True
    return _holds_grant(session, actor, account, PermissionLevel.BLOCKED, other_than=True)


def list_owner_packages(
    session: Session, actor: Account, owner: str, types: list[str] | None = None
) -> list[Package]:
    return packages_of(session, actor, owner_for_listing(session, actor, owner), types)


def packages_of(
    session: Session, actor: Account, account: Account, types: list[str] | None = None
) -> list[Package]:
    """The packages of ``account`` (found by :func:`owner_for_listing`) the caller may read."""
    query = select(Package).where(Package.owner_id == account.id)
    if types:
        query = query.where(Package.type.in_(types))
    return _visible(session, actor, session.scalars(query.order_by(Package.name, Package.id)))


def find_packages_by_name(
    session: Session, actor: Account, name: str, type_: str | None
) -> list[Package]:
    query = select(Package).where(Package.name == name)
    if type_ is not None:
        query = query.where(Package.type == type_)
    return _visible(session, actor, session.scalars(query.order_by(Package.created_at)))


def package_by_type_and_name(
    session: Session, actor: Account, owner: str, type_: str, name: str
) -> Package:
    account = account_by_name(session, owner)
    package = (
        session.scalar(
            select(Package).where(
                Package.owner_id == account.id, Package.type == type_, Package.name == name
            )
        )
        if account is not None
        else None
    )
    if package is None or access_to(session, actor, package) is Access.NONE:
        raise NotFound(f"{type_} package {name[:80]!r} of {owner!r} not found")
    return package


# --- create, update, delete ------------------------------------------------------------------


def _check_fields(fields: PackageFields, stored: Package | None = None) -> None:
    """The rules of a package's fields; ``stored``: the package an update changes, whose
    website is not checked again if kept as it is (an older eventport accepted any text, and
    every update that left the website out then failed on it; an upgrade hunt)."""
    if fields.type not in PACKAGE_TYPES:
        raise InvalidInput(
            f"unknown package type {fields.type[:40]!r}: one of {', '.join(PACKAGE_TYPES)}",
            code="invalid-package-type",
        )
    # The type's own rules first, for Scarf's codes (docker-image-name-has-empty-segments,
    # invalid-python-project-name); an empty name is package-name-is-empty whatever the type.
    if fields.name and fields.type == "python":
        names.check_python_name(fields.name)
    if fields.name and fields.type == "docker" and fields.repository_name is None:
        fields.repository_name = names.check_docker_image_name(fields.name)
    longest = names.DOCKER_NAME_MAX if fields.type == "docker" else names.PACKAGE_NAME_MAX
    names.check_package_name(fields.name, longest)
    names.check_text("short_description", fields.short_description)
    names.check_text("long_description", fields.long_description)
    if stored is None or fields.website != stored.website:
        fields.website = names.check_website(fields.website, code="invalid-website")
    if fields.type == "docker":
        names.check_registry(fields.backend_registry)
    if fields.type == "python":
        fields.repository_url = names.check_repository_url(
            fields.repository_url or DEFAULT_PYTHON_REPOSITORY
        )
    for domain in fields.domains:
        names.check_domain(domain, prefix="public-domain")


def _ensure_unique(session: Session, owner: Account, fields: PackageFields, exclude: str) -> None:
    clash = session.scalar(
        select(Package.id).where(
            Package.owner_id == owner.id,
            Package.type == fields.type,
            Package.name == fields.name,
            Package.id != exclude,
        )
    )
    if clash is not None:
        raise InvalidInput(
            f"{owner.name!r} already has a {fields.type} package named {fields.name!r}",
            code="package-already-exists",
        )


def _ensure_domain_free(session: Session, name: str, code: str) -> None:
    if session.scalar(select(PackageDomain.id).where(PackageDomain.name == name)) is not None:
        raise InvalidInput(f"the domain {name!r} is already in use", code=code)


def create_package(session: Session, actor: Account, owner: str, fields: PackageFields) -> Package:
    account = account_by_name(session, owner)
    if account is None:
        raise NotFound(f"owner {owner!r} not found")
    require(namespace_access(session, actor, account), Access.ADMIN, f"packages of {owner!r}")
    _check_fields(fields)
    if fields.type != "file" and (fields.incoming_path or fields.outgoing_url):
        # Stored, such a route could be neither checked nor deleted (POST .../routes refuses
        # it too); the code is one Scarf's spec lists for a create.
        raise InvalidInput(
            f"incoming_path and outgoing_url belong to file packages, not to {fields.type} ones",
            code="package-is-conflicting",
        )
    if fields.type == "file" and fields.incoming_path is not None:
        names.check_route(fields.incoming_path, fields.outgoing_url or "")
    _ensure_unique(session, account, fields, exclude="")
    for domain in fields.domains:
        _ensure_domain_free(session, domain, "public-domain-is-already-in-use")
    package = Package(
        owner_id=account.id,
        name=fields.name,
        type=fields.type,
        short_description=fields.short_description,
        long_description=fields.long_description,
        website=fields.website,
        backend_registry=fields.backend_registry,
        repository_name=fields.repository_name,
        repository_url=fields.repository_url,
    )
    session.add(package)
    session.flush()
    for domain in fields.domains:
        session.add(PackageDomain(package_id=package.id, name=domain))
    if fields.incoming_path is not None and fields.outgoing_url is not None:
        session.add(
            PackageRoute(
                package_id=package.id,
                incoming_path=fields.incoming_path,
                outgoing_url=fields.outgoing_url,
            )
        )
    session.flush()
    session.refresh(package)
    return package


def update_package(
    session: Session, actor: Account, package: Package, fields: PackageFields
) -> Package:
    require(access_to(session, actor, package), Access.ADMIN, f"package {package.id!r}")
    if fields.type != package.type:
        raise InvalidInput(
            f"the package type cannot change (it is {package.type!r})",
            code="package-is-conflicting",
        )
    if fields.type == "docker":
        fields.backend_registry = fields.backend_registry or package.backend_registry
        if fields.repository_name is None and package.repository_name != package.name:
            fields.repository_name = package.repository_name  # given on create: kept
        # else the image's name follows the package's, checked as on create
    if fields.type == "python" and not fields.repository_url:
        fields.repository_url = package.repository_url  # v1 updates cannot even send it
    _check_fields(fields, stored=package)
    _ensure_unique(session, package.owner, fields, exclude=package.id)
    package.name = fields.name
    package.short_description = fields.short_description
    package.long_description = fields.long_description
    package.website = fields.website
    package.backend_registry = fields.backend_registry
    package.repository_name = fields.repository_name
    package.repository_url = fields.repository_url
    package.updated_at = utcnow()
    session.flush()
    return package


@dataclass(frozen=True)
class Deleted:
    """What a deletion took: the events of these packages and pixels are to go too (the
    event store is not the control store's to change: the caller deletes them)."""

    owner_id: str
    package_ids: tuple[str, ...] = ()
    pixel_ids: tuple[str, ...] = ()


def stop_imports_into(session: Session, deleted: Deleted) -> None:
    """Running imports into what was deleted stop as an abort does (within a second): their
    worker then finds the target gone and fails them. (Waiting ones fail when claimed.)"""
    into = [
        (Import.target == "package") & Import.package_id.in_(deleted.package_ids),
        (Import.target == "pixel") & Import.pixel_id.in_(deleted.pixel_ids),
    ]
    session.execute(
        update(Import)
        .where(Import.owner_id == deleted.owner_id, Import.state == "running", or_(*into))
        .values(abort_requested=True, updated_at=clock(session))
        .execution_options(synchronize_session=False)
    )


def delete_package(session: Session, actor: Account, package: Package) -> Deleted:
    """The package goes with what belongs to it: its routes, domains and permissions, and the
    tracking pixels attached to it. Freed instead, a pixel (and the events it recorded as the
    package's) would follow the namespace's access, and reach users the package was kept from
    (one blocked on it)."""
    require(access_to(session, actor, package), Access.ADMIN, f"package {package.id!r}")
    pixel_ids = []
    for pixel in session.scalars(
        select(TrackingPixel).where(TrackingPixel.package_id == package.id)
    ):
        pixel_ids.append(pixel.id)
        session.delete(pixel)
    deleted = Deleted(package.owner_id, (package.id,), tuple(pixel_ids))
    session.delete(package)
    stop_imports_into(session, deleted)
    session.flush()
    return deleted


# --- permissions -----------------------------------------------------------------------------


def explicit_permissions(session: Session, package: Package) -> list[PackagePermission]:
    return list(
        session.scalars(
            select(PackagePermission)
            .join(Account, Account.id == PackagePermission.user_id)
            .where(PackagePermission.package_id == package.id)
            .order_by(Account.name)
        )
    )


def effective_permissions(session: Session, package: Package) -> list[tuple[Account, Access]]:
    """Everyone who can reach the package and how far, whether by ownership, role or grant."""
    base: dict[str, tuple[Account, Access]] = {}
    if package.owner.is_organization:
        for m in session.scalars(
            select(Membership).where(Membership.organization_id == package.owner_id)
        ):
            base[m.user_id] = (m.user, ROLE_ACCESS[OrgRole(m.role)])
    else:
        base[package.owner_id] = (package.owner, Access.OWNER)
    grants = {p.user_id: p for p in explicit_permissions(session, package)}
    for user_id, grant in grants.items():
        base.setdefault(user_id, (grant.user, Access.NONE))
    result = []
    for user_id, (user, namespace) in base.items():
        grant_level = PermissionLevel(grants[user_id].level) if user_id in grants else None
        level = package_access(namespace, grant_level)
        if level >= Access.READ:
            result.append((user, level))
    return sorted(result, key=lambda pair: pair[0].name)


def _names_actor(actor: Account, user_query: str) -> bool:
    """Whether a permission's user query (a username or an email) names ``actor``."""
    query = user_query.lower()
    return query == actor.name or (actor.email is not None and query == actor.email)


def _require_grant_right(
    session: Session, actor: Account, package: Package, *, own_grant_dropped: bool
) -> None:
    """Grants are changed by the package's admins; anyone may give up a grant of their own
    (as anyone may leave an organization): a grant needs no consent, so its holder must be
    able to get rid of it. A block is not theirs to lift (see _require_blocking_right).

    Holds the owner first (hold_account), so that grant changes take turns and each reads
    the grants afresh: a block set while its holder gave up their grant was lost (the block
    answered 200, the grant's deletion then took it), or answered 500."""
    hold_account(session, package.owner_id)
    session.expire_all()
    access = access_to(session, actor, package)
    if not (own_grant_dropped and access >= Access.READ):
        require(access, Access.ADMIN, f"package {package.id!r}")


def set_permission(
    session: Session, actor: Account, package: Package, user_query: str, level: PermissionLevel
) -> PackagePermission | None:
    _require_grant_right(
        session,
        actor,
        package,
        own_grant_dropped=level is PermissionLevel.DEFAULT and _names_actor(actor, user_query),
    )
    user = user_by_query(session, user_query)
    if level is PermissionLevel.OWNER:
        raise InvalidInput(
            "ownership comes from the owning account and cannot be granted per package",
            code="cannot-grant-owner",
        )
    if namespace_access(session, user, package.owner) is Access.OWNER and level in (
        PermissionLevel.BLOCKED,
        PermissionLevel.MEMBER,
        PermissionLevel.ADMIN,  # stored, it would list an owner as a mere admin
    ):
        raise InvalidInput(
            f"{user.name!r} owns this package; an owner's access cannot be lowered",
            code="cannot-change-owner",
        )
    row = session.get(PackagePermission, (package.id, user.id))
    _require_blocking_right(session, actor, package, level, row)
    if level is PermissionLevel.DEFAULT:
        # "default" means no explicit permission: whatever the owner's roles give.
        if row is not None:
            session.delete(row)
            session.flush()
        return None
    if row is None:
        row = PackagePermission(package_id=package.id, user_id=user.id, level=level.value)
        session.add(row)
    else:
        row.level = level.value
    session.flush()
    return row


def _require_blocking_right(
    session: Session,
    actor: Account,
    package: Package,
    level: PermissionLevel,
    row: PackagePermission | None,
) -> None:
    """Blocking a user, or lifting a block, is for the owners and admins of the package's
    namespace: a package's ``admin`` grant does not reach so far (its holder could otherwise
    block an organization's admins out of the package, or let back in whom its owner
    blocked)."""
    blocked = PermissionLevel.BLOCKED.value
    if (level.value == blocked) == (row is not None and row.level == blocked):
        return  # no block is set or lifted
    if namespace_access(session, actor, package.owner) < Access.ADMIN:
        raise Forbidden(
            f"only the owners and admins of {package.owner.name!r} may block a user from its "
            "packages or lift a block"
        )


def delete_permission(session: Session, actor: Account, package: Package, username: str) -> None:
    _require_grant_right(session, actor, package, own_grant_dropped=_names_actor(actor, username))
    user = account_by_name(session, username)
    if user is None:
        raise NotFound(f"user {username[:80]!r} not found")
    if namespace_access(session, user, package.owner) is Access.OWNER:
        raise InvalidInput(
            f"{username!r} owns this package and cannot be removed from it",
            code="cannot-delete-owner",
        )
    row = session.get(PackagePermission, (package.id, user.id))
    if row is None:
        raise NotFound(f"{username!r} has no permission on this package")
    _require_blocking_right(session, actor, package, PermissionLevel.DEFAULT, row)
    session.delete(row)
    session.flush()


# --- routes and domains ----------------------------------------------------------------------


def list_routes(session: Session, package: Package) -> list[PackageRoute]:
    return list(
        session.scalars(
            select(PackageRoute)
            .where(PackageRoute.package_id == package.id)
            .order_by(PackageRoute.created_at, PackageRoute.id)
        )
    )


def _require_file_package(package_type: str) -> None:
    if package_type != "file":
        raise InvalidInput(
            f"routes belong to file packages; this one is a {package_type} package",
            code="not-a-file-package",
        )


def create_route(
    session: Session, package: Package, incoming_path: str, outgoing_url: str
) -> PackageRoute:
    _require_file_package(package.type)
    names.check_route(incoming_path, outgoing_url)
    clash = session.scalar(
        select(PackageRoute.id).where(
            PackageRoute.package_id == package.id, PackageRoute.incoming_path == incoming_path
        )
    )
    if clash is not None:
        raise InvalidInput(
            f"this package already has a route for {incoming_path!r}", code="route-already-exists"
        )
    route = PackageRoute(
        package_id=package.id, incoming_path=incoming_path, outgoing_url=outgoing_url
    )
    session.add(route)
    session.flush()
    return route


def get_route(session: Session, package: Package, route_id: str) -> PackageRoute:
    route = session.get(PackageRoute, parse_uuid(route_id, "route"))
    if route is None or route.package_id != package.id:
        raise NotFound(f"route {route_id[:80]!r} not found")
    return route


def delete_route(session: Session, package: Package, route_id: str) -> None:
    _require_file_package(package.type)
    route = get_route(session, package, route_id)
    session.delete(route)
    session.flush()


def list_domains(session: Session, package: Package) -> list[PackageDomain]:
    return list(
        session.scalars(
            select(PackageDomain)
            .where(PackageDomain.package_id == package.id)
            .order_by(PackageDomain.created_at, PackageDomain.id)
        )
    )


def create_domain(session: Session, package: Package, name: str) -> PackageDomain:
    names.check_domain(name)
    _ensure_domain_free(session, name, "domain-is-already-in-use")
    domain = PackageDomain(package_id=package.id, name=name)
    session.add(domain)
    session.flush()
    return domain


def get_domain(session: Session, package: Package, domain_id: str) -> PackageDomain:
    domain = session.get(PackageDomain, parse_uuid(domain_id, "domain"))
    if domain is None or domain.package_id != package.id:
        raise NotFound(f"domain {domain_id[:80]!r} not found")
    return domain


def delete_domain(session: Session, package: Package, domain_id: str) -> None:
    domain = get_domain(session, package, domain_id)
    if package.type == "docker" and len(list_domains(session, package)) == 1:
        raise InvalidInput(
            "a docker package keeps at least one domain; add another before removing this one",
            code="package-must-have-one-domain",
        )
    session.delete(domain)
    session.flush()
