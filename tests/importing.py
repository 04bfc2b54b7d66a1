"""Helpers shared by the import tests: a package to import into, uploads, waiting, reading."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from eventport.events.schema import Checkpoint
from eventport.events.store import EventStore
from tests.openapi_check import assert_log_matches_spec, assert_matches_spec


def setup_package(client: httpx.Client, owner: str, name: str = "widget") -> str:
    response = client.post(f"/v2/packages/{owner}", json={"name": name, "type": "npm"})
    assert response.status_code == 201, response.text
    package_id: str = response.json()["id"]
    return package_id


def upload(
    client: httpx.Client,
    path: str,
    body: bytes,
    content_type: str = "application/x-ndjson",
    **headers: str,
) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": content_type, **headers})


def ok(response: httpx.Response, status: int = 200) -> Any:
    """Assert the status, check the answer against Scarf's spec, return its JSON."""
    assert response.status_code == status, response.text
    assert_matches_spec(response)
    return response.json() if response.content else None


def start(
    client: httpx.Client,
    path: str,
    body: bytes,
    content_type: str = "application/x-ndjson",
    **headers: str,
) -> dict[str, Any]:
    """Upload and return the EventImport the server answered."""
    started: dict[str, Any] = ok(upload(client, path, body, content_type, **headers))
    return started


def import_lines(
    client: httpx.Client, owner: str, path: str, lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """Upload ``lines`` as NDJSON to ``path`` and wait until the import is finished."""
    body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    return wait_finished(client, owner, start(client, path, body)["id"])


def wait_finished(
    client: httpx.Client, owner: str, import_id: str, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/v2/imports/{owner}/{import_id}")
        body: dict[str, Any] = response.json()
        if body["status"] != "importing":
            assert_matches_spec(response)
            return body
        time.sleep(0.05)
    raise AssertionError(f"import {import_id} still importing after {timeout}s: {body}")


def counts(status: dict[str, Any]) -> tuple[int, int, int]:
    """(events_total, events_successfully_imported, events_failed_to_import)."""
    return (
        status["events_total"],
        status["events_successfully_imported"],
        status["events_failed_to_import"],
    )


def full_log(client: httpx.Client, owner: str, import_id: str) -> list[dict[str, Any]]:
    return assert_log_matches_spec(client.get(f"/v2/imports/{owner}/{import_id}/log"))


class WrappedStore:
    """The real store, with :meth:`before_write` called before each write of a batch: its
    ``write_batch``, or ``commit_staged`` for a store with staged writes. A write that
    :meth:`before_write` stops leaves nothing of its batch (a staged one is discarded), as the
    real store's failed write does."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def before_write(self) -> None:
        """Runs before each write; raising stops it."""

    def write_batch(self, owner_id: str, batch: Any, checkpoint: Checkpoint) -> None:
        self.before_write()
        self._store.write_batch(owner_id, batch, checkpoint)

    def commit_staged(self, staged: object, checkpoint: Checkpoint) -> None:
        try:
            self.before_write()
        except BaseException:
            self._store.discard_staged(staged)  # type: ignore[attr-defined]
            raise
        self._store.commit_staged(staged, checkpoint)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
