"""The spool: each upload in a file of its own (``<import id>.upload`` in the data dir's
``spool``), kept until its import ends.

Workers delete an import's file when it ends, and the upload route deletes the file of an
upload that fails. A process stopped at the wrong moment leaves one behind: killed while an
upload arrives (a partial file, no import), or between ending an import and deleting its file.
Such files hold raw IP addresses, which must not outlive their import, so :func:`sweep` deletes
them when a server or worker process starts, and :class:`SpoolSweeper` every hour after.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Final

from sqlalchemy import select

from eventport.control.database import ControlDatabase
from eventport.control.imports import FINAL
from eventport.control.models import Import

log = logging.getLogger(__name__)

#: A file of no import is an upload cut off, unless it is one another server process is still
#: receiving (its import row is made once the body is whole): untouched this long, it is not.
STALE_AFTER: Final = timedelta(hours=1)
SWEEP_EVERY: Final = timedelta(hours=1)
_SUFFIX: Final = ".upload"
_CHUNK: Final = 500  # import ids a query asks about


def _import_id(path: Path) -> str | None:
    try:
        return str(uuid.UUID(path.name.removesuffix(_SUFFIX)))
    except ValueError:
        return None


def sweep(
    control: ControlDatabase, spool_dir: Path, *, stale_after: timedelta = STALE_AFTER
) -> list[Path]:
    """Delete the spool's files that no import will read; the paths deleted.

    A file goes if its import has ended, or if no import names it and it has not been written
    to for ``stale_after``. Files of waiting or running imports stay, as does anything that is
    not an upload's file."""
    files = {
        import_id: path
        for path in (spool_dir.glob(f"*{_SUFFIX}") if spool_dir.is_dir() else ())
        if (import_id := _import_id(path)) is not None
    }
    states: dict[str, str] = {}
    ids = list(files)
    for start in range(0, len(ids), _CHUNK):
        with control.session() as s:
            rows = s.execute(
                select(Import.id, Import.state).where(Import.id.in_(ids[start : start + _CHUNK]))
            )
            states.update((import_id, state) for import_id, state in rows)
    deleted = []
    cutoff = time.time() - stale_after.total_seconds()
    for import_id, path in files.items():
        state = states.get(import_id)
        try:
            if state in FINAL or (state is None and path.stat().st_mtime < cutoff):
                path.unlink()
                deleted.append(path)
        except FileNotFoundError:
            continue  # deleted meanwhile, by its worker or another sweep
    if deleted:
        log.info("spool: deleted %d upload file(s) no import will read", len(deleted))
    return deleted


class SpoolSweeper:
    """:func:`sweep` now, then every ``every`` on a thread of its own until :meth:`stop`."""

    def __init__(
        self,
        control: ControlDatabase,
        spool_dir: Path,
        *,
        every: timedelta = SWEEP_EVERY,
        first_stale_after: timedelta = STALE_AFTER,
    ) -> None:
        self.control, self.spool_dir, self.every = control, spool_dir, every
        # The first sweep's stale_after: 0 when no other process can be receiving an upload
        # into this spool.
        self.first_stale_after = first_stale_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sweep(self.first_stale_after)
        self._thread = threading.Thread(target=self._run, name="spool-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every.total_seconds()):
            self._sweep()

    def _sweep(self, stale_after: timedelta = STALE_AFTER) -> None:
        try:
            sweep(self.control, self.spool_dir, stale_after=stale_after)
        except Exception:  # a lost database connection, say: the next sweep tries again
            log.warning("spool: sweep failed", exc_info=True)
