"""Server secrets kept in the control store, made on first use.

The control store is the one thing every process of a deployment shares (the SQLite file in the
data dir for the embedded default, the PostgreSQL database when scaled out), so a secret kept
there is the same for every API and worker process without any set-up.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from eventport.control.database import ControlDatabase
from eventport.control.models import ServerSecret

ORIGIN_KEY = "origin-id-key"


def server_secret(control: ControlDatabase, name: str, *, size: int = 32) -> bytes:
    """The secret called ``name``, generated (``size`` random bytes) the first time it is asked
    for. Two processes asking at once agree: the loser of the insert reads the winner's."""
    with control.session() as s:
        value = s.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    if value is None:
        try:
            with control.session() as s:
                s.add(ServerSecret(name=name, value=secrets.token_hex(size)))
        except IntegrityError:
            pass
        with control.session() as s:
            value = s.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    assert value is not None
    return bytes.fromhex(value)
