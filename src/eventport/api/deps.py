"""Request-scoped dependencies: the control database and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventport.api.errors import Unauthorized
from eventport.control import accounts
from eventport.control.database import ControlDatabase
from eventport.control.models import Account

bearer = HTTPBearer(auto_error=False, description="An API token from `eventport tokens create`.")


def control_db(request: Request) -> ControlDatabase:
    db: ControlDatabase = request.app.state.control
    return db


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


Db = Annotated[ControlDatabase, Depends(control_db)]
Actor = Annotated[Account, Depends(current_user)]
