"""Tully-Fisher: asymmetric drift, the mean outer dispersion, LtsFit recovery of an injected relation
with outliers, and the plots."""
from __future__ import annotations

import doctest

import numpy as np
import pytest

from survey_ml.relations import tfr
from survey_ml.relations.tfr import (TFR_LITERATURE, TFR_PUBLISHED, TFRFit, asymmetric_drift, fit_tfr, mean_dispersion,
                                     plot_tfr)

PNG = b"\x89PNG\r\n\x1a\n"


def test_docstring_examples_run():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for function in (asymmetric_drift, mean_dispersion):
        for test in finder.find(function, globs={"np": np, **vars(tfr)}):
            runner.run(test)
    assert runner.failures == 0 and runner.tries >= 4


def test_asymmetric_drift():
    assert asymmetric_drift(180.0, 25.0, 2.0, 4.0) == pytest.approx(180.0)          # r_max = r_scale / 2: none
    assert asymmetric_drift(180.0, 0.0, 10.0, 2.0) == pytest.approx(180.0)
    vmax = np.array([[100.0], [200.0]])
    out = asymmetric_drift(vmax, np.array([10.0, 30.0, 50.0]), 6.0, 2.0)             # broadcasts
    assert out.shape == (2, 3)
    assert np.allclose(out, np.sqrt(vmax**2 + np.array([10.0, 30.0, 50.0]) ** 2 * 5.0))
    with np.errstate(all="raise"):
        assert np.isnan(asymmetric_drift(10.0, 50.0, 0.1, 4.0))                      # negative square -> NaN
        assert np.isnan(asymmetric_drift(np.nan, 50.0, 5.0, 4.0))


def test_mean_dispersion_between_two_re_and_r_max():
    y, x = np.mgrid[-20:21, -20:21] * 0.5
    radius = np.hypot(x, y)
    dispersion = 80.0 - 4.0 * radius                                                 # falls outwards
    good = radius <= 8.0
    ring = good & (radius >= 4.0)
    assert mean_dispersion(radius, dispersion, good, r_e=2.0) == pytest.approx(dispersion[ring].mean())
    inner = good & (radius >= 3.0) & (radius <= 6.0)
    assert mean_dispersion(radius, dispersion, good, r_e=4.0, r_max=6.0) == pytest.approx(dispersion[inner].mean())
    holes = np.where(radius > 7.0, np.nan, dispersion)                               # NaN spaxels are skipped
    assert np.isfinite(mean_dispersion(radius, holes, good, r_e=2.0))
    assert np.isnan(mean_dispersion(radius, dispersion, np.zeros_like(good), r_e=2.0))


def _mock_tfr(rng, n=500, slope=0.258, intercept=2.265, pivot=10.09, sig_int=0.04, x_err=0.1, y_err=0.03,
              outlier_fraction=0.05):
    """Reverse TFR: log M* with errors, log Vmax with errors and intrinsic scatter, and gross outliers."""
    x_true = rng.normal(pivot, 0.5, n)
    y = intercept + slope * (x_true - pivot) + rng.normal(0, sig_int, n) + rng.normal(0, y_err, n)
    x = x_true + rng.normal(0, x_err, n)
    outlier = np.zeros(n, dtype=bool)
    outlier[rng.choice(n, int(round(outlier_fraction * n)), replace=False)] = True
    y[outlier] += rng.choice([-1.0, 1.0], outlier.sum()) * rng.uniform(0.35, 0.8, outlier.sum())
    return x, y, np.full(n, x_err), np.full(n, y_err), outlier


def test_fit_tfr_recovers_an_injected_relation_and_clips_the_outliers(tmp_path):
    rng = np.random.default_rng(11)
    x, y, x_err, y_err, outlier = _mock_tfr(rng)
    x[3], y[4] = np.nan, np.inf                                                      # left out, not clipped
    state = np.random.get_state()[1].copy()
    fit = fit_tfr(x, y, x_err, y_err)                                                # reverse, pivot 10.09
    assert np.array_equal(np.random.get_state()[1], state)                           # caller's RNG untouched
    assert isinstance(fit, TFRFit) and fit.kind == "reverse" and fit.pivot == 10.09
    assert abs(fit.slope - 0.258) < 3 * fit.slope_err and fit.slope_err < 0.02
    assert abs(fit.intercept - 2.265) < 3 * fit.intercept_err and fit.intercept_err < 0.01
    assert fit.sig_int == pytest.approx(0.04, abs=3 * fit.sig_int_err + 0.005)
    finite = np.isfinite(x) & np.isfinite(y)
    assert not (fit.used | fit.clipped)[~finite].any() and np.array_equal(fit.used | fit.clipped, finite)
    assert fit.n + fit.n_clipped == 498 and fit.n == fit.used.sum()
    assert np.mean(fit.clipped[outlier & finite]) >= 0.9                             # the outliers are flagged
    assert np.mean(fit.clipped[~outlier & finite]) < 0.04                            # and few good points are
    assert fit.rms == pytest.approx(np.std(y[fit.used] - fit(x[fit.used])), rel=0.05)
    assert "N = " in fit.summary() and "clipped" in fit.summary()
    png = plot_tfr(fit, x, y, tmp_path / "tfr_reverse.png", truth=(0.258, 2.265))
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000


@pytest.mark.parametrize("kind", ["forward", "r_band"])
def test_other_kinds_use_their_pivot_and_plot(kind, tmp_path):
    rng = np.random.default_rng(3)
    published = TFR_PUBLISHED[kind]
    x = rng.normal(2.2, 0.15, 120)
    y = published(x) + rng.normal(0, 0.2, x.size)
    fit = fit_tfr(x, y, 0.02, 0.1, kind=kind, frac=1.0)                              # frac=1: no clipping, fast
    assert fit.pivot == 2.256 and fit.n_clipped == 0
    assert abs(fit.slope - published.slope) < 4 * fit.slope_err
    assert abs(fit.intercept - published.intercept) < 4 * fit.intercept_err
    png = plot_tfr(fit, x, y, tmp_path / f"tfr_{kind}.png")
    assert png.read_bytes()[:8] == PNG


def test_published_relations_and_bad_input():
    assert TFR_PUBLISHED["reverse"](10.09) == 2.265 and TFR_PUBLISHED["forward"].slope == 3.013
    assert TFR_PUBLISHED["r_band"].slope == -5.290 and TFR_PUBLISHED["r_band"].intercept == 19.708
    assert TFR_LITERATURE["Bloom et al. 2017 (SAMI)"] == (0.310, 2.198)
    x = np.linspace(9, 11, 20)
    with pytest.raises(ValueError, match="kind"):
        fit_tfr(x, x, 0.1, 0.1, kind="sideways")
    with pytest.raises(ValueError, match="at least 5"):
        fit_tfr(x[:4], x[:4], 0.1, 0.1)
    with pytest.raises(ValueError, match="errors"):
        fit_tfr(x, x, 0.0, 0.0)
