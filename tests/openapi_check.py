"""Check eventport's answers against Scarf's published v2 OpenAPI document.

``assert_matches_spec(response)`` takes an ``httpx.Response`` from a test client, finds the
operation Scarf's spec declares for its method and path, and validates the status code, the
content type and the JSON body (with the spec's discriminators) through openapi-core. Any drift
raises :class:`SpecDrift` naming the operation and what is wrong.

The spec names ``https://api.scarf.sh`` as its server, so requests are presented to openapi-core
under that host with their real path.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = Path(__file__).parent / "contract" / "api-v2-public.json"
IMPORT_SPEC_PATH = Path(__file__).parent / "contract" / "event-import.json"
# eventport's declared extensions of Scarf's import schemas, and nothing more: warning log
# entries carry types of their own (Scarf's spec defines none for warnings; `attempt-failed`:
# a server error stopped an attempt, the import resumes), and an import whose
# input as a whole is unusable (corrupt gzip, a gzip bomb) ends with status "failed" (as does
# one that five attempts could not finish).
EXTRA_LOG_TYPES = (
    "naive-time",
    "unknown-field",
    "invalid-field",
    "extra-cells",
    "duplicate-unique-id",
    "invalid-remote-address",
    "attempt-failed",
    "other-target",
)
EXTRA_IMPORT_STATUSES = ("failed",)
SCARF_HOST = "https://api.scarf.sh"
PACKAGE_TYPES = ("docker", "file", "python", "npm", "hackage")


class SpecDrift(AssertionError):
    """A response that Scarf's published spec does not allow."""


@cache
def spec_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return document


@cache
def import_spec_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(IMPORT_SPEC_PATH.read_text())
    schemas = document["components"]["schemas"]
    schemas["ImportLogType"]["enum"].extend(EXTRA_LOG_TYPES)
    mapping = schemas["ImportLog"]["discriminator"]["mapping"]
    for extra in EXTRA_LOG_TYPES:
        mapping[extra] = "#/components/schemas/ImportLogFailedToDecode"
    schemas["EventImportStatus"]["enum"].extend(EXTRA_IMPORT_STATUSES)
    document["servers"] = [{"url": SCARF_HOST}]  # this file says http://; one host for both
    return document


@cache
def scarf_openapi() -> OpenAPI:
    return OpenAPI.from_dict(spec_document())


@cache
def scarf_import_openapi() -> OpenAPI:
    return OpenAPI.from_dict(import_spec_document())


def openapi_for(path: str) -> OpenAPI:
    """The import operations are published in their own document."""
    if path.endswith("/import") or path.startswith("/v2/imports/"):
        return scarf_import_openapi()
    return scarf_openapi()


BY_NAME_PATTERN = "/v2/packages/{owner}/{package_type}/{package_name}"


def spec_path_pattern(path: str) -> str | None:
    """The spec's template for ``path`` where openapi-core's own matching would get it wrong.

    ``GET /v2/packages/{owner}/{package_type}/{package_name}`` takes docker names such as
    ``library/ubuntu`` (openapi-core matches one segment per variable) and npm names such as
    ``routes`` (openapi-core would prefer ``/v2/packages/{owner}/{package_id}/routes``). A
    package id is a UUID, never a package type, so a type in that place names this operation.
    """
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "v2" and parts[3] == "import":
        # POST /v2/{owner}/import answers the same EventImport as the one-package import, but
        # event-import.json does not list it: check it against that operation's answer.
        return "/v2/packages/{owner}/{package_id}/import"
    # "", "v2", "packages", owner, type, name...
    if len(parts) > 5 and parts[1:3] == ["v2", "packages"] and parts[4] in PACKAGE_TYPES:
        return BY_NAME_PATTERN
    return None


class SpecRequest:
    """openapi-core's Request protocol over an ``httpx.Request``."""

    def __init__(self, request: httpx.Request) -> None:
        self.host_url = SCARF_HOST
        self.path = request.url.path
        self.path_pattern = spec_path_pattern(self.path)
        self.method = request.method.lower()
        query = parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query),
            header=Headers(list(request.headers.multi_items())),
            cookie=ImmutableMultiDict(),
            path={},
        )
        content = request.content
        self.body: bytes | None = content or None
        self.content_type = request.headers.get("content-type", "").lower()


