"""An import's heartbeat: its worker's lease renewed, and an abort or a lost lease noticed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from eventport.control import imports as control_imports
from eventport.control.database import ControlDatabase
from eventport.threads import name_this_thread

log = logging.getLogger(__name__)

ABORT_POLL_SECONDS = 0.25


class Heartbeat:
    """Renews the lease in the background and notices an abort or a lost lease within ~0.25 s."""

    def __init__(
        self,
        control: ControlDatabase,
        import_id: str,
        worker: str,
        lease: timedelta,
        on_stop: Callable[[], None] | None = None,
        allowed: Callable[[], bool] | None = None,
    ):
        self.control, self.import_id, self.worker, self.lease = control, import_id, worker, lease
        self.on_stop = on_stop  # called on the heartbeat's thread once it has set stop
        # Asked with each renewal: whether the import may still write where it goes (its
        # target deleted, or its importer's rights taken away, it stops as an abort does).
        self.allowed = allowed
        self.stop = threading.Event()  # set: the import must stop (abort, or lease lost)
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{import_id[:8]}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        name_this_thread("heartbeat")
        renew_every = self.lease.total_seconds() / 3
        waited = 0.0
        while not self._done.wait(ABORT_POLL_SECONDS):
            waited += ABORT_POLL_SECONDS
            try:
                with self.control.session() as s:
                    if waited >= renew_every:
                        waited = 0.0
                        alive = control_imports.renew_lease(
                            s, self.import_id, self.worker, self.lease
                        ) and (self.allowed is None or self.allowed())
                    else:
                        alive = control_imports.still_wanted(s, self.import_id, self.worker)
            except Exception:  # a blip in the control store: try again next tick
                log.warning("heartbeat for import %s failed", self.import_id, exc_info=True)
                continue
            if not alive:
                self.stop.set()
                if self.on_stop is not None:
                    try:
                        self.on_stop()
                    except Exception:  # the batch in flight is then waited for, as before
                        log.warning("import %s: could not interrupt its writes", self.import_id)
                return
