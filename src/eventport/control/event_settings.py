"""Per-owner event settings: which imported events are flagged as excluded from aggregates.

Excluded events are kept and flagged, never dropped. An owner (a user or an organization)
flags known bots and crawlers unless they turn that off, and may add user-agent substrings of
their own.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from eventport.control.accounts import account_by_name, namespace_access, require
from eventport.control.models import Account
from eventport.domain import names
from eventport.domain.access import Access
from eventport.domain.errors import NotFound
from eventport.domain.exclusions import ExclusionRules


def exclusion_rules(session: Session, owner_id: str) -> ExclusionRules:
    owner = session.get(Account, owner_id)
    if owner is None:
        raise NotFound(f"no account with id {owner_id!r}")
    return ExclusionRules(owner.exclude_bots, tuple(owner.excluded_user_agents))


def _owner_for(session: Session, actor: Account, owner_name: str, needed: Access) -> Account:
    """Settings follow the owner's namespace: a user's own, an organization's by role."""
    owner = account_by_name(session, owner_name)
    access = namespace_access(session, actor, owner) if owner is not None else Access.NONE
    if owner is None or access is Access.NONE:
        raise NotFound(f"owner {owner_name!r} not found")
    require(access, needed, f"the settings of {owner_name!r}")
    return owner


def get_settings(session: Session, actor: Account, owner_name: str) -> Account:
    return _owner_for(session, actor, owner_name, Access.READ)


def update_settings(
    session: Session,
    actor: Account,
    owner_name: str,
    *,
    exclude_bots: bool | None,
    excluded_user_agents: list[str] | None,
) -> Account:
    """Change what is given; ``None`` leaves a setting as it is."""
    owner = _owner_for(session, actor, owner_name, Access.ADMIN)
    if excluded_user_agents is not None:
        owner.excluded_user_agents = names.check_user_agent_substrings(excluded_user_agents)
    if exclude_bots is not None:
        owner.exclude_bots = exclude_bots
    session.flush()
    return owner
