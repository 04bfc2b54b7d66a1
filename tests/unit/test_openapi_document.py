"""The server's own OpenAPI document is one a generated client or a schema-driven tester can
use as it is (found by running schemathesis against a live server)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from eventport.api.app import create_app
from eventport.settings import Settings


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), database_url=None)
    openapi: dict[str, Any] = create_app(settings).openapi()
    return openapi


def test_no_two_path_templates_have_the_same_shape(document: dict[str, Any]) -> None:
    """OpenAPI forbids templates that differ only in their parameters' names
    (/api/v1/packages/{package_id} beside /api/v1/packages/{package_ref})."""
    shapes = Counter(re.sub(r"\{[^}]+\}", "{}", path) for path in document["paths"])
    assert [shape for shape, count in shapes.items() if count > 1] == []


def test_exports_document_what_they_send(document: dict[str, Any]) -> None:
    media = {
        path: set(operation["get"]["responses"]["200"]["content"])
        for path, operation in document["paths"].items()
        if path.endswith(("/events", ".csv", "/aggregates")) and "get" in operation
    }
    assert len(media) == 8, media
    for path, types in media.items():
        expected = "application/x-ndjson" if path.endswith("/aggregates") else "text/csv"
        assert [t.split(";")[0] for t in types] == [expected], path


def test_the_date_examples_make_a_valid_range(document: dict[str, Any]) -> None:
    for path, operation in document["paths"].items():
        parameters = operation.get("get", {}).get("parameters", [])
        examples = [
            p["schema"].get("example") for p in parameters if p["name"].endswith(("_date", "Date"))
        ]
        if examples:
            assert len(examples) == 2, path
            assert examples[0] < examples[1], path
