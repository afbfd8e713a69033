"""Training the spectral CNNs on re-observed library spectra, with the published recipe.

Training data are made the way a release is, minus the files: rows of the bagpipes library
(``simulate.library``) are observed through the LAMOST model (``simulate.observe``) at
redshifts and S/N_r drawn from the release spec, then put through exactly the inference
preprocessing (``core.spectra``: good pixels only, the 3800-8000 A model grid,
min-max normalisation). Blocks of spectra are made on the Dask cluster.

The published recipe (SCIENCE.md section 1): MSE loss (BCE with two sigmoid outputs for
the star-forming classifier), Adam at lr 1e-3, ReduceLROnPlateau (factor 0.1, patience 10
on the validation loss), batch 128, 100 epochs, the best-validation checkpoint, a 7:1:2
train/validation/test split. :class:`TrainConfig` holds all of it, so a weights file can
always be reproduced from the config saved beside it.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..cluster.client import run_blocks
from ..models.spectral_cnn import SpectralCNN, gaussian_nll
from ..core.spectra import model_inputs
from ..simulate.observe import LamostInstrument, observe_lamost
from ..simulate.release import ObservationPlan, draw_observations
from ..config import load_release_spec
from .loop import train_epochs

__all__ = ["TrainingSet", "make_training_set", "TrainConfig", "TrainResult", "split_indices", "train_model",
           "load_recipe", "recipe_training_set", "recipe_config", "evaluate", "train_task", "fit_uncertainty",
           "young_rows", "INSTRUMENTS", "train_ensemble"]


@dataclass
class TrainingSet:
    """Model inputs with their truth.

    Attributes
    ----------
    x : numpy.ndarray
        (n, in_channels, 4201) float32 network inputs.
    truth : pandas.DataFrame
        One row per input: the observation (``z_true``, ``snr_r_requested``, header
        ``snrr``) and the library truth (``oh12``, ``starforming``, ``bpt_class``, ...).
    lines : numpy.ndarray or None
        (n, n_line_features) emission-line features of the same spectra
        (:func:`survey_ml.core.lines.line_features`), when asked for.
    """

    x: np.ndarray
    truth: pd.DataFrame
    lines: np.ndarray | None = None


def _observe_inputs(plan_rows: pd.DataFrame, library_path: str, instrument: LamostInstrument,
                    in_channels: int, lines: bool = False) -> tuple[np.ndarray, pd.DataFrame, np.ndarray | None]:
    """Observe one block of library rows and turn them into network inputs (runs on a worker).

    With ``lines``, also their emission-line features, fitted at the catalogue redshift the
    observation writes in the header (as run-catalog fits them)."""
    from ..simulate.library import open_library

    library = open_library(library_path)
    rows = np.sort(plan_rows["library_row"].unique())
    rest = dict(zip(rows, library.flux(rows)))
    spectra, records = [], []
    for obs in plan_rows.itertuples(index=False):
        spec, record = observe_lamost(library.wave, rest[obs.library_row], obs.z_true, obs.snr_r_requested,
                                      np.random.default_rng(obs.noise_seed), obs.obsid, instrument)
        spectra.append(spec)
        records.append({"obsid": obs.obsid, "library_row": int(obs.library_row), "z_true": obs.z_true,
                        "z": spec.meta["z"], "snr_r_requested": obs.snr_r_requested, "snrr": spec.meta["snrr"]})
    wave = instrument.wavelength
    flux, ivar, mask = (np.stack([getattr(s, k) for s in spectra]) for k in ("flux", "ivar", "andmask"))
    x = model_inputs(flux, ivar, mask, wave, in_channels)
    features = None
    if lines:
        from ..core.lines import line_features

        features = line_features(flux, ivar, mask, wave, np.array([s.meta["z"] for s in spectra], float))
    return x, pd.DataFrame(records), features


def make_training_set(library, n: int, seed: int = 0, plan: ObservationPlan = ObservationPlan(),
                      rows: np.ndarray | None = None, instrument: LamostInstrument = LamostInstrument(),
                      in_channels: int = 1, client=None, block_size: int = 250,
                      progress: bool = False, lines: bool = False) -> TrainingSet:
    """``n`` observed spectra of library rows, as network inputs with their truth.

    Parameters
    ----------
    library : survey_ml.simulate.library.Library
    n : int
        Spectra to make (library rows are re-observed as often as needed).
    seed : int
        Seed of the redshift, S/N and noise draws.
    plan : ObservationPlan
        Redshift and S/N_r distributions (the release spec's ``[simulate]``).
    rows : array_like, optional
        Library rows to draw from (e.g. the star-forming ones); default all usable rows.
    instrument : LamostInstrument
    in_channels : int
        1 (flux) or 2 (flux and coverage).
    client : distributed.Client, optional
        Make blocks on the cluster (else here).
    block_size : int
        Spectra per task.
    progress : bool
        Progress bar.
    lines : bool
        Also the emission-line features (:attr:`TrainingSet.lines`).
    """
    truth = library.truth
    pool = np.asarray(rows) if rows is not None else truth.index[truth["ok"]].to_numpy()
    rng = np.random.default_rng(seed)
    draws = draw_observations(n, len(pool), rng, plan)
    draws["library_row"] = pool[draws["library_row"].to_numpy()]
    blocks = [(draws.iloc[a: a + block_size], str(library.path), instrument, in_channels, lines)
              for a in range(0, n, block_size)]
    parts = run_blocks(_observe_inputs, blocks, client, desc="training set", progress=progress)
    x = np.concatenate([p[0] for p in parts])
    observed = pd.concat([p[1] for p in parts], ignore_index=True)
    merged = observed.merge(truth.rename(columns={"row": "library_row"}), on="library_row", how="left",
                            suffixes=("", "_library"))
    return TrainingSet(x=x, truth=merged, lines=np.concatenate([p[2] for p in parts]) if lines else None)


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved beside the weights).

    Defaults are the published recipe; ``heteroscedastic`` and ``in_channels`` are our
    extensions (per-object uncertainty; a coverage channel).
    """

    task: str = "metallicity"            # "metallicity" (regression) or "sfclass" (2 sigmoid outputs)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    early_stop_patience: int | None = None  # None: run all epochs, keep the best
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0
    heteroscedastic: bool = False
    nll_beta: float = 0.0                # beta-NLL weight of the variance term (0 = plain NLL)
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    stem_pool: int = 1
    threads: int | None = None
    device: str | None = None
    ensemble: int = 1                    # members of a deep ensemble (heteroscedastic regression only)
    member: int = 0                      # which member this run trains: seeds its initial weights and batch order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """A trained network, its history and the split it was trained on."""

    model: SpectralCNN
    config: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    test_index: np.ndarray | None = None
    seconds: float = 0.0
    members: list[dict[str, Any]] = field(default_factory=list)   # per-member figures of an ensemble


def split_indices(n: int, split: tuple[float, float, float], seed: int,
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint random train/validation/test indices in the given proportions (reproducible).

    With ``groups`` (e.g. the library row of each spectrum), whole groups are split, so
    re-observations of one galaxy never sit on both sides and the validation and test
    losses measure galaxies the network has not seen.

    Examples
    --------
    >>> tr, va, te = split_indices(10, (0.7, 0.1, 0.2), 0)
    >>> len(tr), len(va), len(te), len(set(tr) | set(va) | set(te))
    (7, 1, 2, 10)
    >>> g = np.repeat(np.arange(10), 3)
    >>> tr, va, te = split_indices(30, (0.7, 0.1, 0.2), 0, groups=g)
    >>> len(tr), len(va), len(te), set(g[tr]) & set(g[te])
    (21, 3, 6, set())
    """
    if groups is not None:
        unique, inverse = np.unique(np.asarray(groups), return_inverse=True)
        gtr, gva, gte = split_indices(len(unique), split, seed)
        side = np.empty(len(unique), dtype=np.int8)
        side[gtr], side[gva], side[gte] = 0, 1, 2
        which = side[inverse]
        return tuple(np.flatnonzero(which == k) for k in range(3))  # type: ignore[return-value]
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(split[0] * n))
    n_val = int(round(split[1] * n))
    return np.sort(order[:n_train]), np.sort(order[n_train: n_train + n_val]), np.sort(order[n_train + n_val:])


def _loss(model: SpectralCNN, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
          selection: bool = False, lines: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss; with ``selection``, the figure the best checkpoint is chosen on.

    Heteroscedastic regression: the mean is trained on the published MSE (in standardised
    units), and the log-variance by the Gaussian NLL of the *detached* residual, so the
    uncertainty head can never trade accuracy of the mean for a larger error bar.
    Checkpoints are chosen on the MSE of the mean.
    """
    out = model(x) if lines is None else model(x, lines)
    if config.task == "sfclass":
        return nn.functional.binary_cross_entropy_with_logits(out, y)
    scale2 = model.target_scale**2
    if config.heteroscedastic:
        mean, log_var = out
        mse = nn.functional.mse_loss(mean, y) / scale2
        if selection:
            return mse
        return mse + gaussian_nll(mean.detach(), log_var, y, config.nll_beta)
    return nn.functional.mse_loss(out, y) / scale2


def _targets(y: np.ndarray, task: str) -> np.ndarray:
    if task == "sfclass":  # one-hot (star-forming, not), two sigmoid outputs as published
        y = np.asarray(y, dtype=bool)
        return np.stack([y, ~y], axis=1).astype(np.float32)
    return np.asarray(y, dtype=np.float32)[:, None]


def train_model(x: np.ndarray, y: np.ndarray, config: TrainConfig = TrainConfig(),
                groups: np.ndarray | None = None, progress: bool = False,
                lines: np.ndarray | None = None) -> TrainResult:
    """Train a :class:`SpectralCNN` on inputs ``x`` and targets ``y`` with ``config``.

    Parameters
    ----------
    x : numpy.ndarray
        (n, in_channels, n_pix) float32 network inputs.
    y : numpy.ndarray
        (n,) targets: 12 + log(O/H), or booleans (star-forming) for ``task="sfclass"``.
    config : TrainConfig
    groups : numpy.ndarray, optional
        (n,) group of each input (library row): the split keeps groups whole.
    progress : bool
        Print one line per epoch.
    lines : numpy.ndarray, optional
        (n, n_line_features) emission-line features: the network then reads them beside the
        spectrum, standardised by the training rows' mean and standard deviation.

    Returns
    -------
    TrainResult
        With the best-validation weights loaded into ``model``.
    """
    start = time.perf_counter()
    torch.manual_seed(config.seed + 1009 * config.member)   # the split below depends on config.seed alone
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_out = 2 if config.task == "sfclass" else 1
    tr, va, te = split_indices(len(x), config.split, config.seed, groups)
    scaling = {}
    if config.task != "sfclass":  # standardised targets (the network then starts near the answer)
        y_train = np.asarray(y, dtype=float)[tr]
        scaling = {"target_shift": float(y_train.mean()), "target_scale": float(y_train.std() or 1.0)}
    model = SpectralCNN(n_pix=x.shape[-1], n_out=n_out, in_channels=x.shape[1],
                        heteroscedastic=config.heteroscedastic and config.task != "sfclass",
                        channels=tuple(config.channels), stem_pool=config.stem_pool,
                        n_lines=0 if lines is None else lines.shape[1], **scaling).to(device)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(_targets(y, config.task))
    lt = None
    if lines is not None:
        lt = torch.from_numpy(np.ascontiguousarray(lines, dtype=np.float32))
        std = lt[tr].std(dim=0)
        model.set_line_scaling(lt[tr].mean(dim=0), torch.where(std > 1e-3, std, torch.ones_like(std)))

    def rows_of(t: torch.Tensor | None, idx):
        return None if t is None else t[idx].to(device)

    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=config.plateau_factor,
                                                           patience=config.plateau_patience)
    history, best_epoch = train_epochs(
        model, tr, lambda idx: _loss(model, xt[idx].to(device), yt[idx].to(device), config, lines=rows_of(lt, idx)),
        lambda: _evaluate(model, xt, yt, va, config, device, lt=lt), optimiser, scheduler, epochs=config.epochs,
        batch_size=config.batch_size, seed=config.seed + config.member, patience=config.early_stop_patience,
        progress=progress,
        start=start)
    return TrainResult(model=model, config=config, history=history, best_epoch=best_epoch, train_index=tr,
                       val_index=va, test_index=te, seconds=time.perf_counter() - start)


def train_ensemble(x: np.ndarray, y: np.ndarray, config: TrainConfig = TrainConfig(),
                   groups: np.ndarray | None = None, progress: bool = False,
                   lines: np.ndarray | None = None) -> TrainResult:
    """:func:`train_model`, or ``config.ensemble`` members of it on one split, as a :class:`SpectralEnsemble`.

    Members differ only in ``config.member`` (initial weights, batch order); the returned
    result carries the ensemble as ``model``, member 0's history and split, the summed
    training time, and each member's best epoch in ``members``.
    """
    from ..models.spectral_cnn import SpectralEnsemble

    if config.ensemble <= 1:
        return train_model(x, y, config, groups=groups, progress=progress, lines=lines)
    if config.task == "sfclass" or not config.heteroscedastic:
        raise ValueError("a deep ensemble is built for heteroscedastic regression (the metallicity network)")
    results = [train_model(x, y, replace(config, member=k), groups=groups, progress=progress, lines=lines)
               for k in range(config.ensemble)]
    first = results[0]
    return replace(first, model=SpectralEnsemble.of([r.model for r in results]).eval(),
                   seconds=sum(r.seconds for r in results),
                   members=[{"member": k, "best_epoch": r.best_epoch, "epochs_run": len(r.history),
                             "seconds": r.seconds} for k, r in enumerate(results)])


def _evaluate(model: SpectralCNN, xt: torch.Tensor, yt: torch.Tensor, index: np.ndarray, config: TrainConfig,
              device: torch.device, batch: int = 1024, lt: torch.Tensor | None = None) -> float:
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for k in range(0, len(index), batch):
            idx = index[k: k + batch]
            lines = None if lt is None else lt[idx].to(device)
            total += float(_loss(model, xt[idx].to(device), yt[idx].to(device), config, selection=True,
                                 lines=lines)) * len(idx)
    return total / max(len(index), 1)


# --------------------------------------------------------------------------- recipes
def load_recipe(task_or_path: str | os.PathLike) -> dict[str, Any]:
    """A training recipe: ``survey_ml/weights/<task>.toml`` by task name, or any TOML path.

    Examples
    --------
    >>> recipe = load_recipe("metallicity")
    >>> recipe["task"], recipe["training_set"]["rows"]
    ('metallicity', 'young')
    """
    from ..core.inference import WEIGHTS_DIR

    path = Path(task_or_path)
    if not path.suffix:
        path = WEIGHTS_DIR / f"{task_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no training recipe {task_or_path!r} (looked for {path})")
    with path.open("rb") as fh:
        recipe = tomllib.load(fh)
    recipe["recipe_path"] = str(path)
    return recipe


