"""The ``broad`` prior set and the randomised instrument: domain randomisation for training (issue 15)."""
from __future__ import annotations

import numpy as np
import pytest

from survey_ml.simulate import priors
from survey_ml.simulate.library import LibraryConfig, _components
from survey_ml.simulate.observe import LamostInstrument, observe_lamost


def _star_forming(n: int = 3000, seed: int = 5):
    return [priors.draw_broad_parameters("star_forming", priors.row_rng(seed, i)) for i in range(n)]


def test_logu_is_independent_of_metallicity_and_fills_its_range():
    draws = _star_forming()
    oh12 = np.array([d["oh12"] for d in draws])
    logu = np.array([d["logu"] for d in draws])
    assert abs(np.corrcoef(oh12, logu)[0, 1]) < 0.05
    lo, hi = priors.BROAD["logu"]
    assert logu.min() < lo + 0.05 and logu.max() > hi - 0.05
    # metallicity is flat, not tied to a mass-metallicity relation
    mass = np.array([d["log_mstar"] for d in draws])
    assert abs(np.corrcoef(mass, oh12)[0, 1]) < 0.05
    counts, _ = np.histogram(oh12, bins=5, range=priors.BROAD["oh12"])
    assert counts.min() > 0.8 * counts.mean()


def test_every_sfh_family_dust_slope_and_stellar_offset_is_drawn():
    draws = _star_forming()
    families = {d["sfh"] for d in draws}
    assert families == set(priors.SFH_FAMILIES)
    delta = np.array([d["dust_delta"] for d in draws])
    assert delta.min() < -0.6 and delta.max() > 0.3
    offset = np.log10([d["stellar_metallicity"] / d["metallicity"] for d in draws])
    assert np.median(offset) < -0.1 and offset.max() <= 0.1 + 1e-9
    assert np.mean([d["burst_frac"] > 0 for d in draws]) == pytest.approx(priors.BROAD["p_burst"], abs=0.03)


def test_broad_components_use_one_live_sfh_and_salim_dust():
    p = {"row": 0, "attempt": 0, **priors.draw_broad_parameters("star_forming", priors.row_rng(1, 2))}
    comp = _components(p)
    live = [f for f in priors.SFH_FAMILIES if comp[f]["massformed"] > -10]
    assert live == [p["sfh"]]
    assert comp["dust"]["type"] == "Salim" and comp["dust"]["delta"] == p["dust_delta"]
    assert comp["nebular"]["metallicity"] == p["metallicity"]
    assert comp[p["sfh"]]["metallicity"] == p["stellar_metallicity"]


def test_survey_library_digest_is_unchanged_by_prior_sets():
    # the shipped metallicity recipe was trained on library-208bfb5f2f787a43 (weights/metallicity.json)
    assert LibraryConfig(n=16000, seed=1).digest() == "208bfb5f2f787a43"
    assert LibraryConfig(n=16000, seed=1, priors="broad").digest() != "208bfb5f2f787a43"
    with pytest.raises(ValueError, match="prior set"):
        LibraryConfig(n=10, priors="narrow")


def test_randomised_instrument_draws_resolution_per_spectrum_and_default_is_unchanged():
    wave = np.arange(2000.0, 10000.0, 1.0)
    lum = 1e40 * (1.0 + 0.1 * np.sin(wave / 300.0))
    spec_a, rec_a = observe_lamost(wave, lum, 0.1, 10.0, np.random.default_rng(3), 1)
    spec_b, _ = observe_lamost(wave, lum, 0.1, 10.0, np.random.default_rng(3), 1, LamostInstrument())
    assert rec_a["resolution"] == 1800.0 and np.array_equal(spec_a.flux, spec_b.flux)
    inst = LamostInstrument.randomised()
    resolutions = {observe_lamost(wave, lum, 0.1, 10.0, np.random.default_rng(s), 1, inst)[1]["resolution"]
                   for s in range(5)}
    assert len(resolutions) == 5 and all(1400.0 <= r <= 2300.0 for r in resolutions)
