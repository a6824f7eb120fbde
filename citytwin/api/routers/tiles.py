"""3D Tiles over HTTP: ``/tiles/{tileset}/tileset.json`` and its content files.

Caching: files whose names are content hashes (what the tiler writes: ``t/<sha256 prefix>.glb``) are
``public, max-age=31536000, immutable``, and their ETag is that hash (``"<hash>"``, ``"<hash>-gz"`` for the
gzip copy): nothing is read or hashed per request, and every server and rebuild agrees on it. Every other
file (``tileset.json``, which keeps its name across rebuilds, or anything else placed in a tileset) is
``no-cache``: clients revalidate with its ETag and get a 304 while it is unchanged. That ETag is the
SHA-256 prefix of the bytes for files small enough to cache (read once per change of (mtime, size)), so a
rebuild that writes the same tileset.json keeps it; larger files fall back to size + mtime (cheap, and
still strong on one server). Each representation (identity, gzip) has its own strong ETag.

Encoding: the builder writes ``x.gz`` beside every file; when ``Accept-Encoding`` allows gzip, that copy
is served as-is with ``Content-Encoding: gzip`` (``Vary: Accept-Encoding`` on every response).

Ranges: one ``bytes=`` range per request on the identity representation (206 + Content-Range; 416 with
``Content-Range: bytes */size`` when unsatisfiable; several ranges -> the whole file, which RFC 9110 allows).

Safety: the tileset name must be a plain name; each path segment must be a plain file or directory name
(no ``..``, ``.``, empty segments, backslashes or NUL, after percent-decoding, which the server has already
done once; double-encoded input stays literal and matches no file); the resolved real path, symlinks
followed, must lie inside the tileset's directory. Anything else is a 404, never a file outside it.

The hot path is a plain ASGI endpoint (no FastAPI parameter parsing): small files' bytes and their response
headers are kept in an LRU cache keyed by path and validated by (mtime, size) on every request.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from email.utils import formatdate
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.routing import Route

from citytwin.api.errors import error_body

IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"
CONTENT_TYPES = {
    ".json": b"application/json",
    ".glb": b"model/gltf-binary",
    ".gltf": b"model/gltf+json",
    ".subtree": b"application/octet-stream",
    ".bin": b"application/octet-stream",
}
CACHE_MAX_FILE = 4 * 1024 * 1024
CACHE_MAX_BYTES = 256 * 1024 * 1024
CHUNK = 256 * 1024
# citytwin.tiler.tileset names content ``sha256(data).hexdigest()[:HASH_CHARS]`` (20) + suffix; accept
# 16-64 lowercase hex digits so a longer prefix (or the full digest) is recognised too.
_HASHED_NAME = re.compile(r"([0-9a-f]{16,64})\.[A-Za-z0-9]+")


_TILESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_BAD_SEGMENTS = frozenset(("", ".", ".."))


def _tileset_ok(name: str) -> bool:
    return _TILESET_NAME.fullmatch(name) is not None and ".." not in name


def content_hash(path: str) -> str | None:
    """The content hash in a file's name (``<hex>.<ext>``, also for its ``.gz`` copy), or None."""
    name = os.path.basename(path)
    if name.endswith(".gz"):
        name = name[:-3]
    match = _HASHED_NAME.fullmatch(name)
    return match.group(1) if match else None


def _segments_ok(path: str) -> bool:
    if not path or "\\" in path or "\0" in path or ":" in path:
        return False
    return _BAD_SEGMENTS.isdisjoint(path.split("/"))


@dataclass
class _Entry:
    """A file representation: validated by (mtime_ns, size); body cached when small."""

    mtime_ns: int
    size: int
    etag: bytes
    headers: list[tuple[bytes, bytes]]  # 200-response headers without Content-Length
    body: bytes | None
    full_headers: list[tuple[bytes, bytes]] = None  # with Content-Length, for whole-file answers

    def __post_init__(self) -> None:
        self.full_headers = self.headers + [(b"content-length", b"%d" % self.size)]


