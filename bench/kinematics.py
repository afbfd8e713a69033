"""Kinematic model on a held-out mock IFU release: velocities, inclinations, MC-dropout errors, TFR closure,
speed - the published decoder beside the PSF-aware one - and the real SAMI galaxy 209807.

Steps, each timed:

1. a mock SAMI DR3 release (``survey_ml.simulate.ifu``: SAMI-catalogue population, injected reverse TFR,
   beam-smeared cubes fitted per spaxel, non-arctan curves, clumpy and disturbed discs), written as SAMI files;
2. every galaxy read back from its files (``survey_ml.io.sami``) and prepared (``survey_ml.core.maps``:
   S/N >= 10, kinematic PA, de-rotation, 64 x 64, scaling) as Dask tasks on a LocalCluster;
3. self-supervised training on the release itself (no labels), once with the published decoder and once with
   the PSF-aware decoder (PSF FWHM 2.0", the survey's typical seeing - not the per-galaxy truth);
4. Monte Carlo dropout (T = 100) -> mean and std of inclination, r_scale, Vmax, r_turn, V2.2;
5. figures against the truth: median |dV2.2| / V2.2 and median |dVmax| / Vmax for i >= 30 deg (Vmax also for
   galaxies larger than 1.5 beams: 2 r_e >= 1.5 FWHM), median |d i|, share of residuals within 1 and 2 MC
   sigma, the reverse TFR fitted with ltsfit (log Vmax vs the catalogue log M*) against the injected one;
6. the real SAMI galaxy 209807 (../shared/fixtures/real/sami) through the same preparation and both models:
   PA against the catalogue's kinematic PA, inclination against the one implied by its ellipticity, Vmax
   against what its mass implies on the published reverse TFR.

Prints JSON; keeps bench/results/kinematics.json.

Usage: python bench/kinematics.py [--n 1500] [--epochs 30] [--work DIR]
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import emit

PSF_FWHM_ARCSEC = 2.0
REAL = Path(os.environ.get("SURVEY_ML_REAL_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"
                           / "real"))


def prepare_release(files: list[str], client) -> tuple[dict, float]:
    from survey_ml.cluster.client import run_blocks
    from survey_ml.train.kinematics import prepare_map_files

    t0 = time.perf_counter()
    blocks = [(files[a: a + 50], "sami") for a in range(0, len(files), 50)]
    parts = run_blocks(prepare_map_files, blocks, client)
    seconds = time.perf_counter() - t0
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, seconds


def scores(est: dict, truth: pd.DataFrame, ok: np.ndarray) -> dict:
    from survey_ml.core.metrics import coverage_within

    inc_t = truth["inc_deg"].to_numpy(float)
    sel = ok & (inc_t >= 30)
    big = sel & (2 * truth["r_e_arcsec"].to_numpy(float) >= 1.5 * PSF_FWHM_ARCSEC)
    out = {"n_used": int(sel.sum()), "n_larger_than_1p5_beams": int(big.sum())}
    for name, truth_col in (("v22_kms", "v22_kms"), ("vmax_kms", "vmax_kms")):
        rel = np.abs(est[name] / truth[truth_col].to_numpy(float) - 1)
        out[f"median_rel_err_{name}"] = float(np.median(rel[sel]))
        out[f"median_rel_err_{name}_large"] = float(np.median(rel[big]))
        out[f"median_bias_{name}"] = float(np.median((est[name] / truth[truth_col].to_numpy(float) - 1)[sel]))
        resid = est[name] - truth[truth_col].to_numpy(float)
        out[f"within_1sigma_{name}"] = coverage_within(resid[sel], est[f"{name}_err"][sel], 1.0)
        out[f"within_2sigma_{name}"] = coverage_within(resid[sel], est[f"{name}_err"][sel], 2.0)
    out["median_abs_err_inclination_deg"] = float(np.median(np.abs(est["inclination_deg"] - inc_t)[sel]))
    out["within_1sigma_inclination"] = coverage_within((est["inclination_deg"] - inc_t)[sel],
                                                       est["inclination_deg_err"][sel], 1.0)
    return out


def tfr_closure(est: dict, truth: pd.DataFrame, ok: np.ndarray, name: str) -> dict:
    from survey_ml.relations.tfr import fit_tfr
    from survey_ml.simulate.ifu import TFR_INJECTED

    keep = ok & (est["inclination_deg"] >= 30) & np.isfinite(est[name]) & (est[name] > 0)  # the post cut, as run
    log_v = np.log10(est[name][keep])
    log_v_err = est[f"{name}_err"][keep] / (est[name][keep] * math.log(10)) + 0.01
    try:
        fit = fit_tfr(truth["log_mstar"].to_numpy(float)[keep], log_v, 0.1, log_v_err,
                      pivot=TFR_INJECTED["pivot"], kind="reverse")
    except ValueError as err:  # ltsfit finds no intrinsic scatter bracket (e.g. a few points)
        return {"n": int(keep.sum()), "error": str(err)}
    return {"n": fit.n, "n_clipped": fit.n_clipped, "slope": fit.slope, "slope_err": fit.slope_err,
            "intercept": fit.intercept, "intercept_err": fit.intercept_err, "sig_int": fit.sig_int, "rms": fit.rms,
            "injected": dict(TFR_INJECTED),
            "slope_offset": fit.slope - TFR_INJECTED["slope"],
            "intercept_offset": fit.intercept - TFR_INJECTED["intercept"]}


def real_galaxy(models: dict) -> dict:
    """SAMI 209807 through preparation and both models."""
    from survey_ml.io.sami import read_sami_catalogue, read_sami_gaskin_pa, read_sami_maps
    from survey_ml.train.kinematics import mc_dropout, physical_samples, summarise
    from survey_ml.core.maps import prepare_galaxy
    from survey_ml.simulate.ifu import inclination_from_ellipticity

    folder = REAL / "sami"
    if not folder.is_dir():
        return {"skipped": f"no real fixtures at {folder}"}
    maps = read_sami_maps(folder, catid=209807)
    prepared = prepare_galaxy(maps.flux, maps.flux_err, maps.velocity, maps.velocity_err, maps.good,
                              maps.pixel_scale)
    catalogue = read_sami_catalogue(folder / "sami_InputCatGAMADR3.csv").set_index("catid").loc[209807]
    gaskin = read_sami_gaskin_pa(folder / "sami_samiDR3gaskinPA.csv").set_index("catid").loc[209807]
    out = {"status": prepared.status, "n_good": prepared.n_good, "pa_deg": prepared.pa_deg,
           "pa_err": prepared.pa_err, "pa_gaskin_catalogue": float(gaskin["pa_gaskin"]),
           "pa_difference_deg": float((prepared.pa_deg - float(gaskin["pa_gaskin"]) + 180) % 360 - 180),
           "log_mstar": float(catalogue["mstar"]), "ellip": float(catalogue["ellip"]),
           "inclination_from_ellipticity_deg": float(inclination_from_ellipticity(float(catalogue["ellip"])))}
    out["vmax_expected_from_tfr_kms"] = 10 ** (2.265 + 0.258 * (out["log_mstar"] - 10.09))
    if prepared.status != "ok":
        return out
    scale, pix = np.array([prepared.velocity_scale_kms]), np.array([prepared.pixel_scale_arcsec])
    for name, model in models.items():
        est = summarise(physical_samples(mc_dropout(model, prepared.m0[None], prepared.m1[None], 100), scale, pix))
        out[name] = {k: float(v[0]) for k, v in est.items()}
    return out


def main() -> None:
    import torch

    from survey_ml.cluster.client import connect
    from survey_ml.train.kinematics import (KinematicTrainConfig, mc_dropout, physical_samples, summarise,
                                      train_kinematic_model)
    from survey_ml.simulate.ifu import simulate_ifu_release

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "survey_ml" / "bench-kinematics"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for training")
    args = parser.parse_args()
    work = Path(args.work)
    client = connect(quiet=True)
    t0 = time.perf_counter()
    mock_root = work / f"sami-{args.n}"
    if not (mock_root / "truth.parquet").exists():
        simulate_ifu_release(mock_root, args.n, survey="sami", seed=0, client=client)
    t_mock = time.perf_counter() - t0
    truth = pd.read_parquet(mock_root / "truth.parquet")
    files = [str(mock_root / f) for f in truth["file"]]
    prepared, t_prep = prepare_release(files, client)
    client.close()
    ok = prepared["status"] == "ok"
    psf_sigma = PSF_FWHM_ARCSEC / 2.3548 / prepared["pixel_scale_arcsec"]
    torch.set_num_threads(args.threads)
    results, models = {}, {}
    for name, psf_aware in (("published", False), ("psf_aware", True)):
        config = KinematicTrainConfig(epochs=args.epochs, lr=1e-3, batch_size=32, psf_aware=psf_aware)
        trained = train_kinematic_model(prepared["m0"][ok], prepared["m1"][ok], prepared["mask"][ok],
                                        psf_sigma[ok], config, progress=True)
        models[name] = trained.model
        t1 = time.perf_counter()
        draws = mc_dropout(trained.model, prepared["m0"], prepared["m1"], samples=100)
        t_mc = time.perf_counter() - t1
        est = summarise(physical_samples(draws, prepared["velocity_scale_kms"], prepared["pixel_scale_arcsec"]))
        results[name] = {"training_seconds": trained.seconds, "epochs": len(trained.history),
                         "best_epoch": trained.best_epoch, "mc_seconds_100_passes": t_mc,
                         "mc_seconds_per_1834_galaxies": t_mc * 1834 / len(prepared["m0"]),
                         **scores(est, truth, ok), "tfr_vmax": tfr_closure(est, truth, ok, "vmax_kms"),
                         "tfr_v22": tfr_closure(est, truth, ok, "v22_kms")}
    results["real_sami_209807"] = real_galaxy(models)
    status = pd.Series(prepared["status"]).value_counts().to_dict()
    emit("kinematics", {"n": args.n, "survey": "sami", "psf_fwhm_arcsec": PSF_FWHM_ARCSEC, "torch_threads": args.threads,
                        "seconds": {"mock_release": t_mock, "prepare": t_prep},
                        "prepare_galaxies_per_s_2_workers": len(files) / t_prep, "status_counts": status,
                        "results": results})


if __name__ == "__main__":
    main()
