"""An import's batches overlap in the store: one is built while the writer holds the batches
before it, which may not be committed yet (two of them with a store's staged writes, see
events/store.py StagedWrites). A later line reusing an id of those batches still gets its
``duplicate-unique-id`` warning, once, and replaces the event.

The store's commits are slowed down so that the reading thread is always as far ahead as the
writer lets it be, whatever the machine's speed. Each batch is in a month of its own: on
PostgreSQL a batch staged makes its month's partition while the one before it commits (and
deletes the events it replaces).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import orjson
from sqlalchemy import select

from eventport.control.models import Account
from eventport.events.store import EventStore
from eventport.imports.worker import ImportWorker
from tests.conftest import Server
from tests.importing import (
    WrappedStore,
    counts,
    full_log,
    setup_package,
    start,
    wait_finished,
)

BATCH = 100
BATCHES = 6
COMMIT_SECONDS = 0.3
JANUARY_2024 = 1_704_067_200


class SlowStore(WrappedStore):
    """The real store, each write of a batch held back by COMMIT_SECONDS first."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(store)
        self.commits = 0

    def before_write(self) -> None:
        time.sleep(COMMIT_SECONDS)
        self.commits += 1


def test_ids_reused_from_batches_not_yet_committed_are_warned_about_once(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    lines = []
    reused = []  # (line, id): each batch after the first reuses an id of each of the two before
    for b in range(BATCHES):
        for i in range(BATCH):
            line = b * BATCH + i + 1
            event_id = f"b{b}-{i}"
            if b >= 1 and i == 0:
                event_id = f"b{b - 1}-5"
            if b >= 2 and i == 1:
                event_id = f"b{b - 2}-7"
            if event_id != f"b{b}-{i}":
                reused.append((line, event_id))
            moment = JANUARY_2024 + b * 32 * 86_400 + i  # a month of its own (a new partition)
            lines.append(orjson.dumps({"$time": moment, "$unique_id": event_id}))
    started = start(alice, f"/v2/packages/alice/{package_id}/import", b"\n".join(lines) + b"\n")
    store = SlowStore(server.app.state.events)
    worker = ImportWorker(server.control, store, lease=timedelta(seconds=30), chunk_lines=BATCH)

    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()

    done = wait_finished(alice, "alice", started["id"])
    assert store.commits == BATCHES
    total = BATCHES * BATCH
    assert counts(done) == (total, total, 0)
    log = full_log(alice, "alice", started["id"])
    warned = [(e["line"], e["human_friendly_message"]) for e in log if e["type"] != "progress"]
    assert [line for line, _ in warned] == [line for line, _ in reused]
    for (_, message), (_, event_id) in zip(warned, reused, strict=True):
        assert f"'{event_id}'" in message
    assert done["warnings_total"] == len(reused)
    with server.control.session() as s:
        owner_id = s.scalar(select(Account.id).where(Account.name == "alice"))
    rows = server.app.state.events.rows(owner_id)
    assert len(rows) == total - len(reused)  # each reused id replaced its event
    lines_of = {row["id"]: row["line"] for row in rows}
    assert all(lines_of[event_id] == line for line, event_id in reused)
