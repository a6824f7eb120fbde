"""Building archetypes: energy use intensities and schedules by use and construction period.

The defaults ship in ``archetypes.yaml`` beside this module (figures and their sources are written
there). :func:`load_archetypes` reads them, merges a user table over them, validates the result and
calibrates it against its reference weather (:mod:`citytwin.models.energy.profiles`).

Merging a user table (CSV, YAML, DataFrame or list of dicts, one row per archetype): when the user
gives rows for a use, they replace all default rows of that use; fields a user row leaves empty
come from the default row of that use (its ``default_period`` row when the defaults have
construction periods; or, for a new use, from ``defaults``). The period fields (year_from,
year_to, default_period) are never taken from a default row: a user row without them covers
every year. A user YAML may also add ``schedules``, ``aliases``, ``profiles`` (``name:
{load_model: folder}``), ``fallback_use``, ``reference_weather`` (``{synthetic: climate, year,
seed}`` or ``{epw: path}``) and ``replace: true`` (drop all default rows).

Matching a building: its ``use`` is lower-cased, spaces/hyphens become underscores, aliases are
applied; a use without an archetype falls back to ``fallback_use`` ("other") and is reported. Its
``year_built`` picks the row with year_from <= year < year_to; a year outside every period takes
the nearest period; an unknown year takes the row marked ``default_period`` (else the use's first
row) and is counted, per archetype, in the report (``missing_year_archetypes``). The defaults give
residential and apartment four periods (before 1979, 1979-1994, 1995-2001, 2002 on; default
1979-1994), sources in ``archetypes.yaml``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from citytwin.errors import InputError
from citytwin.io.uses import USE_LOOKUP  # source codes (OSM, BAG, CEA) -> the twin's uses
from citytwin.models.energy import profiles as _profiles
from citytwin.models.energy.schedules import AnnualProfile, DailySchedule
from citytwin.models.energy.weather import PreparedWeather, prepare_weather, synthetic_weather

DEFAULT_TABLE = Path(__file__).with_name("archetypes.yaml")
NUMERIC_FIELDS = (
    "electricity_kwh_m2",
    "heating_kwh_m2",
    "cooling_kwh_m2",
    "heat_loss_w_m2k",
    "cooling_coefficient_w_m2k",
    "heating_base_c",
    "cooling_base_c",
    "heating_electric_share",
    "heating_cop",
    "cooling_electric_share",
    "cooling_cop",
    "lighting_share",
    "plug_share",
    "hvac_setback",
    "year_from",
    "year_to",
)
TEXT_FIELDS = ("use", "schedule", "electricity_profile", "source")
# (field, lowest, highest) allowed; NaN allowed only where noted in _validate.
RANGES = (
    ("electricity_kwh_m2", 0, 5000),
    ("heating_kwh_m2", 0, 5000),
    ("cooling_kwh_m2", 0, 5000),
    ("heat_loss_w_m2k", 0, 100),
    ("cooling_coefficient_w_m2k", 0, 100),
    ("heating_base_c", -30, 40),
    ("cooling_base_c", -30, 50),
    ("heating_electric_share", 0, 1),
    ("cooling_electric_share", 0, 1),
    ("lighting_share", 0, 1),
    ("plug_share", 0, 1),
    ("hvac_setback", 0, 1),
)
SCHEDULE_KINDS = ("occupancy", "lighting", "plug")
PERIOD_FIELDS = ("year_from", "year_to", "default_period")


def normalize_use(value) -> str:
    """'Office Building' -> 'office_building'; NaN/None -> ''."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    return str(value).strip().lower().replace("-", "_").replace(" ", "_")


@dataclass(frozen=True)
class Match:
    """How buildings were matched to archetypes."""

    index: np.ndarray  # (n,) int row of Archetypes.table per building
    use: np.ndarray  # (n,) object: the resolved archetype use
    fallback: np.ndarray  # (n,) bool: use unknown, fell back to fallback_use
    unknown_uses: dict[str, int] = field(default_factory=dict)
    missing_year: int = 0
    missing_year_archetypes: dict[str, int] = field(default_factory=dict)  # archetype id -> buildings


