"""Partition-wise inference: the model is loaded once per worker process and kept.

A weights file is a ``torch.save`` of a plain dict (loaded with ``weights_only=True``, never
unpickling code)::

    {"task": "metallicity", "architecture": "SpectralCNN",
     "config": {"n_pix": 4201, "n_out": 1, "in_channels": 1, "heteroscedastic": False},
     "targets": ["oh12"], "state_dict": {...}}

:func:`load_model` keeps one model per (weights SHA-256, device) in a module-level cache,
so every task on a worker after the first reuses it - the model never travels through the
Dask graph. :func:`predict_spectra` is the block function: native-grid arrays of one chunk
in, predictions out, batched, with the torch thread count set explicitly (Dask's nanny
sets OMP_NUM_THREADS=1 in workers) and the device chosen per worker (CUDA when present).
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.kinematics import KinematicModel
from ..models.redshift_cnn import PublishedRedshiftCNN, RedshiftPDFNet
from ..models.spectral_cnn import SpectralCNN, SpectralEnsemble
from ..models.stellar_resnet import StellarResNet
from .spectra import model_inputs

__all__ = ["weights_sha256", "save_weights", "load_model", "predict_spectra", "forward_batches", "batch_size_for",
           "starforming_probability", "cached_models", "shipped_weights", "default_device", "worker_threads",
           "WEIGHTS_DIR"]

ARCHITECTURES = {"SpectralCNN": SpectralCNN, "SpectralEnsemble": SpectralEnsemble, "RedshiftPDFNet": RedshiftPDFNet,
                 "PublishedRedshiftCNN": PublishedRedshiftCNN, "KinematicModel": KinematicModel,
                 "StellarResNet": StellarResNet}
#: Where the trained weights and their training recipes ship, inside the package.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
_CACHE: dict[tuple[str, str], tuple[torch.nn.Module, dict[str, Any]]] = {}
_LOCK = threading.Lock()


def weights_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a weights file (names the model in caches and catalog provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: torch.nn.Module, path: str | os.PathLike, task: str, targets: list[str],
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` in the weights format above (plain tensors and primitives only)."""
    payload = {"task": task, "architecture": type(model).__name__,
               "config": model.config(),
               "targets": list(targets), "state_dict": model.state_dict(), **(extra or {})}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def shipped_weights(task: str) -> Path:
    """The weights file shipped for ``task`` (``metallicity``, ``sfclass``).

    Examples
    --------
    >>> shipped_weights("metallicity").name
    'metallicity.pt'
    """
    path = WEIGHTS_DIR / f"{task}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped weights for task {task!r} at {path}; "
                                f"train them with `survey-ml train {task}`")
    return path


def default_device() -> torch.device:
    """CUDA when this process sees a GPU, else CPU.

    On a dask-cuda worker ``CUDA_VISIBLE_DEVICES`` lists the worker's own GPU first, so
    ``cuda`` is that GPU: the same code serves CPU and GPU workers.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def batch_size_for(device: str | torch.device | None, cpu: int = 512, gpu: int = 8192) -> int:
    """Spectra per forward pass on ``device`` (default: this process's): large on a GPU.

    GPU memory inside a running task cannot be spilled by dask-cuda, so the GPU batch bounds
    it: 8192 LAMOST spectra are ~0.3 GB of inputs and activations of the metallicity CNN.

    Examples
    --------
    >>> batch_size_for("cpu"), batch_size_for("cuda")
    (512, 8192)
    """
    device = torch.device(device) if device is not None else default_device()
    return gpu if device.type == "cuda" else cpu


_HEAP_TUNED = False
#: glibc ``mallopt`` parameter number of M_MMAP_THRESHOLD.
_M_MMAP_THRESHOLD = -3


def tune_heap_for_inference(threshold: int = 64 << 20) -> bool:
    """Serve tensor-sized allocations from the heap, not fresh ``mmap`` calls (glibc only).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, and setting any glibc
    malloc threshold switches off glibc's adaptive mmap threshold: every allocation above
    128 kB - each activation tensor of a forward pass - is then a new ``mmap`` whose pages
    fault in again on every batch. Measured here: the CNNs ran 2.5x slower in a Dask
    worker than in a plain process on the same thread count. Raising M_MMAP_THRESHOLD
    restores plain-process speed; trimming of freed memory (what the nanny wants) is kept.
    Returns whether the setting was applied.
    """
    global _HEAP_TUNED
    if _HEAP_TUNED or not sys.platform.startswith("linux"):
        return _HEAP_TUNED
    try:
        import ctypes

        _HEAP_TUNED = bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        _HEAP_TUNED = False
    return _HEAP_TUNED


def load_model(weights: str | os.PathLike, device: str | torch.device | None = None,
               architecture: type[torch.nn.Module] | None = None):
    """The model of a weights file, built once per process and device, in eval mode.

    ``architecture`` builds a network survey_ml does not know (a plug-in task's own
    ``model_class``); its name must be the file's ``architecture``. The file is still read
    with ``weights_only=True``: only tensors and plain values, never code.

    Returns
    -------
    model : torch.nn.Module
    info : dict
        The file's fields other than ``state_dict``, plus ``sha256``.
    """
    sha = weights_sha256(weights)
    device = torch.device(device) if device is not None else default_device()
    key = (sha, str(device))
    with _LOCK:
        if key not in _CACHE:
            tune_heap_for_inference()
            payload = torch.load(weights, map_location="cpu", weights_only=True)
            if architecture is not None and architecture.__name__ != payload["architecture"]:
                raise ValueError(f"{weights}: holds a {payload['architecture']}, not a {architecture.__name__}")
            known = ARCHITECTURES if architecture is None else {architecture.__name__: architecture}
            if payload["architecture"] not in known:
                raise ValueError(f"{weights}: unknown architecture {payload['architecture']!r} "
                                 f"(survey_ml knows {', '.join(ARCHITECTURES)}; a plug-in task sets model_class)")
            model = known[payload["architecture"]](**payload["config"])
            model.load_state_dict(payload["state_dict"])
            model.eval().to(device)
            if device.type == "cuda":  # fixed input shapes: let cuDNN pick its fastest kernels once
                torch.backends.cudnn.benchmark = True
            info = {k: v for k, v in payload.items() if k != "state_dict"} | {"sha256": sha}
            _CACHE[key] = (model, info)
        return _CACHE[key]


def cached_models() -> list[tuple[str, str]]:
    """(sha256, device) of the models this process holds (for tests and diagnostics)."""
    return list(_CACHE)


def worker_threads() -> int:
    """torch intra-op threads for a task: the Dask worker's thread count, else every core."""
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ImportError, ValueError):
        return max(1, os.cpu_count() or 1)