class TileStore:
    """Resolves tile requests to files under ``tiles_dir`` and caches small ones."""

    def __init__(self, tiles_dir: str | Path, cache_bytes: int = CACHE_MAX_BYTES) -> None:
        self.root = os.path.realpath(os.fspath(tiles_dir))
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cached = 0

    def tilesets(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [n for n in names
                if _tileset_ok(n) and os.path.isfile(os.path.join(self.root, n, "tileset.json"))]

    def resolve(self, tileset: str, rel: str) -> str | None:
        """The path of a file inside the tileset directory, or None (unknown, unsafe or missing).

        Walks the components with ``lstat`` (two or three calls for a tile): no symlink on the way means
        the path cannot leave the directory. With a symlink, the real path must still lie inside.
        """
        if not _tileset_ok(tileset) or not _segments_ok(rel):
            return None
        current = self.root
        for part in (tileset, *rel.split("/")):
            current = current + os.sep + part
            try:
                mode = os.lstat(current).st_mode
            except OSError:
                return None
            if stat.S_ISLNK(mode):
                return self._resolve_links(tileset, rel)
        return current

    def _resolve_links(self, tileset: str, rel: str) -> str | None:
        base = os.path.join(self.root, tileset)
        real = os.path.realpath(os.path.join(base, rel))
        real_base = os.path.realpath(base)
        if not real.startswith(real_base + os.sep) or not real_base.startswith(self.root + os.sep):
            return None  # outside the tileset (symlinks followed) or the tileset itself is a link out
        return real

    def entry(self, path: str, st: os.stat_result, encoding: bytes | None, content_type: bytes) -> _Entry:
        cached = self._cache.get(path)
        if cached is not None and cached.mtime_ns == st.st_mtime_ns and cached.size == st.st_size:
            self._cache.move_to_end(path)
            return cached
        body = None
        if st.st_size <= CACHE_MAX_FILE:
            with open(path, "rb") as fh:
                body = fh.read()
            if len(body) != st.st_size:  # replaced while reading: do not cache a torn file
                body = None
        named = content_hash(path)
        if named is not None:
            digest, cache_control = named.encode(), IMMUTABLE
        elif body is not None:
            digest, cache_control = hashlib.sha256(body).hexdigest()[:20].encode(), REVALIDATE
        else:  # large or changing under us: size + mtime, no read needed
            digest, cache_control = b"%x-%x" % (st.st_size, st.st_mtime_ns), REVALIDATE
        etag = b'"%s%s"' % (digest, b"-gz" if encoding else b"")
        headers = [
            (b"content-type", content_type),
            (b"etag", etag),
            (b"cache-control", cache_control),
            (b"vary", b"Accept-Encoding"),
            (b"last-modified", formatdate(st.st_mtime, usegmt=True).encode()),
        ]
        if encoding:
            headers.append((b"content-encoding", encoding))
        else:
            headers.append((b"accept-ranges", b"bytes"))
        entry = _Entry(st.st_mtime_ns, st.st_size, etag, headers, body)
        if body is not None:
            self._put(path, entry)
        return entry

    def _put(self, path: str, entry: _Entry) -> None:
        old = self._cache.pop(path, None)
        if old is not None and old.body is not None:
            self._cached -= len(old.body)
        self._cache[path] = entry
        self._cached += entry.size
        while self._cached > self.cache_bytes and self._cache:
            _, evicted = self._cache.popitem(last=False)
            self._cached -= evicted.size


_WANTED = frozenset((b"range", b"if-range", b"if-none-match", b"accept-encoding", b"origin"))


def _request_headers(scope: dict) -> dict[bytes, bytes]:
    """The few request headers the tile endpoint looks at, in one pass."""
    return {k: v for k, v in scope["headers"] if k in _WANTED}


@lru_cache(maxsize=256)  # clients send a handful of distinct Accept-Encoding values
def accepts_gzip(value: bytes | None) -> bool:
    """True when an Accept-Encoding header allows gzip (``gzip`` or ``*`` with q > 0)."""
    if not value:
        return False
    allowed = None
    star = None
    for item in value.decode("latin-1").lower().split(","):
        parts = [p.strip() for p in item.split(";")]
        coding, q = parts[0], 1.0
        for param in parts[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            allowed = q > 0
        elif coding == "*":
            star = q > 0
    return allowed if allowed is not None else bool(star)


def parse_range(value: bytes, size: int) -> tuple[int, int] | None | str:
    """A single ``bytes=`` range as (start, end inclusive); None to ignore; "unsatisfiable" for 416."""
    text = value.decode("latin-1").strip()
    unit, _, spec = text.partition("=")
    if unit.strip().lower() != "bytes":
        return None  # unknown unit: ignore (RFC 9110 14.2)
    specs = [s.strip() for s in spec.split(",")]
    if len(specs) != 1:
        return None  # several ranges: serve the whole file
    first, dash, last = specs[0].partition("-")
    if not dash:
        return "unsatisfiable"
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0 or not last.isdigit():
                return "unsatisfiable"
            return (max(0, size - suffix), size - 1) if size else "unsatisfiable"
        if not first.isdigit() or (last and not last.isdigit()):
            return "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return "unsatisfiable"
    if start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _etag_matches(header: bytes | None, etag: bytes) -> bool:
    if not header:
        return False
    if header.strip() == b"*":
        return True
    weak = etag[2:] if etag.startswith(b"W/") else etag
    for candidate in header.split(b","):
        candidate = candidate.strip()
        if candidate.startswith(b"W/"):
            candidate = candidate[2:]
        if candidate == weak:
            return True
    return False


async def _send(send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(send, status: int, kind: str, detail: str, extra: list | None = None,
                 head: bool = False) -> None:
    body = json.dumps(error_body(kind, detail)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")] + (extra or [])
    await _send(send, status, headers, b"" if head else body)


async def _stream(send, path: str, start: int, length: int) -> None:
    import anyio

    def read(fh, n):
        return fh.read(n)

    with open(path, "rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            chunk = await anyio.to_thread.run_sync(read, fh, min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
    if remaining > 0:
        await send({"type": "http.response.body", "body": b""})


def _store(scope: dict) -> TileStore:
    app = scope["app"]
    store = getattr(app.state, "tile_store", None)
    if store is None:
        store = TileStore(app.state.settings.tiles_dir)
        app.state.tile_store = store
    return store


class Cors:
    """CORS response headers for tile files (the fast path runs outside Starlette's CORSMiddleware)."""

    def __init__(self, origins) -> None:
        self.origins = frozenset(o.encode() for o in (origins or []))
        self.any = b"*" in self.origins
        self.expose = b"ETag, Content-Range, Content-Length, Content-Encoding, Accept-Ranges"

    def headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        if origin is None or not self.origins:
            return []
        if self.any:
            allow = b"*"
        elif origin in self.origins:
            allow = origin
        else:
            return []
        return [(b"access-control-allow-origin", allow), (b"access-control-expose-headers", self.expose)]


class TileFileEndpoint:
    """ASGI endpoint of ``GET|HEAD /tiles/{tileset}/{path}`` (a class, so Starlette calls it as raw ASGI)."""

    async def __call__(self, scope, receive, send) -> None:
        params = scope["path_params"]
        await serve_tile_file(scope, send, params["tileset"], params["path"])


class TilesFastPath:
    """ASGI middleware serving ``GET|HEAD /tiles/{tileset}/{path}`` before the rest of the stack.

    Tile requests are most of a map's traffic; skipping the exception, dependency and routing layers for
    them roughly doubles throughput. Everything else (including CORS preflights) goes down the stack.
    """

    def __init__(self, app, cors_origins=()) -> None:
        self.app = app
        self.cors = Cors(cors_origins)
        # Built once per server process, when the app is complete: move the app's long-lived objects out of
        # the garbage collector's generations, so full collections stop adding 50-300 ms to the latency tail
        # of a busy tile server (measured with wrk, 64 connections).
        gc.collect()
        gc.freeze()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            if path.startswith("/tiles/"):
                tileset, sep, rel = path[7:].partition("/")
                if sep and rel:
                    await serve_tile_file(scope, send, tileset, rel, self.cors)
                    return
        await self.app(scope, receive, send)


async def serve_tile_file(scope, send, tileset: str, rel: str, cors: Cors | None = None) -> None:
    """Answer one tile file request (see the module docstring for the rules)."""
    head = scope["method"] == "HEAD"
    req = _request_headers(scope)
    extra = cors.headers(req.get(b"origin")) if cors is not None else []
    store = _store(scope)
    path = store.resolve(tileset, rel)
    if path is None:
        await _error(send, 404, "NotFoundError", f"no file {rel!r} in tileset {tileset!r}", extra, head)
        return
    suffix = os.path.splitext(path)[1]
    content_type = CONTENT_TYPES.get(suffix) or (b"application/gzip" if suffix == ".gz"
                                                 else b"application/octet-stream")
    range_header = req.get(b"range")
    st = None
    encoding = None
    if range_header is None and suffix != ".gz" and accepts_gzip(req.get(b"accept-encoding")):
        try:
            st = os.stat(path + ".gz")
            if stat.S_ISREG(st.st_mode):
                path, encoding = path + ".gz", b"gzip"
            else:
                st = None
        except OSError:
            st = None
    if st is None:
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            await _error(send, 404, "NotFoundError", f"no file {rel!r} in tileset {tileset!r}", extra, head)
            return
    entry = store.entry(path, st, encoding, content_type)
    if _etag_matches(req.get(b"if-none-match"), entry.etag):
        kept = [h for h in entry.headers if h[0] in (b"etag", b"cache-control", b"vary")]
        await _send(send, 304, kept + extra)
        return
    if range_header is None and not head and entry.body is not None:
        # The common case: a whole cached file; its response headers are prebuilt.
        await _send(send, 200, entry.full_headers + extra if extra else entry.full_headers, entry.body)
        return
    start, length, status = 0, entry.size, 200
    headers = entry.headers + extra
    if range_header is not None and encoding is None:
        if_range = req.get(b"if-range")
        if if_range is None or _etag_matches(if_range, entry.etag):
            parsed = parse_range(range_header, entry.size)
            if parsed == "unsatisfiable":
                await _error(send, 416, "HTTPError", f"range not satisfiable for {entry.size} bytes",
                             [(b"content-range", b"bytes */%d" % entry.size)] + extra, head)
                return
            if parsed is not None:
                start, end = parsed
                length, status = end - start + 1, 206
                headers.append((b"content-range", b"bytes %d-%d/%d" % (start, end, entry.size)))
    headers.append((b"content-length", b"%d" % length))
    if head:
        await _send(send, status, headers)
    elif entry.body is not None:
        await _send(send, status, headers, entry.body[start:start + length] if status == 206 else entry.body)
    else:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await _stream(send, path, start, length)


router = APIRouter(tags=["3D Tiles"])


@router.get("/tiles", summary="List the tilesets")
def list_tilesets(request: Request) -> dict:
    """Names and tileset.json URLs of the tilesets in the tiles directory."""
    store = _store(request.scope)
    base = str(request.base_url).rstrip("/")
    return {"tilesets": [{"name": n, "url": f"{base}/tiles/{n}/tileset.json"} for n in store.tilesets()]}


# The file route is a plain ASGI endpoint (documented above, not in the OpenAPI schema).
router.routes.append(Route("/tiles/{tileset}/{path:path}", endpoint=TileFileEndpoint(),
                           methods=["GET", "HEAD"], name="tile_file", include_in_schema=False))
