"""v2 event settings of an owner: which imported events are flagged as excluded.

eventport's own routes (Scarf publishes none for this). ``/v2/{owner}/settings`` has a variable
first segment, so the app includes this router after every router with a fixed one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from eventport.api.deps import Actor, Db
from eventport.api.routing import ControlRoute
from eventport.api.v2.bodies import SettingsBody
from eventport.control import event_settings as store
from eventport.control.models import Account

router = APIRouter(prefix="/v2", tags=["v2 event settings"], route_class=ControlRoute)


def settings_shape(owner: Account) -> dict[str, Any]:
    return {
        "owner": owner.name,
        "exclude_bots": owner.exclude_bots,
        "excluded_user_agents": list(owner.excluded_user_agents),
    }


@router.get("/{owner}/settings")
def get_settings(owner: str, db: Db, actor: Actor) -> dict[str, Any]:
    """Members of an organization may read its settings; a user reads their own."""
    with db.session() as s:
        return settings_shape(store.get_settings(s, actor, owner))


@router.patch("/{owner}/settings")
def update_settings(owner: str, body: SettingsBody, db: Db, actor: Actor) -> dict[str, Any]:
    """Change the fields given. Organization owners and admins may; a user changes their own."""
    with db.session() as s:
        account = store.update_settings(
            s,
            actor,
            owner,
            exclude_bots=body.exclude_bots,
            excluded_user_agents=body.excluded_user_agents,
        )
        return settings_shape(account)
