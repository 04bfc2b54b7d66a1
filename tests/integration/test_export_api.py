"""Data export end to end: events imported over HTTP by a real server with an import worker
(enriched from known addresses and user agents), then exported as CSV and aggregated as NDJSON
through v1 and v2, on both stores. Every v2 answer is checked against Scarf's published spec:
error bodies and CSV answers with openapi-core, each NDJSON line against ``Aggregate``.

The world, built once per backend: organization ``acme`` (owner ``alice``, member ``mia``) with
npm packages ``widget`` and ``tool``, a tracking pixel ``docs`` attached to ``widget`` and a
free-standing pixel ``blog``; ``bob`` has no relation to acme, ``eve`` owns another
organization.
"""

from __future__ import annotations

import contextlib
import csv
import io
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.requests import ClientDisconnect

from eventport.api.v2.export import AGGREGATE_FIELDS, ClosingStream, primed
from eventport.control.database import ControlDatabase
from eventport.export.query import BREAKDOWNS
from eventport.settings import Settings
from tests.conftest import Server, running_server, truncate_all
from tests.importing import start, wait_finished
from tests.openapi_check import (
    SpecDrift,
    assert_matches_spec,
    assert_ndjson_matches_spec,
    spec_document,
)

CURL = "curl/8.4.0"
NPM = "npm/10.2.4 node/v20.11.0 linux x64 workspaces/false"
PIP_MAC = (
    'pip/23.3.1 {"implementation":{"name":"CPython","version":"3.12.1"},'
    '"system":{"name":"Darwin","release":"23.0"}}'
)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
FORMULA = '=HYPERLINK("http://evil.example","click")'
GOOGLE, LONDON, AWS = "8.8.8.8", "81.2.69.160", "52.94.76.1"

V2_HEADER = (
    "id,type,package,pixel,version,time,referer,user_agent,platform,variables,origin_id,"
    "origin_latitude,origin_longitude,origin_country,origin_city,origin_postal,"
    "origin_connection_type,origin_company,origin_domain,dnt,confidence,endpoint_id,"
    "origin_state,mtc_quota_exceeded"
)
V2_EXTRA = (
    ",client,client_version,client_runtime,ci,cloud_provider_name,cloud_provider_domain,"
    "excluded,import_id,remote_address"
)
V1_HEADER = (
    "type,package,version,time,referer,user_agent,variables,origin_id,origin_latitude,"
    "origin_longitude,origin_country,origin_city,origin_postal,origin_company,origin_domain,"
    "origin_connection_type,id,pixel,platform,dnt,confidence,endpoint_id,origin_state,"
    "mtc_quota_exceeded,client,client_version,cloud_provider,import_id"
)
JUNE = {"start_date": "2024-06-01", "end_date": "2024-07-01"}
JUNE_V1 = {"startDate": "2024-06-01", "endDate": "2024-07-01"}


def line(unique_id: str, time: str, address: str, agent: str, **fields: Any) -> dict[str, Any]:
    return {
        "$unique_id": unique_id,
        "$time": time,
        "$remote_address": address,
        "$user_agent": agent,
        **fields,
    }


WIDGET_EVENTS = [
    line(
        "w1",
        "2024-06-03T10:00:00Z",
        GOOGLE,
        CURL,
        **{"$version": "1.0.0", "$type": "download", "$referrer": "https://a.example/x,y"},
        plan="pro",
    ),
    line(
        "w2",
        "2024-06-03T11:30:00.25Z",
        LONDON,
        PIP_MAC,
        **{"$version": "1.0.0", "$referrer": 'say "hi"\nbye'},
    ),
    line("w3", "2024-06-04T00:00:00Z", GOOGLE, CURL, **{"$version": "2.0.0"}),
    line("w4", "2024-06-10T00:00:00Z", AWS, NPM, **{"$version": "2.0.0"}),
    line(
        "w5",
        "2024-06-10T05:00:00Z",
        GOOGLE,
        NPM,
        **{"$version": "2.0.0", "$headers": [{"name": "DNT", "value": "1"}]},
    ),
    line(
        "w6",
        "2024-07-01T00:00:00Z",
        LONDON,
        FORMULA,
        **{"$version": "-1", "$referrer": "@SUM(A1)", "$type": "+download"},
    ),
]
DOCS_EVENTS = [line("p1", "2024-06-03T12:00:00Z", LONDON, CHROME, **{"$type": "view"})]
BLOG_EVENTS = [line("b1", "2024-06-05T00:00:00Z", GOOGLE, CHROME)]
TOOL_EVENTS = [line("t1", "2024-06-03T00:00:00Z", GOOGLE, CURL, **{"$version": "0.1"})]


