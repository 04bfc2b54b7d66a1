"""One typed settings object. Every field reads from an ``EVENTPORT_``-prefixed variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTPORT_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the HTTP server.")
    data_dir: Path = Field(
        Path("eventport-data"),
        description="Directory holding all embedded data (control database, events, spool).",
    )
    database_url: str | None = Field(
        None,
        description=(
            "Control database URL. Unset: SQLite in the data dir. "
            "postgresql://user@host/db puts control data (and later events) in PostgreSQL."
        ),
    )
    workers: int = Field(
        1, ge=0, le=64, description="Import workers run inside `eventport serve` (0 allowed)."
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    max_active_imports: int = Field(
        15, ge=1, description="Waiting or running imports one owner may have at once (Scarf: 15)."
    )
    max_import_bytes: int = Field(
        50 * 1024**3, ge=1, description="Largest accepted import upload, in bytes (413 above)."
    )
    lease_seconds: float = Field(
        15.0,
        ge=1,
        le=86_400,
        description="How long a worker's claim on an import lasts without a heartbeat; a dead "
        "worker's import is resumed by another after this. From 1 s (the heartbeat looks every "
        "0.25 s and renews at a third of it) to a day.",
    )

    enrichment: bool = Field(
        True,
        description="Enrich imported events: location, network owner and cloud from the IP, "
        "client and platform from the user agent, origin ids. false stores events as imported "
        "(bench/ingest.py measures both).",
    )
    geoip_city_database: Path | None = Field(
        None,
        description="A MaxMind-format (.mmdb) City or Country database that replaces the "
        "bundled location data (e.g. a current GeoLite2-City.mmdb).",
    )
    geoip_asn_database: Path | None = Field(
        None,
        description="A MaxMind-format (.mmdb) ASN database that replaces the bundled network "
        "owner data (e.g. GeoLite2-ASN.mmdb).",
    )
    origin_secret: str | None = Field(
        None,
        description="Key of the keyed hashes origin_id (IP and user agent) and endpoint_id (IP). "
        "Unset: a random key made on first start and kept in the control database, shared by "
        "every process that uses it.",
    )
    id_filter_mb: int = Field(
        64,
        ge=0,
        description="Memory (MB) for the embedded event store's filter of stored event ids, "
        "which spares each imported batch two scans of every stored id: ~5 bytes an event, so "
        "64 covers ~13M stored events; past that imports slow as the store grows. 0: no filter.",
    )
    duckdb_memory_mb: int = Field(
        128,
        ge=32,  # at 16 an import's commit ran out of memory, whatever the write limit
        description="Memory (MB) for the embedded event store's DuckDB buffer pool while an "
        "export or aggregate runs (its cache of the file's blocks and the memory of its "
        "queries; beyond it DuckDB spills to a temporary file). A request that needs more than "
        "the pool is refused with a 503 (at 64: a year-long by-variable aggregate of a "
        "10M-event store; at 48: a 10-day export of it).",
    )
    duckdb_write_memory_mb: int = Field(
        40,
        ge=16,
        description="The DuckDB buffer pool's limit (MB) while no export or aggregate runs, "
        "which imports write within: DuckDB keeps the blocks it writes cached up to its limit. "
        "At 40 a 5M-event import's peak is ~20 MB lower than at 64 and ~75 MB lower than at "
        "128, at about the same speed (an import's batch, as DuckDB holds it, is ~27 MB). At or "
        "above EVENTPORT_DUCKDB_MEMORY_MB: the pool keeps that limit. A write that needs more "
        "gets the full limit from then on. DuckDB keeps up to twice this (at most "
        "EVENTPORT_DUCKDB_MEMORY_MB) of the blocks it frees for reuse instead of returning "
        "them to the system.",
    )
    csv_escape_formulas: bool = Field(
        True,
        description="In CSV exports, put a ' before a text that a spreadsheet would read as a "
        "formula (one starting =, +, -, @, a tab or a carriage return), as OWASP advises. "
        "Off: texts exactly as stored, for exports read by programs (Scarf's PostgreSQL "
        "exporter, say) rather than spreadsheets; a scoped npm name then stays @scope/name.",
    )
    keep_ip_addresses: bool = Field(
        False,
        description="Store each event's raw IP address (column remote_address). Off by default: "
        "raw addresses are kept nowhere once an import is done.",
    )

    @field_validator("host")
    @classmethod
    def _named_host(cls, value: str) -> str:
        # uvicorn binds an empty host to every interface, IPv4 and IPv6: that takes 0.0.0.0.
        if not value.strip():
            raise ValueError("host is empty: name an address (0.0.0.0 for every interface)")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _named_dir(cls, value: object) -> object:
        # An empty EVENTPORT_DATA_DIR= would be the working directory, silently.
        if isinstance(value, str) and not value.strip():
            raise ValueError("data_dir is empty: name a directory, or leave it unset")
        return value

    @field_validator("geoip_city_database", "geoip_asn_database", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # EVENTPORT_GEOIP_CITY_DATABASE= (empty) was the path ".", "no file at ."
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("data_dir", "geoip_city_database", "geoip_asn_database")
    @classmethod
    def _home_expanded(cls, value: Path | None) -> Path | None:
        # "~/x" from a systemd unit or an .env file, which expand nothing: pathlib took it
        # for a directory named "~" under the working one, and DuckDB, which expands "~"
        # itself, put the event store in the home directory: one data dir in two places.
        return None if value is None else value.expanduser()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("log_level must be one of debug, info, warning, error, critical")
        return value

    @property
    def spool_dir(self) -> Path:
        """Uploads wait here for a worker; each file is deleted when its import ends. Absolute
        (an import keeps its upload's path): a relative data dir, such as the default
        ``./eventport-data``, would otherwise name another place to a worker started in
        another working directory with the same setting."""
        return (self.data_dir / "spool").absolute()

    @property
    def control_file(self) -> Path:
        """The embedded control database's file (the SQLite one when no URL says otherwise)."""
        return self.data_dir / "control.sqlite3"

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to use: the configured one or the embedded SQLite file."""
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite:///{self.control_file.resolve()}"


def normalize_database_url(url: str) -> str:
    """Map the plain ``postgresql://`` scheme onto the psycopg 3 driver we ship with."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
