"""Reader for EnergyPlus weather files (EPW).

Format (EnergyPlus "Auxiliary Programs", chapter "EnergyPlus Weather File (EPW) Data Dictionary"):
eight header records (LOCATION, DESIGN CONDITIONS, TYPICAL/EXTREME PERIODS, GROUND TEMPERATURES,
HOLIDAYS/DAYLIGHT SAVINGS, COMMENTS 1, COMMENTS 2, DATA PERIODS), then one comma-separated record per
interval with, among 35 fields (0-based): 0 year, 1 month, 2 day, 3 hour (1-24; hour h covers
(h-1):00-h:00 local standard time), 4 minute, 5 source flags, 6 dry-bulb temperature (degC,
missing 99.9), 7 dew-point temperature (degC, missing 99.9), 8 relative humidity (%, missing 999),
13 global horizontal radiation (Wh/m2, missing 9999), 21 wind speed (m/s, missing 999).

Typical-year files (TMY) mix months from different years; their rows are placed on one calendar
``year`` (default :data:`TYPICAL_YEAR`). Timestamps label the start of each hour, in local standard
time (EPW has no daylight saving shift). Missing values become NaN; deciding what to do with gaps
is the model's job (see :func:`citytwin.models.energy.weather.prepare_weather`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from citytwin.errors import InputError

HEADER_KEYS = (
    "LOCATION",
    "DESIGN CONDITIONS",
    "TYPICAL/EXTREME PERIODS",
    "GROUND TEMPERATURES",
    "HOLIDAYS/DAYLIGHT SAVINGS",
    "COMMENTS 1",
    "COMMENTS 2",
    "DATA PERIODS",
)
# A non-leap year whose 1 January is a Friday; also the year of the reference weather.
TYPICAL_YEAR = 2021
# field index -> (variable name, units, lowest valid, highest valid). The EPW missing codes
# (99.9, 999, 9999) lie outside these ranges, so one range test finds both missing and corrupt values.
FIELDS = {
    6: ("temperature", "degC", -70.0, 70.0),
    7: ("dew_point", "degC", -70.0, 70.0),
    8: ("relative_humidity", "%", 0.0, 110.0),
    13: ("global_horizontal_radiation", "Wh/m2", 0.0, 9998.0),
    21: ("wind_speed", "m/s", 0.0, 40.0),
}


def _parse_header(lines: list[str], path: Path) -> dict:
    for expected, line in zip(HEADER_KEYS, lines, strict=True):
        if not line.upper().startswith(expected):
            raise InputError(
                f"{path.name} is not an EPW file: header line {HEADER_KEYS.index(expected) + 1} "
                f"should start with {expected!r}, found {line[:40]!r}"
            )
    loc = [f.strip() for f in lines[0].split(",")]
    meta: dict = {
        "city": loc[1] if len(loc) > 1 else "",
        "country": loc[3] if len(loc) > 3 else "",
        "source": loc[4] if len(loc) > 4 else "",
        "wmo": loc[5] if len(loc) > 5 else "",
    }
    for key, idx in (("latitude", 6), ("longitude", 7), ("utc_offset_h", 8), ("elevation_m", 9)):
        try:
            meta[key] = float(loc[idx])
        except (IndexError, ValueError):
            meta[key] = float("nan")
    periods = [f.strip() for f in lines[7].split(",")]
    try:
        per_hour = int(periods[2])
    except (IndexError, ValueError):
        per_hour = 1
    if per_hour != 1:
        raise InputError(
            f"{path.name}: {per_hour} records per hour; only hourly EPW files are supported "
            "(resample to hourly first)"
        )
    return meta


def read_epw(path: str | Path, *, year: int | None = None) -> xr.Dataset:
    """Read an EPW weather file into an hourly xarray Dataset.

    Parameters
    ----------
    path : the ``.epw`` file.
    year : calendar year to place the rows on. Default: the file's year when all rows share one,
        else :data:`TYPICAL_YEAR` (typical-year files).

    Returns
    -------
    Dataset over ``time`` (hour start, local standard time) with ``temperature`` (dry bulb, degC),
    ``dew_point`` (degC), ``relative_humidity`` (%), ``global_horizontal_radiation`` (Wh/m2) and
    ``wind_speed`` (m/s) as float64, NaN where the file marks a value missing or out of range;
    attrs: city, country, source, wmo, latitude, longitude, utc_offset_h, elevation_m,
    missing_temperature_hours.

    Raises
    ------
    InputError
        Not an EPW file, sub-hourly records, unparsable rows, or dates that do not exist in ``year``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weather file {path} not found")
    with path.open("r", encoding="latin-1") as fh:
        header = [fh.readline().rstrip("\r\n") for _ in HEADER_KEYS]
        meta = _parse_header(header, path)
        try:
            rows = pd.read_csv(fh, header=None, dtype=str, skip_blank_lines=True)
        except pd.errors.EmptyDataError:
            raise InputError(f"{path.name}: no data records after the 8 header lines") from None
    if rows.shape[1] < 7:
        raise InputError(
            f"{path.name}: data records have {rows.shape[1]} fields; at least 7 (to dry bulb) needed"
        )
    stamp = rows.iloc[:, :4].apply(pd.to_numeric, errors="coerce")
    if stamp.isna().to_numpy().any():
        bad = int(np.flatnonzero(stamp.isna().to_numpy().any(axis=1))[0])
        raise InputError(f"{path.name}: data record {bad + 1} has a non-numeric year/month/day/hour")
    stamp = stamp.astype(np.int64)
    years = stamp.iloc[:, 0].unique()
    if year is None:
        year = int(years[0]) if len(years) == 1 else TYPICAL_YEAR
    hour = stamp.iloc[:, 3].to_numpy()
    if hour.min() < 1 or hour.max() > 24:
        raise InputError(f"{path.name}: hour field must be 1-24; found {hour.min()}..{hour.max()}")
    dates = pd.to_datetime(
        pd.DataFrame({"year": year, "month": stamp.iloc[:, 1], "day": stamp.iloc[:, 2]}), errors="coerce"
    )
    if dates.isna().any():
        bad = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise InputError(
            f"{path.name}: record {bad + 1} (month {stamp.iloc[bad, 1]}, day {stamp.iloc[bad, 2]}) "
            f"is not a date in {year}"
        )
    time = pd.DatetimeIndex(dates + pd.to_timedelta(hour - 1, unit="h"), name="time")

    data_vars = {}
    for idx, (name, units, lo, hi) in FIELDS.items():
        if idx >= rows.shape[1]:
            continue
        values = pd.to_numeric(rows.iloc[:, idx], errors="coerce").to_numpy(np.float64)
        values[~((values >= lo) & (values <= hi))] = np.nan
        data_vars[name] = ("time", values, {"units": units})
    meta["missing_temperature_hours"] = int(np.isnan(data_vars["temperature"][1]).sum())
    meta["file"] = path.name
    return xr.Dataset(data_vars, coords={"time": time}, attrs=meta)
