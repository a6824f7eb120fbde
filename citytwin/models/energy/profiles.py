"""Per-m2 hourly demand profiles of each archetype, calibrated against the reference weather.

For an archetype with annual intensities E (electricity), Q_h (heating), Q_c (cooling), kWh/m2/yr,
under the reference weather (subscript ref), at hour t:

    s_b(t) = l L(t) + p P(t) + (1 - l - p)              base-electricity shape [-]
             (or an annual profile, e.g. the IEEE RTS load model, in place of l L + p P + ...)
    a(t)   = f + (1 - f) O(t) / max O                   HVAC availability [-], setback f
    HDH(t) = max(T_h - T(t), 0),  CDH(t) = max(T(t) - T_c, 0)       degree-hours [K h]

    U_h = 1000 Q_h / sum_ref a HDH                      heat-loss coefficient [W/(m2 K)]
    U_c = 1000 Q_c / sum_ref a CDH                      cooling coefficient [W/(m2 K)]
    E_b = E - x_h Q_h / COP_h - x_c Q_c / COP_c         base electricity [kWh/m2/yr]

    q_h(t) = U_h a(t) HDH(t) / 1000                     heating [kW/m2]
    q_c(t) = U_c a(t) CDH(t) / 1000                     cooling [kW/m2]
    e(t)   = E_b s_b(t) / sum_ref s_b + x_h q_h(t) / COP_h + x_c q_c(t) / COP_c     electricity [kW/m2]

with L, P, O the lighting, plug and occupancy schedules, l, p their shares, x the electric shares.
Summed over the reference year (1 h steps, so kW -> kWh) q_h, q_c and e return Q_h, Q_c and E
exactly: the degree-hour method (CIBSE TM41; ISO 13790 would be the next step up) with the
archetype's published intensity as the calibration target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from citytwin.errors import InputError
from citytwin.models.energy.schedules import AnnualProfile, DailySchedule
from citytwin.models.energy.weather import PreparedWeather, cooling_degree_hours, heating_degree_hours


@dataclass(frozen=True)
class UnitProfiles:
    """Hourly demand per m2 of floor area, one row per archetype, kW/m2 (float32)."""

    base: np.ndarray  # (A, T) base electricity (lighting, plugs, flat loads)
    hvac_electric: np.ndarray  # (A, T) electricity of heating + cooling (electric shares / COPs)
    heating: np.ndarray  # (A, T)
    cooling: np.ndarray  # (A, T)

    @property
    def electricity(self) -> np.ndarray:
        return self.base + self.hvac_electric


def shapes(
    row: pd.Series,
    schedules: dict[str, dict[str, DailySchedule]],
    annual: dict[str, AnnualProfile],
    time: pd.DatetimeIndex,
) -> tuple[np.ndarray, np.ndarray]:
    """Base-electricity shape s_b and HVAC availability a of one archetype row at ``time``."""
    family = schedules[row["schedule"]]
    occupancy = family["occupancy"].expand(time)
    peak = occupancy.max()
    setback = float(row["hvac_setback"])
    availability = setback + (1.0 - setback) * (occupancy / peak if peak > 0 else 1.0)
    profile_name = row.get("electricity_profile")
    if isinstance(profile_name, str) and profile_name:
        base = annual[profile_name].expand(time)
    else:
        lighting, plug = float(row["lighting_share"]), float(row["plug_share"])
        base = (
            lighting * family["lighting"].expand(time)
            + plug * family["plug"].expand(time)
            + (1.0 - lighting - plug)
        )
    return base, np.broadcast_to(availability, time.shape).astype(np.float64)


def calibrate(table: pd.DataFrame, schedules: dict, annual: dict, reference: PreparedWeather) -> pd.DataFrame:
    """Coefficients that make every archetype reproduce its intensities under ``reference``.

    Returns
    -------
    DataFrame indexed like ``table`` with heating_kwh_m2, cooling_kwh_m2 (given, or derived from a
    user's heat_loss_w_m2k / cooling_coefficient_w_m2k), heat_loss_w_m2k, cooling_coefficient_w_m2k,
    base_electricity_kwh_m2 and base_shape_sum (sum_ref s_b, h).

    Raises
    ------
    InputError
        An archetype needs heating (cooling) but the reference weather never falls below (rises
        above) its base temperature, or its electric HVAC share exceeds its electricity figure.
    """
    out = []
    t = reference.temperature
    for arch_id, row in table.iterrows():
        base, avail = shapes(row, schedules, annual, reference.time)
        hdh = float((avail * heating_degree_hours(t, row["heating_base_c"])).sum())
        cdh = float((avail * cooling_degree_hours(t, row["cooling_base_c"])).sum())
        heat, cool = float(row["heating_kwh_m2"]), float(row["cooling_kwh_m2"])
        u_h, u_c = (
            float(row.get("heat_loss_w_m2k", np.nan)),
            float(row.get("cooling_coefficient_w_m2k", np.nan)),
        )
        if np.isnan(heat):  # user gave the heat-loss coefficient instead of the intensity
            heat = u_h * hdh / 1000.0
        if np.isnan(cool):
            cool = u_c * cdh / 1000.0
        for kind, demand, dh, base_c in (
            ("heating", heat, hdh, row["heating_base_c"]),
            ("cooling", cool, cdh, row["cooling_base_c"]),
        ):
            if demand > 0 and dh <= 0:
                raise InputError(
                    f"archetype {arch_id!r}: {kind} of {demand:g} kWh/m2/yr, but the reference "
                    f"weather has no {kind} degree-hours against {base_c:g} degC"
                )
        u_h = 1000.0 * heat / hdh if hdh > 0 else 0.0
        u_c = 1000.0 * cool / cdh if cdh > 0 else 0.0
        hvac_el = (
            row["heating_electric_share"] * heat / row["heating_cop"]
            + row["cooling_electric_share"] * cool / row["cooling_cop"]
        )
        base_e = float(row["electricity_kwh_m2"]) - hvac_el
        if base_e < -1e-9:
            raise InputError(
                f"archetype {arch_id!r}: electricity {row['electricity_kwh_m2']:g} kWh/m2/yr is less "
                f"than the electricity of its electric heating/cooling ({hvac_el:.1f}); raise the "
                "figure, the COPs, or lower the electric shares"
            )
        out.append(
            {
                "heating_kwh_m2": heat,
                "cooling_kwh_m2": cool,
                "heat_loss_w_m2k": u_h,
                "cooling_coefficient_w_m2k": u_c,
                "base_electricity_kwh_m2": max(base_e, 0.0),
                "base_shape_sum": float(base.sum()),
            }
        )
    return pd.DataFrame(out, index=table.index)


def unit_profiles(
    table: pd.DataFrame, schedules: dict, annual: dict, weather: PreparedWeather
) -> UnitProfiles:
    """kW/m2 profiles of every archetype row of a calibrated ``table`` under ``weather``."""
    n, length = len(table), len(weather.time)
    base = np.empty((n, length), np.float64)
    hvac = np.empty_like(base)
    heating = np.empty_like(base)
    cooling = np.empty_like(base)
    t = weather.temperature
    for i, (_, row) in enumerate(table.iterrows()):
        shape, avail = shapes(row, schedules, annual, weather.time)
        heating[i] = row["heat_loss_w_m2k"] / 1000.0 * avail * heating_degree_hours(t, row["heating_base_c"])
        cooling[i] = (
            row["cooling_coefficient_w_m2k"] / 1000.0 * avail * cooling_degree_hours(t, row["cooling_base_c"])
        )
        base[i] = row["base_electricity_kwh_m2"] * shape / row["base_shape_sum"]
        hvac[i] = (
            row["heating_electric_share"] / row["heating_cop"] * heating[i]
            + row["cooling_electric_share"] / row["cooling_cop"] * cooling[i]
        )
    f32 = np.float32
    return UnitProfiles(base.astype(f32), hvac.astype(f32), heating.astype(f32), cooling.astype(f32))