@dataclass(frozen=True)
class Archetypes:
    """A validated, calibrated archetype table.

    ``table`` has one row per archetype (index = archetype id, "use" or "use:from-to"), the input
    fields, the derived heat_loss_w_m2k, cooling_coefficient_w_m2k and base_electricity_kwh_m2, and
    the ``source`` of its figures.
    """

    table: pd.DataFrame
    schedules: dict[str, dict[str, DailySchedule]]
    annual: dict[str, AnnualProfile]
    aliases: dict[str, str]
    fallback_use: str
    reference: PreparedWeather
    reference_source: str

    @property
    def uses(self) -> list[str]:
        return sorted(self.table["use"].unique())

    def unit_profiles(self, weather: PreparedWeather) -> _profiles.UnitProfiles:
        return _profiles.unit_profiles(self.table, self.schedules, self.annual, weather)

    def match(self, use, year_built) -> Match:
        """Archetype row per building from its use (strings) and year_built (numbers or NaN)."""
        # Few distinct spellings in many buildings: normalise each distinct value once.
        codes, distinct = pd.factorize(pd.Series(np.asarray(use, dtype=object)), use_na_sentinel=True)
        names = np.array(
            [self.aliases.get(normalize_use(u), normalize_use(u)) for u in distinct] + [""], dtype=object
        )
        uses = names[np.where(codes >= 0, codes, len(distinct))]
        known = set(self.table["use"])
        fallback = np.array([u not in known for u in uses], dtype=bool)
        unknown = Counter(u if u else "<missing>" for u in uses[fallback])
        uses[fallback] = self.fallback_use
        years = pd.to_numeric(pd.Series(year_built), errors="coerce").to_numpy(np.float64)
        index = np.empty(len(uses), dtype=np.int64)
        missing_year = int(np.isnan(years).sum())
        positions = np.arange(len(self.table))
        for u in np.unique(uses):
            rows = positions[(self.table["use"] == u).to_numpy()]
            sel = uses == u
            lo = self.table["year_from"].to_numpy()[rows]
            hi = self.table["year_to"].to_numpy()[rows]
            lo_f = np.where(np.isnan(lo), -np.inf, lo)
            hi_f = np.where(np.isnan(hi), np.inf, hi)
            y = years[sel]
            # The period containing the year, else the nearest one (distance to its closer bound).
            inside = (y[:, None] >= lo_f[None, :]) & (y[:, None] < hi_f[None, :])
            gap = np.minimum(np.abs(y[:, None] - lo_f[None, :]), np.abs(y[:, None] - hi_f[None, :]))
            choice = np.argmin(np.where(inside, -1.0, np.nan_to_num(gap, nan=0.0)), axis=1)
            default_flags = self.table["default_period"].to_numpy()[rows].astype(bool)
            default_row = int(np.flatnonzero(default_flags)[0]) if default_flags.any() else 0
            choice[np.isnan(y)] = default_row
            index[sel] = rows[choice]
        ids = self.table.index.to_numpy()
        defaulted = Counter(str(a) for a in ids[index[np.isnan(years)]])
        return Match(
            index=index,
            use=uses,
            fallback=fallback,
            unknown_uses=dict(unknown),
            missing_year=missing_year,
            missing_year_archetypes=dict(defaulted),
        )


def _read_user_table(table) -> dict:
    """Any accepted user input -> a mapping like the YAML file (with 'archetypes' rows)."""
    base_dir = None
    if isinstance(table, (str, Path)):
        path = Path(table)
        if not path.is_file():
            raise InputError(f"archetype table {path} not found")
        base_dir = path.parent
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(path.read_text())
            except yaml.YAMLError as exc:
                raise InputError(f"archetype table {path.name} is not valid YAML: {exc}") from exc
            if isinstance(data, list):
                data = {"archetypes": data}
            if not isinstance(data, dict):
                raise InputError(f"archetype table {path.name} must be a mapping or a list of rows")
        elif path.suffix.lower() == ".csv":
            try:
                data = {"archetypes": pd.read_csv(path).to_dict("records")}
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                raise InputError(f"archetype table {path.name} is not a readable CSV: {exc}") from exc
        else:
            raise InputError(f"archetype table {path.name}: expected a .csv, .yaml or .yml file")
    elif isinstance(table, pd.DataFrame):
        data = {"archetypes": table.to_dict("records")}
    elif isinstance(table, list):
        data = {"archetypes": table}
    elif isinstance(table, dict):
        data = dict(table)
    else:
        raise InputError(
            f"archetype table must be a path, DataFrame, list or dict; got {type(table).__name__}"
        )
    data["_base_dir"] = base_dir
    return data


