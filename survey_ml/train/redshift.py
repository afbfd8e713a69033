"""Training the redshift networks: spectra re-observed from the library, two setups, two networks.

Training spectra (:func:`make_redshift_set`) are library rows observed at redshifts drawn
uniformly over the setup's range - the LAMOST LRS model (``simulate.observe``) at the dr10
spec's S/N_r draws for ``lamost``, or the DEIMOS-like model (``simulate.deimos``) for
``deimos`` - with their native-grid flux and ivar kept, so both networks' inputs and the
template fit are made from the same arrays. Blocks are observed on the Dask cluster, and
the set is cached beside the library (``zset-<digest>.npz``).

Recipes (``survey_ml/weights/redshift*.toml``, ``survey-ml train redshift``) name the
library, the setup, the network and its training. Two networks:

``pdf`` (survey_ml, :class:`~survey_ml.models.redshift_cnn.RedshiftPDFNet`)
    cross-entropy against a Gaussian-smoothed one-hot of the true ln(1 + z) bin (sigma =
    ``label_sigma`` bins, so neighbouring bins are not "wrong"), Adam, ReduceLROnPlateau,
    early stopping on the validation loss; the weights file also carries PCA templates
    of the training library (blurred to the instrument's resolution) for the refinement.
``published`` (:class:`~survey_ml.models.redshift_cnn.PublishedRedshiftCNN`)
    the published recipe: MSE on z, Adam 1e-3, batch 32, early stopping with patience 5,
    split 70/15/15.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..cluster.client import run_blocks
from ..models.redshift_cnn import PublishedRedshiftCNN, RedshiftPDFNet
from ..core.redshift_inputs import published_redshift_inputs, redshift_inputs, setup_of
from .spectral import load_recipe, split_indices
from .loop import train_epochs

__all__ = ["RedshiftSet", "make_redshift_set", "cached_redshift_set", "observe_setup", "RedshiftTrainConfig",
           "train_redshift_model", "train_redshift_task", "setup_native_wavelength", "calibrate_redshift_errors"]


@dataclass
class RedshiftSet:
    """Observed spectra on the setup's native grid with their truth."""

    flux: np.ndarray      # (n, n_pix) float32
    ivar: np.ndarray      # (n, n_pix) float32, 0 = bad pixel
    wavelength: np.ndarray
    truth: pd.DataFrame   # z_true, snr_r_requested, library_row and the library truth


def setup_native_wavelength(setup: str) -> np.ndarray:
    """The instrument grid spectra of a setup are observed on (A)."""
    from ..simulate.deimos import DeimosInstrument

    if setup_of(setup).name == "deimos":
        return DeimosInstrument().wavelength
    return setup_of(setup).wavelength  # the LAMOST store grid


def observe_setup(rest_wave: np.ndarray, rest_flux: np.ndarray, z: float, snr_r: float, rng: np.random.Generator,
                  setup: str, instrument: str = "lamost") -> tuple[np.ndarray, np.ndarray]:
    """One library spectrum observed with a setup's instrument: (flux, ivar) on its native grid.

    ``instrument`` picks the LAMOST model (:data:`survey_ml.train.spectral.INSTRUMENTS`: ``lamost``
    nominal, ``randomised`` for shifted held-out sets); DEIMOS has one.
    """
    from ..simulate.deimos import observe_deimos
    from ..simulate.observe import observe_lamost
    from .spectral import INSTRUMENTS

    if setup_of(setup).name == "deimos":
        return observe_deimos(rest_wave, rest_flux, z, rng)
    spec, _ = observe_lamost(rest_wave, rest_flux, z, snr_r, rng, 0, INSTRUMENTS[instrument]())
    n = setup_of(setup).grid.n_pix
    flux, ivar = np.zeros(n, np.float32), np.zeros(n, np.float32)
    flux[: spec.flux.size] = spec.flux
    ivar[: spec.flux.size] = np.where(spec.andmask == 0, spec.ivar, 0.0)
    return flux, ivar


