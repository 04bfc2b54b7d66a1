"""Who may do what: organization roles, package permission levels and their combination.

Access is an ordered level. ``NONE`` means the caller may not even learn that the resource
exists (the API answers 404); ``READ`` lets them see it; ``ADMIN`` lets them change it;
``OWNER`` also lets them hand out or take away ownership.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Access(IntEnum):
    NONE = 0
    READ = 1
    ADMIN = 2
    OWNER = 3


class OrgRole(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"


class PermissionLevel(StrEnum):
    """Explicit per-user package permission. ``owner`` is only ever derived, never stored."""

    BLOCKED = "blocked"
    DEFAULT = "default"
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"


ROLE_ACCESS = {
    OrgRole.MEMBER: Access.READ,
    OrgRole.ADMIN: Access.ADMIN,
    OrgRole.OWNER: Access.OWNER,
}

GRANT_ACCESS = {
    PermissionLevel.DEFAULT: Access.NONE,
    PermissionLevel.MEMBER: Access.READ,
    PermissionLevel.ADMIN: Access.ADMIN,
    PermissionLevel.OWNER: Access.OWNER,
}

ACCESS_LEVEL_NAME = {Access.READ: "member", Access.ADMIN: "admin", Access.OWNER: "owner"}


def account_access(*, is_self: bool, org_role: OrgRole | None) -> Access:
    """Access a user has to an account namespace: their own, or an organization's."""
    if is_self:
        return Access.OWNER
    if org_role is not None:
        return ROLE_ACCESS[org_role]
    return Access.NONE


def package_access(namespace_access: Access, grant: PermissionLevel | None) -> Access:
    """Combine what the owner namespace gives with an explicit package permission.

    ``blocked`` wins over anything but ownership of the namespace itself: an organization's
    owner can always reach its packages, so the organization can never lose a package.
    """
    if grant is PermissionLevel.BLOCKED:
        return Access.OWNER if namespace_access is Access.OWNER else Access.NONE
    granted = GRANT_ACCESS.get(grant, Access.NONE) if grant is not None else Access.NONE
    return max(namespace_access, granted)


def pixel_access(namespace_access: Access, package: Access | None) -> Access:
    """A pixel attached to a package shares that package's access (a block included, since its
    events are the package's events); a free-standing pixel follows its owner namespace."""
    return namespace_access if package is None else package
