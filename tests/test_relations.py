"""MZR fit: recovers an injected quadratic, honest bootstrap errors, a plot on disk."""
from __future__ import annotations

import numpy as np
import pytest

from survey_ml.relations.mzr import TREMONTI04, fit_mzr, plot_mzr, quadratic, running_median


def test_recovers_injected_relation_within_bootstrap_errors(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(8.6, 11.4, 4000)
    y = quadratic(TREMONTI04, x) + rng.normal(0, 0.1, x.size)
    fit = fit_mzr(x, y, n_boot=300)
    grid = np.linspace(9.0, 11.0, 21)
    assert np.max(np.abs(fit(grid) - quadratic(TREMONTI04, grid))) < 0.01
    assert np.all(np.abs(fit.coeffs - np.array(TREMONTI04)) < 4 * fit.coeffs_err)
    assert fit.scatter == pytest.approx(0.1, abs=0.005) and fit.n == 4000
    assert np.nanmax(np.abs(fit.bins["median"] - quadratic(TREMONTI04, fit.bins["centres"]))) < 0.03
    assert "Tremonti" not in fit.summary() and "N = 4000" in fit.summary()
    png = plot_mzr(fit, x, y, tmp_path / "mzr.png", truth=TREMONTI04)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bootstrap_errors_match_the_spread_of_independent_samples():
    rng = np.random.default_rng(2)
    fits = []
    for _ in range(40):
        x = rng.uniform(8.6, 11.4, 500)
        fits.append(fit_mzr(x, quadratic(TREMONTI04, x) + rng.normal(0, 0.1, x.size), n_boot=200))
    at10 = np.array([f(10.0) for f in fits])
    boot = np.mean([np.interp(10.0, f.x_grid, f.curve_err) for f in fits])
    assert 0.7 < at10.std() / boot < 1.4


def test_range_and_bad_values():
    x = np.array([8.0, 9.0, 9.5, 10.0, 10.5, 12.0, np.nan])
    y = np.array([8.0, 8.6, 8.8, 9.0, 9.05, 9.3, 9.0])
    fit = fit_mzr(x, y, n_boot=10)
    assert fit.n == 4
    with pytest.raises(ValueError, match="at least 4"):
        fit_mzr(x[:3], y[:3])
    centres, median, *_ , count = running_median(x, y, np.array([8.5, 9.75, 11.0]), min_count=2)
    assert count.tolist() == [2, 2] and median.tolist() == [8.7, 9.025]
