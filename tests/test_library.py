"""The bagpipes spectral library: built on a real LocalCluster, cached, deterministic, physical."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from survey_ml.simulate import priors
from survey_ml.simulate.library import (FLUX_SCALE, MAX_ATTEMPTS, TRUTH_COLUMNS, LibraryConfig, _add_gaussian,
                                        _one_galaxy, agn_narrow_lines, build_library, kauffmann03, library_paths,
                                        open_library)

pytest.importorskip("bagpipes")

N = 30
CONFIG = LibraryConfig(n=N, seed=11, block_size=10)


@pytest.fixture(scope="module")
def built(tmp_path_factory, client):
    """The n=30 library, built once for the module, and the wall time it took."""
    cache = tmp_path_factory.mktemp("library-cache")
    start = time.perf_counter()
    lib = build_library(CONFIG, cache_dir=cache, client=client)
    return lib, cache, time.perf_counter() - start


def _spearman(a: pd.Series, b: pd.Series) -> float:
    return float(np.corrcoef(a.rank().to_numpy(), b.rank().to_numpy())[0, 1])


def _mtimes(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- caching and layout
def test_files_are_where_the_digest_says(built):
    lib, cache, _ = built
    zarr_path, parquet = library_paths(CONFIG, cache)
    assert lib.path == zarr_path and lib.truth_path == parquet and parquet.is_file()
    assert zarr_path.name == f"library-{CONFIG.digest()}.zarr"
    flux = zarr.open_array(str(zarr_path / "flux"), mode="r")
    assert flux.shape == (N, CONFIG.n_wave) == (N, 6501) and flux.dtype == np.float32
    assert flux.chunks == (CONFIG.block_size, CONFIG.n_wave)  # one chunk per block task
    group = zarr.open_group(str(zarr_path), mode="r")
    assert group.attrs["config"] == CONFIG.to_dict() and group.attrs["flux_scale"] == FLUX_SCALE
    assert group.attrs["grid"]["medium"] == "vacuum" and group.attrs["grid"]["frame"] == "rest"
    np.testing.assert_array_equal(group["wave"][:], CONFIG.wave())
    np.testing.assert_array_equal(lib.wave, np.arange(2800.0, 9300.5, 1.0))
    assert lib.wave.dtype == np.float64


def test_second_build_returns_the_cache_without_recomputing(built, client):
    lib, cache, first_seconds = built
    assert not lib.cached and lib.build_seconds > 0 and lib.info["n_workers"] == 2
    before = _mtimes(cache)
    start = time.perf_counter()
    again = build_library(CONFIG, cache_dir=cache, client=client)
    seconds = time.perf_counter() - start
    assert again.cached and again.path == lib.path
    assert _mtimes(cache) == before  # not a byte rewritten
    assert seconds < min(2.0, first_seconds / 2)
    assert again.build_seconds == pytest.approx(lib.build_seconds)  # the original build's record
    pd.testing.assert_frame_equal(again.truth, lib.truth)
    # a different block size is the same content: same digest, same cached files
    rechunked = build_library(LibraryConfig(n=N, seed=11, block_size=7), cache_dir=cache, client=client)
    assert rechunked.cached and rechunked.path == lib.path


def test_open_library_and_lazy_reads(built):
    lib, _, _ = built
    opened = open_library(lib.truth_path)
    assert opened.config == CONFIG and opened.cached
    pd.testing.assert_frame_equal(opened.truth, lib.truth)
    full = lib.flux()
    np.testing.assert_array_equal(lib.flux([3, 17]), full[[3, 17]])
    np.testing.assert_array_equal(lib.flux(slice(10, 20)), full[10:20])
    np.testing.assert_array_equal(lib.flux(5), full[5])
    arr = lib.array()
    assert arr.shape == full.shape and arr.chunks[0] == (10, 10, 10)
    np.testing.assert_allclose(arr[::7].compute(), full[::7], rtol=0)


# --------------------------------------------------------------------------- contents
def test_truth_table_columns_and_dtypes(built):
    truth = built[0].truth
    assert list(truth.columns) == list(TRUTH_COLUMNS)
    assert {c: str(t) for c, t in truth.dtypes.items()} == {c: str(pd.Series(dtype=t).dtype)
                                                             for c, t in TRUTH_COLUMNS.items()}
    assert truth["row"].tolist() == list(range(N))
    assert truth["population"].value_counts().to_dict() == {
        p: c for p, c in priors.population_counts(N).items() if c}
    assert truth["ok"].all() and (truth["attempt"] == 0).all() and (truth["message"] == "").all()
    assert set(truth["bpt_class"]) <= {"sf", "composite", "agn", "passive"}
    assert (truth["starforming"] == (truth["bpt_class"] == "sf")).all()
    np.testing.assert_allclose(truth["oh12"], 8.69 + np.log10(truth["metallicity"]))


def test_spectra_are_finite_with_positive_continuum(built):
    lib, _, _ = built
    flux = lib.flux()
    assert np.isfinite(flux).all() and (flux > 0).all()
    # L_lambda at 5500 A of 10^9-10^12 Msun galaxies: 1e37-1e42 erg/s/A
    l5500 = flux[:, np.searchsorted(lib.wave, 5500.0)]
    assert ((l5500 > 1e37) & (l5500 < 1e42)).all()
    # bagpipes is run per Msun formed and scaled: the drawn living mass is exact
    assert (lib.truth["log_mformed"] > lib.truth["log_mstar"]).all()


def test_star_forming_line_ratios_follow_metallicity(built):
    truth = built[0].truth
    sf = truth[truth["population"] == "star_forming"]
    assert len(sf) >= 15
    assert (sf["bpt_class"] == "sf").mean() >= 0.8  # the logU prior puts them below Kauffmann
    rows = sf[sf["bpt_class"] == "sf"]
    assert _spearman(rows["oh12"], rows["log_nii_ha"]) > 0.7
    assert _spearman(rows["oh12"], rows["log_oiii_hb"]) < -0.7
    assert (rows["ha_ew"] > 3.0).all()


def test_passive_rows_have_no_halpha(built):
    truth = built[0].truth
    quiet = truth[truth["population"].isin(["passive", "post_starburst"])]
    assert len(quiet) >= 5
    assert (quiet["ha_ew"] < 3.0).all() and (quiet["bpt_class"] == "passive").all()
    assert not quiet["starforming"].any()


def test_agn_rows_sit_above_kauffmann(built):
    truth = built[0].truth
    agn = truth[truth["population"].isin(["composite", "agn"])]
    assert len(agn) >= 6
    active = agn[agn["bpt_class"] != "passive"]
    assert len(active) >= 6
    x, y = active["log_nii_ha"].to_numpy(), active["log_oiii_hb"].to_numpy()
    assert ((x >= 0.05) | (y > kauffmann03(x))).all()
    assert not active["starforming"].any()
    # the AGN contributes exactly the drawn fraction of the total H-alpha
    np.testing.assert_allclose(agn["ha_agn"] / agn["ha"], agn["agn_frac"], rtol=1e-9)
    np.testing.assert_allclose(agn["ha_host"] + agn["ha_agn"], agn["ha"], rtol=1e-12)


def test_library_mzr_scatter(built):
    truth = built[0].truth
    sf = truth[(truth["population"] == "star_forming") & (truth["metallicity"] < priors.Z_RANGE[1])]
    resid = sf["oh12"] - priors.tremonti_oh12(sf["log_mstar"])
    assert len(sf) >= 10 and 0.04 < resid.std() < 0.2 and abs(resid.mean()) < 0.1


# --------------------------------------------------------------------------- determinism
def test_same_seed_same_library_whatever_the_split(tmp_path_factory, client):
    small = dict(n=6, seed=2024)
    a = build_library(LibraryConfig(**small, block_size=3), cache_dir=tmp_path_factory.mktemp("a"), client=client)
    b = build_library(LibraryConfig(**small, block_size=6), cache_dir=tmp_path_factory.mktemp("b"), client=False)
    assert not a.cached and not b.cached and a.path.name == b.path.name
    np.testing.assert_array_equal(zarr.open_array(str(a.path / "flux"))[:], zarr.open_array(str(b.path / "flux"))[:])
    pd.testing.assert_frame_equal(a.truth.drop(columns="seconds"), b.truth.drop(columns="seconds"))
    other = priors.draw_library_parameters(6, seed=2025)
    assert not np.allclose(other["log_mstar"], a.truth["log_mstar"])


def test_interrupted_build_is_recomputed(tmp_path_factory, client):
    cache = tmp_path_factory.mktemp("interrupted")
    config = LibraryConfig(n=4, seed=5, block_size=2)
    first = build_library(config, cache_dir=cache, client=client)
    first.truth_path.unlink()  # as if killed before the commit record was written
    again = build_library(config, cache_dir=cache, client=client)
    assert not again.cached and again.truth_path.is_file()
    np.testing.assert_array_equal(again.flux(), first.flux())


class _BrokenModel:
    """Stands in for a bagpipes model that fails on every galaxy."""

    def update(self, components):
        raise RuntimeError("grid interpolation failed")


def test_a_failing_spectrum_is_redrawn_then_flagged():
    params = priors.draw_library_parameters(3, seed=1).iloc[2].to_dict()
    wave = CONFIG.wave()
    flux, truth = _one_galaxy(_BrokenModel(), params, 1, wave, slice(100, 100 + wave.size))
    assert not truth["ok"] and truth["bpt_class"] == "failed" and truth["attempt"] == MAX_ATTEMPTS - 1
    assert truth["message"].count("grid interpolation failed") == MAX_ATTEMPTS
    assert truth["population"] == params["population"] and (flux == 0).all()
    redrawn = priors.draw_parameters(params["population"], priors.row_rng(1, 2, MAX_ATTEMPTS - 1))
    assert truth["log_mstar"] == redrawn["log_mstar"]  # redraws are deterministic


# --------------------------------------------------------------------------- priors and recipe
@pytest.fixture(scope="module")
def drawn() -> pd.DataFrame:
    return priors.draw_library_parameters(4000, seed=3)


def test_priors_respect_their_ranges(drawn):
    for pop, (_, _, lo, hi) in priors.MASS_PRIORS.items():
        assert drawn.loc[drawn["population"] == pop, "log_mstar"].between(lo, hi).all()
    for host, prior in priors.SFH_PRIORS.items():
        rows = drawn[drawn["host"] == host]
        assert len(rows) > 50
        assert rows["age_gyr"].between(*prior["age"]).all() and (rows["age_gyr"] < 13.0).all()
        assert (rows["age_gyr"] / rows["tau_gyr"]).between(*prior["age_over_tau"]).all()
    psb = drawn[drawn["population"] == "post_starburst"]
    assert psb["burst_age_gyr"].between(*priors.BURST_AGE).all() and psb["burst_frac"].between(*priors.BURST_FRAC).all()
    assert (drawn.loc[drawn["population"] != "post_starburst", "burst_frac"] == 0).all()
    assert drawn["metallicity"].between(*priors.Z_RANGE).all() and drawn["logu"].between(*priors.LOGU_RANGE).all()
    assert drawn["av"].between(0.0, 2.0).all() and drawn["veldisp_kms"].between(30.0, 400.0).all()
    for pop, bounds in priors.AGN_FRAC.items():
        assert drawn.loc[drawn["population"] == pop, "agn_frac"].between(*bounds).all()
    active = drawn[drawn["agn_type"] != "none"]
    assert set(active["population"]) == {"composite", "agn"} and active["agn_sigma_kms"].between(*priors.AGN_SIGMA).all()
    for agn_type, ratios in priors.AGN_RATIOS.items():
        rows = active[active["agn_type"] == agn_type]
        for name, (mean, sigma) in ratios.items():
            assert rows[f"agn_{name}"].between(mean - 3 * sigma, mean + 3 * sigma).all()
            assert abs(rows[f"agn_{name}"].mean() - mean) < 0.05
    agn = drawn[drawn["population"] == "agn"]
    liners = agn[agn["agn_type"] == "liner"]
    assert 0.5 < len(liners) / len(agn) < 0.7 and (liners["host"] == "old_agn_host").mean() > 0.7
    # every numeric prior in the table bounds what was drawn: each parameter's draws (where it applies)
    # lie inside the envelope of its table rows, and the rows' ranges are the module's own
    columns = {"age_gyr / tau_gyr": drawn["age_gyr"] / drawn["tau_gyr"]}
    applies = {"burst_age_gyr": drawn["population"] == "post_starburst",
               "burst_frac": drawn["population"] == "post_starburst",
               "agn_frac": drawn["agn_type"] != "none", "agn_sigma_kms": drawn["agn_type"] != "none",
               **{f"agn_{name}": drawn["agn_type"] != "none" for name in ("log_nii_ha", "log_oiii_hb",
                                                                          "log_oii_oiii", "log_sii_ha")}}
    envelope: dict[str, tuple[float, float]] = {}
    for row in priors.PRIORS:
        if np.isnan(row["low"]) and np.isnan(row["high"]):
            continue
        assert row["low"] <= row["high"], row
        name = row["parameter"] if row["parameter"] in columns else row["parameter"].split(" ")[0]
        lo, hi = envelope.get(name, (np.inf, -np.inf))
        envelope[name] = (min(lo, row["low"]), max(hi, row["high"]))
    assert len(envelope) == 16
    for name, (lo, hi) in envelope.items():
        values = columns.get(name, drawn.get(name))
        values = values[applies.get(name, np.ones(len(drawn), bool))]
        # (1e-9: a 3-sigma clip of N(0.8, 0.2) ends at 1.4000000000000001, the table rounds it to 1.4)
        assert len(values) > 50 and values.between(lo - 1e-9, hi + 1e-9).all(), (name, values.min(), values.max())
    assert envelope["log_mstar"] == (min(p[2] for p in priors.MASS_PRIORS.values()),
                                     max(p[3] for p in priors.MASS_PRIORS.values()))
    assert envelope["metallicity"] == priors.Z_RANGE and envelope["logu"] == priors.LOGU_RANGE
    assert envelope["burst_age_gyr"] == priors.BURST_AGE and envelope["burst_frac"] == priors.BURST_FRAC


def test_priors_table_markdown():
    table = priors.priors_table_markdown().splitlines()
    assert len(table) == len(priors.PRIORS) + 2
    assert table[0] == "| parameter | population | distribution | range | reference |"
    assert all(line.startswith("| ") and line.endswith(" |") for line in table[2:])


def test_mzr_scatter_of_the_prior(drawn):
    sf = drawn[(drawn["population"] == "star_forming") & (drawn["metallicity"] < priors.Z_RANGE[1])
               & (drawn["metallicity"] > priors.Z_RANGE[0])]
    resid = sf["oh12"] - priors.tremonti_oh12(sf["log_mstar"])
    assert abs(resid.mean()) < 0.02 and 0.085 < resid.std() < 0.105
    # logU falls with Z (Dopita et al. 2006 direction)
    assert _spearman(drawn["metallicity"], drawn["logu"]) < -0.2


def test_agn_recipe_ratios_and_gaussians():
    params = {"agn_type": "seyfert", "agn_frac": 0.5, "av": 0.0, "agn_log_nii_ha": 0.0, "agn_log_oiii_hb": 0.8,
              "agn_log_oii_oiii": -0.5, "agn_log_sii_ha": -0.3}
    lines = agn_narrow_lines(params, host_ha=1e40)
    assert lines["ha"] == pytest.approx(1e40) and lines["ha"] / lines["hb"] == pytest.approx(3.1)
    assert lines["oiii5007"] / lines["hb"] == pytest.approx(10**0.8) and lines["nii6584"] == pytest.approx(1e40)
    dusty = agn_narrow_lines({**params, "av": 1.0}, host_ha=1e40)
    assert dusty["ha"] == pytest.approx(1e40)  # the observed fraction is what is fixed
    assert dusty["ha"] / dusty["hb"] > 3.1 * 1.3  # Calzetti reddens the Balmer decrement
    assert agn_narrow_lines({**params, "agn_type": "none"}, 1e40)["ha"] == 0.0
    wave = CONFIG.wave()
    flux = np.zeros_like(wave)
    _add_gaussian(wave, flux, 6564.61, 5.0, 300.0)
    assert flux.sum() * CONFIG.wave_step == pytest.approx(5.0, rel=1e-9)
    assert wave[np.argmax(flux)] == 6565.0
