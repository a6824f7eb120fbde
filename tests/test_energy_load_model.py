"""The IEEE RTS chronological load model: reader, its own peaks, and its use as a building schedule."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from citytwin.errors import InputError
from citytwin.io.load_model import RTS_HOURS, read_load_model, season_of_week
from citytwin.models.energy import AnnualProfile, demand, load_archetypes, synthetic_weather
from _paths import SHARED_DATA

RBTS = SHARED_DATA / "rbts_bus2"


@pytest.fixture(scope="module")
def tables():
    weekly = pd.read_csv(RBTS / "load_model_weekly.csv")["percent_of_annual_peak"].to_numpy() / 100
    daily = pd.read_csv(RBTS / "load_model_daily.csv")["percent_of_weekly_peak"].to_numpy() / 100
    hourly = pd.read_csv(RBTS / "load_model_hourly.csv")
    return weekly, daily, hourly


def test_profile_reproduces_weekly_daily_hourly_peaks(tables):
    weekly, daily, hourly = tables
    profile = read_load_model(RBTS).profile()
    assert profile.shape == (RTS_HOURS,)
    assert profile.max() == pytest.approx(1.0)  # the annual peak: week 51, Tuesday, winter weekday 18:00
    by_week = profile.reshape(52, 7 * 24)
    np.testing.assert_allclose(by_week.max(axis=1), weekly, rtol=1e-12)  # Tuesday (100 %) x 100 % hour
    by_day = profile.reshape(52, 7, 24)
    np.testing.assert_allclose(by_day.max(axis=2), np.outer(weekly, daily), rtol=1e-12)
    # Every hour = week x day x hour of its season (spot checks in each season and day type).
    for week, day, hour, column in (
        (1, 0, 18, "winter_weekday"),
        (20, 5, 21, "summer_weekend"),
        (35, 2, 11, "spring_fall_weekday"),
        (50, 6, 0, "winter_weekend"),
    ):
        expected = weekly[week - 1] * daily[day] * hourly.loc[hour, column] / 100
        assert by_day[week - 1, day, hour] == pytest.approx(expected, rel=1e-12)
    assert season_of_week(np.array([8, 9, 17, 18, 30, 31, 43, 44])).tolist() == [0, 2, 2, 1, 1, 2, 2, 0]


def test_profile_load_factor_matches_rbts_average_over_peak():
    profile = read_load_model(RBTS).profile()
    # IEEE RTS annual load factor 61.44 %; RBTS Bus 2 load points: 12.291 MW average on 20.0006 MW peak.
    points = pd.read_csv(RBTS / "load_points.csv")
    published = points["avg_load_mw"].sum() / points["peak_load_mw"].sum()
    assert profile.mean() == pytest.approx(0.6144, abs=5e-5)
    assert profile.mean() == pytest.approx(published, rel=1e-3)


def test_rts_profile_as_building_schedule(tables):
    weekly, _, _ = tables
    rts = AnnualProfile.from_load_model(read_load_model(RBTS))
    # An archetype whose base electricity follows the RTS profile; no electric HVAC so the
    # building's electricity is exactly that shape.
    arch = load_archetypes(
        [{"use": "residential", "electricity_profile": "ieee_rts", "cooling_electric_share": 0}],
        profiles={"ieee_rts": rts},
    )
    buildings = pd.DataFrame({"source_id": ["h1"], "floor_area_m2": [150.0], "use": ["residential"]})
    ds = demand(buildings, synthetic_weather("temperate"), arch)
    load = ds["electricity"].values[0].astype(np.float64)
    shape = load / load.max()
    np.testing.assert_allclose(shape, rts.values[:8760], rtol=1e-5)
    np.testing.assert_allclose(shape[:RTS_HOURS].reshape(52, 168).max(axis=1), weekly, rtol=1e-5)
    # Annual energy is the archetype's intensity: the shape does not change the total.
    assert load.sum() == pytest.approx(150.0 * 71.4, rel=0.01)


def test_calendar_alignment_uses_real_weekdays():
    model = read_load_model(RBTS)
    time = pd.date_range("2021-01-01", periods=8760, freq="h")  # 1 Jan 2021 is a Friday
    values = model.for_time(time)
    friday = model.weekly[0] * model.daily[4] * model.hourly[0, 0, 18]
    assert values[18] == pytest.approx(friday)


def test_bad_load_model_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_load_model(tmp_path)
    for name in ("weekly", "daily", "hourly"):
        shutil.copy(RBTS / f"load_model_{name}.csv", tmp_path / f"load_model_{name}.csv")
    weekly = pd.read_csv(tmp_path / "load_model_weekly.csv")
    weekly.iloc[:51].to_csv(tmp_path / "load_model_weekly.csv", index=False)
    with pytest.raises(InputError, match="51 rows; expected 52"):
        read_load_model(tmp_path)
    weekly.loc[3, "percent_of_annual_peak"] = 130
    weekly.to_csv(tmp_path / "load_model_weekly.csv", index=False)
    with pytest.raises(InputError, match="week=4 has a value outside"):
        read_load_model(tmp_path)
