"""The ``eventport`` command: ``serve`` (the default), ``worker``, ``users``, ``tokens`` and
``enrichment``."""

from __future__ import annotations

import copy
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy.orm import Session

from eventport import __version__
from eventport.control import accounts
from eventport.control.database import ControlDatabase
from eventport.domain.errors import DomainError
from eventport.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

# How long a stopping server waits for requests still open before it cuts them off.
GRACEFUL_SHUTDOWN_SECONDS = 10
# Control characters a token's label may hold, shown escaped by `tokens list`.
_ESCAPES = {ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def _named_dir(_: click.Context, __: click.Parameter, value: str | None) -> Path | None:
    """--data-dir as a Path; "" is refused (as a Path it would be the working directory,
    silently; an empty EVENTPORT_DATA_DIR= is refused too)."""
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("is empty: name a directory, or leave it out")
    return Path(value)


def store_options(func: F) -> F:
    """--data-dir and --database-url, shared by every command that opens the store."""
    func = click.option(
        "--database-url",
        default=None,
        help="Control database URL [env EVENTPORT_DATABASE_URL; default: SQLite in the data dir].",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        callback=_named_dir,
        help="Directory for embedded data [env EVENTPORT_DATA_DIR; default ./eventport-data].",
    )(func)
    return func


def load_settings(**overrides: Any) -> Settings:
    """The settings, from the environment and the given flags. A bad value is one line per
    setting, named as it is set (EVENTPORT_PORT, not port); an EVENTPORT_ variable that is no
    setting (a typo: EVENTPORT_WORKER) is warned about, not silently ignored."""
    given = {k: v for k, v in overrides.items() if v is not None}
    known = {f"EVENTPORT_{name.upper()}" for name in Settings.model_fields}
    for name in sorted(os.environ):
        if name.startswith("EVENTPORT_") and name not in known:
            click.echo(f"warning: {name} is not an eventport setting; it is ignored", err=True)
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            where = (
                f"--{field.replace('_', '-')}" if field in given else f"EVENTPORT_{field.upper()}"
            )
            value = error.get("input")
            shown = f" (got {str(value)[:80]!r})" if isinstance(value, str | int | float) else ""
            problems.append(f"{where}: {error['msg']}{shown}")
        raise click.ClickException("invalid setting: " + "; ".join(problems)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:800]


@contextmanager
def user_errors(doing: str) -> Iterator[None]:
    """Mistakes in the environment (a data dir that is a file or read-only, a bad or
    unreachable database URL, a short origin secret, a store another process holds) end the
    command with one line saying what went wrong while ``doing`` it, not a traceback."""
    from alembic.util import CommandError
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.exc import DatabaseError as SqlDatabaseError
    from sqlalchemy.exc import OperationalError as SqlOperationalError

    from eventport.events.store import EventStoreError

    try:
        yield
    except click.ClickException:
        raise
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise click.ClickException(f"{doing}: {exc.strerror or exc}{where}") from exc
    except ArgumentError as exc:
        raise click.ClickException(
            f"{doing}: EVENTPORT_DATABASE_URL is not a database URL ({_first_line(exc)})"
        ) from exc
    except SqlOperationalError as exc:
        raise click.ClickException(f"{doing} ({_first_line(exc.orig or exc)})") from exc
    except (ImportError, NoSuchModuleError) as exc:  # postgresql+psycopg2://, say
        raise click.ClickException(
            f"{doing}: EVENTPORT_DATABASE_URL names a driver eventport does not ship "
            f"({_first_line(exc)}); write postgresql://… (psycopg 3) or leave it unset"
        ) from exc
    except CommandError as exc:  # a revision this version does not know
        raise click.ClickException(
            f"{doing}: a newer version of eventport has migrated this database "
            f"({_first_line(exc)}); run that version, or a newer one"
        ) from exc
    except SqlDatabaseError as exc:  # not a database, a bad connection parameter
        raise click.ClickException(f"{doing} ({_first_line(exc.orig or exc)})") from exc
    except (EventStoreError, ValueError, OverflowError) as exc:
        raise click.ClickException(f"{doing}: {_first_line(exc)}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("psycopg", "duckdb", "_duckdb")):
            raise click.ClickException(
                f"{doing}: the database cannot be used ({_first_line(exc)})"
            ) from exc
        raise


def _open_control(
    settings: Settings, check: Callable[[ControlDatabase], None] | None = None
) -> ControlDatabase:
    """The control store, migrated (after ``check``, which may refuse it); a mistake in its
    URL or an unreachable database is one line (see :func:`user_errors`)."""
    with user_errors("cannot open the control database"):
        control = ControlDatabase(settings.resolved_database_url())
    try:
        if check is not None:
            check(control)
        with user_errors("cannot use the control database"):
            control.migrate()
    except BaseException:
        control.dispose()
        raise
    return control


def _check_origin_secret(settings: Settings) -> None:
    from eventport.enrich.enricher import origin_key

    with user_errors("invalid EVENTPORT_ORIGIN_SECRET"):
        origin_key(settings.origin_secret, lambda: b"\0" * 16)  # the rule, not the key


@contextmanager
def store_session(
    data_dir: Path | None, database_url: str | None, *, new: bool = False
) -> Iterator[Session]:
    """One unit of work on the control store; domain errors become clean CLI errors. Unless
    ``new`` (a command that may make the first account), an embedded store must be there
    already: a mistyped data dir was made, and answered "no user named …"."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    control_file = settings.control_file
    missing = not control_file.exists() and settings.data_dir.parent.is_dir()
    if not new and settings.database_url is None and missing:
        raise click.ClickException(
            f"no eventport data at {settings.data_dir} (no {control_file.name}): "
            "EVENTPORT_DATA_DIR or --data-dir names the server's data dir"
        )
    db = _open_control(
        settings, lambda control: _refuse_migrating_under_a_server(settings, control)
    )
    try:
        with user_errors("cannot use the control database"), db.session() as session:
            yield session
    finally:
        db.dispose()


def _refuse_migrating_under_a_server(settings: Settings, control: ControlDatabase) -> None:
    """A command of a newer eventport must not migrate an embedded control database that an
    older server still runs on (its event store held): that server then ran on a schema it
    did not know, and could not start again (an upgrade hunt). Read-only looks only."""
    import duckdb

    from eventport.events.store import EVENTS_FILE, is_postgres_url

    events = settings.data_dir / EVENTS_FILE
    if is_postgres_url(settings.database_url or ""):
        return  # shared by any number of processes: stop older ones first (README)
    if not settings.control_file.exists() or not events.exists():
        return
    with user_errors("cannot use the control database"):
        if not control.schema_is_older():
            return
    try:
        duckdb.connect(str(events), read_only=True).close()
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise click.ClickException(
            f"the control database in {settings.data_dir} is an older eventport's, and a "
            "server of that version still runs on it (its event store is open): stop it and "
            "start this version's `eventport serve`, which upgrades it, then run this again"
        ) from exc


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _log_to_stderr(level: str) -> None:
    """eventport's own log messages at ``level`` (EVENTPORT_LOG_LEVEL), as uvicorn's are."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger("eventport")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def _uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging (its handlers: messages on stderr, requests on stdout), each line
    in eventport's format: a time, the level and the logger (uvicorn's lines had neither time
    nor logger, so a log read later could not be put in order against eventport's)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["default"].update(fmt=LOG_FORMAT, use_colors=False)
    config["formatters"]["access"].update(
        fmt=LOG_FORMAT.replace(
            "%(message)s", '%(client_addr)s - "%(request_line)s" %(status_code)s'
        ),
        use_colors=False,
    )
    return config


def _preflight(settings: Settings) -> None:
    """What the server needs before it starts, checked with a one-line error for each
    mistake (uvicorn would print a traceback for a failure in the app's start-up)."""
    from eventport.enrich.ip import check_database
    from eventport.events.store import is_postgres_url, open_configured_event_store

    if settings.workers == 0 and not is_postgres_url(settings.database_url or ""):
        click.echo(
            "Warning: EVENTPORT_WORKERS=0 with the embedded store: no process can run its "
            "imports (separate workers need PostgreSQL), so uploads wait until a server with "
            "workers starts on this data dir",
            err=True,
        )
    _check_port(settings.host, settings.port)
    with user_errors("cannot use the data directory"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    with user_errors("cannot write uploads to the spool directory"):
        settings.spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=settings.spool_dir):
            pass
    if is_postgres_url(settings.database_url or ""):
        _open_control(settings).dispose()  # migrated (stop older processes first: README)
        with user_errors("cannot open the event store"):
            open_configured_event_store(settings).close()
    else:
        # The embedded event store first: its lock says whether another server (an older
        # version, say) runs on this data dir, and then its control database must stay as it
        # is (migrated first, a refused start left the running server on a schema it did not
        # know, and unable to start again; an upgrade hunt).
        with user_errors("cannot open the event store"):
            events = open_configured_event_store(settings)
        try:
            _open_control(settings).dispose()
        finally:
            events.close()
    _check_origin_secret(settings)
    for name, path, role in (
        ("EVENTPORT_GEOIP_CITY_DATABASE", settings.geoip_city_database, "location"),
        ("EVENTPORT_GEOIP_ASN_DATABASE", settings.geoip_asn_database, "asn"),
    ):
        if not settings.enrichment or path is None:
            continue
        if not Path(path).is_file():
            raise click.ClickException(f"{name}: no file at {path}")
        with user_errors(name):  # read as the server will (its start-up would print a
            check_database(Path(path), role)  # traceback for a file that is no MaxMind one)


def _check_port(host: str, port: int) -> None:
    """A port another process listens on is one line, before the app starts up (uvicorn
    started the app, then said "address already in use" and exited with 3). Bound as uvicorn
    binds it (SO_REUSEADDR), and let go at once."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server "
                "running there? EVENTPORT_PORT or --port chooses another)"
            ) from exc


@click.group(invoke_without_command=True)
@click.version_option(__version__, prog_name="eventport")
@click.pass_context
def main(ctx: click.Context) -> None:
    """eventport: self-hosted bulk event import and usage analytics (Scarf-compatible API)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve)


@main.command()
@click.option("--host", default=None, help="Bind address [env EVENTPORT_HOST; default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env EVENTPORT_PORT; default 8000].")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="In-process import workers [env EVENTPORT_WORKERS; default 1; 0 allowed].",
)
@store_options
def serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Run the HTTP server (the default command)."""
    import uvicorn

    from eventport.api.app import create_app
    from eventport.api.protocol import http_protocol
    from eventport.arrow_memory import use_server_pool

    use_server_pool()

    settings = load_settings(
        host=host, port=port, workers=workers, data_dir=data_dir, database_url=database_url
    )
    _log_to_stderr(settings.log_level)
    _preflight(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=http_protocol(),  # its own 400s in the API's error body too
        log_level=settings.log_level,
        log_config=_uvicorn_log_config(),
        # A request still open (a stalled upload) must not keep the server from stopping: it
        # is cut off after this (an upload cut off leaves nothing; the client sends it again).
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


@main.command()
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Import workers in this process [env EVENTPORT_WORKERS; default 1].",
)
@store_options
def worker(workers: int | None, data_dir: Path | None, database_url: str | None) -> None:
    """Run import workers without the HTTP server (scale out on PostgreSQL).

    With the embedded default, the DuckDB event store can be open in one process only: run
    workers inside `eventport serve` there, and separate workers with PostgreSQL.
    """
    import signal
    import threading

    from eventport.arrow_memory import use_server_pool
    from eventport.events.store import open_configured_event_store
    from eventport.imports.worker import WorkerPool

    use_server_pool()

    # First: a stop asked for while starting (loading the enrichment data takes a second) ends
    # the process cleanly once it has started, instead of killing it half-way.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    settings = load_settings(workers=workers, data_dir=data_dir, database_url=database_url)
    _log_to_stderr(settings.log_level)
    click.echo("starting import workers", nl=True)
    try:  # the event store first: a refused start migrates nothing (see _preflight)
        events = open_configured_event_store(settings)
    except Exception as exc:
        raise click.ClickException(
            f"cannot open the event store ({_first_line(exc)}); with the embedded store, is "
            "`eventport serve` running? Separate workers need "
            "EVENTPORT_DATABASE_URL=postgresql://..."
        ) from exc
    try:
        control = _open_control(settings)
    except BaseException:
        events.close()
        raise
    with user_errors("cannot start the workers"):
        pool = WorkerPool.from_settings(settings, control, events, count=max(settings.workers, 1))
    pool.start()
    click.echo(f"{len(pool.workers)} import worker(s) running; Ctrl-C to stop")
    stop.wait()
    pool.stop()
    events.close()
    control.dispose()


@main.command()
@store_options
def compact(data_dir: Path | None, database_url: str | None) -> None:
    """Rewrite the embedded event store in time order and whole row groups.

    Exports and aggregates of events imported out of time order, or by an earlier eventport
    that left partial row groups, read more of the store than they need; this rewrites it
    once. Run it with
    `eventport serve` stopped (the DuckDB file is one process's). PostgreSQL keeps events in
    monthly partitions and needs no such step.
    """
    import time

    from eventport.events.duckdb_compact import compact_file
    from eventport.events.store import EVENTS_FILE, EventStoreError, is_postgres_url

    settings = load_settings(data_dir=data_dir, database_url=database_url)
    if settings.database_url and is_postgres_url(settings.database_url):
        raise click.ClickException(
            "compact is for the embedded DuckDB store; PostgreSQL keeps events in monthly "
            "partitions and needs no such step"
        )
    path = settings.data_dir / EVENTS_FILE
    if not path.exists():
        raise click.ClickException(f"no event store at {path}")
    started = time.monotonic()
    try:
        count, before, after = compact_file(path)
    except EventStoreError as exc:
        held = "open in another process" in str(exc)  # else the store's own words say it
        raise click.ClickException(
            f"{exc}; stop `eventport serve` first" if held else str(exc)
        ) from exc
    click.echo(
        f"{count:,} events rewritten in time order in {time.monotonic() - started:.1f} s: "
        f"{before} row groups before, {after} now"
    )


@main.group()
def users() -> None:
    """Manage user accounts."""


@users.command("create")
@click.argument("name")
@click.option("--email", required=True, help="The user's email address.")
@store_options
def users_create(name: str, email: str, data_dir: Path | None, database_url: str | None) -> None:
    """Create a user; the last line printed is their API token (shown only once)."""
    with store_session(data_dir, database_url, new=True) as session:
        user, token = accounts.create_user(session, name, email)
    click.echo(f"created user {user.name} ({user.id})")
    click.echo("API token (store it now, it is not shown again):")
    click.echo(token)


@main.group()
def tokens() -> None:
    """Issue, list and revoke API tokens."""


@tokens.command("create")
@click.argument("name")
@click.option("--label", default=None, help="A note to tell this token apart.")
@store_options
def tokens_create(
    name: str, label: str | None, data_dir: Path | None, database_url: str | None
) -> None:
    """Issue another API token for user NAME; the last line printed is the token."""
    with store_session(data_dir, database_url) as session:
        row, token = accounts.issue_token(session, name, label)
    click.echo(f"token id {row.id}")
    click.echo(token)


@tokens.command("list")
@click.argument("name")
@store_options
def tokens_list(name: str, data_dir: Path | None, database_url: str | None) -> None:
    """List user NAME's tokens (ids and state; tokens themselves are never stored)."""
    with store_session(data_dir, database_url) as session:
        for row in accounts.list_tokens(session, name):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            label = (row.label or "").translate(_ESCAPES)  # one line a token, whatever it says
            click.echo(f"{row.id}\t{row.created_at:%Y-%m-%d %H:%M}\t{state}\t{label}")


@tokens.command("revoke")
@click.argument("token_id")
@store_options
def tokens_revoke(token_id: str, data_dir: Path | None, database_url: str | None) -> None:
    """Revoke the token with id TOKEN_ID; requests with it get 401 from then on."""
    with store_session(data_dir, database_url) as session:
        accounts.revoke_token(session, token_id)
    click.echo(f"revoked token {token_id}")


@main.group()
def enrichment() -> None:
    """What imported events are enriched with."""


@enrichment.command("info")
def enrichment_info() -> None:
    """Print the data sources in use (and their dates) and where the origin-id key comes from."""
    from eventport.enrich.enricher import open_enricher

    settings = load_settings()
    _check_origin_secret(settings)
    if not settings.enrichment:
        click.echo("enrichment: off (EVENTPORT_ENRICHMENT=false); events are stored as imported")
        return
    try:
        enricher = open_enricher(
            enabled=True,
            key=b"\0" * 16,  # not the server's key: nothing is hashed here
            city_database=settings.geoip_city_database,
            asn_database=settings.geoip_asn_database,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    assert enricher is not None
    click.echo("enrichment: on")
    for source in enricher.sources():
        where = f"  {source.path}" if source.path else ""
        click.echo(f"{source.kind:<11} {source.date or 'undated':<10}  {source.name}{where}")
    key = (
        "EVENTPORT_ORIGIN_SECRET"
        if settings.origin_secret
        else "generated on first start, kept in the control database"
    )
    click.echo(f"origin-id key: {key}")
    click.echo(
        "raw IP addresses: "
        + ("kept (EVENTPORT_KEEP_IP_ADDRESSES)" if settings.keep_ip_addresses else "not kept")
    )


if __name__ == "__main__":  # pragma: no cover  (after every command is defined)
    sys.exit(main())
