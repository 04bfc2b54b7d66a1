"""Tracking pixels: owned by an account, optionally attached to one of its packages."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from eventport.control.accounts import account_by_name, namespace_access, require
from eventport.control.models import Account, TrackingPixel, utcnow
from eventport.control.packages import (
    Deleted,
    access_to,
    owner_for_listing,
    package_for,
    parse_uuid,
    stop_imports_into,
)
from eventport.domain import names
from eventport.domain.access import Access, pixel_access
from eventport.domain.errors import InvalidInput, NotFound


def access_to_pixel(session: Session, actor: Account, pixel: TrackingPixel) -> Access:
    package = access_to(session, actor, pixel.package) if pixel.package is not None else None
    return pixel_access(namespace_access(session, actor, pixel.owner), package)


def pixel_for(
    session: Session, actor: Account, owner: str, pixel_id: str, needed: Access
) -> TrackingPixel:
    pixel = session.get(TrackingPixel, parse_uuid(pixel_id, "tracking pixel"))
    if pixel is None or pixel.owner.name != owner:
        raise NotFound(f"tracking pixel {pixel_id[:80]!r} not found")
    require(access_to_pixel(session, actor, pixel), needed, f"tracking pixel {pixel_id!r}")
    return pixel


def list_pixels(session: Session, actor: Account, owner: str) -> list[TrackingPixel]:
    account = owner_for_listing(session, actor, owner)
    rows = session.scalars(
        select(TrackingPixel)
        .where(TrackingPixel.owner_id == account.id)
        .order_by(TrackingPixel.name, TrackingPixel.id)
    )
    return [p for p in rows if access_to_pixel(session, actor, p) >= Access.READ]


def list_package_pixels(session: Session, package_id: str) -> list[TrackingPixel]:
    return list(
        session.scalars(
            select(TrackingPixel)
            .where(TrackingPixel.package_id == package_id)
            .order_by(TrackingPixel.name, TrackingPixel.id)
        )
    )


def _check_name(name: str) -> str:
    if not any(c.isprintable() and not c.isspace() for c in name):  # blank, or invisible
        raise InvalidInput("tracking pixel name is empty", code="name-is-empty")
    return names.check_text("name", name, 200) or name


def _ensure_name_free(session: Session, owner: Account, name: str, exclude: str) -> None:
    clash = session.scalar(
        select(TrackingPixel.id).where(
            TrackingPixel.owner_id == owner.id,
            TrackingPixel.name == name,
            TrackingPixel.id != exclude,
        )
    )
    if clash is not None:
        raise InvalidInput(
            f"{owner.name!r} already has a tracking pixel named {name!r}",
            code="name-already-exists",
        )


def _attachable_package(
    session: Session, actor: Account, owner: Account, package_id: str | None, *, creating: bool
) -> str | None:
    if package_id is None:
        return None
    package = package_for(session, actor, package_id, Access.ADMIN)
    if package.owner_id != owner.id:
        if creating:
            # Scarf documents no 422 for this on create: seen from this owner, it is not found.
            raise NotFound(f"package {package_id[:80]!r} of {owner.name!r} not found")
        raise InvalidInput(
            "a tracking pixel can only belong to a package of the same owner",
            code="invalid-package-owner",
        )
    return package.id


def create_pixel(
    session: Session, actor: Account, owner: str, name: str, package_id: str | None
) -> TrackingPixel:
    account = account_by_name(session, owner)
    if account is None:
        raise NotFound(f"owner {owner!r} not found")
    if package_id is None:
        require(namespace_access(session, actor, account), Access.ADMIN, f"pixels of {owner!r}")
    name = _check_name(name)
    attached = _attachable_package(session, actor, account, package_id, creating=True)
    _ensure_name_free(session, account, name, exclude="")
    pixel = TrackingPixel(owner_id=account.id, name=name, package_id=attached)
    session.add(pixel)
    session.flush()
    session.refresh(pixel)
    return pixel


def update_pixel(
    session: Session, actor: Account, pixel: TrackingPixel, name: str, package_id: str | None
) -> TrackingPixel:
    name = _check_name(name)
    if package_id is None and pixel.package_id is not None:
        # Detached, it is a pixel of the owner's own: it needs what creating one of those needs.
        require(
            namespace_access(session, actor, pixel.owner),
            Access.ADMIN,
            f"pixels of {pixel.owner.name!r}",
        )
    attached = _attachable_package(session, actor, pixel.owner, package_id, creating=False)
    _ensure_name_free(session, pixel.owner, name, exclude=pixel.id)
    pixel.name = name
    pixel.package_id = attached
    pixel.updated_at = utcnow()
    session.flush()
    session.refresh(pixel)
    return pixel


def delete_pixel(session: Session, pixel: TrackingPixel) -> Deleted:
    deleted = Deleted(pixel.owner_id, pixel_ids=(pixel.id,))
    session.delete(pixel)
    stop_imports_into(session, deleted)
    session.flush()
    return deleted
