"""Request-scoped dependencies: the control database and the authenticated user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from eventport.api.errors import Unauthorized
from eventport.control import accounts
from eventport.control.database import ControlDatabase
from eventport.control.models import Account
from eventport.control.packages import Deleted
from eventport.events.store import EventStore

bearer = HTTPBearer(auto_error=False, description="An API token from `eventport tokens create`.")


def control_db(request: Request) -> ControlDatabase:
    db: ControlDatabase = request.app.state.control
    return db


def event_store(request: Request) -> EventStore:
    events: EventStore = request.app.state.events
    return events


def csv_escape_formulas(request: Request) -> bool:
    """Whether CSV exports escape what a spreadsheet would read as a formula (a setting)."""
    return bool(request.app.state.settings.csv_escape_formulas)


def forget_events(events: EventStore, deleted: Deleted) -> None:
    """After a deletion has committed: the events of the packages and pixels it took. (An
    import that was writing into them, stopped by the deletion, deletes what it wrote after.)"""
    events.delete_events(
        deleted.owner_id, package_ids=deleted.package_ids, pixel_ids=deleted.pixel_ids
    )


def current_user(
    db: Annotated[ControlDatabase, Depends(control_db)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Account:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")
    with db.session() as session:
        user = accounts.authenticate(session, credentials.credentials)
    if user is None:
        raise Unauthorized("invalid or revoked API token")
    return user


async def refused_caller(request: Request) -> Unauthorized | None:
    """For a request refused before its route runs (a body or parameter FastAPI could not
    read): the 401 its caller gets first, if the route takes a token and the request's is
    missing, wrong or revoked (a malformed body sent with no token was answered 400); None
    otherwise."""
    if not _takes_token(request.scope.get("route")):
        return None
    try:
        await run_in_threadpool(current_user, control_db(request), await bearer(request))
    except Unauthorized as exc:
        return exc
    return None


def _takes_token(route: Any) -> bool:
    """Whether ``route`` (a matched route, or None) depends on :func:`current_user`."""
    pending = [getattr(route, "dependant", None)]
    while pending:
        dependant = pending.pop()
        if dependant is None:
            continue
        if dependant.call is current_user:
            return True
        pending.extend(dependant.dependencies)
    return False


Db = Annotated[ControlDatabase, Depends(control_db)]
EscapeFormulas = Annotated[bool, Depends(csv_escape_formulas)]
Actor = Annotated[Account, Depends(current_user)]
Events = Annotated[EventStore, Depends(event_store)]
