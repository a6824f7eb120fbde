"""Monte Carlo reliability evaluation: sampled years, in Dask batches.

Each simulated year draws the failures of every failure mode as a Poisson process (rate
lambda_k per year; sampled as the number of failures in the system, Poisson(sum lambda), each
assigned to mode k with probability lambda_k / sum lambda - the same process by superposition),
and a repair duration for each failure (exponential with mean r_k, the usual assumption of
Billinton & Allan's sequential simulation, or fixed at r_k). The effect of a failure on each load
point is the FLISR effect of :mod:`citytwin.models.grid.effects`, so the estimates converge to the
analytical (FMEA) values; the simulation adds the spread of the annual indices.

Years are split into batches of ``batch_years``; batch i draws from ``SeedSequence(seed).spawn``'s
i-th child, so results depend on ``seed`` and ``batch_years`` only, never on the number of workers.
Batches run on a ``dask.distributed`` Client when given, else on Dask's threaded scheduler.
First-order model: overlapping failures are treated independently (no interaction), as in the
analytical evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from citytwin.errors import InputError
from citytwin.models.grid.effects import FailureEffects

REPAIR_DISTRIBUTIONS = ("exponential", "fixed")


@dataclass
class MonteCarloResult:
    """Estimates over ``years`` sampled years."""

    years: int
    seed: int
    failure_rate: np.ndarray        # per load point, mean sustained interruptions / yr
    unavailability_h: np.ndarray    # per load point, mean h / yr
    momentary_rate: np.ndarray
    annual: dict[str, np.ndarray]   # per year: SAIFI, SAIDI, ENS, MAIFI (system), float32

    def standard_error(self, index: str) -> float:
        """Standard error of the mean of an annual system index (its sample std / sqrt(years))."""
        values = self.annual[index].astype(np.float64)
        return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def _zone_weights(effects: FailureEffects) -> dict[str, np.ndarray]:
    """Per fault zone, effect of one failure on the system totals (customers, customer-hours, MWh)."""
    cust = effects.points["customers"].to_numpy(float)
    load = effects.points["load_mw"].to_numpy(float)
    sus = effects.sustained_switched
    timed = effects.switched.multiply(sus).tocsr()
    hit = sus + effects.repaired
    return {"ci": hit @ cust, "chi_switch": timed @ cust, "cust_repair": effects.repaired @ cust,
            "ens_switch": timed @ load, "load_repair": effects.repaired @ load,
            "mom": effects.momentary_switched @ cust}


def _batch(seed_seq: np.random.SeedSequence, n_years: int, params: dict) -> dict:
    """Sample ``n_years`` years; return per-zone failure counts and repair-hour sums, annual indices."""
    rng = np.random.default_rng(seed_seq)
    lam, rep, zone = params["lam"], params["rep"], params["zone"]
    total = lam.sum()
    per_year = rng.poisson(total, size=n_years)
    year = np.repeat(np.arange(n_years), per_year)
    mode = rng.choice(len(lam), size=len(year), p=lam / total)
    dur = rng.exponential(rep[mode]) if params["repair"] == "exponential" else rep[mode]
    z = zone[mode]
    w = params["weights"]
    n_zones = len(w["ci"])
    n_cust = params["customers"]

    def annual(values: np.ndarray) -> np.ndarray:
        return np.bincount(year, weights=values, minlength=n_years)

    return {"counts": np.bincount(z, minlength=n_zones).astype(float),
            "repair_hours": np.bincount(z, weights=dur, minlength=n_zones),
            # float32 keeps millions of sampled years affordable; sums are taken in float64.
            "SAIFI": (annual(w["ci"][z]) / n_cust).astype(np.float32),
            "SAIDI": (annual(w["chi_switch"][z] + dur * w["cust_repair"][z]) / n_cust).astype(np.float32),
            "ENS": annual(w["ens_switch"][z] + dur * w["load_repair"][z]).astype(np.float32),
            "MAIFI": (annual(w["mom"][z]) / n_cust).astype(np.float32)}


def monte_carlo(effects: FailureEffects, years: int = 10_000, seed: int = 0, *, batch_years: int = 5_000,
                client=None, repair: str = "exponential") -> MonteCarloResult:
    """Sample ``years`` years of failures and restorations.

    Parameters
    ----------
    effects : FailureEffects
        From :func:`~citytwin.models.grid.effects.failure_effects`.
    years : int
        Number of simulated years (>= 1).
    seed : int
        Seed of the batch seed sequence.
    batch_years : int
        Years per Dask task.
    client : dask.distributed.Client, optional
        Run the batches on this client; without one, Dask's threaded scheduler.
    repair : {'exponential', 'fixed'}
        Distribution of repair durations (mean = the asset's repair time).
    """
    if int(years) < 1 or int(batch_years) < 1:
        raise InputError(f"years and batch_years must be >= 1 (got {years}, {batch_years})")
    if repair not in REPAIR_DISTRIBUTIONS:
        raise InputError(f"repair distribution must be one of {', '.join(REPAIR_DISTRIBUTIONS)}, not {repair!r}")
    years, batch_years = int(years), int(batch_years)
    n_points = len(effects.points)
    customers = float(effects.points["customers"].sum())
    modes = effects.modes
    if modes.empty or customers <= 0:
        zero = np.zeros(n_points)
        return MonteCarloResult(years, seed, zero, zero.copy(), zero.copy(),
                                {k: np.zeros(years) for k in ("SAIFI", "SAIDI", "ENS", "MAIFI")})
    params = {"lam": modes["failure_rate"].to_numpy(float), "rep": modes["repair_time_h"].to_numpy(float),
              "zone": modes["mode_zone"].to_numpy(np.int64), "weights": _zone_weights(effects),
              "customers": customers, "repair": repair}
    sizes = [batch_years] * (years // batch_years) + ([years % batch_years] if years % batch_years else [])
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))
    parts = _run(seeds, sizes, params, client)
    counts = sum(p["counts"] for p in parts) / years
    repair_hours = sum(p["repair_hours"] for p in parts) / years
    sus = effects.sustained_switched
    timed = effects.switched.multiply(sus).tocsr()
    lam = sus.T @ counts + effects.repaired.T @ counts
    unavail = timed.T @ counts + effects.repaired.T @ repair_hours
    mom = effects.momentary_switched.T @ counts
    annual = {k: np.concatenate([p[k] for p in parts]) for k in ("SAIFI", "SAIDI", "ENS", "MAIFI")}
    return MonteCarloResult(years, seed, np.asarray(lam), np.asarray(unavail), np.asarray(mom), annual)


def _run(seeds, sizes, params, client) -> list[dict]:
    if client is not None:
        # One object (scattering a dict would scatter its values under the dict's keys), under a fresh
        # key per call so that an earlier call releasing the same data cannot race this one.
        [shared] = client.scatter([params], broadcast=True, hash=False)
        futures = client.map(_batch, seeds, sizes, params=shared, pure=False)
        return client.gather(futures)
    import dask

    tasks = [dask.delayed(_batch, pure=True)(s, n, params) for s, n in zip(seeds, sizes)]
    return list(dask.compute(*tasks, scheduler="threads"))
