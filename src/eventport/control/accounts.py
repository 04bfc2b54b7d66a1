"""Users, API tokens, organizations and memberships, and who may see which account."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from eventport.control.models import Account, ApiToken, Membership, utcnow
from eventport.domain import names
from eventport.domain.access import Access, OrgRole, account_access
from eventport.domain.errors import Forbidden, InvalidInput, NotFound

TOKEN_PREFIX = "ep_"


def hash_token(token: str) -> str:
    """Tokens carry 256 random bits, so one round of SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# --- users and tokens ------------------------------------------------------------------------


def account_by_name(session: Session, name: str) -> Account | None:
    return session.scalar(select(Account).where(Account.name == name))


def user_by_query(session: Session, query: str) -> Account:
    """Find a user by username or email (package permissions accept either)."""
    column = Account.email if "@" in query else Account.name
    user = session.scalar(select(Account).where(column == query.lower(), Account.kind == "user"))
    if user is None:
        raise InvalidInput(f"no user matches {query[:80]!r}", code="user-not-found")
    return user


def _ensure_name_free(session: Session, name: str, *, code: str) -> None:
    if account_by_name(session, name) is not None:
        raise InvalidInput(f"the name {name!r} is already taken", code=code)


def create_user(session: Session, name: str, email: str) -> tuple[Account, str]:
    """Create a user and its first API token. The token is returned once and never stored."""
    names.check_account_name(name)
    email = names.check_email(email)
    _ensure_name_free(session, name, code="entity-already-exists")
    if session.scalar(select(Account).where(Account.email == email)) is not None:
        raise InvalidInput(f"the email {email!r} is already in use", code="email-already-exists")
    user = Account(name=name, kind="user", email=email)
    session.add(user)
    session.flush()
    _, token = issue_token(session, name, label="created with the user")
    return user, token


def issue_token(session: Session, username: str, label: str | None = None) -> tuple[ApiToken, str]:
    user = account_by_name(session, username)
    if user is None or user.kind != "user":
        raise NotFound(f"no user named {username!r}")
    token = _new_token()
    row = ApiToken(
        user_id=user.id, label=names.check_text("label", label, 200), token_hash=hash_token(token)
    )
    session.add(row)
    session.flush()
    return row, token


def revoke_token(session: Session, token_id: str) -> ApiToken:
    """Revoke the token ``token_id``, a UUID however it is spelled (upper case, without
    dashes, in braces: ids are stored in its canonical form)."""
    with contextlib.suppress(ValueError):  # not a UUID: no token has that id, as it says
        token_id = str(uuid.UUID(token_id.strip()))
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no token with id {token_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def list_tokens(session: Session, username: str) -> list[ApiToken]:
    user = account_by_name(session, username)
    if user is None or user.kind != "user":
        raise NotFound(f"no user named {username!r}")
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)
        )
    )


def authenticate(session: Session, token: str) -> Account | None:
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
        )
    )
    return row.user if row is not None else None


# --- visibility ------------------------------------------------------------------------------


def role_in(session: Session, organization: Account, user: Account) -> OrgRole | None:
    membership = session.get(Membership, (organization.id, user.id))
    return OrgRole(membership.role) if membership is not None else None


def namespace_access(session: Session, actor: Account, account: Account) -> Access:
    """What ``actor`` may do in ``account``'s namespace: their own, or an organization's."""
    is_self = account.id == actor.id
    role = role_in(session, account, actor) if account.is_organization and not is_self else None
    return account_access(is_self=is_self, org_role=role)


def require(access: Access, needed: Access, what: str) -> None:
    """404 when the caller may not know the resource exists, 403 when they see but may not act."""
    if access is Access.NONE:
        raise NotFound(f"{what} not found")
    if access < needed:
        raise Forbidden(f"you may not change {what}")


def organization_for(session: Session, actor: Account, name: str, needed: Access) -> Account:
    org = account_by_name(session, name)
    if org is None or not org.is_organization:
        raise NotFound(f"organization {name!r} not found")
    require(namespace_access(session, actor, org), needed, f"organization {name!r}")
    return org


def public_account(session: Session, name: str) -> Account:
    """Any account, as far as its public information goes (Scarf's ``GET /v2/users/{name}``:
    id, name, type and dates; never an email). Names are one public namespace: whether one
    is taken already shows when an account or organization is created."""
    account = account_by_name(session, name)
    if account is None:
        raise NotFound(f"user {name!r} not found")
    return account


def visible_account(session: Session, actor: Account, name: str) -> Account:
    """A user sees themselves and the organizations they belong to."""
    account = account_by_name(session, name)
    if account is None or namespace_access(session, actor, account) is Access.NONE:
        raise NotFound(f"user {name!r} not found")
    return account


# --- organizations ---------------------------------------------------------------------------


@dataclass
class OrganizationFields:
    name: str
    description: str | None
    website: str | None
    billing_email: str


def _check_org_fields(fields: OrganizationFields) -> OrganizationFields:
    names.check_account_name(fields.name, code="invalid-organization-name")
    return OrganizationFields(
        name=fields.name,
        description=names.check_text("description", fields.description),
        website=names.check_website(fields.website),
        billing_email=names.check_email(fields.billing_email, code="invalid-billing-email"),
    )