def _rows_frame(rows, what: str) -> pd.DataFrame:
    if rows is None:
        return pd.DataFrame(columns=["use"])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{what}: 'archetypes' must be a list of rows (mappings)")
    frame = pd.DataFrame(rows)
    if "use" not in frame.columns or frame["use"].map(normalize_use).eq("").any():
        raise InputError(f"{what}: every archetype row needs a 'use'")
    frame["use"] = frame["use"].map(normalize_use)
    unknown = sorted(set(frame.columns) - set(NUMERIC_FIELDS) - set(TEXT_FIELDS) - {"default_period"})
    if unknown:
        raise InputError(
            f"{what}: unknown archetype fields {unknown}; known: "
            f"{sorted(NUMERIC_FIELDS + TEXT_FIELDS + ('default_period',))}"
        )
    return frame


def _merge(defaults: pd.DataFrame, user: pd.DataFrame, field_defaults: dict, replace: bool) -> pd.DataFrame:
    """User rows replace the default rows of their use; gaps are filled from the use's default row
    (its default-period row when it has periods)."""
    kept = defaults.iloc[0:0] if replace else defaults[~defaults["use"].isin(set(user["use"]))]
    filled = []
    for _, row in user.iterrows():
        template = defaults[defaults["use"] == row["use"]]
        if len(template) > 1 and template["default_period"].any():
            template = template[template["default_period"]]
        base = template.iloc[0].to_dict() if len(template) else dict(field_defaults)
        merged = dict(base)
        for key in PERIOD_FIELDS:  # a user row's period is its own (open when it gives none)
            value = field_defaults.get(key)
            merged[key] = np.nan if value is None else value
        for key, value in row.items():
            if not (value is None or (isinstance(value, float) and np.isnan(value))):
                merged[key] = value
        # An intensity and its coefficient are alternatives: a user coefficient wins over a default intensity.
        for intensity, coeff in (
            ("heating_kwh_m2", "heat_loss_w_m2k"),
            ("cooling_kwh_m2", "cooling_coefficient_w_m2k"),
        ):
            if pd.notna(row.get(coeff, np.nan)) and pd.isna(row.get(intensity, np.nan)):
                merged[intensity] = np.nan
        if "source" not in row or pd.isna(row.get("source")):
            merged["source"] = "user table" + (
                f" (gaps from default: {base.get('source')})" if len(template) else ""
            )
        filled.append(merged)
    return (
        pd.concat([kept, pd.DataFrame(filled)], ignore_index=True) if filled else kept.reset_index(drop=True)
    )


def _normalize(frame: pd.DataFrame, field_defaults: dict) -> pd.DataFrame:
    frame = frame.copy()
    for key, value in field_defaults.items():
        if key not in frame.columns:
            frame[key] = value
        else:
            frame[key] = frame[key].where(frame[key].notna(), value) if value is not None else frame[key]
    for key in NUMERIC_FIELDS:
        if key not in frame.columns:
            frame[key] = np.nan
        converted = pd.to_numeric(frame[key], errors="coerce")
        bad = converted.isna() & frame[key].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"archetype {frame['use'].iloc[i]!r}: field {key} = {frame[key].iloc[i]!r} is not a number"
            )
        frame[key] = converted.astype(np.float64)
    for key in ("schedule", "electricity_profile", "source"):
        if key not in frame.columns:
            frame[key] = None
    frame["default_period"] = frame.get("default_period", False)
    flags = frame["default_period"]
    frame["default_period"] = [bool(v) and not pd.isna(v) for v in flags]  # empty cells: False
    return frame


