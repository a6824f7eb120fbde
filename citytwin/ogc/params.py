"""Parsing and checking OGC API query parameters (bbox, limit, datetime) into typed values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from citytwin.errors import InputError

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
ITEMS_PARAMS = {"bbox", "limit", "datetime", "after", "f", "bbox-crs"}
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
# bbox-crs: only CRS84 (lon/lat) is served; these are its spellings (OGC API - Features Part 2 lists the URI).
CRS84_NAMES = {CRS84, CRS84.replace("http://", "https://"), "[OGC:CRS84]", "OGC:CRS84"}


@dataclass(frozen=True)
class Bbox:
    minx: float
    miny: float
    maxx: float
    maxy: float


def parse_bbox(raw: str | None) -> Bbox | None:
    """``minlon,minlat,maxlon,maxlat`` (or 6 numbers with heights) in CRS84."""
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) not in (4, 6):
        raise InputError(f"bbox must have 4 or 6 numbers, got {len(parts)}: {raw[:80]!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"bbox must be numbers: {raw[:80]!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError("bbox values must be finite")
    if len(values) == 6:
        values = [values[0], values[1], values[3], values[4]]
    minx, miny, maxx, maxy = values
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90):
        raise InputError("bbox is in CRS84: longitudes within [-180, 180], latitudes within [-90, 90]")
    if miny > maxy:
        raise InputError("bbox: the minimum latitude is above the maximum")
    return Bbox(minx, miny, maxx, maxy)


def parse_bbox_crs(raw: str | None) -> None:
    """Accept only CRS84 for ``bbox-crs``: other CRSs would be silently misread as lon/lat."""
    if raw is not None and raw.strip() not in CRS84_NAMES:
        raise InputError(f"bbox-crs {raw[:80]!r} is not supported; only {CRS84} (longitude, latitude)")


def parse_limit(raw: str | int | None, maximum: int = MAX_LIMIT) -> int:
    """The page size, clamped to [1, maximum] (OGC: a too-large limit is clamped, not refused)."""
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"limit must be an integer, got {str(raw)[:40]!r}") from None
    if value < 1:
        raise InputError("limit must be at least 1")
    return min(value, maximum)


def _parse_instant(text: str) -> datetime | None:
    if text in ("", ".."):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"datetime: {text[:40]!r} is not an RFC 3339 date-time") from None


def parse_datetime(raw: str | None) -> tuple[datetime | None, datetime | None] | None:
    """An instant or an interval ``start/end`` (either end may be ``..``)."""
    if raw is None:
        return None
    if "/" in raw:
        start_text, _, end_text = raw.partition("/")
        start, end = _parse_instant(start_text), _parse_instant(end_text)
        if start and end and start > end:
            raise InputError("datetime interval ends before it starts")
        return start, end
    instant = _parse_instant(raw)
    if instant is None:
        raise InputError("datetime must be an instant or an interval")
    return instant, instant


def reject_unknown(params: dict, allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InputError(f"unknown query parameter(s) {unknown}; allowed: {sorted(allowed)}")
