"""ASHRAE Guideline 14 calibration statistics against analytical cases."""

from __future__ import annotations

import numpy as np
import pytest

from citytwin.errors import InputError
from citytwin.models.energy import ashrae14


def test_perfect_model_is_calibrated():
    m = np.linspace(1, 100, 8760)
    assert ashrae14(m, m) == {"n": 8760, "cv_rmse_pct": 0.0, "nmbe_pct": 0.0, "calibrated": True}


def test_uniform_over_prediction_gives_negative_bias():
    n = 8760
    m = np.full(n, 10.0)
    result = ashrae14(m, 1.05 * m)
    # residual -0.5 every hour: NMBE = -5 n/(n-1) %, CV(RMSE) = 5 sqrt(n/(n-1)) %.
    assert result["nmbe_pct"] == pytest.approx(-5 * n / (n - 1))
    assert result["cv_rmse_pct"] == pytest.approx(5 * np.sqrt(n / (n - 1)))
    assert result["calibrated"]
    assert not ashrae14(m, 1.12 * m)["calibrated"]  # |NMBE| 12 % > 10 %
    assert not ashrae14(m, 1.07 * m, monthly=True)["calibrated"]  # monthly limit 5 %


def test_scatter_without_bias_fails_on_cv_rmse():
    rng = np.random.default_rng(0)
    m = np.full(8760, 10.0)
    s = m + rng.choice([-4.0, 4.0], size=m.size)  # +-40 %: no bias on average, CV(RMSE) ~ 40 %
    result = ashrae14(m, s)
    assert abs(result["nmbe_pct"]) < 2 and result["cv_rmse_pct"] == pytest.approx(40, rel=1e-3)
    assert not result["calibrated"]


def test_nan_pairs_are_skipped_and_bad_input_named():
    m = np.array([1.0, np.nan, 3.0, 4.0])
    assert ashrae14(m, [1.0, 2.0, np.nan, 4.0])["n"] == 2
    with pytest.raises(InputError, match="differ in length"):
        ashrae14([1, 2, 3], [1, 2])
    with pytest.raises(InputError, match="average to 0"):
        ashrae14([0, 0, 0], [1, 1, 1])
    with pytest.raises(InputError, match="more than 1 paired values"):
        ashrae14([1.0], [1.0])
