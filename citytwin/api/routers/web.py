"""The planners' web map: static files of ``citytwin/web`` at ``/`` and CesiumJS's prebuilt ``Build/Cesium``
(npm package ``cesium``) at ``/cesium/``.

Call :func:`mount_web` last in ``create_app``: a mount at ``/`` matches every path, so routers added after it
would never be reached. Cesium is looked up in ``settings.cesium_dir`` (when the settings have one), then
``CITYTWIN_CESIUM_DIR``, then ``node_modules/cesium/Build/Cesium`` of the source checkout and of the working
directory. Without it the map page still loads and explains what is missing instead of failing silently.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

log = logging.getLogger("citytwin.api.web")

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
CESIUM_SUBPATH = Path("node_modules") / "cesium" / "Build" / "Cesium"
# Cesium.js is ~6 MB; gzip brings it to ~1.5 MB. Its files are versioned by the package, not by name,
# so they are revalidated (ETag / Last-Modified) rather than cached for good.
CESIUM_CACHE = "public, max-age=3600"
APP_CACHE = "no-cache"


def find_cesium(settings=None) -> Path | None:
    """The directory holding ``Cesium.js``, or None."""
    candidates = []
    configured = getattr(settings, "cesium_dir", None) if settings is not None else None
    if configured:
        candidates.append(Path(configured))
    if os.environ.get("CITYTWIN_CESIUM_DIR"):
        candidates.append(Path(os.environ["CITYTWIN_CESIUM_DIR"]))
    candidates += [Path(__file__).resolve().parents[3] / CESIUM_SUBPATH, Path.cwd() / CESIUM_SUBPATH]
    for candidate in candidates:
        if (candidate / "Cesium.js").is_file():
            return candidate
    return None


class _CacheControl:
    """Adds a Cache-Control header to successful responses of a static app."""

    def __init__(self, app, value: str) -> None:
        self.app = app
        self.value = value.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_header(message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (200, 304):
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message = {**message, "headers": headers + [(b"cache-control", self.value)]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def _missing_cesium(settings_hint: str):
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = PlainTextResponse(
            f"CesiumJS is not installed: run `npm install` in the repository (expected {settings_hint}) or set "
            "CITYTWIN_CESIUM_DIR to a Build/Cesium directory", status_code=404)
        await response(scope, receive, send)

    return app


class _GzipUnlessRange:
    """Gzip responses on the fly, except for Range requests (a compressed partial response would be wrong)."""

    def __init__(self, app) -> None:
        self.plain = app
        # Level 6: nearly the ratio of 9 at a third of the CPU (Cesium.js is compressed per full download).
        self.gzipped = GZipMiddleware(app, minimum_size=1024, compresslevel=6)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wants_range = scope["type"] == "http" and any(k == b"range" for k, _ in scope.get("headers", []))
        await (self.plain if wants_range else self.gzipped)(scope, receive, send)


def _gzipped(static: StaticFiles, cache_control: str):
    return _GzipUnlessRange(_CacheControl(static, cache_control))


def mount_web(app: FastAPI, *, web_dir: Path | None = None, cesium_dir: Path | None = None) -> None:
    """Mount ``/cesium`` and the web map at ``/`` on ``app`` (call after every router is included)."""
    settings = getattr(app.state, "settings", None)
    cesium = Path(cesium_dir) if cesium_dir is not None else find_cesium(settings)
    if cesium is None or not (cesium / "Cesium.js").is_file():
        log.warning("CesiumJS not found (npm install in the repository, or CITYTWIN_CESIUM_DIR); the map will not draw")
        app.mount("/cesium", _missing_cesium(str(CESIUM_SUBPATH)), name="cesium")
    else:
        app.mount("/cesium", _gzipped(StaticFiles(directory=cesium), CESIUM_CACHE), name="cesium")
    app.mount("/", _gzipped(StaticFiles(directory=web_dir or WEB_DIR, html=True), APP_CACHE), name="web")
