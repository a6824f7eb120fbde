"""Serving the web map: ``/`` (citytwin/web) and ``/cesium/`` (the npm package's Build/Cesium), no database.

Checks what a browser needs before any JavaScript runs: the page, module scripts with a JavaScript MIME type
(browsers refuse modules served otherwise), every relative import resolving to a served file, Cesium gzipped
when asked (but never for a Range request), and API routes still answering beside the "/" mount.
"""

from __future__ import annotations

import gzip
import re
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from citytwin.api.app import create_app
from citytwin.api.routers import tiles
from citytwin.api.routers.web import WEB_DIR, find_cesium, mount_web

IMPORT = re.compile(r"""^\s*import\s[^"']*["'](\.[^"']+)["']""", re.MULTILINE)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(SimpleNamespace(tiles_dir=tmp_path_factory.mktemp("tiles"), cors_origins=[]),
                     routers=[tiles.router])
    mount_web(app)
    with TestClient(app) as c:
        yield c


def test_the_page_loads_cesium_offline_without_a_token(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert 'window.CESIUM_BASE_URL = "/cesium/"' in page
    assert '<script src="/cesium/Cesium.js">' in page
    assert '<script type="module" src="js/main.js">' in page
    sources = page + "".join(p.read_text() for p in (WEB_DIR / "js").glob("*.js"))
    for ion in ("Ion.", "IonImageryProvider", "IonResource", "createWorldTerrain", "createWorldImagery",
                "cesium.com", "defaultAccessToken", "Geocoder"):
        assert ion not in sources, f"{ion} would need Cesium ion (network and a token)"
    assert 'href="data:,"' in page  # no favicon request (a 404 would be a console error)


def test_every_module_import_resolves_to_a_javascript_file(client):
    modules = sorted((WEB_DIR / "js").glob("*.js"))
    assert {m.name for m in modules} >= {"main.js", "buildings.js", "flood.js", "grid.js", "telemetry.js"}
    for module in modules:
        response = client.get(f"/js/{module.name}")
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
        for target in IMPORT.findall(module.read_text()):
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports missing {target}"
    assert client.get("/css/app.css").status_code == 200


def test_cesium_is_served_gzipped_but_not_for_ranges(client):
    assert find_cesium() is not None, "run `npm install` in the repository"
    whole = client.get("/cesium/Cesium.js", headers={"Accept-Encoding": "gzip"})
    assert whole.status_code == 200 and whole.headers["content-encoding"] == "gzip"
    assert whole.headers["cache-control"] == "public, max-age=3600"
    raw = (find_cesium() / "Cesium.js").read_bytes()
    assert whole.content == raw  # httpx decoded the gzip body
    with client.stream("GET", "/cesium/Cesium.js", headers={"Accept-Encoding": "gzip"}) as response:
        compressed = sum(len(chunk) for chunk in response.iter_raw())
    assert compressed < len(raw) / 3  # minified JavaScript compresses ~3.5x
    part = client.get("/cesium/Cesium.js", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-99"})
    assert part.status_code == 206 and "content-encoding" not in part.headers
    assert part.content == raw[:100]
    widgets = client.get("/cesium/Widgets/widgets.css")
    assert widgets.status_code == 200
    assert client.get("/cesium/Assets/Textures/NaturalEarthII/tilemapresource.xml").status_code == 200


def test_api_routes_still_answer_beside_the_root_mount(client):
    assert client.get("/tiles").json() == {"tilesets": []}
    missing = client.get("/no-such-page.html")
    assert missing.status_code == 404


def test_missing_cesium_is_explained(tmp_path):
    app = create_app(SimpleNamespace(tiles_dir=tmp_path, cors_origins=[]), routers=[tiles.router])
    mount_web(app, cesium_dir=tmp_path / "absent")
    with TestClient(app) as c:
        response = c.get("/cesium/Cesium.js")
        page = c.get("/")
    assert response.status_code == 404 and "npm install" in response.text
    assert page.status_code == 200  # the page itself still loads and can say what is wrong


def test_gzip_body_is_valid_gzip(client):
    # Read the raw bytes (no automatic decoding) to check the encoding itself.
    with client.stream("GET", "/js/main.js", headers={"Accept-Encoding": "gzip"}) as response:
        body = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == (WEB_DIR / "js" / "main.js").read_bytes()