class SpecResponse:
    """openapi-core's Response protocol over an ``httpx.Response``."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "").lower()
        self.headers = Headers(list(response.headers.multi_items()))
        self.data: bytes | None = response.content or None


def _describe(error: BaseException) -> str:
    """What openapi-core found, down to each schema error jsonschema reported and where."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    schema_errors = [e for exc in chain for e in getattr(exc, "schema_errors", None) or ()]
    if not schema_errors:
        return "\n".join(f"{type(exc).__name__}: {exc}" for exc in chain)
    lines = [f"{type(error).__name__}: the body does not match the schema"]
    for inner in schema_errors:
        for problem in [inner, *(getattr(inner, "context", None) or ())]:
            where = "/".join(str(part) for part in problem.absolute_path) or "(body)"
            lines.append(f"  at {where}: {problem.message}")
    return "\n".join(lines)


def assert_matches_spec(response: httpx.Response) -> httpx.Response:
    """Raise :class:`SpecDrift` unless Scarf's spec allows this exact answer to this request.

    Returns the response, so a test can write ``body = assert_matches_spec(r).json()``.
    """
    request = response.request
    spec_request = SpecRequest(request)
    try:
        openapi_for(spec_request.path).validate_response(spec_request, SpecResponse(response))
    except Exception as exc:
        body = response.text if len(response.text) <= 2000 else response.text[:2000] + "..."
        raise SpecDrift(
            f"{request.method} {spec_request.path} answered {response.status_code}, "
            f"which Scarf's v2 spec does not allow:\n{_describe(exc)}\nbody: {body}"
        ) from exc
    return response


def doctored(response: httpx.Response, body: Any, status: int | None = None) -> httpx.Response:
    """A copy of ``response`` with another JSON body (and status): for testing the checker."""
    return httpx.Response(
        status or response.status_code,
        headers={"content-type": "application/json"},
        content=json.dumps(body).encode(),
        request=response.request,
    )


def assert_log_matches_spec(response: httpx.Response) -> list[dict[str, Any]]:
    """Each NDJSON line of an import log against Scarf's ImportLog (chosen by its discriminator).

    openapi-core cannot read NDJSON bodies, so each line is checked with the spec's own schema.
    Returns the parsed entries.
    """
    from openapi_schema_validator import OAS30Validator

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    document = import_spec_document()
    mapping = document["components"]["schemas"]["ImportLog"]["discriminator"]["mapping"]
    entries = []
    # NDJSON lines end at "\n" only: a message may hold U+2028 or U+0085, which JSON leaves as
    # they are and str.splitlines() would split at.
    lines = response.text.removesuffix("\n").split("\n") if response.text else []
    for number, line in enumerate(lines, start=1):
        entry = json.loads(line)
        branch = mapping.get(entry.get("type"))
        if branch is None:
            raise SpecDrift(f"log line {number}: type {entry.get('type')!r} is not in the spec")
        schema = {"$ref": branch, "components": document["components"]}
        problems = list(OAS30Validator(schema).iter_errors(entry))
        if problems:
            raise SpecDrift(f"log line {number} {entry}: {[p.message for p in problems]}")
        entries.append(entry)
    return entries


def assert_ndjson_matches_spec(response: httpx.Response, schema: str) -> list[dict[str, Any]]:
    """A 200 NDJSON answer whose every line is the spec's ``schema`` (e.g. ``Aggregate``), with
    its formats (``date``) checked. openapi-core reads no NDJSON, so each line is checked with
    the spec's own schema. Returns the parsed lines."""
    from openapi_schema_validator import OAS30Validator, oas30_format_checker

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    document = spec_document()
    validator = OAS30Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": document["components"]},
        format_checker=oas30_format_checker,
    )
    lines = []
    for number, text in enumerate(response.text.splitlines(), start=1):
        line = json.loads(text)
        problems = [p.message for p in validator.iter_errors(line)]
        if problems:
            raise SpecDrift(f"line {number} {line} is not a {schema}: {problems}")
        lines.append(line)
    return lines


@cache
def _own_operations() -> list[tuple[re.Pattern[str], str, frozenset[str]]]:
    """eventport's own OpenAPI document (what ``/openapi.json`` serves): each operation's path
    as a pattern, its method, and the statuses it documents."""
    from eventport.api.app import create_app

    found = []
    for template, operations in create_app().openapi()["paths"].items():
        pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        for method, operation in operations.items():
            found.append((pattern, method.upper(), frozenset(operation["responses"])))
    return found


def documented_statuses(method: str, path: str) -> frozenset[str] | None:
    """The statuses eventport's own OpenAPI document gives the operation that serves ``method
    path`` (the first that matches, as routing takes them), or None if no operation does."""
    for pattern, operation_method, statuses in _own_operations():
        if operation_method == method.upper() and pattern.match(path):
            return statuses
    return None
