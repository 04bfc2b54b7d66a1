"""An owner's event settings: what imports flag as excluded, over HTTP and in the store.

Every test runs on SQLite and on PostgreSQL (the ``server`` and ``store`` fixtures).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from eventport.control import accounts
from eventport.control.accounts import OrganizationFields
from eventport.control.database import ControlDatabase
from eventport.control.event_settings import ExclusionRules, exclusion_rules, update_settings
from eventport.domain.errors import NotFound
from tests.conftest import Server

DEFAULTS = {"exclude_bots": True, "excluded_user_agents": []}


def answer(response: httpx.Response, status: int) -> Any:
    request = response.request
    assert response.status_code == status, (
        f"{request.method} {request.url} answered {response.status_code}, expected {status}: "
        f"{response.text}"
    )
    return response.json()


def refused(response: httpx.Response, status: int, *words: str) -> str:
    """Assert an error answer whose message names what was wrong; return the message."""
    message: str = answer(response, status)["message"]
    for word in words:
        assert word in message, message
    return message


def make_org(client: httpx.Client, name: str) -> None:
    body = {"name": name, "description": "d", "billingEmail": f"billing@{name}.org"}
    answer(client.post("/api/v1/organizations", json=body), 200)


# --- reading and changing ---------------------------------------------------------------------


def test_an_owner_starts_with_bots_excluded_and_no_user_agents(server: Server) -> None:
    alice = server.user("alice")
    make_org(alice, "acme")
    assert answer(alice.get("/v2/alice/settings"), 200) == {"owner": "alice", **DEFAULTS}
    assert answer(alice.get("/v2/acme/settings"), 200) == {"owner": "acme", **DEFAULTS}


def test_update_changes_only_the_fields_given(server: Server) -> None:
    alice = server.user("alice")
    changed = answer(alice.patch("/v2/alice/settings", json={"exclude_bots": False}), 200)
    assert changed == {"owner": "alice", "exclude_bots": False, "excluded_user_agents": []}

    body = {"excluded_user_agents": ["curl/", "python-requests"]}
    changed = answer(alice.patch("/v2/alice/settings", json=body), 200)
    assert changed == {
        "owner": "alice",
        "exclude_bots": False,
        "excluded_user_agents": ["curl/", "python-requests"],
    }
    assert answer(alice.get("/v2/alice/settings"), 200) == changed
    assert answer(alice.patch("/v2/alice/settings", json={}), 200) == changed

    both = {"exclude_bots": True, "excluded_user_agents": []}
    assert answer(alice.patch("/v2/alice/settings", json=both), 200) == {"owner": "alice", **both}
    assert answer(alice.get("/v2/alice/settings"), 200) == {"owner": "alice", **DEFAULTS}


def test_substrings_are_stored_stripped_without_case_insensitive_duplicates(
    server: Server,
) -> None:
    alice = server.user("alice")
    given = ["  curl/ ", "Go-http-client", "CURL/", "\tgo-HTTP-client\n", "Wget", "curl/"]
    body = answer(alice.patch("/v2/alice/settings", json={"excluded_user_agents": given}), 200)
    assert body["excluded_user_agents"] == ["curl/", "Go-http-client", "Wget"]
    assert answer(alice.get("/v2/alice/settings"), 200)["excluded_user_agents"] == [
        "curl/",
        "Go-http-client",
        "Wget",
    ]


def test_the_limits_are_inclusive(server: Server) -> None:
    alice = server.user("alice")
    longest = "x" * 200
    hundred = [longest, *(f"agent-{i}" for i in range(99))]
    body = answer(alice.patch("/v2/alice/settings", json={"excluded_user_agents": hundred}), 200)
    assert body["excluded_user_agents"] == hundred
    # 101 given, 100 once a duplicate is gone: what is stored counts.
    with_duplicate = [*hundred, "AGENT-0"]
    answer(alice.patch("/v2/alice/settings", json={"excluded_user_agents": with_duplicate}), 200)


@pytest.mark.parametrize(
    ("substrings", "words"),
    [
        ([f"agent-{i}" for i in range(101)], ["101", "at most 100"]),
        (["curl/", "   "], ["excluded_user_agents[1]", "empty"]),
        ([""], ["excluded_user_agents[0]", "empty"]),
        (["ok", "y" * 201], ["excluded_user_agents[1]", "201", "at most 200"]),
        (["bell\x07"], ["excluded_user_agents[0]", "control characters"]),
        (["tab\tinside"], ["excluded_user_agents[0]", "control characters"]),
        (["c1\x85control"], ["excluded_user_agents[0]", "control characters"]),
    ],
    ids=["too-many", "blank", "empty", "too-long", "bell", "tab-inside", "c1-control"],
)
def test_invalid_substrings_are_refused_and_nothing_changes(
    server: Server, substrings: list[str], words: list[str]
) -> None:
    alice = server.user("alice")
    body = {"exclude_bots": False, "excluded_user_agents": substrings}
    response = alice.patch("/v2/alice/settings", json=body)
    refused(response, 422, *words)
    assert response.json()["code"] == "invalid-excluded-user-agents"
    assert answer(alice.get("/v2/alice/settings"), 200) == {"owner": "alice", **DEFAULTS}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b'{"exclude_bots": fal', ["not valid JSON"]),
        (b'["curl/"]', ["JSON object"]),
        (b'{"exclude_bots": "no"}', ["exclude_bots"]),
        (b'{"exclude_bots": 0}', ["exclude_bots"]),
        (b'{"excluded_user_agents": "curl/"}', ["excluded_user_agents"]),
        (b'{"excluded_user_agents": ["curl/", 7]}', ["excluded_user_agents.1"]),
        (b'{"excluded_user_agents": ["nul\\u0000"]}', ["excluded_user_agents", "NUL"]),
        (b'{"excluded_user_agents": ["\\ud800"]}', ["excluded_user_agents", "surrogate"]),
        (b'{"exclude_bots": null}', ["exclude_bots must not be null"]),
        (b'{"excluded_user_agents": null}', ["excluded_user_agents must not be null"]),
        (b'{"exclude_bot": false}', ["exclude_bot", "not permitted"]),
    ],
    ids=[
        "bad-json",
        "not-an-object",
        "string-for-bool",
        "number-for-bool",
        "string-for-list",
        "number-in-list",
        "nul",
        "lone-surrogate",
        "null-bool",
        "null-list",
        "unknown-field",
    ],
)
def test_malformed_bodies_are_bad_requests(
    server: Server, content: bytes, words: list[str]
) -> None:
    alice = server.user("alice")
    headers = {"Content-Type": "application/json"}
    response = alice.patch("/v2/alice/settings", content=content, headers=headers)
    refused(response, 400, *words)
    assert response.json()["code"] == "invalid-request"
    assert answer(alice.get("/v2/alice/settings"), 200) == {"owner": "alice", **DEFAULTS}


def test_the_schema_offers_no_null(server: Server) -> None:
    """The OpenAPI document says what may be sent: a field left out, never null."""
    schema = httpx.get(f"{server.base_url}/openapi.json").json()["components"]["schemas"]
    fields = schema["SettingsBody"]["properties"]
    assert fields["exclude_bots"]["type"] == "boolean"
    assert fields["excluded_user_agents"]["type"] == "array"
    assert "null" not in str(fields)
    assert "required" not in schema["SettingsBody"]


# --- who may ----------------------------------------------------------------------------------


def test_unknown_owners_and_other_users_are_not_found(server: Server) -> None:
    alice = server.user("alice")
    server.user("bob")
    for owner in ("nobody", "bob"):
        refused(alice.get(f"/v2/{owner}/settings"), 404, f"owner {owner!r} not found")
        patch = alice.patch(f"/v2/{owner}/settings", json={"exclude_bots": False})
        refused(patch, 404, f"owner {owner!r} not found")


def test_members_read_admins_change_outsiders_see_nothing(server: Server) -> None:
    boss = server.user("boss")
    make_org(boss, "acme")
    mem, adm, out = server.user("mem"), server.user("adm"), server.user("out")
    for name, role in (("mem", "member"), ("adm", "admin")):
        member = {"username": name, "role": role}
        answer(boss.post("/v2/organizations/acme/members", json=member), 201)

    assert answer(mem.get("/v2/acme/settings"), 200) == {"owner": "acme", **DEFAULTS}
    response = mem.patch("/v2/acme/settings", json={"exclude_bots": False})
    refused(response, 403, "may not change", "acme")

    changed = answer(adm.patch("/v2/acme/settings", json={"excluded_user_agents": ["bot"]}), 200)
    assert changed["excluded_user_agents"] == ["bot"]
    assert answer(mem.get("/v2/acme/settings"), 200) == changed
    assert (
        answer(boss.patch("/v2/acme/settings", json={"exclude_bots": False}), 200)["exclude_bots"]
        is False
    )

    refused(out.get("/v2/acme/settings"), 404, "not found")
    refused(out.patch("/v2/acme/settings", json={"exclude_bots": True}), 404, "not found")
    # An organization's settings are its own, not its members'.
    assert answer(boss.get("/v2/boss/settings"), 200) == {"owner": "boss", **DEFAULTS}


def test_no_token_is_unauthorized(server: Server) -> None:
    server.user("alice")
    anonymous = server.client()
    assert anonymous.get("/v2/alice/settings").status_code == 401
    assert anonymous.patch("/v2/alice/settings", json={}).status_code == 401


# --- routing ----------------------------------------------------------------------------------


def test_an_account_named_settings_keeps_its_other_routes(server: Server) -> None:
    """``/v2/{owner}/settings`` must not take ``/v2/packages/settings`` and its kind."""
    settings = server.user("settings")
    created = answer(settings.post("/v2/packages/settings", json={"name": "w", "type": "npm"}), 201)
    listed = answer(settings.get("/v2/packages/settings"), 200)
    assert [p["id"] for p in listed["results"]] == [created["id"]]
    assert "results" in answer(settings.get("/v2/tracking-pixels/settings"), 200)
    assert answer(settings.get("/v2/imports/settings"), 200) == {"event_imports": []}
    assert answer(settings.get("/v2/users/settings"), 200)["name"] == "settings"
    assert answer(settings.get("/v2/settings/settings"), 200) == {"owner": "settings", **DEFAULTS}


def test_the_owner_import_route_still_imports(server: Server) -> None:
    alice = server.user("alice")
    package = answer(alice.post("/v2/packages/alice", json={"name": "w", "type": "npm"}), 201)
    line = b'{"$time": "2024-06-04T00:00:00Z", "$package": "%s"}\n' % package["id"].encode()
    headers = {"Content-Type": "application/x-ndjson"}
    started = answer(alice.post("/v2/alice/import", content=line, headers=headers), 200)
    assert started["status"] == "importing"
    assert answer(alice.get("/v2/alice/settings"), 200) == {"owner": "alice", **DEFAULTS}


# --- the import worker's view -----------------------------------------------------------------


def test_exclusion_rules_of_owners_that_never_set_anything(store: ControlDatabase) -> None:
    with store.session() as s:
        user, _ = accounts.create_user(s, "alice", "alice@example.com")
        org = accounts.create_organization(
            s, user, OrganizationFields("acme", None, None, "billing@acme.io")
        )
        user_id, org_id = user.id, org.id
    with store.session() as s:
        assert exclusion_rules(s, user_id) == ExclusionRules(True, ())
        assert exclusion_rules(s, org_id) == ExclusionRules(True, ())


def test_exclusion_rules_follow_the_settings(store: ControlDatabase) -> None:
    with store.session() as s:
        user, _ = accounts.create_user(s, "alice", "alice@example.com")
        org = accounts.create_organization(
            s, user, OrganizationFields("acme", None, None, "billing@acme.io")
        )
        update_settings(
            s, user, "acme", exclude_bots=False, excluded_user_agents=[" curl/", "Curl/", "wget"]
        )
        org_id, user_id = org.id, user.id
    with store.session() as s:
        assert exclusion_rules(s, org_id) == ExclusionRules(False, ("curl/", "wget"))
        assert exclusion_rules(s, user_id) == ExclusionRules(True, ())


def test_exclusion_rules_of_an_unknown_owner(store: ControlDatabase) -> None:
    with store.session() as s, pytest.raises(NotFound):
        exclusion_rules(s, "00000000-0000-0000-0000-000000000000")
