"""Name, URL and template rules, with the codes Scarf clients see."""

from __future__ import annotations

import pytest

from eventport.domain import names
from eventport.domain.errors import InvalidInput


@pytest.mark.parametrize("name", ["a", "acme", "acme-corp", "a_b", "x1", "a" * 39])
def test_good_account_names(name: str) -> None:
    assert names.check_account_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Acme", "-acme", "acme-", "ac me", "a" * 40, "api", "packages", "acmé", "a\x00"]
)
def test_bad_account_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="name"):
        names.check_account_name(name)


@pytest.mark.parametrize("name", ["left-pad", "@scope/pkg", "library/ubuntu", "Django", "a.b_c~d"])
def test_good_package_names(name: str) -> None:
    assert names.check_package_name(name) == name


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", "package-name-is-empty"),
        ("has space", "invalid-package-name"),
        (".hidden", "invalid-package-name"),
        ("a//b", "invalid-package-name"),
        ("x" * 215, "invalid-package-name"),
        ("nul\x00", "invalid-package-name"),
    ],
)
def test_bad_package_names(name: str, code: str) -> None:
    with pytest.raises(InvalidInput) as error:
        names.check_package_name(name)
    assert error.value.code == code


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Library/Ubuntu", "docker-image-name-has-invalid-characters"),
        ("library//ubuntu", "docker-image-name-has-empty-segments"),
        ("a" * 256, "docker-image-name-is-longer-than-255-characters"),
    ],
)
def test_bad_docker_names(name: str, code: str) -> None:
    with pytest.raises(InvalidInput) as error:
        names.check_docker_image_name(name)
    assert error.value.code == code


def test_docker_urls_split_into_registry_and_image() -> None:
    assert names.docker_url_parts("https://docker.io/library/ubuntu", "backendUrl") == (
        "docker.io",
        "library/ubuntu",
    )
    assert names.docker_url_parts("https://reg.example:5000/a/b-c", "backendUrl") == (
        "reg.example:5000",
        "a/b-c",
    )
    for bad in ("https://docker.io", "https://docker.io/Library/x", "https://docker.io/a/-b"):
        with pytest.raises(InvalidInput, match="backendUrl"):
            names.docker_url_parts(bad, "backendUrl")


@pytest.mark.parametrize(
    ("incoming", "outgoing", "code"),
    [
        ("", "https://x.io/", "incoming-path-must-not-be-empty"),
        ("/a", "", "outgoing-url-must-not-be-empty"),
        ("a/{v}", "https://x.io/{v}", "incoming-path-must-start-with-slash"),
        ("https://x.io/{v}", "https://x.io/{v}", "incoming-path-must-be-relative"),
        ("/a/{v", "https://x.io/", "incoming-path-invalid-url-template"),
        ("/a/{v}", "https://x.io/{v}}", "outgoing-url-invalid-url-template"),
        ("/a/{v}", "/relative/{v}", "outgoing-url-must-be-absolute"),
        ("/a/{v}", "https://x.io/{w}", "incoming-path-missing-variables"),
    ],
)
def test_bad_routes(incoming: str, outgoing: str, code: str) -> None:
    with pytest.raises(InvalidInput) as error:
        names.check_route(incoming, outgoing)
    assert error.value.code == code


def test_good_route() -> None:
    route = ("/dl/{version}/x-{version}.tgz", "https://cdn.example/{version}.tgz")
    assert names.check_route(*route) == route


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("pypi.org", "repository-url-invalid"),
        ("http://pypi.example/simple/", "repository-url-not-https"),
        ("https://pypi.example/simple", "repository-url-missing-trailing-slash"),
    ],
)
def test_bad_repository_urls(url: str, code: str) -> None:
    with pytest.raises(InvalidInput) as error:
        names.check_repository_url(url)
    assert error.value.code == code


def test_text_rejects_control_characters_and_length() -> None:
    assert names.check_text("description", "tabs\tand\nnewlines ok") is not None
    with pytest.raises(InvalidInput, match="control characters"):
        names.check_text("description", "bell\x07")
    with pytest.raises(InvalidInput, match="too long"):
        names.check_text("short_description", "x" * 1001)


def test_user_agent_substrings_are_stripped_and_deduplicated_ignoring_case() -> None:
    given = [" curl/ ", "Wget", "CURL/", "wget", "\tpython-requests\n"]
    assert names.check_user_agent_substrings(given) == ["curl/", "Wget", "python-requests"]
    assert names.check_user_agent_substrings([]) == []


def test_user_agent_substring_limits_are_inclusive() -> None:
    hundred = ["x" * 200, *(f"agent-{i}" for i in range(99))]
    assert names.check_user_agent_substrings(hundred) == hundred
    assert len(names.check_user_agent_substrings([*hundred, "AGENT-1"])) == 100


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([f"a{i}" for i in range(101)], "101 distinct substrings, at most 100"),
        (["ok", " "], r"excluded_user_agents\[1\] is empty"),
        (["x" * 201], r"excluded_user_agents\[0\] is too long: 201 characters, at most 200"),
        (["a\x00b"], "control characters"),
        (["a\nb"], "control characters"),
        (["a\x7fb"], "control characters"),
        (["a\x9bb"], "control characters"),
        (["a\ud800b"], "lone surrogate"),
    ],
)
def test_bad_user_agent_substrings(given: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as raised:
        names.check_user_agent_substrings(given)
    assert raised.value.code == "invalid-excluded-user-agents"
