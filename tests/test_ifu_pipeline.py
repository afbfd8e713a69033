"""run-catalog sami-dr3 end to end on a real LocalCluster: a small mock release -> kinematic catalog + TFR."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from survey_ml.dask.blocks import catalog_columns
from survey_ml.tasks.kinematics import FLAG, Kinematics
from survey_ml.dask.runner import run_catalog
from survey_ml.simulate.ifu import TFR_INJECTED


@pytest.fixture(scope="module")
def sami_mock(tmp_path_factory, client):
    from survey_ml.simulate.ifu import simulate_ifu_release

    root = tmp_path_factory.mktemp("sami")
    return simulate_ifu_release(root / "mock", 60, survey="sami", seed=5, client=client)


def test_run_catalog_sami_gives_a_kinematic_catalog_and_resumes(sami_mock, tmp_path, client):
    out = tmp_path / "run"
    report = run_catalog("sami-dr3", input=sami_mock.root, out=out, client=client, progress=False)
    catalog = pd.read_parquet(report.catalog_dir)
    truth = pd.read_parquet(sami_mock.truth)
    assert len(catalog) == report.n_rows == len(truth) == 60
    assert list(catalog.columns) == [c.name for c in catalog_columns("maps", [Kinematics()])]
    prepared = catalog["status"] == "ok"
    assert prepared.sum() >= 15
    ok = catalog[prepared]
    assert np.isfinite(ok[["vmax_kms", "vmax_kms_err", "v22_kms", "inclination_deg", "pa_deg"]].to_numpy()).all()
    assert (ok["vmax_kms_err"] > 0).all()                  # Monte Carlo dropout spread
    assert (catalog.loc[~prepared, "kin_flag"] & FLAG["NOT_PREPARED"]).all()
    assert ((ok["inclination_deg"] < 30) == ((ok["kin_flag"] & FLAG["LOW_INCLINATION"]) > 0)).all()
    # masses joined from the catalogue: the mock's truth
    by_id = truth.assign(id=truth["catid"].astype(str)).set_index("id")
    np.testing.assert_allclose(catalog["log_mstar"], by_id.loc[catalog["id"], "log_mstar"], atol=1e-6)
    # the shipped PSF-aware weights on unseen mock galaxies: V2.2 to ~10% (bench: 6% on 1,500)
    good = prepared.to_numpy() & (by_id.loc[catalog["id"], "inc_deg"].to_numpy() >= 30)
    rel = np.abs(catalog["v22_kms"].to_numpy()[good] / by_id.loc[catalog["id"], "v22_kms"].to_numpy()[good] - 1)
    assert np.median(rel) < 0.15
    # asymmetric drift only ever raises the velocity
    assert (ok["vmax_ad_kms"].dropna() >= ok.loc[ok["vmax_ad_kms"].notna(), "vmax_kms"] - 1e-9).all()
    # the TFR fits use the kin_flag == 0 rows once the sample-wide POOR_FIT cut (recon_error above the
    # sample's mean + 1 std, a flag applied when the run reads its parts) is on: every one of them either
    # fitted or clipped by LtsFit
    recon = catalog["recon_error"].to_numpy(float)
    finite = np.isfinite(recon)
    poor = recon > recon[finite].mean() + recon[finite].std()
    used = (catalog["kin_flag"].to_numpy() == 0) & ~poor
    assert used.sum() >= 15 and poor.any()
    fits = report.tfr
    assert set(fits) == {"reverse", "forward", "r_band"} and all("slope" in fit for fit in fits.values())
    assert fits["reverse"]["n"] + fits["reverse"]["n_clipped"] == used.sum()
    assert fits["forward"]["n"] + fits["forward"]["n_clipped"] == used.sum()
    assert fits["r_band"]["n"] + fits["r_band"]["n_clipped"] == (used & np.isfinite(catalog["abs_mag_r"])).sum()
    assert min(fit["n"] for fit in fits.values()) >= 12
    # the reverse TFR recovers the mock's injected one (slope 0.258 at pivot 10.09, 0.06 dex scatter): the
    # slope within 3 sigma (0.017 here); the intercept against the injected line through these galaxies'
    # own true velocities (their scatter draws included), which it sits above by ~0.065 dex (asymmetric
    # drift raises Vmax by ~0.03 dex, the rest is LtsFit's clip of 6 of 23 points)
    reverse = fits["reverse"]
    assert reverse["pivot"] == TFR_INJECTED["pivot"]
    assert reverse["slope"] == pytest.approx(TFR_INJECTED["slope"], abs=0.05)
    true_v = np.log10(by_id.loc[catalog["id"], "vmax_kms"].to_numpy())[used]
    mass = catalog["log_mstar"].to_numpy()[used]
    expected = np.mean(true_v - TFR_INJECTED["slope"] * (mass - TFR_INJECTED["pivot"]))
    assert reverse["intercept"] == pytest.approx(expected, abs=0.1)
    assert reverse["rms"] < 2 * TFR_INJECTED["scatter_dex"] and 0 < reverse["slope_err"] < 0.05
    # forward: the same line with the axes swapped (slope 1 / 0.258, intercept where the reverse fit
    # crosses log V = 2.256)
    forward = fits["forward"]
    assert forward["pivot"] == 2.256 and forward["slope"] == pytest.approx(1 / TFR_INJECTED["slope"], abs=0.8)
    assert forward["intercept"] == pytest.approx(
        reverse["pivot"] + (forward["pivot"] - reverse["intercept"]) / reverse["slope"], abs=0.15)
    # r-band: faster rotators are brighter, M_r around -19.5 at log V = 2.256
    assert -12 < fits["r_band"]["slope"] < -4 and -21 < fits["r_band"]["intercept"] < -18
    saved = json.loads((out / "report.json").read_text())
    assert saved["tfr"] == fits and saved["n_rows"] == 60      # floats survive JSON exactly
    # the summary: the run, each status with its count, each fit with its values
    lines = report.summary().splitlines()
    assert lines[0].startswith(f"run-catalog sami-dr3: 60 galaxies -> {report.catalog_dir} "
                               f"({report.parts_total} of {report.parts_total} part")
    counts = catalog["status"].value_counts()
    assert counts.sum() == 60 and report.status_counts == counts.to_dict()
    for status, count in counts.items():
        assert f"  {status:<16s} {count:8d}" in lines
    for kind, fit in fits.items():
        line = next(line for line in lines if line.startswith(f"  TFR {kind} "))
        assert (f"slope {fit['slope']:.3f} +- {fit['slope_err']:.3f}, intercept {fit['intercept']:.3f} +- "
                f"{fit['intercept_err']:.3f} (pivot {fit['pivot']})") in line and line.endswith(f"{fit['n']} galaxies")
    # resume: nothing left to do, the same catalog
    again = run_catalog("sami-dr3", input=sami_mock.root, out=out, client=client, progress=False)
    assert again.parts_written == 0
    pd.testing.assert_frame_equal(pd.read_parquet(again.catalog_dir), catalog)


def test_real_sami_galaxy_runs_through(real_fixtures, tmp_path, client):
    """The real SAMI galaxy 209807: ingested with its catalogue row (found in the folder by the spec's pattern,
    no --catalogue), prepared, measured."""
    folder = real_fixtures / "sami"
    report = run_catalog("sami-dr3", input=folder, out=tmp_path / "run", client=client, progress=False)
    catalog = pd.read_parquet(report.catalog_dir)
    row = catalog.set_index("id").loc["209807"]
    assert row["status"] == "ok" and row["log_mstar"] == pytest.approx(10.81)
    assert abs(((row["pa_deg"] - 345.5 + 90) % 180) - 90) < 3.0     # the catalogue's kinematic axis
    assert 100 < row["vmax_kms"] < 500 and np.isfinite(row["vmax_kms_err"])


def _spec_with(tmp_path, kinematics: str):
    """sami-dr3.toml with its [tasks.kinematics] table replaced (a user's own spec file)."""
    from survey_ml.config import load_release_spec

    text = open(load_release_spec("sami-dr3")["release"]["spec_path"]).read()
    head, rest = text.split("[tasks.kinematics]", 1)
    tail = rest[rest.index("\n["):]
    path = tmp_path / "sami-test.toml"
    path.write_text(head + "[tasks.kinematics]\n" + kinematics + "\n" + tail)
    return path


def test_combined_training_uses_both_surveys_and_blind_uses_the_other_surveys_weights(sami_mock, tmp_path, client):
    """train = "combined": one model trained on SAMI + MaNGA stores (each with its own PSF); "blind": MaNGA weights."""
    import torch

    from survey_ml.store import ingest_ifu
    from survey_ml.core.inference import WEIGHTS_DIR, weights_sha256
    from survey_ml.simulate.ifu import simulate_ifu_release

    manga = simulate_ifu_release(tmp_path / "manga", 24, survey="manga", seed=8, client=client)
    ingest_ifu(manga.root, tmp_path / "manga_store", "manga-dr17", "manga", client=client, progress=False)
    spec = _spec_with(tmp_path, 'train = "combined"\nepochs = 2\npsf_fwhm_arcsec = 2.0\nmc_samples = 10\n'
                                f'[[tasks.kinematics.combine_with]]\nstore = "{tmp_path / "manga_store"}"\n'
                                'spec = "manga-dr17"\n')
    report = run_catalog(spec, input=sami_mock.root, out=tmp_path / "combined", client=client, progress=False)
    weights = tmp_path / "combined" / "kinematics_combined.pt"
    training = torch.load(weights, weights_only=True)["training"]
    assert training["mode"] == "combined" and training["epochs_run"] == 2
    names = [r.split(":")[0] for r in training["releases"]]
    counts = [int(r.split(":")[1]) for r in training["releases"]]
    assert names == ["sami-dr3", "manga-dr17"] and min(counts) > 0
    catalog = pd.read_parquet(report.catalog_dir)
    assert len(catalog) == 60 and np.isfinite(catalog.loc[catalog["status"] == "ok", "vmax_kms"]).all()

    blind = run_catalog(_spec_with(tmp_path, 'train = "blind"\nmc_samples = 10\n'), input=sami_mock.root,
                        out=tmp_path / "blind", client=client, progress=False)
    from survey_ml.catalog.parts import read_provenance

    part = sorted(blind.catalog_dir.glob("part-*.parquet"))[0]
    assert read_provenance(part)["weights_sha256"]["kinematics"] == weights_sha256(WEIGHTS_DIR / "kinematics_manga.pt")


def test_combined_without_other_stores_is_a_clear_error(sami_mock, tmp_path, client):
    with pytest.raises(ValueError, match="combine_with"):
        run_catalog(_spec_with(tmp_path, 'train = "combined"\n'), input=sami_mock.root, out=tmp_path / "x",
                    client=client, progress=False)