@dataclass
class World:
    server: Server
    alice: httpx.Client
    mia: httpx.Client
    bob: httpx.Client
    eve: httpx.Client
    widget: str
    tool: str
    docs: str
    blog: str


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert_matches_spec(response)
    return (
        response.json() if response.headers["content-type"].startswith("application/json") else None
    )


def refused(response: httpx.Response, status: int, code: str, *words: str) -> str:
    """An error answer Scarf's spec allows, with this code and a message naming ``words``."""
    assert response.status_code == status, response.text
    assert_matches_spec(response)
    body = response.json()
    assert body["code"] == code, body
    for word in words:
        assert word in body["message"], body
    message: str = body["message"]
    return message


def import_into(client: httpx.Client, path: str, lines: list[dict[str, Any]]) -> None:
    body = b"".join(orjson.dumps(item) + b"\n" for item in lines)
    done = wait_finished(client, "acme", start(client, path, body)["id"])
    assert (done["status"], done["events_successfully_imported"]) == ("done", len(lines)), done


@pytest.fixture(scope="module")
def world(
    backend: str, control: ControlDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = Settings(
        database_url=backend, data_dir=tmp_path_factory.mktemp("export-data"), workers=1
    )
    truncate_all(control)
    with running_server(settings, control) as server:
        alice, mia, bob, eve = (server.user(name) for name in ("alice", "mia", "bob", "eve"))
        for owner, org in ((alice, "acme"), (eve, "other")):
            org_body = {"name": org, "description": "d", "billingEmail": f"b@{org}.example"}
            assert owner.post("/api/v1/organizations", json=org_body).status_code == 200
        member = {"username": "mia", "role": "member"}
        assert alice.post("/v2/organizations/acme/members", json=member).status_code == 201
        widget, tool = (
            ok(alice.post("/v2/packages/acme", json={"name": name, "type": "npm"}), 201)["id"]
            for name in ("widget", "tool")
        )
        docs_body = {"name": "docs", "package_id": widget}
        docs = ok(alice.post("/v2/tracking-pixels/acme", json=docs_body), 201)["id"]
        blog = ok(alice.post("/v2/tracking-pixels/acme", json={"name": "blog"}), 201)["id"]
        import_into(alice, f"/v2/packages/acme/{widget}/import", WIDGET_EVENTS)
        import_into(alice, f"/v2/packages/acme/{tool}/import", TOOL_EVENTS)
        import_into(alice, f"/v2/tracking-pixels/acme/{docs}/import", DOCS_EVENTS)
        import_into(alice, f"/v2/tracking-pixels/acme/{blog}/import", BLOG_EVENTS)
        yield World(server, alice, mia, bob, eve, widget, tool, docs, blog)
        for client in server.clients:
            client.close()


def csv_rows(response: httpx.Response) -> tuple[str, list[dict[str, str]]]:
    """The header line and the rows of a CSV answer (a v2 one checked against the spec)."""
    assert response.status_code == 200, response.text
    if response.request.url.path.startswith("/v2/"):
        assert_matches_spec(response)
    assert response.headers["content-type"].startswith("text/csv")
    text = response.text
    return text.split("\n", 1)[0], list(csv.DictReader(io.StringIO(text, newline="")))


def aggregates(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v2/packages/acme/aggregates", params={**JUNE, **params})
    return assert_ndjson_matches_spec(response, "Aggregate")


def keyed(lines: list[dict[str, Any]], w: World, *fields: str) -> dict[tuple[Any, ...], Any]:
    """``{(date, artifact name, *fields): (total, total_unique)}``, fields absent as None."""
    names = {w.widget: "widget", w.tool: "tool"}
    result = {}
    for item in lines:
        key = (item["date"], names[item["artifact"]], *(item.get(f) for f in fields))
        assert key not in result, f"two lines for {key}"
        result[key] = (item["total"], item["total_unique"])
    return result


# --- v2 event CSVs ----------------------------------------------------------------------------


def test_package_events_with_its_pixels(world: World) -> None:
    w = world
    response = w.alice.get(f"/v2/packages/acme/{w.widget}/events", params=JUNE)
    header, rows = csv_rows(response)
    assert header == V2_HEADER
    assert response.headers["content-disposition"] == (
        'attachment; filename="acme-widget-2024-06-01-2024-07-01.csv"'
    )
    # Ordered by time; the pixel's event is in its package's export; July is not.
    assert [r["id"] for r in rows] == ["w1", "w2", "p1", "w3", "w4", "w5"]
    by_id = {r["id"]: r for r in rows}
    w1, w2, p1, w5 = by_id["w1"], by_id["w2"], by_id["p1"], by_id["w5"]
    assert (w1["package"], w1["pixel"], p1["package"], p1["pixel"]) == (w.widget, "", "", w.docs)
    assert (w1["type"], w1["version"], w1["variables"]) == ("download", "1.0.0", "plan=pro")
    assert (w1["time"], w2["time"]) == ("2024-06-03T10:00:00Z", "2024-06-03T11:30:00.250000Z")
    assert (w1["referer"], w2["referer"]) == ("https://a.example/x,y", 'say "hi"\nbye')
    assert (w1["user_agent"], w1["platform"]) == (CURL, "unknownplatform")
    assert (w1["origin_country"], w2["origin_country"], p1["platform"]) == ("US", "GB", "windows")
    assert "Google" in w1["origin_company"]
    assert (w1["origin_connection_type"], w2["origin_connection_type"]) == ("hosting", "")
    assert len(w1["origin_id"]) == len(w1["endpoint_id"]) == 32
    assert (w1["dnt"], w5["dnt"], w5["origin_id"], w5["origin_country"]) == (
        "false",
        "true",
        "",
        "",
    )
    assert float(by_id["w4"]["origin_latitude"]) == pytest.approx(45.87, abs=0.01)


def test_extra_columns(world: World) -> None:
    w = world
    response = w.alice.get(
        f"/v2/packages/acme/{w.widget}/events", params={**JUNE, "extra_columns": "true"}
    )
    header, rows = csv_rows(response)
    assert header == V2_HEADER + V2_EXTRA
    w1, w2 = rows[0], rows[1]
    assert (w1["client"], w1["client_version"], w1["cloud_provider_name"]) == (
        "curl",
        "8.4.0",
        "Google Cloud",
    )
    assert (w2["client"], w2["client_runtime"], w2["excluded"]) == (
        "pip",
        "CPython 3.12.1",
        "false",
    )
    assert rows[2]["id"] == "p1"
    assert w1["import_id"] != rows[2]["import_id"] != ""  # the pixel's events: another import
    plain = w.alice.get(
        f"/v2/packages/acme/{w.widget}/events", params={**JUNE, "extra_columns": "false"}
    )
    assert csv_rows(plain)[0] == V2_HEADER


def test_owner_package_events(world: World) -> None:
    w = world
    header, rows = csv_rows(w.mia.get("/v2/packages/acme/events", params=JUNE))
    assert header == V2_HEADER
    # Every package's events and their pixels' events; not the free-standing pixel's.
    assert [r["id"] for r in rows] == ["t1", "w1", "w2", "p1", "w3", "w4", "w5"]
    assert rows[0]["package"] == w.tool


def test_owner_pixel_events(world: World) -> None:
    w = world
    response = w.alice.get("/v2/tracking-pixels/acme/events", params=JUNE)
    header, rows = csv_rows(response)
    assert header == V2_HEADER
    assert [(r["id"], r["pixel"]) for r in rows] == [("p1", w.docs), ("b1", w.blog)]
    assert "acme-tracking-pixels-" in response.headers["content-disposition"]


def test_one_pixel_by_id(world: World) -> None:
    """Scarf's spec: .../{package_id}/events exports 'a given package or tracking pixel id'."""
    w = world
    _, rows = csv_rows(w.alice.get(f"/v2/packages/acme/{w.blog}/events", params=JUNE))
    assert [r["id"] for r in rows] == ["b1"]


def test_an_empty_range_is_the_header_alone(world: World) -> None:
    w = world
    params = {"start_date": "2023-01-01", "end_date": "2023-01-31"}
    response = w.alice.get(f"/v2/packages/acme/{w.widget}/events", params=params)
    assert response.text == V2_HEADER + "\n"
    assert_matches_spec(response)


def test_an_end_date_equal_to_the_start_asks_for_that_day(world: World) -> None:
    """Scarf's PostgreSQL exporter's daily run asks for yesterday with start_date = end_date =
    yesterday; refused, it failed every day (a compatibility hunt)."""
    w = world
    day = {"start_date": "2024-07-01", "end_date": "2024-07-01"}
    whole = {"start_date": "2024-07-01", "end_date": "2024-07-02"}
    for route, lines in (
        (f"/v2/packages/acme/{w.widget}/events", 2),
        ("/v2/packages/acme/aggregates", 1),
    ):
        same = w.alice.get(route, params=day)
        assert same.status_code == 200, same.text
        assert same.text == w.alice.get(route, params=whole).text
        assert len(same.text.splitlines()) == lines  # the day's event is in it
    v1 = f"/api/v1/packages/{w.widget}/events/july.csv"
    assert (
        w.alice.get(v1, params={"startDate": "2024-07-01", "endDate": "2024-07-01"}).text
        == w.alice.get(v1, params={"startDate": "2024-07-01", "endDate": "2024-07-02"}).text
    )


def test_formula_injection_is_escaped(world: World) -> None:
    w = world
    params = {"start_date": "2024-07-01", "end_date": "2024-07-02"}
    _, rows = csv_rows(w.alice.get(f"/v2/packages/acme/{w.widget}/events", params=params))
    [w6] = rows
    assert w6["user_agent"] == "'" + FORMULA
    assert (w6["referer"], w6["version"], w6["type"]) == ("'@SUM(A1)", "'-1", "'+download")
    _, [v1] = csv_rows(
        w.alice.get(
            f"/api/v1/packages/{w.widget}/events/july.csv",
            params={"startDate": "2024-07-01", "endDate": "2024-07-02"},
        )
    )
    assert (v1["user_agent"], v1["package"]) == ("'" + FORMULA, "widget")


def test_formulas_as_stored_where_the_operator_says(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EVENTPORT_CSV_ESCAPE_FORMULAS=false: for files programs read, not spreadsheets (Scarf's
    PostgreSQL exporter stored "'@scope/name" and "'-": a compatibility hunt)."""
    w = world
    monkeypatch.setattr(w.server.settings, "csv_escape_formulas", False)
    params = {"start_date": "2024-07-01", "end_date": "2024-07-02"}
    _, [w6] = csv_rows(w.alice.get(f"/v2/packages/acme/{w.widget}/events", params=params))
    assert w6["user_agent"] == FORMULA
    assert (w6["referer"], w6["version"], w6["type"]) == ("@SUM(A1)", "-1", "+download")
    v1_params = {"startDate": "2024-07-01", "endDate": "2024-07-02"}
    _, [v1] = csv_rows(
        w.alice.get(f"/api/v1/packages/{w.widget}/events/july.csv", params=v1_params)
    )
    assert v1["user_agent"] == FORMULA


# --- v1 event CSVs ----------------------------------------------------------------------------


def test_v1_package_events(world: World) -> None:
    w = world
    response = w.mia.get(f"/api/v1/packages/{w.widget}/events/june.csv", params=JUNE_V1)
    header, rows = csv_rows(response)
    assert header == V1_HEADER
    assert response.headers["content-disposition"] == 'attachment; filename="june.csv"'
    assert [(r["id"], r["package"], r["pixel"]) for r in rows] == [
        ("w1", "widget", ""),
        ("w2", "widget", ""),
        ("p1", "widget", w.docs),  # the pixel is widget's: so is its event
        ("w3", "widget", ""),
        ("w4", "widget", ""),
        ("w5", "widget", ""),
    ]
    assert (rows[0]["time"], rows[0]["cloud_provider"], rows[0]["client"]) == (
        "2024-06-03T10:00:00Z",
        "Google Cloud",
        "curl",
    )


def test_v1_pixel_events(world: World) -> None:
    w = world
    _, rows = csv_rows(w.alice.get("/api/v1/pixels/events/pixels.csv", params=JUNE_V1))
    assert [(r["id"], r["pixel"], r["package"]) for r in rows] == [
        ("p1", w.docs, "widget"),  # attached to widget
        ("b1", w.blog, ""),  # a pixel of its own
    ]
    # Someone who may read no pixel gets the header alone.
    response = w.bob.get("/api/v1/pixels/events/pixels.csv", params=JUNE_V1)
    assert response.status_code == 200
    assert response.text == V1_HEADER + "\n"


def test_v1_errors(world: World) -> None:
    w = world
    path = f"/api/v1/packages/{w.widget}/events/x.csv"
    too_long = w.alice.get(path, params={"startDate": "2024-06-01", "endDate": "2024-07-03"})
    assert (too_long.status_code, too_long.json()["code"]) == (400, "range-too-long")
    assert "31 days" in too_long.json()["message"]
    missing = w.alice.get(path, params={"startDate": "2024-06-01"})
    assert missing.status_code == 400
    assert "endDate is required" in missing.json()["message"]
    assert w.bob.get(path, params=JUNE_V1).status_code == 404
    assert (
        w.alice.get(f"/api/v1/packages/{uuid.uuid4()}/events/x.csv", params=JUNE_V1).status_code
        == 404
    )


# --- dates and parameters ---------------------------------------------------------------------


def test_ranges_up_to_31_days(world: World) -> None:
    w = world
    path = f"/v2/packages/acme/{w.widget}/events"
    assert w.alice.get(path, params={**JUNE, "end_date": "2024-07-02"}).status_code == 200
    for route in (path, "/v2/packages/acme/events", "/v2/tracking-pixels/acme/events"):
        message = refused(
            w.alice.get(route, params={**JUNE, "end_date": "2024-07-03"}),
            400,
            "range-too-long",
            "32 days",
        )
        assert "at most 31 days" in message


def test_aggregates_allow_ten_years(world: World) -> None:
    w = world
    params = {"start_date": "2015-01-01", "end_date": "2024-12-31"}
    assert_ndjson_matches_spec(
        w.alice.get("/v2/packages/acme/aggregates", params=params), "Aggregate"
    )
    refused(
        w.alice.get(
            "/v2/packages/acme/aggregates",
            params={"start_date": "2010-01-01", "end_date": "2024-06-01"},
        ),
        400,
        "range-too-long",
    )


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"end_date": "2024-07-01"}, ["start_date is required"]),
        ({"start_date": "2024-06-01"}, ["end_date is required"]),
        ({"start_date": "2024-13-01", "end_date": "2024-07-01"}, ["start_date", "not a date"]),
        ({"start_date": "2024-06-01", "end_date": "yesterday"}, ["end_date", "not a date"]),
        ({"start_date": "2024-06-01T00:00:00Z", "end_date": "2024-07-01"}, ["not a date"]),
        ({"start_date": "2024-06-10", "end_date": "2024-06-01"}, ["must not be before"]),
        # that one day would end in the year 10000 (a verification hunt: a 500)
        ({"start_date": "9999-12-31", "end_date": "9999-12-31"}, ["past the last day"]),
    ],
)
def test_bad_dates(world: World, params: dict[str, str], words: list[str]) -> None:
    w = world
    for route in (
        f"/v2/packages/acme/{w.widget}/events",
        "/v2/packages/acme/events",
        "/v2/tracking-pixels/acme/events",
        "/v2/packages/acme/aggregates",
    ):
        refused(w.alice.get(route, params=params), 400, "invalid-package-query", *words)


@pytest.mark.parametrize(
    ("route", "params", "words"),
    [
        ("/v2/packages/acme/aggregates", {"rollup": "hourly"}, ["unknown rollup 'hourly'"]),
        ("/v2/packages/acme/aggregates", {"breakdown": "by-colour"}, ["unknown breakdown"]),
        ("/v2/packages/acme/aggregates", {"query": "name:widget"}, ["not supported"]),
        ("/v2/packages/acme/events", {"query": "name:widget"}, ["not supported"]),
        ("/v2/packages/acme/events", {"extra_columns": "maybe"}, ["extra_columns"]),
    ],
)
def test_bad_parameters(world: World, route: str, params: dict[str, str], words: list[str]) -> None:
    refused(world.alice.get(route, params={**JUNE, **params}), 400, "invalid-package-query", *words)


# --- who may export ---------------------------------------------------------------------------


def test_invisible_owners_and_packages_are_not_found(world: World) -> None:
    w = world
    routes = [
        "/v2/packages/acme/events",
        "/v2/packages/acme/aggregates",
        "/v2/tracking-pixels/acme/events",
        f"/v2/packages/acme/{w.widget}/events",
        f"/v2/packages/acme/{w.blog}/events",
    ]
    for client in (w.bob, w.eve):  # no relation; a member of another organization
        for route in routes:
            refused(client.get(route, params=JUNE), 404, "not-found")
    for route in (
        "/v2/packages/nobody/events",
        "/v2/packages/nobody/aggregates",
        "/v2/tracking-pixels/nobody/events",
        f"/v2/packages/acme/{uuid.uuid4()}/events",
        f"/v2/packages/other/{w.widget}/events",  # the package, under the wrong owner
        "/v2/packages/acme/not-a-uuid/events",
    ):
        refused(w.alice.get(route, params=JUNE), 404, "not-found")
    for route in ("/api/v1/organizations/acme/aggregates", "/api/v1/users/alice/aggregates"):
        assert w.eve.get(route, params=JUNE_V1).status_code == 404


def test_routes_keep_their_neighbours(world: World) -> None:
    """The export routes win over /v2/packages/{owner}/{package_id} and the pixel's own route,
    and a package named 'events' is still found by type and name."""
    w = world
    assert ok(w.alice.get(f"/v2/packages/acme/{w.widget}"))["name"] == "widget"
    assert ok(w.alice.get(f"/v2/tracking-pixels/acme/{w.docs}"))["name"] == "docs"
    events = ok(w.bob.post("/v2/packages/bob", json={"name": "events", "type": "npm"}), 201)
    assert ok(w.bob.get("/v2/packages/bob/npm/events"))["id"] == events["id"]
    header, rows = csv_rows(w.bob.get(f"/v2/packages/bob/{events['id']}/events", params=JUNE))
    assert (header, rows) == (V2_HEADER, [])
    assert w.bob.get("/v2/packages/bob/events", params=JUNE).text == V2_HEADER + "\n"
    assert w.bob.get("/v2/packages/bob/aggregates", params=JUNE).text == ""


# --- v2 aggregates ----------------------------------------------------------------------------


def test_daily_totals(world: World) -> None:
    w = world
    lines = aggregates(w.mia)
    assert {(item["rollup"], item["breakdown"]) for item in lines} == {("daily", "by-total")}
    assert keyed(lines, w) == {
        ("2024-06-03", "tool"): (1, 1),
        ("2024-06-03", "widget"): (3, 3),  # w1, w2 and the pixel's p1
        ("2024-06-04", "widget"): (1, 1),
        ("2024-06-10", "widget"): (1, 1),  # w5 asked not to be tracked
    }
    assert [item["date"] for item in lines] == sorted(item["date"] for item in lines)


def test_rollups(world: World) -> None:
    w = world
    lines = aggregates(w.alice, rollup=["weekly", "monthly", "yearly"])
    by_rollup = {
        r: [item for item in lines if item["rollup"] == r] for r in ("weekly", "monthly", "yearly")
    }
    assert keyed(by_rollup["weekly"], w) == {
        ("2024-06-03", "tool"): (1, 1),
        ("2024-06-03", "widget"): (4, 3),  # w1 and w3 come from one origin
        ("2024-06-10", "widget"): (1, 1),
    }
    assert keyed(by_rollup["monthly"], w) == {
        ("2024-06-01", "tool"): (1, 1),
        ("2024-06-01", "widget"): (5, 4),
    }
    assert keyed(by_rollup["yearly"], w) == {
        ("2024-01-01", "tool"): (1, 1),
        ("2024-01-01", "widget"): (5, 4),
    }
    assert len(lines) == 3 + 2 + 2


def test_do_not_track_totals(world: World) -> None:
    w = world
    lines = aggregates(w.alice, breakdown="by-total-do-not-track", rollup="monthly")
    assert keyed(lines, w) == {("2024-06-01", "widget"): (1, 0)}


def on_day(lines: list[dict[str, Any]], w: World, day: str, *fields: str) -> dict[Any, Any]:
    """``{field values: (total, total_unique)}`` of the widget's lines of one day."""
    return {k[2:]: v for k, v in keyed(lines, w, *fields).items() if k[:2] == (day, "widget")}


def test_breakdowns(world: World) -> None:
    w = world
    chosen = ["by-country", "by-client", "by-platform", "by-version", "by-variable"]
    lines = aggregates(w.alice, breakdown=chosen)
    of = {b: [item for item in lines if item["breakdown"] == b] for b in chosen}
    assert on_day(of["by-country"], w, "2024-06-03", "country") == {
        ("GB",): (2, 2),
        ("US",): (1, 1),
    }
    assert on_day(of["by-client"], w, "2024-06-03", "client", "client_version") == {
        ("chrome", "120.0.0.0"): (1, 1),
        ("curl", "8.4.0"): (1, 1),
        ("pip", "23.3.1"): (1, 1),
    }
    assert on_day(of["by-platform"], w, "2024-06-03", "platform") == {
        ("macos",): (1, 1),
        ("unknownplatform",): (1, 1),
        ("windows",): (1, 1),
    }
    # The pixel's event has no version: a line of its own, without the field.
    assert on_day(of["by-version"], w, "2024-06-03", "version") == {
        ("1.0.0",): (2, 2),
        (None,): (1, 1),
    }
    assert keyed(of["by-variable"], w, "variable", "value") == {
        ("2024-06-03", "widget", "plan", "pro"): (1, 1)
    }
    # Every breakdown but by-variable sums to the totals.
    names = {w.widget: "widget", w.tool: "tool"}
    totals = {key: total for key, (total, _) in keyed(aggregates(w.alice), w).items()}
    for breakdown in chosen[:-1]:
        sums: dict[tuple[str, str], int] = {}
        for item in of[breakdown]:
            key = (item["date"], names[item["artifact"]])
            sums[key] = sums.get(key, 0) + item["total"]
        assert sums == totals, breakdown


def test_unknown_values_are_left_out(world: World) -> None:
    w = world
    lines = aggregates(w.alice, breakdown=["by-cloudprovider", "by-domain", "by-referer"])
    for item in lines:
        assert None not in item.values(), item
    clouds = [i for i in lines if i["breakdown"] == "by-cloudprovider"]
    assert {
        (names, total)
        for (names, (total, _)) in on_day(clouds, w, "2024-06-03", "cloud_provider_name").items()
    } == {(("Google Cloud",), 1), ((None,), 2)}
    # No event has a domain: one line per day and artifact, without the field.
    assert all("domain" not in i for i in lines if i["breakdown"] == "by-domain")
    referers = {i.get("referer") for i in lines if i["breakdown"] == "by-referer"}
    assert referers == {"https://a.example/x,y", 'say "hi"\nbye', None}


# --- v1 aggregates ----------------------------------------------------------------------------


def test_v1_organization_aggregates(world: World) -> None:
    w = world
    response = w.mia.get("/api/v1/organizations/acme/aggregates", params=JUNE_V1)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(text) for text in response.text.splitlines()]
    assert {item["breakdown"] for item in lines} == {
        "company",
        "cloud_provider",
        "country",
        "platform",
        "version",
        "client",
        "variable",
        "total",
    }
    allowed = {
        "company": {"company_name", "company_domain"},
        "cloud_provider": {"cloud_provider_name", "cloud_provider_domain"},
        "country": {"country"},
        "platform": {"platform"},
        "version": {"version"},
        "client": {"client", "client_version"},
        "variable": {"variable", "value"},
        "total": {"unique_total"},
    }
    for item in lines:
        assert None not in item.values(), item
        assert {"breakdown", "date", "package", "total"} <= item.keys(), item
        assert item.keys() - {"breakdown", "date", "package", "total"} <= allowed[item["breakdown"]]
    names = {w.widget: "widget", w.tool: "tool"}
    totals = {
        (i["date"], names[i["package"]]): (i["total"], i["unique_total"])
        for i in lines
        if i["breakdown"] == "total"
    }
    assert totals == {
        ("2024-06-03", "tool"): (1, 1),
        ("2024-06-03", "widget"): (3, 3),
        ("2024-06-04", "widget"): (1, 1),
        ("2024-06-10", "widget"): (1, 1),
    }
    countries = {
        (i["date"], names[i["package"]], i.get("country")): i["total"]
        for i in lines
        if i["breakdown"] == "country"
    }
    assert countries[("2024-06-03", "widget", "GB")] == 2
    assert [i for i in lines if i["breakdown"] == "variable"] == [
        {
            "breakdown": "variable",
            "date": "2024-06-03",
            "package": w.widget,
            "variable": "plan",
            "value": "pro",
            "total": 1,
        }
    ]


def test_v1_user_aggregates(world: World) -> None:
    w = world
    # alice owns no package herself; acme is an organization, not a user, and the reverse.
    response = w.alice.get("/api/v1/users/alice/aggregates", params=JUNE_V1)
    assert (response.status_code, response.text) == (200, "")
    assert w.alice.get("/api/v1/users/acme/aggregates", params=JUNE_V1).status_code == 404
    assert w.alice.get("/api/v1/organizations/alice/aggregates", params=JUNE_V1).status_code == 404
    bad = w.alice.get("/api/v1/users/alice/aggregates", params={"startDate": "2024-06-01"})
    assert bad.status_code == 400
    assert "endDate is required" in bad.json()["message"]


def test_the_aggregate_checker_rejects_drift(world: World) -> None:
    response = world.alice.get("/v2/packages/acme/aggregates", params=JUNE)
    first = assert_ndjson_matches_spec(response, "Aggregate")[0]
    for drifted, needle in [
        ({**first, "date": "2024-13-01"}, "is not a 'date'"),
        ({k: v for k, v in first.items() if k != "rollup"}, "'rollup' is a required property"),
        ({**first, "country": None}, "None is not of type 'string'"),
        ({**first, "breakdown": "by-colour"}, "'by-colour' is not one of"),
    ]:
        fake = httpx.Response(
            200,
            headers={"content-type": "application/x-ndjson"},
            content=orjson.dumps(first) + b"\n" + orjson.dumps(drifted) + b"\n",
            request=response.request,
        )
        with pytest.raises(SpecDrift, match="line 2") as caught:
            assert_ndjson_matches_spec(fake, "Aggregate")
        assert needle in str(caught.value)


# --- streaming --------------------------------------------------------------------------------


Receive = Callable[[], Awaitable[dict[str, Any]]]


def streamed(
    spec_version: str, receive: Receive, on_body: Callable[[int], Awaitable[None]]
) -> tuple[int, bool]:
    """A ClosingStream of an endless source answered to a client whose ``on_body`` runs at
    each body chunk (given its number): the chunks sent, and whether the source was closed
    by the time the answer ended."""
    closed = threading.Event()

    def source() -> Iterator[bytes]:
        try:
            while True:
                yield b"x" * 1000
        finally:
            closed.set()

    async def serve() -> tuple[int, bool]:
        chunks = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal chunks
            if message["type"] == "http.response.body":
                chunks += 1
                await on_body(chunks)

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}}
        chunks_source = source()  # held, so that no garbage collection closes it for us
        with contextlib.suppress(ClientDisconnect), anyio.fail_after(10):  # and no hang
            await ClosingStream(primed(chunks_source), "text/csv")(scope, receive, send)
        return chunks, closed.is_set()

    return anyio.run(serve)


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
def test_a_stream_closes_its_source_when_the_client_goes_away(spec_version: str) -> None:
    """However the client goes away (a disconnect message, or a failing send under ASGI 2.4),
    the generator behind the answer is closed at once: the store's cursor is released."""
    gone = threading.Event()

    async def receive() -> dict[str, Any]:
        while not gone.is_set():
            await anyio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def on_body(chunk: int) -> None:
        if chunk == 3:
            gone.set()
            if spec_version == "2.4":
                raise OSError("connection reset")

    sent, closed_at_once = streamed(spec_version, receive, on_body)
    assert sent >= 3
    assert closed_at_once