def create_organization(session: Session, actor: Account, fields: OrganizationFields) -> Account:
    fields = _check_org_fields(fields)
    _ensure_name_free(session, fields.name, code="entity-already-exists")
    org = Account(
        name=fields.name,
        kind="organization",
        description=fields.description,
        website=fields.website,
        billing_email=fields.billing_email,
    )
    session.add(org)
    session.flush()
    session.add(Membership(organization_id=org.id, user_id=actor.id, role=OrgRole.OWNER.value))
    session.flush()
    return org


def update_organization(session: Session, org: Account, fields: OrganizationFields) -> Account:
    """``org`` as found by :func:`organization_for` with admin access, changed to ``fields``."""
    fields = _check_org_fields(fields)
    if fields.name != org.name:
        _ensure_name_free(session, fields.name, code="entity-already-exists")
    org.name = fields.name
    org.description = fields.description
    org.website = fields.website
    org.billing_email = fields.billing_email
    org.updated_at = utcnow()
    session.flush()
    return org


# --- memberships -----------------------------------------------------------------------------


def list_members(session: Session, actor: Account, org_name: str) -> list[Membership]:
    org = organization_for(session, actor, org_name, Access.READ)
    return list(
        session.scalars(
            select(Membership)
            .join(Account, Membership.user_id == Account.id)
            .where(Membership.organization_id == org.id)
            .order_by(Account.name)
        )
    )


def get_member(session: Session, actor: Account, org_name: str, username: str) -> Membership:
    org = organization_for(session, actor, org_name, Access.READ)
    return _membership(session, org, username)


def _membership(session: Session, org: Account, username: str) -> Membership:
    user = account_by_name(session, username)
    membership = session.get(Membership, (org.id, user.id)) if user is not None else None
    if membership is None:
        raise NotFound(f"{username!r} is not a member of {org.name!r}")
    return membership


def hold_account(session: Session, account_id: str) -> None:
    """Make this transaction the only one, of those that call this, that changes what belongs
    to the account until it ends: for a rule that counts rows and then writes (the last owner,
    the active imports' limit), which two transactions at once would both pass. A write to the
    account's row is the lock on both backends: PostgreSQL holds the row until the transaction
    ends, and the statements after it see what the one before committed; SQLite lets one
    writer at a time."""
    session.execute(text("UPDATE accounts SET name = name WHERE id = :id"), {"id": account_id})


def _hold_members(session: Session, org: Account) -> None:
    """Hold ``org`` (see :func:`hold_account`) and read its members afresh. Without it, two
    owners leaving (or demoting each other) at once both counted two owners and the
    organization was left with none."""
    hold_account(session, org.id)
    session.expire_all()


def _owner_count(session: Session, org: Account) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                Membership.organization_id == org.id, Membership.role == OrgRole.OWNER.value
            )
        )
        or 0
    )


def upsert_member(
    session: Session,
    actor: Account,
    org_name: str,
    username: str,
    role: OrgRole,
    *,
    must_be_member: bool = False,
) -> Membership:
    """Add a member or change their role. Only owners grant or take away ownership. With
    ``must_be_member``, only a role change: checked under the members' lock, so that one sent
    as the user leaves never adds them back."""
    org = organization_for(session, actor, org_name, Access.ADMIN)
    _hold_members(session, org)
    if must_be_member:
        _membership(session, org, username)
    access = namespace_access(session, actor, org)
    user = account_by_name(session, username)
    if user is None or user.kind != "user":
        raise InvalidInput(f"no user named {username[:80]!r}", code="user-not-found")
    membership = session.get(Membership, (org.id, user.id))
    touches_owner = role is OrgRole.OWNER or (
        membership is not None and membership.role == OrgRole.OWNER.value
    )
    if touches_owner and access < Access.OWNER:
        raise Forbidden("only an owner can grant or revoke ownership")
    if membership is None:
        membership = Membership(organization_id=org.id, user_id=user.id, role=role.value)
        session.add(membership)
    elif membership.role != role.value:
        if membership.role == OrgRole.OWNER.value and _owner_count(session, org) <= 1:
            raise InvalidInput(
                f"{username!r} is the last owner of {org.name!r}; make someone else owner first",
                code="cannot-revoke-ownership",
            )
        membership.role = role.value
    session.flush()
    return membership


def set_member_role(
    session: Session, actor: Account, org_name: str, username: str, role: OrgRole
) -> Membership:
    return upsert_member(session, actor, org_name, username, role, must_be_member=True)


def remove_member(session: Session, actor: Account, org_name: str, username: str) -> None:
    """Admins remove members; owners remove anyone; anyone may leave; the last owner stays."""
    org = organization_for(session, actor, org_name, Access.READ)
    _hold_members(session, org)
    access = namespace_access(session, actor, org)
    membership = _membership(session, org, username)
    leaving = membership.user_id == actor.id
    if not leaving:
        needed = Access.OWNER if membership.role == OrgRole.OWNER.value else Access.ADMIN
        require(access, needed, f"the members of {org.name!r}")
    if membership.role == OrgRole.OWNER.value and _owner_count(session, org) <= 1:
        raise InvalidInput(
            f"{username!r} is the last owner of {org.name!r} and cannot be removed",
            code="cannot-delete-owner",
        )
    session.delete(membership)
    session.flush()


def organizations_of(session: Session, actor: Account, username: str) -> list[Membership]:
    user = visible_account(session, actor, username)
    if user.kind != "user" or user.id != actor.id:
        raise NotFound(f"user {username!r} not found")
    return list(
        session.scalars(
            select(Membership)
            .join(Account, Membership.organization_id == Account.id)
            .where(Membership.user_id == user.id)
            .order_by(Account.name)
        )
    )
