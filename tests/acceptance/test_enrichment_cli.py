"""``eventport enrichment info``, run as a user would: the installed command in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

EVENTPORT = str(Path(sys.executable).with_name("eventport"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment without any EVENTPORT_ setting of the caller's, and a fresh data dir."""
    values = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPORT_")}
    values["EVENTPORT_DATA_DIR"] = str(tmp_path / "data")
    return values


def info(env: dict[str, str], **settings: str) -> subprocess.CompletedProcess[str]:
    extra = {f"EVENTPORT_{name.upper()}": value for name, value in settings.items()}
    return subprocess.run(
        [EVENTPORT, "enrichment", "info"],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def sources(output: str) -> dict[str, list[str]]:
    """The dates printed for each kind of source, from lines like ``city  2018-07-03  …``."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        if match := re.match(r"(\S+)\s+(\d{4}-\d{2}-\d{2}|undated)\s+\S", line):
            found.setdefault(match[1], []).append(match[2])
    return found


def test_info_lists_every_source_with_its_date(env: dict[str, str]) -> None:
    result = info(env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.splitlines()[0] == "enrichment: on"
    dated = sources(out)
    assert dated["country"] == ["2024-06-18"]
    assert dated["asn"] == ["2024-06-18"]
    assert dated["city"] == ["2018-07-03"]
    assert len(dated["cloud"]) == 1
    assert dated["cloud"][0] != "undated"
    assert dated["user-agent"]
    assert re.search(r"^city\s.*GeoLite2-City\.mmdb$", out, re.M), out
    assert re.search(r"^user-agent\s.*ua-parser \d", out, re.M), out
    assert "origin-id key: generated on first start" in out
    assert "raw IP addresses: not kept" in out
    # Nothing is created or opened in the data dir: the command only reads the data files.
    assert not Path(env["EVENTPORT_DATA_DIR"]).exists()


def test_info_reports_the_operators_choices(env: dict[str, str]) -> None:
    result = info(env, origin_secret="00112233445566778899aabbccddeeff", keep_ip_addresses="true")
    assert result.returncode == 0, result.stderr
    assert "origin-id key: EVENTPORT_ORIGIN_SECRET" in result.stdout
    assert "00112233445566778899aabbccddeeff" not in result.stdout
    assert "raw IP addresses: kept" in result.stdout


def test_info_says_when_enrichment_is_off(env: dict[str, str]) -> None:
    result = info(env, enrichment="false")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("enrichment: off")
    assert sources(result.stdout) == {}


def test_a_missing_city_database_is_a_clear_error(env: dict[str, str]) -> None:
    result = info(env, geoip_city_database="/nonexistent.mmdb")
    assert result.returncode != 0
    assert "cannot read MaxMind database /nonexistent.mmdb" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_database_of_the_wrong_kind_is_a_clear_error(env: dict[str, str]) -> None:
    city = resources.files("_maxminddb_geolite2") / "GeoLite2-City.mmdb"
    result = info(env, geoip_asn_database=str(city))
    assert result.returncode != 0
    assert "GeoLite2-City database, not an ASN or ISP database" in result.stderr
    assert "Traceback" not in result.stderr
