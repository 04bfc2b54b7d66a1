"""The ``eventport`` command: ``serve`` (the default), ``worker``, ``users``, ``tokens`` and
``enrichment``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from eventport import __version__
from eventport.control import accounts
from eventport.control.database import ControlDatabase
from eventport.domain.errors import DomainError
from eventport.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def store_options(func: F) -> F:
    """--data-dir and --database-url, shared by every command that opens the store."""
    func = click.option(
        "--database-url",
        default=None,
        help="Control database URL [env EVENTPORT_DATABASE_URL; default: SQLite in the data dir].",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Directory for embedded data [env EVENTPORT_DATA_DIR; default ./eventport-data].",
    )(func)
    return func


def load_settings(**overrides: Any) -> Settings:
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except Exception as exc:  # pydantic's ValidationError, shown without a traceback
        raise click.UsageError(f"invalid setting: {exc}") from exc


@contextmanager
def store_session(data_dir: Path | None, database_url: str | None) -> Iterator[Session]:
    """One unit of work on the control store; domain errors become clean CLI errors."""
    db = ControlDatabase(
        load_settings(data_dir=data_dir, database_url=database_url).resolved_database_url()
    )
    try:
        db.migrate()
        with db.session() as session:
            yield session
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        db.dispose()


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
    from eventport.arrow_memory import use_server_pool

    use_server_pool()

    settings = load_settings(
        host=host, port=port, workers=workers, data_dir=data_dir, database_url=database_url
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
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
    click.echo("starting import workers", nl=True)
    settings = load_settings(workers=workers, data_dir=data_dir, database_url=database_url)
    control = ControlDatabase(settings.resolved_database_url())
    control.migrate()
    try:
        events = open_configured_event_store(settings)
    except Exception as exc:
        raise click.ClickException(
            f"cannot open the event store ({exc}); with the embedded store, is `eventport serve` "
            "running? Separate workers need EVENTPORT_DATABASE_URL=postgresql://..."
        ) from exc
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

    from eventport.events.duckdb_store import compact_file
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
        raise click.ClickException(f"{exc}; stop `eventport serve` first") from exc
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
    with store_session(data_dir, database_url) as session:
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
            click.echo(f"{row.id}\t{row.created_at:%Y-%m-%d %H:%M}\t{state}\t{row.label or ''}")


@tokens.command("revoke")
@click.argument("token_id")
@store_options
def tokens_revoke(token_id: str, data_dir: Path | None, database_url: str | None) -> None:
    """Revoke the token with id TOKEN_ID; requests with it get 401 from then on."""
    with store_session(data_dir, database_url) as session:
        accounts.revoke_token(session, token_id)
    click.echo(f"revoked token {token_id}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@main.group()
def enrichment() -> None:
    """What imported events are enriched with."""


@enrichment.command("info")
def enrichment_info() -> None:
    """Print the data sources in use (and their dates) and where the origin-id key comes from."""
    from eventport.enrich.enricher import open_enricher

    settings = load_settings()
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
