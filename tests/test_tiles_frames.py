"""Reference frames: geodetic -> ECEF, ENU frames and tile transforms, and the choice of height model."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from citytwin.errors import InputError
from citytwin.tiler.frames import EnuFrame, GeoReference, geodetic_to_ecef


def test_geodetic_to_ecef_matches_proj():
    rng = np.random.default_rng(0)
    lon, lat, h = rng.uniform(-180, 180, 500), rng.uniform(-89, 89, 500), rng.uniform(-100, 9000, 500)
    ours = geodetic_to_ecef(lon, lat, h)
    to_ecef = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    proj = np.column_stack(to_ecef.transform(lon, lat, h))
    assert np.abs(ours - proj).max() < 1e-6  # metres


def test_enu_frame_and_tile_transform():
    frame = EnuFrame.at(4.36, 52.01, 45.0)
    r = frame.rotation
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12)  # orthonormal
    assert np.linalg.det(r) == pytest.approx(1.0)  # right-handed: no mirrored geometry
    # Up is the ellipsoid normal: a point 100 m straight up has ENU (0, 0, 100).
    up = geodetic_to_ecef(np.array([4.36]), np.array([52.01]), np.array([145.0]))
    assert np.allclose(frame.from_ecef(up), [[0, 0, 100]], atol=1e-6)
    # North: a point 0.001 degrees north has a positive n and (almost) no e.
    north = frame.from_ecef(geodetic_to_ecef(np.array([4.36]), np.array([52.011]), np.array([45.0])))[0]
    assert north[1] == pytest.approx(111.25, abs=0.1) and abs(north[0]) < 1e-6
    # The column-major tile transform maps ENU to ECEF like the frame does.
    m = np.array(frame.transform()).reshape(4, 4).T
    enu = np.array([[10.0, -20.0, 30.0]])
    assert np.allclose((m @ np.append(enu[0], 1.0))[:3], frame.to_ecef(enu)[0], atol=1e-6)


def test_nap_heights_become_ellipsoidal():
    """NAP (EPSG:5709) is ~43 m below the WGS 84 ellipsoid in Den Haag; the ballpark transformation of PROJ
    would ignore that. Whatever model is available (exact grid or EGM96), h - H is 43.0-43.6 m there."""
    georef = GeoReference("EPSG:28992", "EPSG:5709")
    assert georef.method in ("exact", "egm96")
    lon, lat, h = georef.to_geodetic(np.array([78600.0, 78700.0]), np.array([457900.0, 457950.0]),
                                     np.array([0.0, 10.0]))
    assert h[0] == pytest.approx(43.3, abs=0.3)
    assert h[1] - h[0] == pytest.approx(10.0, abs=0.01)
    assert lon[0] == pytest.approx(4.272, abs=1e-3) and lat[0] == pytest.approx(52.104, abs=1e-3)
    if georef.method == "egm96":
        assert "EGM96" in georef.warnings[0] and "nl_nsgi_nlgeo2018" in georef.warnings[0]
    described = georef.describe()
    assert described["height_model"] == georef.method and described["vertical_crs"] == "EPSG:5709"


def test_compound_crs_is_split():
    a = GeoReference("EPSG:7415")
    b = GeoReference("EPSG:28992", "EPSG:5709")
    args = (np.array([84900.0]), np.array([447500.0]), np.array([2.0]))
    assert np.allclose(np.column_stack(a.to_geodetic(*args)), np.column_stack(b.to_geodetic(*args)))


def test_explicit_policies():
    args = (np.array([84900.0]), np.array([447500.0]), np.array([2.0]))
    none = GeoReference("EPSG:28992", "EPSG:5709", geoid="none")
    assert none.method == "ellipsoidal" and none.warnings
    assert none.to_geodetic(*args)[2][0] == pytest.approx(2.0)
    egm = GeoReference("EPSG:28992", "EPSG:5709", geoid="egm96")
    assert egm.method == "egm96" and egm.to_geodetic(*args)[2][0] == pytest.approx(45.4, abs=0.3)
    unknown_datum = GeoReference("EPSG:32631")  # no vertical CRS: heights taken as mean sea level
    assert unknown_datum.method in ("egm96", "exact") and unknown_datum.warnings


def test_bad_crs_and_policy():
    with pytest.raises(InputError, match="EPSG:1234567"):
        GeoReference("EPSG:1234567")
    with pytest.raises(InputError, match="geoid policy"):
        GeoReference("EPSG:28992", geoid="sometimes")


def test_georeference_survives_pickling():
    import pickle

    a = GeoReference("EPSG:28992", "EPSG:5709")
    b = pickle.loads(pickle.dumps(a))
    args = (np.array([84900.0]), np.array([447500.0]), np.array([2.0]))
    assert b.method == a.method
    assert np.allclose(np.column_stack(a.to_geodetic(*args)), np.column_stack(b.to_geodetic(*args)))


def test_unreachable_network_grid_falls_back_explicitly():
    """With PROJ_NETWORK=ON but no network, PROJ lists the NAP grid as available and then returns inf; the
    probe catches that and the EGM96 fallback is used (and said), instead of placing nothing anywhere."""
    import os
    import subprocess
    import sys

    code = ("import json, numpy as np; from citytwin.tiler.frames import GeoReference; "
            "g = GeoReference('EPSG:28992', 'EPSG:5709'); "
            "h = g.to_geodetic(np.array([78600.0, 78700.0]), np.array([457900.0, 457900.0]), "
            "np.zeros(2))[2]; "
            "print(json.dumps([g.method, float(h[0]), g.warnings]))")
    import json

    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PROJ_NETWORK": "ON"},
                         capture_output=True, text=True, timeout=120, check=True)
    method, height, warnings = json.loads(out.stdout.strip().splitlines()[-1])
    assert method in ("exact", "egm96")  # "exact" on a machine whose network reaches cdn.proj.org
    assert height == pytest.approx(43.3, abs=0.5)
    if method == "egm96":
        assert "EGM96" in warnings[0] and "could not be fetched" in warnings[0]
