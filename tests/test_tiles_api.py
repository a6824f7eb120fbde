"""The tile service over real HTTP (uvicorn in a thread): caching, encodings, ranges, safety, CORS."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import time
from types import SimpleNamespace

import pytest

from _tiles_support import CRS, ServerThread, synthetic
from citytwin.api.app import create_app
from citytwin.api.routers.tiles import router as tiles_router
from citytwin.tiler import build_tileset

SECRET = b"top secret, outside the tiles directory"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    tiles = root / "tiles"
    build_tileset(synthetic(400), tiles / "city", crs=CRS, name="city", max_features_per_tile=100)
    (root / "secret.txt").write_bytes(SECRET)
    # Larger than the in-memory cache's per-file limit: streamed from disk in chunks.
    (tiles / "city" / "t" / "big.glb").write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    os.symlink(root / "secret.txt", tiles / "city" / "t" / "link.glb")
    os.symlink(root, tiles / "city" / "up")
    os.symlink(root, tiles / "outside")
    settings = SimpleNamespace(tiles_dir=tiles, cors_origins=["http://map.example"])
    app = create_app(settings, routers=[tiles_router])
    with ServerThread(app) as server:
        yield server, tiles / "city"


def request(server, method: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A raw request: http.client sends the path exactly as given (no dot-segment normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def content_path(tileset_dir) -> str:
    return sorted((tileset_dir / "t").glob("*.glb"))[0].name


def test_tileset_json_revalidates_with_etag(site):
    server, ts = site
    status, headers, body = request(server, "GET", "/tiles/city/tileset.json")
    assert status == 200 and body == (ts / "tileset.json").read_bytes()
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-cache" and "accept-encoding" in headers["vary"].lower()
    etag = headers["etag"]
    status, headers304, body = request(server, "GET", "/tiles/city/tileset.json", {"If-None-Match": etag})
    assert status == 304 and body == b"" and headers304["etag"] == etag
    assert request(server, "GET", "/tiles/city/tileset.json", {"If-None-Match": f"W/{etag}"})[0] == 304
    assert request(server, "GET", "/tiles/city/tileset.json", {"If-None-Match": '"other"'})[0] == 200


def test_content_is_immutable_and_gzip_negotiated(site):
    server, ts = site
    name = content_path(ts)
    raw = (ts / "t" / name).read_bytes()
    status, headers, body = request(server, "GET", f"/tiles/city/t/{name}", {"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == raw and int(headers["content-length"]) == len(body) < len(raw)
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["content-type"] == "model/gltf-binary" and headers["vary"] == "Accept-Encoding"
    stem = name.split(".")[0]
    assert headers["etag"] == f'"{stem}-gz"'  # the content hash in the name
    for refuse in ({}, {"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip;q=0, deflate"}):
        status, headers_id, body = request(server, "GET", f"/tiles/city/t/{name}", refuse)
        assert status == 200 and "content-encoding" not in headers_id and body == raw
        assert headers_id["etag"] == f'"{stem}"'  # each representation has its own strong ETag
    status, headers, body = request(server, "HEAD", f"/tiles/city/t/{name}")
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(raw)


def test_hashed_content_revalidates_by_its_hash(site):
    server, ts = site
    name = content_path(ts)
    url = f"/tiles/city/t/{name}"
    stem = name.split(".")[0]
    for accept, etag in (({"Accept-Encoding": "gzip"}, f'"{stem}-gz"'), ({}, f'"{stem}"')):
        status, headers, body = request(server, "GET", url, {**accept, "If-None-Match": etag})
        assert status == 304 and body == b"" and headers["etag"] == etag
        assert headers["cache-control"] == "public, max-age=31536000, immutable"
    # The identity ETag does not validate the gzip representation (and vice versa).
    assert request(server, "GET", url, {"Accept-Encoding": "gzip", "If-None-Match": f'"{stem}"'})[0] == 200
    # A new mtime does not change a hashed file's ETag: the name is the content.
    st = (ts / "t" / name).stat()
    os.utime(ts / "t" / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert request(server, "GET", url, {"If-None-Match": f'"{stem}"'})[0] == 304


def test_unhashed_files_revalidate(site):
    server, ts = site
    (ts / "t" / "notes.json").write_bytes(b'{"a": 1}')
    for path in ("/tiles/city/t/notes.json", "/tiles/city/t/big.glb", "/tiles/city/tileset.json"):
        status, headers, _ = request(server, "GET", path)
        assert status == 200 and headers["cache-control"] == "no-cache", path
        assert "immutable" not in headers["cache-control"]
        status, again, body = request(server, "GET", path, {"If-None-Match": headers["etag"]})
        assert status == 304 and body == b"" and again["etag"] == headers["etag"], path
    # Small files: the ETag is a hash of the bytes, so touching (or rewriting the same bytes) keeps it.
    etag = request(server, "GET", "/tiles/city/t/notes.json")[1]["etag"]
    assert etag.strip('"') == hashlib.sha256(b'{"a": 1}').hexdigest()[:20]
    time.sleep(0.01)
    (ts / "t" / "notes.json").write_bytes(b'{"a": 1}')
    assert request(server, "GET", "/tiles/city/t/notes.json", {"If-None-Match": etag})[0] == 304
    (ts / "t" / "notes.json").write_bytes(b'{"a": 2}')
    status, headers, body = request(server, "GET", "/tiles/city/t/notes.json", {"If-None-Match": etag})
    assert status == 200 and body == b'{"a": 2}' and headers["etag"] != etag


def test_ranges(site):
    server, ts = site
    name = content_path(ts)
    raw = (ts / "t" / name).read_bytes()
    size = len(raw)
    url = f"/tiles/city/t/{name}"
    status, headers, body = request(server, "GET", url, {"Range": "bytes=0-99", "Accept-Encoding": "gzip"})
    assert status == 206 and body == raw[:100] and headers["content-range"] == f"bytes 0-99/{size}"
    assert "content-encoding" not in headers  # ranges address the identity bytes
    status, headers, body = request(server, "GET", url, {"Range": "bytes=-10"})
    assert status == 206 and body == raw[-10:]
    status, headers, body = request(server, "GET", url, {"Range": f"bytes={size - 5}-"})
    assert status == 206 and body == raw[-5:]
    assert headers["content-range"] == f"bytes {size - 5}-{size - 1}/{size}"
    status, headers, body = request(server, "GET", url, {"Range": f"bytes=100-{size + 1000}"})
    assert status == 206 and body == raw[100:]
    for bad in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=50-10", "bytes=abc", "bytes=-0"):
        status, headers, body = request(server, "GET", url, {"Range": bad})
        assert status == 416, bad
        assert headers["content-range"] == f"bytes */{size}"
        assert json.loads(body)["error"] == "HTTPError"
    assert request(server, "GET", url, {"Range": "bytes=0-1,5-6"})[0] == 200  # several ranges: whole file
    assert request(server, "GET", url, {"Range": "items=0-1"})[0] == 200  # unknown unit: ignored
    etag = request(server, "GET", url)[1]["etag"]
    assert request(server, "GET", url, {"Range": "bytes=0-9", "If-Range": etag})[0] == 206
    assert request(server, "GET", url, {"Range": "bytes=0-9", "If-Range": '"stale"'})[0] == 200


@pytest.mark.parametrize("path", [
    "/tiles/city/../outside/secret.txt",
    "/tiles/city/%2e%2e/%2e%2e/secret.txt",
    "/tiles/city/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/tiles/city/t/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/tiles/city/%252e%252e/%252e%252e/secret.txt",
    "/tiles/city/..%5c..%5csecret.txt",
    "/tiles/city/%2Fetc%2Fpasswd",
    "/tiles/city//etc/passwd",
    "/tiles/%2e%2e/secret.txt",
    "/tiles/outside/secret.txt",
    "/tiles/city/up/secret.txt",
    "/tiles/city/t/link.glb",
    "/tiles/city/tileset.json%00.glb",
    "/tiles/city/./tileset.json",
])
def test_paths_never_escape_the_tiles_directory(site, path):
    server, _ = site
    status, _, body = request(server, "GET", path)
    assert 400 <= status < 500
    assert SECRET not in body and b"root:" not in body


def test_unknown_tileset_and_file(site):
    server, _ = site
    status, headers, body = request(server, "GET", "/tiles/nowhere/tileset.json")
    assert status == 404 and json.loads(body)["error"] == "NotFoundError"
    assert request(server, "GET", "/tiles/city/t/0000.glb")[0] == 404
    assert request(server, "GET", "/tiles/city/t")[0] == 404  # a directory is not a file
    assert request(server, "POST", "/tiles/city/tileset.json")[0] == 405


def test_listing(site):
    server, _ = site
    status, _, body = request(server, "GET", "/tiles")
    names = [t["name"] for t in json.loads(body)["tilesets"]]
    assert status == 200 and "city" in names and "outside" not in names  # a link out of the directory


def test_cors(site):
    server, _ = site
    allowed = request(server, "GET", "/tiles/city/tileset.json", {"Origin": "http://map.example"})[1]
    assert allowed["access-control-allow-origin"] == "http://map.example"
    assert "ETag" in allowed["access-control-expose-headers"]
    other = request(server, "GET", "/tiles/city/tileset.json", {"Origin": "http://evil.example"})[1]
    assert "access-control-allow-origin" not in other
    status, preflight, _ = request(server, "OPTIONS", "/tiles/city/tileset.json", {
        "Origin": "http://map.example", "Access-Control-Request-Method": "GET"})
    assert status == 200 and preflight["access-control-allow-origin"] == "http://map.example"


def test_changed_files_are_served_fresh(tmp_path):
    tiles = tmp_path / "tiles"
    build_tileset(synthetic(20, seed=1), tiles / "c", crs=CRS, name="c")
    app = create_app(SimpleNamespace(tiles_dir=tiles, cors_origins=[]), routers=[tiles_router])
    with ServerThread(app) as server:
        first = request(server, "GET", "/tiles/c/tileset.json")
        time.sleep(0.01)
        build_tileset(synthetic(30, seed=2), tiles / "c", crs=CRS, name="c")
        second = request(server, "GET", "/tiles/c/tileset.json", {"If-None-Match": first[1]["etag"]})
    assert second[0] == 200 and second[1]["etag"] != first[1]["etag"]
    assert json.loads(second[2])["extras"]["citytwin"]["buildings"] == 30


def test_large_files_are_streamed(site):
    server, ts = site
    raw = (ts / "t" / "big.glb").read_bytes()
    status, headers, body = request(server, "GET", "/tiles/city/t/big.glb")
    assert status == 200 and body == raw and int(headers["content-length"]) == len(raw)
    start = 4 * 1024 * 1024 - 10
    status, headers, body = request(server, "GET", "/tiles/city/t/big.glb",
                                    {"Range": f"bytes={start}-{start + 299999}"})
    assert status == 206 and body == raw[start:start + 300000]
    status, headers, body = request(server, "HEAD", "/tiles/city/t/big.glb")
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(raw)