def _validate(frame: pd.DataFrame, schedules: dict, annual: dict, fallback_use: str) -> None:
    def who(i: int) -> str:
        return f"archetype {frame['use'].iloc[i]!r} (row {i + 1})"

    for i in range(len(frame)):
        row = frame.iloc[i]
        if pd.isna(row["electricity_kwh_m2"]):
            raise InputError(f"{who(i)}: electricity_kwh_m2 is required")
        for intensity, coeff in (
            ("heating_kwh_m2", "heat_loss_w_m2k"),
            ("cooling_kwh_m2", "cooling_coefficient_w_m2k"),
        ):
            if pd.isna(row[intensity]) == pd.isna(row[coeff]):
                raise InputError(f"{who(i)}: give exactly one of {intensity} and {coeff}")
        for key, lo, hi in RANGES:
            value = row[key]
            if pd.notna(value) and not lo <= value <= hi:
                raise InputError(f"{who(i)}: {key} = {value:g} outside {lo}..{hi}")
        for key in ("heating_cop", "cooling_cop"):
            if not row[key] > 0:
                raise InputError(f"{who(i)}: {key} must be > 0")
        if row["lighting_share"] + row["plug_share"] > 1 + 1e-9:
            raise InputError(f"{who(i)}: lighting_share + plug_share exceed 1")
        if row["cooling_base_c"] < row["heating_base_c"]:
            raise InputError(
                f"{who(i)}: cooling_base_c ({row['cooling_base_c']:g}) below heating_base_c "
                f"({row['heating_base_c']:g}) would heat and cool in the same hour"
            )
        if row["schedule"] not in schedules:
            raise InputError(
                f"{who(i)}: schedule {row['schedule']!r} not defined; known: {sorted(schedules)}"
            )
        profile = row["electricity_profile"]
        if isinstance(profile, str) and profile and profile not in annual:
            raise InputError(
                f"{who(i)}: electricity_profile {profile!r} not defined; known: {sorted(annual)}"
            )
        if pd.notna(row["year_from"]) and pd.notna(row["year_to"]) and row["year_to"] <= row["year_from"]:
            raise InputError(f"{who(i)}: year_to must be after year_from")
    for use, group in frame.groupby("use"):
        lo = group["year_from"].fillna(-np.inf).to_numpy()
        hi = group["year_to"].fillna(np.inf).to_numpy()
        order = np.argsort(lo)
        if (lo[order][1:] < hi[order][:-1]).any():
            periods = [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]
            raise InputError(f"archetype {use!r}: construction periods overlap ({periods})")
        if group["default_period"].sum() > 1:
            raise InputError(f"archetype {use!r}: more than one row marked default_period")
    if fallback_use not in set(frame["use"]):
        raise InputError(f"fallback_use {fallback_use!r} has no archetype row")


def _parse_schedules(data: dict | None, what: str) -> dict[str, dict[str, DailySchedule]]:
    out = {}
    for name, family in (data or {}).items():
        if not isinstance(family, dict) or any(k not in family for k in SCHEDULE_KINDS):
            raise InputError(f"{what}: schedule {name!r} needs {list(SCHEDULE_KINDS)}")
        out[name] = {k: DailySchedule.from_mapping(family[k], f"schedule {name}.{k}") for k in SCHEDULE_KINDS}
    return out


def _parse_profiles(data: dict | None, base_dir: Path | None) -> dict[str, AnnualProfile]:
    from citytwin.io.load_model import read_load_model

    out = {}
    for name, spec in (data or {}).items():
        if not isinstance(spec, dict) or "load_model" not in spec:
            raise InputError(f"profile {name!r} needs a 'load_model' folder (IEEE RTS tables)")
        folder = Path(spec["load_model"])
        if not folder.is_absolute() and base_dir is not None:
            folder = base_dir / folder
        out[name] = AnnualProfile.from_load_model(read_load_model(folder), name)
    return out


def _reference(spec, base_dir: Path | None) -> tuple[PreparedWeather, str]:
    if spec is None:
        raise InputError("archetype table has no reference_weather")
    if not isinstance(spec, dict):  # an xarray / pandas weather object
        return prepare_weather(spec), "user weather"
    if "epw" in spec:
        from citytwin.io.weather import read_epw

        path = Path(spec["epw"])
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return prepare_weather(read_epw(path, year=spec.get("year"))), f"EPW {path.name}"
    if "synthetic" in spec:
        weather = synthetic_weather(
            spec["synthetic"], year=int(spec.get("year", 2021)), seed=int(spec.get("seed", 0))
        )
        return prepare_weather(weather), weather.attrs["source"]
    raise InputError(f"reference_weather must be {{synthetic: climate}} or {{epw: path}}; got {spec!r}")


