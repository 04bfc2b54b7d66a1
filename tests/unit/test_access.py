"""The access rules on their own, without HTTP or a database."""

from __future__ import annotations

import pytest

from eventport.domain.access import (
    Access,
    OrgRole,
    PermissionLevel,
    account_access,
    package_access,
    pixel_access,
)


@pytest.mark.parametrize(
    ("is_self", "role", "expected"),
    [
        (True, None, Access.OWNER),
        (False, OrgRole.OWNER, Access.OWNER),
        (False, OrgRole.ADMIN, Access.ADMIN),
        (False, OrgRole.MEMBER, Access.READ),
        (False, None, Access.NONE),
    ],
)
def test_account_access(is_self: bool, role: OrgRole | None, expected: Access) -> None:
    assert account_access(is_self=is_self, org_role=role) is expected


@pytest.mark.parametrize(
    ("namespace", "grant", "expected"),
    [
        (Access.NONE, None, Access.NONE),
        (Access.NONE, PermissionLevel.MEMBER, Access.READ),
        (Access.NONE, PermissionLevel.ADMIN, Access.ADMIN),
        (Access.READ, PermissionLevel.ADMIN, Access.ADMIN),
        (Access.ADMIN, PermissionLevel.MEMBER, Access.ADMIN),  # a grant never lowers
        (Access.READ, PermissionLevel.DEFAULT, Access.READ),
        (Access.READ, PermissionLevel.BLOCKED, Access.NONE),
        (Access.ADMIN, PermissionLevel.BLOCKED, Access.NONE),  # blocked beats the organization
        (Access.OWNER, PermissionLevel.BLOCKED, Access.OWNER),  # but not ownership
    ],
)
def test_package_access(namespace: Access, grant: PermissionLevel | None, expected: Access) -> None:
    assert package_access(namespace, grant) is expected


def test_pixel_follows_its_package_when_attached() -> None:
    assert pixel_access(Access.READ, None) is Access.READ
    assert pixel_access(Access.READ, Access.NONE) is Access.NONE
    assert pixel_access(Access.NONE, Access.ADMIN) is Access.ADMIN