def predict_spectra(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, wavelength: np.ndarray,
                    weights: str | os.PathLike, batch_size: int = 512, threads: int | None = None,
                    device: str | None = None, z: np.ndarray | None = None) -> np.ndarray:
    """Predictions for one block of native-grid spectra.

    Parameters
    ----------
    flux, ivar, mask : numpy.ndarray
        (n, n_pix) rows of a release store.
    wavelength : numpy.ndarray
        (n_pix,) the store's grid.
    weights : path
        Weights file (see the module docstring).
    batch_size : int
        Spectra per forward pass (bounds memory; on a GPU, larger is faster).
    threads : int, optional
        torch intra-op threads (default: the Dask worker's thread count, else all cores).
    device : str, optional
        ``"cpu"``, ``"cuda"``... (default: CUDA when this worker has a GPU).
    z : numpy.ndarray, optional
        (n,) catalogue redshifts: needed by a network that reads emission-line features
        (they are fitted at these redshifts).

    Returns
    -------
    numpy.ndarray
        (n, n_targets) float32 predictions; a heteroscedastic model gives (n, 2 n_targets):
        means, then standard deviations. Zero rows give a (0, n_out) array; reading n_out
        needs the weights file, so callers of ``map_blocks`` pass ``meta=`` and Dask never
        calls this on the client.
    """
    model, info = load_model(weights, device)
    n_out = info["config"]["n_out"] * (2 if info["config"]["heteroscedastic"] else 1)
    if len(flux) == 0:
        return np.empty((0, n_out), dtype=np.float32)
    torch.set_num_threads(threads or worker_threads())
    x = model_inputs(flux, ivar, mask, wavelength, info["config"]["in_channels"])
    lines = None
    if info["config"].get("n_lines"):
        from .lines import line_features

        if z is None:
            raise ValueError(f"{weights}: the network reads emission-line features; give the redshifts (z=)")
        lines = line_features(flux, ivar, mask, wavelength, z)
    return forward_batches(model, x, batch_size, lines=lines)


def forward_batches(model: torch.nn.Module, x: np.ndarray, batch_size: int = 512,
                    features: bool = False, lines: np.ndarray | None = None
                    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The network on prepared inputs ``x`` (n, in_channels, n_pix), in batches, without gradients.

    Returns (n, n_out) float32 outputs; for a heteroscedastic model (n, 2 n_out): the
    means, then the standard deviations ``exp(log_var / 2)``. With ``features=True`` (a
    model with a ``features`` method, e.g. :class:`~survey_ml.models.spectral_cnn.SpectralCNN`)
    also the (n, n_features) features the head read, from the same pass. ``lines``:
    the (n, n_lines) emission-line features of a network that reads them.
    """
    device = next(model.parameters()).device
    on_gpu = device.type == "cuda"
    host = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    host_lines = None if lines is None else torch.from_numpy(np.ascontiguousarray(lines, dtype=np.float32))
    if on_gpu:  # page-locked host buffer: copies overlap with compute (non_blocking)
        host = host.pin_memory()
    chunks, feature_chunks = [], []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = host[start: start + batch_size].to(device, non_blocking=on_gpu)
            extra = () if host_lines is None else (host_lines[start: start + batch_size].to(device),)
            if features:
                trunk = model.features(batch, *extra)
                feature_chunks.append(trunk.float())
                pred = model.head_output(trunk)
            else:
                pred = model(batch, *extra)
            if isinstance(pred, tuple):
                mean, log_var = pred
                pred = torch.cat([mean, torch.exp(0.5 * log_var)], dim=1)
            chunks.append(pred.float())
    if not chunks:
        empty = np.empty((0, 0), dtype=np.float32)
        return (empty, empty) if features else empty
    out = torch.cat(chunks).cpu().numpy()  # one device-to-host copy per block
    return (out, torch.cat(feature_chunks).cpu().numpy()) if features else out


def starforming_probability(logits: np.ndarray) -> np.ndarray:
    """P(star-forming) from the classifier's two sigmoid outputs (star-forming, not).

    The published classifier has two independent sigmoid outputs; their normalised
    ratio ``s0 / (s0 + s1)`` is the probability used for the confidence >= 0.85 rule.

    Examples
    --------
    >>> [round(float(p), 3) for p in starforming_probability(np.array([[4.0, -4.0], [0.0, 0.0]]))]
    [0.982, 0.5]
    """
    s = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return (s[:, 0] / (s[:, 0] + s[:, 1])).astype(np.float32)
