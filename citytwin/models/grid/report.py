"""One JSON-ready reliability report: system, per feeder and per load point indices.

:func:`reliability_report` is what ``citytwin grid reliability PATH`` prints; the same dict is
served by the API. Indices are defined in :mod:`citytwin.models.grid.indices`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from citytwin.errors import InputError
from citytwin.models.grid.effects import FailureEffects, failure_effects
from citytwin.models.grid.indices import UNITS, load_point_indices, system_indices
from citytwin.models.grid.overrides import apply_overrides
from citytwin.models.grid.reliability_analytical import load_point_rates
from citytwin.models.grid.reliability_montecarlo import monte_carlo
from citytwin.models.grid.tables import GridTables

METHODS = ("analytical", "monte-carlo")


def _clean(value):
    """JSON-safe scalars: numpy to Python, NaN/inf to None."""
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _indices_by_group(points: pd.DataFrame, lam, unavail, mom) -> dict:
    out = {}
    for feeder, rows in points.groupby(points["feeder"].fillna("(none)"), sort=True):
        i = rows.index.to_numpy()
        out[str(feeder)] = {k: _clean(v) for k, v in system_indices(
            lam[i], unavail[i], rows["customers"].to_numpy(), rows["load_mw"].to_numpy(), mom[i]).items()}
    return out


def _load_point_table(points: pd.DataFrame, lam, unavail) -> dict:
    per = load_point_indices(lam, unavail, points["load_mw"].to_numpy(float))
    table = pd.DataFrame({"failure_rate": per["failure_rate"], "unavailability_h": per["unavailability_h"],
                          "average_outage_time_h": per["average_outage_time_h"],
                          "customers": points["customers"].to_numpy(np.int64),
                          "load_mw": points["load_mw"].to_numpy(float), "ens_mwh": per["ens_mwh"],
                          "feeder": points["feeder"].to_numpy(object)}, index=points["node_id"].astype(str))
    # object dtype so that missing values become None (JSON null), numbers plain Python numbers
    table = table.astype(object).where(table.notna(), None)
    return table.to_dict(orient="index")


def reliability_report(grid: GridTables, method: str = "analytical", years: int = 10_000, seed: int = 0,
                       client=None, *, overrides: list[str] | None = None, load: str | pd.Series = "average",
                       power_factor: float = 1.0, repair: str = "exponential", batch_years: int = 5_000,
                       effects: FailureEffects | None = None) -> dict:
    """Reliability indices of ``grid`` (normal switch state) as a JSON-ready dict.

    Parameters
    ----------
    grid : GridTables
    method : {'analytical', 'monte-carlo'}
        Failure modes and effects, or sampled years (Dask batches).
    years, seed, client, repair, batch_years
        Monte Carlo settings (see :func:`~citytwin.models.grid.reliability_montecarlo.monte_carlo`).
    overrides : list of str, optional
        ``COMPONENT.FIELD=VALUE`` changes applied first (:func:`~citytwin.models.grid.overrides.apply_overrides`).
    load, power_factor
        Load for back-feeding headroom checks (see :func:`~citytwin.models.grid.effects.failure_effects`).
        ENS always uses the average load.

    Returns
    -------
    dict
        ``{"method", "years", "seed", "system": {SAIFI, SAIDI, CAIDI, ASAI, ENS, AENS, MAIFI,
        customers}, "feeders": {feeder: {...}}, "load_points": {id: {failure_rate,
        unavailability_h, average_outage_time_h, customers, load_mw, ens_mwh, feeder}},
        "units": {...}}``; Monte Carlo adds ``standard_error`` and ``annual_percentiles``.
    """
    if method not in METHODS:
        raise InputError(f"reliability method must be one of {', '.join(METHODS)}, not {method!r}")
    if overrides:
        grid = apply_overrides(grid, overrides)
    effects = effects or failure_effects(grid, load=load, power_factor=power_factor)
    points = effects.points.reset_index(drop=True)
    cust, avg = points["customers"].to_numpy(), points["load_mw"].to_numpy(float)
    report: dict = {"grid": grid.name, "method": method, "years": None, "seed": None}
    if method == "analytical":
        rates = load_point_rates(effects)
        lam, unavail, mom = rates["failure_rate"], rates["unavailability_h"], rates["momentary_rate"]
    else:
        mc = monte_carlo(effects, years, seed, batch_years=batch_years, client=client, repair=repair)
        lam, unavail, mom = mc.failure_rate, mc.unavailability_h, mc.momentary_rate
        report.update(years=int(years), seed=int(seed), repair_distribution=repair,
                      standard_error={k: _clean(mc.standard_error(k)) for k in ("SAIFI", "SAIDI", "ENS", "MAIFI")},
                      annual_percentiles={k: {f"p{q}": _clean(np.percentile(mc.annual[k], q)) for q in (50, 90, 99)}
                                          for k in ("SAIFI", "SAIDI", "ENS")})
    report["system"] = {k: _clean(v) for k, v in system_indices(lam, unavail, cust, avg, mom).items()}
    report["feeders"] = _indices_by_group(points, lam, unavail, mom)
    report["load_points"] = _load_point_table(points, lam, unavail)
    report["failure_modes"] = len(effects.modes)
    report["units"] = dict(UNITS)
    return report
