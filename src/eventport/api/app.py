"""The FastAPI application: routers, error handlers, and the control store's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from eventport import __version__
from eventport.api import errors
from eventport.api.middleware import AnswerWhenCutOff, BodyLimit, HeadAsGet, RejectNulInUrl
from eventport.api.v1 import export as v1_export
from eventport.api.v1 import organizations as v1_organizations
from eventport.api.v1 import packages as v1_packages
from eventport.api.v2 import export as v2_export
from eventport.api.v2 import imports as v2_imports
from eventport.api.v2 import organizations as v2_organizations
from eventport.api.v2 import packages as v2_packages
from eventport.api.v2 import pixels as v2_pixels
from eventport.api.v2 import settings as v2_settings
from eventport.control.database import ControlDatabase
from eventport.control.imports import Receiving
from eventport.events.store import open_configured_event_store
from eventport.imports.worker import WorkerPool
from eventport.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        control = ControlDatabase(settings.resolved_database_url())
        control.migrate()
        app.state.control = control
        events = open_configured_event_store(settings)
        app.state.events = events
        pool = WorkerPool.from_settings(settings, control, events, count=settings.workers)
        pool.start()
        app.state.wake_workers = pool.wake
        try:
            yield
        finally:
            pool.stop()
            events.close()
            control.dispose()

    app = FastAPI(
        title="eventport",
        version=__version__,
        summary="Self-hosted bulk event import and usage analytics, compatible with Scarf's API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.receiving = Receiving()
    errors.install(app)
    app.add_middleware(BodyLimit, streaming=v2_imports.UPLOADS)
    app.add_middleware(RejectNulInUrl)
    app.add_middleware(HeadAsGet)  # HEAD is a GET to everything after it
    app.add_middleware(AnswerWhenCutOff)  # outermost: whatever a shutdown cuts off

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: answers 200 once the server has started and migrated its store."""
        return {"status": "ok", "version": __version__}

    # Every API route may answer these, with the API's own error body (exports add 503, uploads
    # 415 and 507, on their routers and routes).
    api_errors = errors.documented(*errors.COMMON_ERRORS)
    export_errors = errors.documented_as_json(*errors.COMMON_ERRORS)  # CSV and NDJSON answers
    # v1's /api/v1/{organization}/... must come after the fixed /api/v1/packages routes, and
    # those after the export's /api/v1/packages/{id}/events/{file}.csv (before .../{ref:path}).
    app.include_router(v1_export.router, responses=export_errors)
    app.include_router(v1_packages.router, responses=api_errors)
    app.include_router(v1_organizations.router, responses=api_errors)
    # /v2/packages/{owner}/events and /aggregates, /v2/tracking-pixels/{owner}/events before
    # /v2/packages/{owner}/{package_id} and /v2/tracking-pixels/{owner}/{id}; a package's own
    # .../{package_id}/events after the packages' by-name route (an npm package "events").
    app.include_router(v2_export.router, responses=export_errors)
    app.include_router(v2_packages.router, responses=api_errors)
    app.include_router(v2_export.package_router, responses=export_errors)
    app.include_router(v2_pixels.router, responses=api_errors)
    app.include_router(v2_organizations.router, responses=api_errors)
    app.include_router(v2_imports.router, responses=api_errors)
    # /v2/{owner}/settings last: before them it would take e.g. GET /v2/imports/settings.
    app.include_router(v2_settings.router, responses=api_errors)
    return app
