"""Declarative schema of the control store. Alembic migrations must produce exactly this."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    select,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def clock(session: Session) -> Any:
    """Now, for the times that order one owner's imports and time leases out: PostgreSQL's own
    clock there, so that API and worker processes on hosts whose clocks differ still agree
    (an upload stamped by a host 5 s behind ran beside the one before it, and its replacement
    warnings were lost). SQLite: one host, this process's clock."""
    if session.get_bind().dialect.name == "postgresql":
        return func.clock_timestamp(type_=DateTime(timezone=True))
    return utcnow()


def clock_now(session: Session) -> datetime:
    """:func:`clock`'s now as a value (one query on PostgreSQL): what an import's times (all
    stamped by :func:`clock`) are measured against, such as a running import's rate."""
    now = clock(session)
    if isinstance(now, datetime):
        return now
    found: datetime = session.execute(select(now)).scalar_one()
    return found


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the backend keeps (SQLite keeps naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the control store")
        return (
            value.astimezone(UTC)
            if dialect.name != "sqlite"
            else value.astimezone(UTC).replace(tzinfo=None)
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StringList(TypeDecorator[list[str]]):
    """A list of strings kept as JSON text: the same on every backend, and comparable (unlike
    PostgreSQL's ``json``, which has no equality operator)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(list(value), ensure_ascii=False)

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str] | None:
        if value is None:
            return None
        assert isinstance(value, str)
        loaded = json.loads(value)
        assert isinstance(loaded, list)
        return [str(item) for item in loaded]


def empty_list() -> list[str]:
    return []


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    """A user or an organization: the two share one namespace of names."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "user" | "organization"
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(Text)
    billing_email: Mapped[str | None] = mapped_column(String(254))
    # Event settings: flag known bots, and events whose user agent contains one of these.
    exclude_bots: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    excluded_user_agents: Mapped[list[str]] = mapped_column(
        StringList, default=empty_list, server_default="[]"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def is_organization(self) -> bool:
        return self.kind == "organization"


class ApiToken(Base):
    """A bearer token. Only its SHA-256 digest is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    label: Mapped[str | None] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[Account] = relationship(lazy="joined")


class Membership(Base):
    __tablename__ = "memberships"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))  # member | admin | owner
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[Account] = relationship(foreign_keys=[user_id], lazy="joined")
    organization: Mapped[Account] = relationship(foreign_keys=[organization_id], lazy="joined")


class Package(Base):
    __tablename__ = "packages"
    __table_args__ = (UniqueConstraint("owner_id", "type", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))  # docker|file|python|npm|hackage|other
    short_description: Mapped[str | None] = mapped_column(Text)
    long_description: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(Text)
    backend_registry: Mapped[str | None] = mapped_column(String(255))
    repository_name: Mapped[str | None] = mapped_column(String(255))
    repository_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    owner: Mapped[Account] = relationship(lazy="joined")


class PackagePermission(Base):
    """An explicit per-user permission on a package (blocked, default, member or admin)."""

    __tablename__ = "package_permissions"

    package_id: Mapped[str] = mapped_column(
        ForeignKey("packages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    level: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[Account] = relationship(lazy="joined")


class PackageRoute(Base):
    __tablename__ = "package_routes"
    __table_args__ = (UniqueConstraint("package_id", "incoming_path"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    package_id: Mapped[str] = mapped_column(ForeignKey("packages.id", ondelete="CASCADE"))
    incoming_path: Mapped[str] = mapped_column(Text)
    outgoing_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PackageDomain(Base):
    __tablename__ = "package_domains"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    package_id: Mapped[str] = mapped_column(
        ForeignKey("packages.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(253), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrackingPixel(Base):
    __tablename__ = "tracking_pixels"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        Index("ix_tracking_pixels_package_id", "package_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    package_id: Mapped[str | None] = mapped_column(ForeignKey("packages.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    owner: Mapped[Account] = relationship(lazy="joined")
    package: Mapped[Package | None] = relationship(lazy="joined")


class Import(Base):
    """A bulk import: an explicit state machine driven by workers holding a lease.

    waiting -> running -> done | aborted | failed. A running import whose lease expired (its
    worker died) is claimed again and resumes from the event store's checkpoint.
    """

    __tablename__ = "imports"
    __table_args__ = (
        Index("ix_imports_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_imports_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    created_by: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(16))  # package | pixel | multi
    package_id: Mapped[str | None] = mapped_column(String(36))
    pixel_id: Mapped[str | None] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    format: Mapped[str] = mapped_column(String(16))  # ndjson | csv
    compression: Mapped[str] = mapped_column(String(16))  # identity | gzip
    spool_path: Mapped[str] = mapped_column(Text)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_processed: Mapped[int] = mapped_column(BigInteger, default=0)
    lines_processed: Mapped[int] = mapped_column(BigInteger, default=0)
    events_total: Mapped[int] = mapped_column(BigInteger, default=0)
    events_imported: Mapped[int] = mapped_column(BigInteger, default=0)
    events_failed: Mapped[int] = mapped_column(BigInteger, default=0)
    warnings: Mapped[int] = mapped_column(BigInteger, default=0)
    # Events kept but flagged: excluded from aggregates (known bots, the owner's user-agent
    # substrings), and those that carried Do Not Track or Global Privacy Control.
    excluded: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    do_not_track: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    abort_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims, less clean hand-backs
    # The last attempt that committed a batch: attempts after it are the ones in a row that
    # committed nothing, which alone make an import fail (imports/worker.py MAX_ATTEMPTS).
    progress_attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[Account] = relationship(foreign_keys=[owner_id], lazy="joined")


class ImportLog(Base):
    """One entry of an import's log. (import, line, code) is unique, so replaying a batch
    after a crash writes nothing twice; it is also the log's order. The index by level finds
    an import's first errors or warnings without reading the others (an import can log every
    line: reading them all made each status request of a 1M-warning import take 0.2 s)."""

    __tablename__ = "import_logs"
    __table_args__ = (
        UniqueConstraint("import_id", "line", "code"),
        Index("ix_import_logs_import_id_level_line_code", "import_id", "level", "line", "code"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    import_id: Mapped[str] = mapped_column(ForeignKey("imports.id", ondelete="CASCADE"))
    line: Mapped[int] = mapped_column(BigInteger)  # 0 for entries about the whole import
    level: Mapped[str] = mapped_column(String(16))  # info | warning | error
    type: Mapped[str] = mapped_column(String(40))
    code: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    package_id: Mapped[str | None] = mapped_column(String(200))
    tracking_pixel_id: Mapped[str | None] = mapped_column(String(200))
    events_count: Mapped[int | None] = mapped_column(BigInteger)
    failed_events_count: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImportLogRun(Base):
    """One warning on many lines of an import, stored as one row: the lines and the texts its
    messages name, compressed (``imports/log_lines.py`` makes and reads ``body``). A re-import
    warns on every line (``duplicate-unique-id``): as ``ImportLog`` rows that was ~420 bytes
    an entry in the control store (2.1 GB for 5M lines) and most of the re-import's time.
    A log read merges these entries with ``ImportLog``'s in (line, code) order.

    (import, code, first line) is unique, so a batch made again after a crash stores its run
    once; the worker also drops the runs past its checkpoint when it resumes."""

    __tablename__ = "import_log_runs"
    __table_args__ = (UniqueConstraint("import_id", "first_line", "code"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    import_id: Mapped[str] = mapped_column(ForeignKey("imports.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(40))  # also its type; the level is warning
    first_line: Mapped[int] = mapped_column(BigInteger)
    last_line: Mapped[int] = mapped_column(BigInteger)
    entries: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServerSecret(Base):
    """Secrets the server makes for itself on first start, shared by every process that uses
    this control store (so all API and worker processes hash origin ids with the same key)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