def load_archetypes(
    table=None,
    *,
    replace: bool = False,
    profiles: dict[str, AnnualProfile] | None = None,
    reference_weather=None,
) -> Archetypes:
    """The default archetypes, optionally overridden by a user table, validated and calibrated.

    Parameters
    ----------
    table : None (defaults only), a .csv/.yaml path, a DataFrame, a list of row dicts, or a mapping
        shaped like ``archetypes.yaml`` (see the module docstring for the merge rules).
    replace : drop every default row (the user table must then cover ``fallback_use``).
    profiles : extra annual profiles by name, e.g. ``{"ieee_rts": AnnualProfile.from_load_model(m)}``,
        usable as an archetype's ``electricity_profile``.
    reference_weather : the weather the intensities hold under (xarray/pandas temperature year);
        overrides the table's ``reference_weather``.

    Raises
    ------
    InputError
        Unknown fields, out-of-range values, overlapping periods, undefined schedules, or figures
        the reference weather cannot reproduce.
    """
    base = yaml.safe_load(DEFAULT_TABLE.read_text())
    field_defaults = dict(base["defaults"])
    defaults = _normalize(_rows_frame(base["archetypes"], "default table"), field_defaults)
    schedules = _parse_schedules(base["schedules"], "default table")
    # Raw source codes the importers recognise (OSM, BAG, CEA) first, then the table's own aliases.
    aliases = {k: v for k, v in USE_LOOKUP.items() if k != v}
    aliases.update({normalize_use(k): normalize_use(v) for k, v in base.get("aliases", {}).items()})
    fallback_use, reference_spec, base_dir = (
        base["fallback_use"],
        base["reference_weather"],
        DEFAULT_TABLE.parent,
    )
    annual: dict[str, AnnualProfile] = {}
    frame = defaults
    if table is not None:
        user = _read_user_table(table)
        what = f"archetype table {table}" if isinstance(table, (str, Path)) else "archetype table"
        schedules.update(_parse_schedules(user.get("schedules"), what))
        annual.update(_parse_profiles(user.get("profiles"), user["_base_dir"]))
        aliases.update({normalize_use(k): normalize_use(v) for k, v in (user.get("aliases") or {}).items()})
        fallback_use = normalize_use(user.get("fallback_use", fallback_use))
        field_defaults.update(user.get("defaults") or {})
        if "reference_weather" in user:
            reference_spec, base_dir = user["reference_weather"], user["_base_dir"]
        rows = _rows_frame(user.get("archetypes"), what)
        frame = _normalize(
            _merge(defaults, rows, field_defaults, replace or bool(user.get("replace"))), field_defaults
        )
    annual.update(profiles or {})
    _validate(frame, schedules, annual, fallback_use)
    if reference_weather is not None:
        reference, ref_source = prepare_weather(reference_weather), "user weather"
    else:
        reference, ref_source = _reference(reference_spec, base_dir)
    frame.index = [_archetype_id(r) for _, r in frame.iterrows()]
    if frame.index.duplicated().any():
        raise InputError(f"duplicate archetypes {sorted(set(frame.index[frame.index.duplicated()]))}")
    calibrated = _profiles.calibrate(frame, schedules, annual, reference)
    for column in calibrated.columns:
        frame[column] = calibrated[column]
    return Archetypes(frame, schedules, annual, aliases, fallback_use, reference, ref_source)


def _archetype_id(row: pd.Series) -> str:
    if pd.isna(row["year_from"]) and pd.isna(row["year_to"]):
        return str(row["use"])
    lo = "" if pd.isna(row["year_from"]) else str(int(row["year_from"]))
    hi = "" if pd.isna(row["year_to"]) else str(int(row["year_to"]))
    return f"{row['use']}:{lo}-{hi}"
