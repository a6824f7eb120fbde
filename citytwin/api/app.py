"""The FastAPI application: one function that assembles the routers.

``create_app()`` with no arguments reads the settings (this is what ``citytwin serve`` and uvicorn's
factory mode call); tests and embedders pass ``settings`` and an ``engine``. ``routers=`` builds a
smaller app (the tile service alone needs no database).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Iterable

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from citytwin.api.errors import install_error_handlers
from citytwin.api.limits import BodySizeLimit


def default_routers() -> list[APIRouter]:
    from citytwin.api.routers import flood_layers, graph, ogc, outages, scenarios, tiles, webhooks
    from citytwin.api.routers import sensorthings, tasks, telemetry

    return [tiles.router, ogc.router, outages.router, outages.events_router, outages.reliability_router,
            webhooks.router, scenarios.router, flood_layers.router, graph.router,
            sensorthings.router, telemetry.router, telemetry.ws_router, tasks.router]


def _engine_for(settings):
    from citytwin.db import make_engine, upgrade
    from citytwin.db.engine import resolve_database_url

    engine = make_engine(resolve_database_url(settings.database_url, settings.data_dir), pool_size=10,
                         max_overflow=20)
    upgrade(engine)
    return engine


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Background work of an API process: webhook deliveries."""
    import asyncio

    task = None
    interval = float(getattr(app.state.settings, "webhook_dispatch_interval_s", 2.0) or 0)
    if app.state.engine is not None and app.state.full and interval > 0:
        task = asyncio.create_task(_webhook_loop(app))
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
        from citytwin.scenarios.cluster import close_clients

        close_clients()  # the Dask client scenario jobs started in this process, if any


async def _webhook_loop(app: FastAPI) -> None:
    import asyncio
    import logging

    from citytwin.oms.webhooks import dispatch_due

    while True:
        try:
            await asyncio.to_thread(dispatch_due, app.state.engine)
        except Exception as exc:  # keep delivering; a bad receiver or a DB blip must not stop the loop
            logging.getLogger("citytwin.webhooks").warning("webhook dispatch failed: %s", exc)
        await asyncio.sleep(float(app.state.settings.webhook_dispatch_interval_s))


def create_app(settings=None, *, engine=None, routers: Iterable[APIRouter] | None = None) -> FastAPI:
    """The citytwin API: tiles, OGC API - Features, outages, scenarios, telemetry, the web map."""
    if settings is None:
        from citytwin.config import load_settings

        settings = load_settings()
    full = routers is None
    if full and engine is None:
        engine = _engine_for(settings)
    app = FastAPI(title="citytwin", version="0.1.0", lifespan=_lifespan,
                  description="City-scale digital twin: 3D Tiles, OGC API - Features, outages for OMS, "
                              "scenarios, SensorThings telemetry.")
    app.state.settings = settings
    app.state.engine = engine
    app.state.full = full
    install_error_handlers(app)
    origins = list(getattr(settings, "cors_origins", []) or [])
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "OPTIONS", "POST", "PATCH", "DELETE"],
            allow_headers=["*"],
            # Range / ETag / encoding headers a tile client may read cross-origin.
            expose_headers=["ETag", "Content-Range", "Content-Length", "Content-Encoding", "Accept-Ranges"],
            max_age=3600,
        )
    app.add_middleware(BodySizeLimit, max_bytes=int(getattr(settings, "max_request_bytes", 10 * 1024 * 1024)))
    routers = default_routers() if routers is None else list(routers)
    for router in routers:
        app.include_router(router)
    from citytwin.api.routers import tiles

    if tiles.router in routers:
        # Added last = outermost user middleware: tile GETs skip the rest of the stack (see TilesFastPath).
        app.add_middleware(tiles.TilesFastPath, cors_origins=origins)
    if full:
        from citytwin.api.routers.web import mount_web

        mount_web(app)  # last: it mounts "/"
    return app
