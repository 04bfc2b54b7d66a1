"""Settings: one typed object, EVENTPORT_ prefix, every setting documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventport.settings import Settings, normalize_database_url

README = Path(__file__).resolve().parents[2] / "README.md"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVENTPORT_PORT", "9123")
    monkeypatch.setenv("EVENTPORT_WORKERS", "0")
    monkeypatch.setenv("EVENTPORT_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert (settings.port, settings.workers, settings.data_dir) == (9123, 0, tmp_path)
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path / 'control.sqlite3'}"


def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTPORT_WORKERS", "-1")
    with pytest.raises(ValueError, match="workers"):
        Settings()


def test_postgres_urls_use_psycopg() -> None:
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("sqlite:///x") == "sqlite:///x"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"EVENTPORT_{name.upper()}" in README.read_text(), f"document EVENTPORT_{name.upper()}"


def test_the_spool_is_an_absolute_path_whatever_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Imports keep their upload's path: from a relative data dir (the default), a worker in
    another working directory would look somewhere else."""
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("eventport-data"), database_url=None)
    assert settings.spool_dir == tmp_path / "eventport-data" / "spool"
    assert settings.spool_dir.is_absolute()


def test_a_home_directory_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ "~/x" as a systemd unit or an .env file passes it: the control file and spool went to
    ./~/x and the event store (DuckDB expands "~" itself) to $HOME/x (an operations hunt)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("EVENTPORT_DATA_DIR", "~/x")
    monkeypatch.setenv("EVENTPORT_GEOIP_ASN_DATABASE", "~/asn.mmdb")
    settings = Settings()
    assert settings.data_dir == tmp_path / "x"
    assert settings.geoip_asn_database == tmp_path / "asn.mmdb"
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path / 'x' / 'control.sqlite3'}"


def test_an_empty_geoip_database_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """It was the path ".", and "no file at ." (an operations hunt)."""
    monkeypatch.setenv("EVENTPORT_GEOIP_CITY_DATABASE", "")
    monkeypatch.setenv("EVENTPORT_GEOIP_ASN_DATABASE", " ")
    settings = Settings()
    assert (settings.geoip_city_database, settings.geoip_asn_database) == (None, None)


@pytest.mark.parametrize("lease", ["0.05", "0.5", "inf", "1e15", "nan"])
def test_a_lease_the_heartbeat_cannot_keep_is_refused(
    monkeypatch: pytest.MonkeyPatch, lease: str
) -> None:
    """Under ~0.25 s every import failed five attempts with nothing logged; inf and 1e15
    overflowed at start-up, with a traceback (an operations hunt)."""
    monkeypatch.setenv("EVENTPORT_LEASE_SECONDS", lease)
    with pytest.raises(ValueError, match="lease_seconds"):
        Settings()


def test_an_empty_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn bound it to every interface, IPv4 and IPv6 (an operations hunt)."""
    monkeypatch.setenv("EVENTPORT_HOST", "")
    with pytest.raises(ValueError, match="host is empty"):
        Settings()