#: Instruments a recipe can observe its training spectra with (``[training_set] instrument``).
INSTRUMENTS = {"lamost": LamostInstrument, "randomised": LamostInstrument.randomised}
#: Bumped when :func:`survey_ml.core.lines.line_features` changes (cached training sets then rebuild).
LINE_FEATURES_VERSION = 1


def young_rows(truth: pd.DataFrame) -> np.ndarray:
    """Library rows whose lines are lit by young stars alone: a star-forming host, no AGN, EW(H-alpha) >= 3 A.

    These are the galaxies whose gas-phase metallicity the strong lines measure, whatever
    BPT class their line ratios happen to fall in (with logU independent of Z many sit in
    the 'composite' region of the CLOUDY grid without any AGN).
    """
    return np.flatnonzero(truth["ok"].to_numpy(bool) & (truth["host"] == "star_forming").to_numpy(bool)
                          & (truth["agn_type"] == "none").to_numpy(bool) & (truth["ha_ew"].to_numpy(float) >= 3.0))


def recipe_training_set(recipe: dict[str, Any], library, client=None, progress: bool = False,
                        table: str = "training_set") -> TrainingSet:
    """The spectra a recipe table asks for (``[training_set]`` or ``[uncertainty]``): its library rows
    observed with its release's plan (or the table's ``snr_r`` override) and instrument."""
    plan = ObservationPlan.from_spec(load_release_spec(recipe.get("release", "dr10")))
    ts, in_channels = recipe[table], 2  # flux and coverage; a 1-channel model reads x[:, :1]
    if "snr_r" in ts:
        plan = replace(plan, **{f"snr_{k}": float(v) for k, v in ts["snr_r"].items()})
    instrument = INSTRUMENTS[ts.get("instrument", "lamost")]()
    truth = library.truth
    ok = truth["ok"].to_numpy(bool)
    sf = truth["starforming"].to_numpy(bool)
    n, seed = int(ts["n"]), int(ts["seed"])
    kw = {"instrument": instrument, "in_channels": in_channels, "client": client, "progress": progress,
          "lines": wants_lines(recipe)}
    if ts["rows"] == "starforming":
        return make_training_set(library, n, seed, plan, rows=np.flatnonzero(ok & sf), **kw)
    if ts["rows"] == "young":
        return make_training_set(library, n, seed, plan, rows=young_rows(truth), **kw)
    if ts["rows"] == "balanced":
        halves = [make_training_set(library, n // 2, seed + k, plan, rows=np.flatnonzero(ok & (sf == want)), **kw)
                  for k, want in enumerate((True, False))]
        return TrainingSet(x=np.concatenate([h.x for h in halves]),
                           truth=pd.concat([h.truth for h in halves], ignore_index=True),
                           lines=np.concatenate([h.lines for h in halves]) if kw["lines"] else None)
    if ts["rows"] == "all":
        return make_training_set(library, n, seed, plan, rows=np.flatnonzero(ok), **kw)
    raise ValueError(f"{table}.rows must be starforming, young, balanced or all, not {ts['rows']!r}")


def wants_lines(recipe: dict[str, Any]) -> bool:
    """Whether a recipe's network reads emission-line features (``[model] line_features = true``)."""
    return bool(recipe.get("model", {}).get("line_features", False))


def _cached_training_set(recipe: dict[str, Any], library, client, progress: bool,
                         table: str = "training_set") -> TrainingSet:
    """:func:`recipe_training_set`, kept beside the library (``trainingset-<digest>.npy`` + ``.parquet``).

    The digest covers the library, the release's observation plan and the recipe's
    ``[training_set]`` and input channels (and whether line features are asked for), so a
    changed recipe never reuses stale data. Line features are kept as ``<stem>-lines.npy``.
    """
    lines = wants_lines(recipe)
    key = json.dumps({"library": library.path.name, "release": recipe.get("release", "dr10"),
                      "set": {k: v for k, v in recipe[table].items() if k != "library"}, "in_channels": 2,
                      "plan": asdict(ObservationPlan.from_spec(load_release_spec(recipe.get("release", "dr10")))),
                      **({"lines": LINE_FEATURES_VERSION} if lines else {})},
                     sort_keys=True)
    stem = library.path.parent / f"trainingset-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    x_file, truth_file = stem.with_suffix(".npy"), stem.with_suffix(".parquet")
    lines_file = stem.with_name(stem.name + "-lines.npy")
    if x_file.exists() and truth_file.exists():
        return TrainingSet(x=np.load(x_file, mmap_mode="r"), truth=pd.read_parquet(truth_file),
                           lines=np.load(lines_file) if lines else None)
    data = recipe_training_set(recipe, library, client=client, progress=progress, table=table)
    if lines:
        tmp = stem.with_name(stem.name + f".tmp-lines-{os.getpid()}.npy")
        np.save(tmp, data.lines)
        os.replace(tmp, lines_file)
    tmp = stem.with_name(stem.name + f".tmp-{os.getpid()}.npy")
    np.save(tmp, data.x)
    os.replace(tmp, x_file)
    data.truth.to_parquet(truth_file, index=False)  # written last: the commit record
    return data


def recipe_config(recipe: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of a recipe (its ``[train]`` and ``[model]`` tables)."""
    model = recipe.get("model", {})
    fields = {**recipe.get("train", {}), "task": recipe["task"],
              "channels": tuple(model.get("channels", TrainConfig.channels)),
              "stem_pool": int(model.get("stem_pool", 1)), "in_channels": int(model.get("in_channels", 1)),
              "heteroscedastic": bool(model.get("heteroscedastic", False))}
    if "split" in fields:
        fields["split"] = tuple(fields["split"])
    return TrainConfig(**fields)


def _library_config(table: dict[str, Any]):
    from ..simulate.library import LibraryConfig

    return LibraryConfig(n=int(table["n"]), seed=int(table["seed"]), priors=str(table.get("priors", "survey")))


def _tensors(data: dict[str, Any]) -> dict[str, Any]:
    """Lists as float32 tensors: compact inside a ``weights_only`` torch file."""
    return {k: torch.tensor(np.asarray(v, dtype=np.float32)) if isinstance(v, list) else v for k, v in data.items()}


def fit_uncertainty(model: SpectralCNN, x: np.ndarray, train_index: np.ndarray, val_index: np.ndarray,
                    x_cal: np.ndarray, y_cal: np.ndarray, n_components: int = 32, n_bins: int = 5,
                    n_fit: int = 20000, seed: int = 0, lines: np.ndarray | None = None,
                    lines_cal: np.ndarray | None = None):
    """The OOD density of a trained network's features and its error calibration on a shifted set.

    The density (:class:`~survey_ml.core.uncertainty.FeatureDensity`) is fitted on up to
    ``n_fit`` training rows, its flag threshold on the validation rows; the calibration
    (:class:`~survey_ml.core.uncertainty.ErrorCalibration`) on ``x_cal``/``y_cal``: spectra of
    galaxies the network never saw, observed differently (another library seed, a wider
    S/N range). ``lines`` / ``lines_cal``: the line features of ``x`` / ``x_cal`` for a network
    that reads them. Returns ``(density, calibration, figures)``.
    """
    from ..core.uncertainty import ErrorCalibration, FeatureDensity, coverage
    from ..core.inference import forward_batches

    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(train_index, min(n_fit, len(train_index)), replace=False))
    def rows(a, idx):
        return None if a is None else np.asarray(a[idx])

    _, f_train = forward_batches(model, np.asarray(x[fit_rows]), 512, features=True, lines=rows(lines, fit_rows))
    _, f_val = forward_batches(model, np.asarray(x[val_index]), 512, features=True, lines=rows(lines, val_index))
    density = FeatureDensity.fit(f_train, n_components=n_components, held_out=f_val)
    pred, f_cal = forward_batches(model, np.asarray(x_cal), 512, features=True, lines=lines_cal)
    score = density.score(f_cal)
    resid = pred[:, 0] - np.asarray(y_cal, dtype=float)
    calibration = ErrorCalibration.fit(resid, pred[:, 1], score, n_bins=n_bins)
    sigma = calibration.apply(pred[:, 1], score)
    figures = {"n": int(len(resid)), "bias": float(np.mean(resid)), "sigma": float(np.std(resid)),
               "raw_within_1sigma": coverage(resid, pred[:, 1]), "raw_within_2sigma": coverage(resid, pred[:, 1], 2),
               "within_1sigma": coverage(resid, sigma), "within_2sigma": coverage(resid, sigma, 2),
               "ood_threshold": density.threshold, "ood_flagged": float(np.mean(score > density.threshold)),
               "scales": calibration.scales.tolist(), "edges": calibration.edges.tolist()}
    return density, calibration, figures


def evaluate(task: str, pred: np.ndarray, truth: pd.DataFrame) -> dict[str, float]:
    """Test-set figures: metallicity bias/sigma (and error calibration); classifier accuracy.

    ``pred`` is what :func:`survey_ml.core.inference.forward_batches` returns for the rows of ``truth``.
    """
    if task == "sfclass":
        from ..core.inference import starforming_probability

        p = starforming_probability(pred)
        y = truth["starforming"].to_numpy(bool)
        guess = p >= 0.5
        return {"n": int(len(y)), "accuracy": float(np.mean(guess == y)),
                "precision_sf": float(np.mean(y[guess])) if guess.any() else float("nan"),
                "recall_sf": float(np.mean(guess[y])) if y.any() else float("nan")}
    resid = pred[:, 0] - truth["oh12"].to_numpy(float)
    out = {"n": int(len(resid)), "bias": float(np.mean(resid)), "sigma": float(np.std(resid)),
           "nmad": float(1.4826 * np.median(np.abs(resid - np.median(resid))))}
    if pred.shape[1] > 1:
        pull = np.abs(resid) / pred[:, 1]
        out |= {"within_1sigma": float(np.mean(pull < 1)), "within_2sigma": float(np.mean(pull < 2))}
    return out


def train_task(task_or_path: str | os.PathLike, out: str | os.PathLike | None = None, client=None,
               cache_dir: str | os.PathLike | None = None, progress: bool = False) -> dict[str, Any]:
    """Train a task's network from its recipe and write the weights and a JSON report.

    Parameters
    ----------
    task_or_path : str or path
        ``metallicity``, ``sfclass``, or a recipe TOML.
    out : path, optional
        Weights file to write (default ``<task>.pt`` beside the recipe - the shipped file).
    client : distributed.Client, optional
        Cluster for the library build and the training-set observations.
    cache_dir : path, optional
        Library cache folder.
    progress : bool
        Progress bars and one line per epoch.

    Returns
    -------
    dict
        The report written next to the weights (``<weights>.json``): recipe, test-set
        figures, best epoch, timings, weights SHA-256.
    """
    from ..core.inference import forward_batches, save_weights, weights_sha256
    from ..simulate.library import build_library

    recipe = load_recipe(task_or_path)
    task = recipe["task"]
    out = Path(out) if out else Path(recipe["recipe_path"]).with_suffix(".pt")
    t0 = time.perf_counter()
    library = build_library(_library_config(recipe["library"]), cache_dir=cache_dir, client=client, progress=progress)
    t_library = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = _cached_training_set(recipe, library, client, progress)
    t_data = time.perf_counter() - t0
    config = recipe_config(recipe)
    data = TrainingSet(x=data.x[:, : config.in_channels], truth=data.truth, lines=data.lines)
    y = data.truth["starforming" if task == "sfclass" else "oh12"].to_numpy()
    result = train_ensemble(data.x, y, config, groups=data.truth["library_row"].to_numpy(), progress=progress,
                            lines=data.lines)
    test_lines = None if data.lines is None else data.lines[result.test_index]
    pred = forward_batches(result.model, data.x[result.test_index], lines=test_lines)
    metrics = evaluate(task, pred, data.truth.iloc[result.test_index])
    targets = ["starforming", "not_starforming"] if task == "sfclass" else ["oh12"]
    report = {"task": task, "recipe": {k: v for k, v in recipe.items() if k != "recipe_path"},
              "recipe_path": Path(recipe["recipe_path"]).name, "library": str(library.path.name),
              "n_spectra": int(len(data.x)), "n_train": int(len(result.train_index)),
              "n_val": int(len(result.val_index)), "n_test": int(len(result.test_index)),
              "best_epoch": result.best_epoch, "epochs_run": len(result.history),
              "seconds": {"library": t_library, "training_set": t_data, "training": result.seconds},
              "test": metrics, "history": result.history,
              **({"members": result.members} if result.members else {})}
    extra: dict[str, Any] = {}
    if "uncertainty" in recipe and config.heteroscedastic:
        t0 = time.perf_counter()
        cal_library = build_library(_library_config(recipe["uncertainty"]["library"]), cache_dir=cache_dir,
                                    client=client, progress=progress)
        cal = _cached_training_set(recipe, cal_library, client, progress, table="uncertainty")
        density, calibration, figures = fit_uncertainty(
            result.model, data.x, result.train_index, result.val_index, cal.x[:, : config.in_channels],
            cal.truth["oh12"].to_numpy(float), n_components=int(recipe["uncertainty"].get("n_components", 32)),
            n_bins=int(recipe["uncertainty"].get("n_bins", 5)), lines=data.lines, lines_cal=cal.lines)
        report["calibration"] = figures | {"library": cal_library.path.name}
        report["seconds"]["calibration"] = time.perf_counter() - t0
        extra["uncertainty"] = {"density": _tensors(density.to_dict()), "calibration": _tensors(calibration.to_dict())}
    save_weights(result.model, out, task, targets, extra={"training": {k: v for k, v in report.items()
                                                                       if k not in ("history", "recipe")}, **extra})
    report["weights_sha256"] = weights_sha256(out)
    Path(out).with_suffix(".json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report