def test_a_client_that_stops_reading_lets_go_of_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that keeps its connection open but reads nothing (its sends never complete)
    held the store's snapshot, and on the embedded store every other export's turn, for as
    long as it liked. Past the send timeout the export is abandoned and its source closed."""
    from eventport.api.v2 import export as export_module

    monkeypatch.setattr(export_module, "SEND_TIMEOUT_SECONDS", 0.2)

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        return {"type": "http.disconnect"}

    async def on_body(chunk: int) -> None:
        if chunk == 2:
            await anyio.sleep_forever()  # the client's window stays full

    sent, closed_at_once = streamed("2.4", receive, on_body)
    assert sent == 2
    assert closed_at_once


def test_every_rollup_and_breakdown_of_scarfs_spec(world: World) -> None:
    schemas = spec_document()["components"]["schemas"]
    assert set(AGGREGATE_FIELDS) == set(BREAKDOWNS) == set(schemas["Breakdown"]["enum"])
    for breakdown, fields in AGGREGATE_FIELDS.items():
        assert len(fields) == len(BREAKDOWNS[breakdown]), breakdown
    lines = aggregates(
        world.alice, rollup=schemas["Rollup"]["enum"], breakdown=schemas["Breakdown"]["enum"]
    )
    totals = {(i["rollup"], i["breakdown"]) for i in lines}
    for rollup in schemas["Rollup"]["enum"]:
        assert (rollup, "by-total") in totals
        assert (rollup, "by-referer") in totals
