"""Stellar parameters: the shipped network against The Cannon on held-out synthetic HARPS-N spectra.

Test spectra are drawn from the training grid's cells with labels the network never saw
(another seed), observed as in training (:mod:`survey_ml.simulate.echelle_observe`) at S/N 10,
20, 50 and 100, and once more "with other settings": a quadratic continuum distortion and
twice the radial-velocity residual of training. Reported per label: MAE, bias, scatter, 1- and
2-sigma coverage of the calibrated errors; The Cannon (:mod:`survey_ml.core.cannon`, quadratic in
Teff, log g, [Fe/H], v sin i) trained on the same number of spectra at S/N 50 and tested on the
same spectra (a subset, it fits one star at a time); speed: network-only spectra/s and the
task's per-spectrum preparation (RV by CCF, resampling, normalisation) on the real Gl273 e2ds.
Prints JSON; keeps bench/results/stellar.json.

Usage: python bench/stellar.py [--weights survey_ml/weights/stellar.pt] [--n-test 2000] [--n-cannon 300]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from _common import REPO, emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(REPO / "survey_ml" / "weights" / "stellar.pt"))
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--n-cannon", type=int, default=300)
    parser.add_argument("--n-cannon-train", type=int, default=3000)
    parser.add_argument("--n-bank", type=int, default=2000, help="template bank of the chi-square grid fit")
    args = parser.parse_args()

    from survey_ml.core.cannon import CannonModel
    from survey_ml.core.inference import load_model
    from survey_ml.simulate.echelle_observe import EchelleObservation, degrade
    from survey_ml.simulate.stellar_grid import StellarGrid
    from survey_ml.core.echelle import input_snr
    from survey_ml.core.uncertainty import ErrorCalibration
    from survey_ml.train.stellar import calibrated_sigma, evaluate, make_stellar_set, predict

    torch.set_num_threads(2)
    model, info = load_model(args.weights, "cpu")
    conditions = EchelleObservation(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["conditions"].items()})
    report = _load_report(args.weights)
    grid = StellarGrid(report["grid"])
    if report.get("grid_axes") and list(report["grid_axes"]["teff"]) != list(grid.axes.teff):
        grid = grid.coarsened()
    calibration = [ErrorCalibration.from_dict(c) for c in info["error_calibration"]]

    def errors(cov: np.ndarray, x: np.ndarray) -> np.ndarray:   # calibrated, at the inputs' measured S/N
        return calibrated_sigma(cov, calibration, input_snr(x[:, 0], x[:, 1] > 0))
    test = make_stellar_set(grid, args.n_test, 9000, conditions)
    rng = np.random.default_rng(9001)
    out: dict = {"weights": Path(args.weights).name, "grid": report["grid"], "grid_axes": grid.axes.to_dict(),
                 "n_test": args.n_test, "network": {}, "cannon": {}}
    inputs = {}
    for snr in (10.0, 20.0, 50.0, 100.0):
        x, _ = degrade(test.clean.astype(np.float32), rng, conditions, snr=np.full(args.n_test, snr))
        inputs[snr] = x
        mean, cov = predict(model, x)
        out["network"][f"snr_{snr:g}"] = evaluate(mean, errors(cov, x),
                                                  test.labels)
    # other settings: a curved continuum the training never had, and a worse radial velocity
    shifted = replace(conditions, rv_error_kms=2 * conditions.rv_error_kms)
    other = make_stellar_set(grid, args.n_test, 9100, shifted)
    position = np.linspace(-1, 1, conditions.n_pix)
    curve = 1 + rng.uniform(-0.15, 0.15, (args.n_test, conditions.n_orders, 1)) * position ** 2
    x, _ = degrade((other.clean.astype(np.float32) * curve).astype(np.float32), rng, conditions,
                   snr=np.full(args.n_test, 20.0))
    mean, cov = predict(model, x)
    out["network"]["other_settings_snr_20"] = evaluate(mean, errors(cov, x),
                                                       other.labels)
    # speed, network only
    batch = torch.from_numpy(inputs[20.0][:128])
    with torch.inference_mode():
        model(batch)
        t0 = time.perf_counter()
        for _ in range(3):
            model(batch)
    out["network_spectra_per_s"] = 3 * len(batch) / (time.perf_counter() - t0)
    out["prepare_seconds_per_spectrum"] = _prepare_speed(info)
    # The Cannon on the same layout
    train = make_stellar_set(grid, args.n_cannon_train, 9200, conditions)
    x_train, _ = degrade(train.clean.astype(np.float32), rng, conditions, snr=np.full(args.n_cannon_train, 50.0))
    flat = lambda x: x[:, 0].reshape(len(x), -1)  # noqa: E731
    ivar = lambda x, s: np.where(x[:, 1].reshape(len(x), -1) > 0, s ** 2, 0.0)  # noqa: E731
    t0 = time.perf_counter()
    cannon = CannonModel.train(train.labels, flat(x_train), ivar(x_train, 50.0))
    out["cannon"]["train_seconds"] = time.perf_counter() - t0
    k = args.n_cannon
    for snr in (20.0, 50.0):
        x = inputs[snr][:k]
        t0 = time.perf_counter()
        labels, cov = cannon.test(flat(x), ivar(x, snr))
        seconds = time.perf_counter() - t0
        mean_net, cov_net = predict(model, x)
        out["cannon"][f"snr_{snr:g}"] = evaluate(labels, np.sqrt(np.abs(np.diagonal(cov, axis1=1, axis2=2))),
                                                 test.labels[:k])
        out["cannon"][f"snr_{snr:g}"]["spectra_per_s"] = k / seconds
        out["network"][f"snr_{snr:g}_cannon_subset"] = evaluate(
            mean_net, errors(cov_net, x), test.labels[:k])
    out["chi2_grid"] = _chi2_grid(grid, conditions, inputs, test.labels, k, args.n_bank)
    emit("stellar", out)


def _chi2_grid(grid, conditions, inputs: dict, labels: np.ndarray, k: int, n_bank: int = 2000) -> dict:
    """The chi-square fit of the same grid (survey_ml.core.grid_fit) to the first ``k`` test spectra."""
    from survey_ml.core.echelle import continuum_normalise
    from survey_ml.core.grid_fit import bank_start, fit_spectra
    from survey_ml.simulate.echelle_observe import render
    from survey_ml.train.stellar import evaluate

    exact = replace(conditions, rv_error_kms=0.0)
    rng = np.random.default_rng(0)

    def model(theta: np.ndarray) -> np.ndarray:
        clean = render(grid.wavelength, grid.interpolate(theta[:, :3]), theta[:, 3], rng, exact)
        flat = clean.reshape(-1, conditions.n_pix).astype(np.float64)
        normalised, _ = continuum_normalise(flat, np.ones_like(flat))
        return normalised.reshape(len(theta), -1)

    t0 = time.perf_counter()
    bank_labels = np.column_stack([grid.sample_labels(n_bank, rng), rng.uniform(0.0, 30.0, n_bank)])
    bank = np.concatenate([model(bank_labels[i:i + 250]) for i in range(0, n_bank, 250)])
    bank_seconds = time.perf_counter() - t0
    lower = np.array([*grid.label_min, 0.0])
    upper = np.array([*grid.label_max, 30.0])
    step = np.array([10.0, 0.02, 0.01, 0.2])
    out: dict = {"bank_size": n_bank, "bank_seconds": bank_seconds}
    for snr in (20.0, 50.0):
        x = inputs[snr][:k]
        flux = x[:, 0].reshape(k, -1).astype(np.float64)
        ivar = np.where(x[:, 1].reshape(k, -1) > 0, snr ** 2, 0.0)
        t0 = time.perf_counter()
        means, sigmas = [], []
        for i in range(0, k, 100):
            best, _ = bank_start(flux[i:i + 100], ivar[i:i + 100], bank)
            fit = fit_spectra(model, flux[i:i + 100], ivar[i:i + 100], bank_labels[best], lower, upper, step)
            means.append(fit.labels)
            sigmas.append(np.sqrt(np.abs(np.diagonal(fit.covariance, axis1=1, axis2=2))))
        seconds = time.perf_counter() - t0
        out[f"snr_{snr:g}"] = evaluate(np.concatenate(means), np.concatenate(sigmas), labels[:k])
        out[f"snr_{snr:g}"]["spectra_per_s"] = k / seconds
    return out


def _load_report(weights: str) -> dict:
    import json

    return json.loads(Path(weights).with_suffix(".json").read_text())


def _prepare_speed(info: dict) -> float | None:
    """Seconds per exposure of the task's preparation on the real Gl273 e2ds (None without the fixture)."""
    from survey_ml.core.echelle import segments
    from survey_ml.io.echelle import read_echelle
    from survey_ml.tasks.stellar import model_input

    path = REPO.parent / "shared" / "fixtures" / "real" / "harps" / "HARPS.2003-12-13T06:19:48.371_e2ds_A.fits"
    if not path.exists():
        return None
    spectrum = read_echelle(path)
    flux, ivar = spectrum.deblazed()
    pieces = segments(spectrum.rest_air(), flux, ivar, 4096, (5000.0, 5400.0))
    width = 4096
    wave = np.zeros((len(pieces), width))
    f = np.zeros((len(pieces), width), np.float32)
    v = np.zeros((len(pieces), width), np.float32)
    for i, (w, ff, vv) in enumerate(pieces):
        wave[i, :w.size], f[i, :w.size], v[i, :w.size] = w, ff, vv
    grid = np.asarray(info["grid"])
    template = (np.asarray(info["template_wave"]), np.asarray(info["template_flux"]))
    t0 = time.perf_counter()
    for _ in range(5):
        model_input(wave, f, v, grid, template)
    return (time.perf_counter() - t0) / 5


if __name__ == "__main__":
    main()