def _observe_block(plan: pd.DataFrame, library_path: str, setup: str, instrument: str = "lamost"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Observe one block of plan rows (runs on a worker)."""
    from ..simulate.library import open_library

    library = open_library(library_path)
    rows = np.sort(plan["library_row"].unique())
    rest = dict(zip(rows, library.flux(rows)))
    pairs = [observe_setup(library.wave, rest[r.library_row], r.z_true, r.snr_r_requested,
                           np.random.default_rng(r.noise_seed), setup, instrument)
             for r in plan.itertuples(index=False)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def make_redshift_set(library, n: int, setup: str, seed: int = 0, z_range: tuple[float, float] | None = None,
                      plan=None, client=None, block_size: int = 250, progress: bool = False,
                      instrument: str = "lamost") -> RedshiftSet:
    """``n`` spectra of library rows observed with a setup's instrument.

    Parameters
    ----------
    library : survey_ml.simulate.library.Library
        Its rest-frame grid must reach the setup's bluest wavelength / (1 + z_max).
    n : int
        Spectra (library rows are re-observed as often as needed).
    setup : str
        ``lamost`` or ``deimos``.
    seed : int
        Seed of every draw.
    z_range : tuple of float, optional
        Redshifts uniform in this range (default the setup's; ``z_min`` is raised to 0.002
        on LAMOST, where the luminosity distance vanishes at z = 0).
    plan : survey_ml.simulate.release.ObservationPlan, optional
        Draw z (and S/N_r) from a release plan instead (held-out sets shaped like a release).
    instrument : str
        LAMOST observation model, ``lamost`` or ``randomised`` (:func:`observe_setup`).
    client : distributed.Client, optional
    block_size : int
    progress : bool
    """
    from ..simulate.release import ObservationPlan, draw_observations
    from ..config import load_release_spec

    s = setup_of(setup)
    rng = np.random.default_rng(seed)
    if plan is None:
        plan = ObservationPlan.from_spec(load_release_spec("dr10"))
        draws = draw_observations(n, int(library.truth["ok"].sum()), rng, plan)
        lo, hi = z_range or (max(s.z_min, 0.002), s.z_max)
        draws["z_true"] = rng.uniform(lo, hi, n)
    else:
        draws = draw_observations(n, int(library.truth["ok"].sum()), rng, plan)
        draws["z_true"] = np.clip(draws["z_true"], 0.002, None)
    pool = library.truth.index[library.truth["ok"]].to_numpy()
    draws["library_row"] = pool[draws["library_row"].to_numpy()]
    blocks = [(draws.iloc[a: a + block_size], str(library.path), s.name, instrument) for a in range(0, n, block_size)]
    parts = run_blocks(_observe_block, blocks, client, desc=f"{s.name} spectra", progress=progress)
    truth = draws[["obsid", "library_row", "z_true", "snr_r_requested"]].merge(
        library.truth.rename(columns={"row": "library_row"}), on="library_row", how="left")
    return RedshiftSet(flux=np.concatenate([p[0] for p in parts]), ivar=np.concatenate([p[1] for p in parts]),
                       wavelength=setup_native_wavelength(s.name), truth=truth)


def cached_redshift_set(library, n: int, setup: str, seed: int, client=None, progress: bool = False,
                        **kwargs) -> RedshiftSet:
    """:func:`make_redshift_set`, cached beside the library (keyed by every argument)."""
    key = json.dumps({"library": library.path.name, "n": n, "setup": setup, "seed": seed,
                      **{k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in kwargs.items()}},
                     sort_keys=True, default=str)
    stem = library.path.parent / f"zset-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    arrays, truth_file = stem.with_suffix(".npz"), stem.with_suffix(".parquet")
    if arrays.exists() and truth_file.exists():
        data = np.load(arrays)
        return RedshiftSet(flux=data["flux"], ivar=data["ivar"], wavelength=data["wavelength"],
                           truth=pd.read_parquet(truth_file))
    data = make_redshift_set(library, n, setup, seed, client=client, progress=progress, **kwargs)
    tmp = stem.with_name(stem.name + f".tmp-{os.getpid()}.npz")
    np.savez(tmp, flux=data.flux, ivar=data.ivar, wavelength=data.wavelength)
    os.replace(tmp, arrays)
    data.truth.to_parquet(truth_file, index=False)  # written last: the commit record
    return data


@dataclass
class RedshiftTrainConfig:
    """A redshift training run (saved with the weights)."""

    network: str = "pdf"                  # "pdf" (survey_ml) or "published"
    setup: str = "lamost"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    plateau_factor: float = 0.3
    plateau_patience: int = 2
    early_stop_patience: int = 4
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    label_sigma: float = 1.0              # pdf: width of the soft label, in bins
    threads: int | None = None


def _inputs(data: RedshiftSet, network: str, setup: str) -> np.ndarray:
    mask = (data.ivar <= 0).astype(np.uint8)
    fn = published_redshift_inputs if network == "published" else redshift_inputs
    out = []
    for a in range(0, len(data.flux), 2000):  # bounded temporaries
        out.append(fn(data.flux[a: a + 2000], data.ivar[a: a + 2000], mask[a: a + 2000], data.wavelength, setup))
    return np.concatenate(out)


def _soft_labels(ln1pz: torch.Tensor, edges_lo: float, width: float, n_bins: int, sigma: float) -> torch.Tensor:
    centres = edges_lo + width * (torch.arange(n_bins, dtype=torch.float64) + 0.5)
    d = (centres[None, :] - ln1pz.double()[:, None]) / (sigma * width)
    q = torch.exp(-0.5 * d**2)
    return (q / q.sum(dim=1, keepdim=True)).float()


def train_redshift_model(x: np.ndarray, z: np.ndarray, config: RedshiftTrainConfig, groups: np.ndarray | None = None,
                         model_options: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Train one redshift network on prepared inputs; returns the model, split and history."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    s = setup_of(config.setup)
    tr, va, te = split_indices(len(x), tuple(config.split), config.seed, groups)
    if config.network == "published":
        model: nn.Module = PublishedRedshiftCNN(n_pix=x.shape[-1], **(model_options or {}))
        target = torch.from_numpy(np.asarray(z, dtype=np.float32))[:, None]

        def loss_fn(out, idx):
            return nn.functional.mse_loss(out, target[idx])
    else:
        edges = s.bin_edges
        model = RedshiftPDFNet(n_pix=x.shape[-1], n_bins=edges.size - 1, bin_lo=float(edges[0]),
                               bin_width=s.bin_width, **(model_options or {}))
        labels = _soft_labels(torch.from_numpy(np.log1p(np.asarray(z, dtype=np.float64))), float(edges[0]),
                              s.bin_width, edges.size - 1, config.label_sigma)

        def loss_fn(out, idx):
            return -(labels[idx] * torch.log_softmax(out, dim=1)).sum(dim=1).mean()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=config.plateau_factor,
                                                           patience=config.plateau_patience)

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        idx = torch.from_numpy(idx)
        return loss_fn(model(xt[idx]), idx)

    def validation_loss() -> float:
        return sum(float(loss_fn(model(xt[torch.from_numpy(va[k: k + 1024])]), torch.from_numpy(va[k: k + 1024])))
                   * len(va[k: k + 1024]) for k in range(0, len(va), 1024)) / max(len(va), 1)

    history, best_epoch = train_epochs(model, tr, batch_loss, validation_loss, optimiser, scheduler,
                                       epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                                       patience=config.early_stop_patience,
                                       label=f"{config.network}/{config.setup}", progress=progress, start=start)
    return {"model": model, "history": history, "best_epoch": best_epoch, "train_index": tr, "val_index": va,
            "test_index": te, "seconds": time.perf_counter() - start}


def test_figures(data: RedshiftSet, index: np.ndarray, weights: str | os.PathLike, network: str) -> dict[str, Any]:
    """NMAD, eta (and for the PDF network error calibration and flagged share) on rows ``index``.

    The PDF network is scored alone and with the template refinement, as run-catalog runs it.
    """
    from ..core.inference import forward_batches, load_model
    from ..core.metrics import coverage_within, nmad, outlier_fraction
    from ..core.redshift import predict_redshifts

    z = data.truth["z_true"].to_numpy(float)[index]
    if network == "published":
        model, info = load_model(weights, "cpu")
        x = _inputs(RedshiftSet(data.flux[index], data.ivar[index], data.wavelength, data.truth.iloc[index]),
                    network, info["setup"])
        zp = forward_batches(model, x, 256)[:, 0]
        return {"network": {"nmad": nmad(z, zp), "eta": outlier_fraction(z, zp)}}
    test = {}
    mask = (data.ivar[index] <= 0).astype(np.uint8)
    for refine in (False, True):
        res = predict_redshifts(data.flux[index], data.ivar[index], mask, data.wavelength, weights, refine=refine)
        zp, err = res["z_cnn"].to_numpy(), res["z_cnn_err"].to_numpy()
        test["refined" if refine else "network"] = {
            "nmad": nmad(z, zp), "eta": outlier_fraction(z, zp), "within_1sigma": coverage_within(zp - z, err, 1.0),
            "within_2sigma": coverage_within(zp - z, err, 2.0),
            "flagged": float(np.mean(res["z_cnn_flag"].to_numpy() != 0))}
    return test


def calibrate_redshift_errors(weights: str | os.PathLike, recipe: dict[str, Any] | str = "redshift", client=None,
                              cache_dir: str | os.PathLike | None = None, progress: bool = False) -> dict[str, Any]:
    """Fit ``z_cnn_err``'s scale and floor on a recipe's ``[uncertainty]`` set; store it in the weights.

    The set is shifted from the training one - other galaxies (its own library, by default
    the ``broad`` priors), the ``randomised`` LAMOST instrument, redshifts and S/N_r drawn
    like a release (the recipe's ``release``, default dr10). Its spectra run through
    :func:`survey_ml.core.redshift.redshifts_from_model` exactly as run-catalog runs them, with
    the refinement's raw curvature errors; an :class:`~survey_ml.core.uncertainty.ErrorFloor`
    is fitted on the rows that are not catastrophic (``|dz| / (1 + z) < 0.01``; those are
    what ``z_cnn_flag`` is for) and written into the weights file as ``error_model``.

    Parameters
    ----------
    weights : path
        A PDF-network weights file (rewritten in place, its network untouched).
    recipe : dict or str
        The recipe (or its name / path) whose ``[uncertainty]`` table names the set:
        ``n``, ``seed``, ``instrument``, ``library = {n, seed, priors}``.
    client, cache_dir, progress
        As :func:`train_redshift_task`.

    Returns
    -------
    dict
        ``error_model`` and the set's coverage and NMAD before and after.
    """
    from ..core.uncertainty import ErrorFloor, GAUSS_COVERAGE, coverage
    from ..core.inference import load_model, save_weights, weights_sha256
    from ..core.metrics import nmad, outlier_fraction
    from ..core.redshift import redshifts_from_model
    from ..simulate.library import LibraryConfig, build_library
    from ..simulate.release import ObservationPlan
    from ..config import load_release_spec

    recipe = load_recipe(recipe) if isinstance(recipe, (str, os.PathLike)) else recipe
    table = recipe["uncertainty"]
    lib = table["library"]
    library = build_library(LibraryConfig(n=int(lib["n"]), seed=int(lib["seed"]), priors=str(lib.get("priors", "survey"))),
                            cache_dir=cache_dir, client=client, progress=progress)
    plan = ObservationPlan.from_spec(load_release_spec(recipe.get("release", "dr10")))
    data = cached_redshift_set(library, int(table["n"]), recipe["setup"], int(table["seed"]), client=client,
                               progress=progress, plan=plan, instrument=str(table.get("instrument", "randomised")))
    model, info = load_model(weights, "cpu")
    raw_info = {k: v for k, v in info.items() if k != "error_model"}
    mask = (data.ivar <= 0).astype(np.uint8)
    frame = redshifts_from_model(model, raw_info, data.flux, data.ivar, mask, data.wavelength, refine=True)
    z_true = data.truth["z_true"].to_numpy(float)
    z, err = frame["z_cnn"].to_numpy(float), frame["z_cnn_err"].to_numpy(float)
    dz = z - z_true
    fine = np.isfinite(dz) & np.isfinite(err) & (np.abs(dz) / (1 + z_true) < 0.01)
    error_model = ErrorFloor.fit(dz[fine], err[fine], 1.0 + z_true[fine])
    calibrated = error_model.apply(err, 1.0 + z)
    ok = np.isfinite(dz) & np.isfinite(err)
    figures = {"library": library.path.name, "n": int(ok.sum()), "n_fit": int(fine.sum()),
               "nmad": nmad(z_true[ok], z[ok]), "eta": outlier_fraction(z_true[ok], z[ok]),
               "raw": {f"within_{k}sigma": coverage(dz[ok], err[ok], k) for k in GAUSS_COVERAGE},
               "calibrated": {f"within_{k}sigma": coverage(dz[ok], calibrated[ok], k) for k in GAUSS_COVERAGE},
               "error_model": error_model.to_dict()}
    payload = torch.load(weights, map_location="cpu", weights_only=True)
    payload["error_model"] = error_model.to_dict() | {"fitted_on": f"{library.path.name}, {int(table['n'])} spectra, "
                                                                    f"seed {int(table['seed'])}, "
                                                                    f"{table.get('instrument', 'randomised')} instrument"}
    extra = {k: v for k, v in payload.items() if k not in ("task", "architecture", "config", "targets", "state_dict")}
    save_weights(model.cpu(), weights, payload["task"], payload["targets"], extra=extra)
    figures["weights_sha256"] = weights_sha256(weights)
    return figures


def train_redshift_task(task_or_path: str | os.PathLike = "redshift", out: str | os.PathLike | None = None,
                        client=None, cache_dir: str | os.PathLike | None = None, progress: bool = False
                        ) -> dict[str, Any]:
    """Train a redshift network from its recipe; write the weights (+ templates) and a JSON report.

    Parameters
    ----------
    task_or_path : str or path
        ``redshift`` (the shipped LAMOST network), another recipe name in
        ``survey_ml/weights/`` or a recipe TOML path.
    out : path, optional
        Weights file (default: beside the recipe, same stem).
    client : distributed.Client, optional
        Cluster for the library build and the training spectra.
    cache_dir : path, optional
        Library cache folder.
    progress : bool

    Returns
    -------
    dict
        The report written beside the weights.
    """
    from ..core.inference import save_weights, weights_sha256
    from ..simulate.library import LibraryConfig, build_library
    from ..core.templates import pca_templates

    recipe = load_recipe(task_or_path)
    out = Path(out) if out else Path(recipe["recipe_path"]).with_suffix(".pt")
    lib = recipe["library"]
    t0 = time.perf_counter()
    library = build_library(LibraryConfig(n=int(lib["n"]), seed=int(lib["seed"]),
                                          wave_min=float(lib.get("wave_min", 600.0)),
                                          wave_max=float(lib.get("wave_max", 10000.0))),
                            cache_dir=cache_dir, client=client, progress=progress)
    t_library = time.perf_counter() - t0
    ts = recipe["training_set"]
    t0 = time.perf_counter()
    data = cached_redshift_set(library, int(ts["n"]), recipe["setup"], int(ts["seed"]), client=client,
                               progress=progress)
    t_data = time.perf_counter() - t0
    config = RedshiftTrainConfig(network=recipe["network"], setup=recipe["setup"],
                                 **{k: (tuple(v) if k == "split" else v) for k, v in recipe.get("train", {}).items()})
    x = _inputs(data, config.network, config.setup)
    z = data.truth["z_true"].to_numpy(float)
    result = train_redshift_model(x, z, config, groups=data.truth["library_row"].to_numpy(),
                                  model_options=recipe.get("model", {}), progress=progress)
    model, te = result["model"], result["test_index"]
    extra: dict[str, Any] = {"setup": config.setup}
    if config.network == "pdf":
        tp = recipe.get("templates", {})
        rows = library.truth.index[library.truth["ok"]].to_numpy()
        rows = rows[np.isin(rows, data.truth["library_row"].to_numpy()[result["train_index"]])]
        rows = np.random.default_rng(0).permutation(rows)[: int(tp.get("n_spectra", 2000))]
        s = setup_of(config.setup)
        lo, hi = s.instrument_wave
        templates = pca_templates(library.wave, library.flux(np.sort(rows)), int(tp.get("n_components", 8)),
                                  wave_range=(lo / (1 + s.z_max) / 1.02, hi / (1 + max(s.z_min, 0.0)) * 1.02),
                                  resolution=tp.get("resolution"))
        extra["templates"] = {"loglam0": templates.loglam0, "dloglam": templates.dloglam,
                              "components": torch.from_numpy(templates.components)}
        extra["refine"] = dict(recipe.get("refine", {}))
    extra["training"] = {"recipe": Path(recipe["recipe_path"]).name, "library": library.path.name,
                         "n_spectra": int(len(x)), "best_epoch": result["best_epoch"],
                         "seconds": {"library": t_library, "training_set": t_data, "training": result["seconds"]}}
    save_weights(model, out, "redshift", ["z"], extra=extra)
    calibration = None
    if config.network == "pdf" and "uncertainty" in recipe:
        calibration = calibrate_redshift_errors(out, recipe, client=client, cache_dir=cache_dir, progress=progress)
    test = test_figures(data, te, out, config.network)
    report = {"recipe": {k: v for k, v in recipe.items() if k != "recipe_path"}, **extra["training"],
              "n_train": int(len(result["train_index"])), "n_val": int(len(result["val_index"])), "n_test": int(len(te)),
              "epochs_run": len(result["history"]), "test": test, "history": result["history"],
              "weights_sha256": weights_sha256(out)}
    if calibration is not None:
        report["calibration"] = calibration
    Path(out).with_suffix(".json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report
