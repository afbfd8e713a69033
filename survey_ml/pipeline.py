"""``run-catalog``: a release in, a metallicity catalog and its mass-metallicity relation out.

One call does the whole job of a release spec (``catalogs/<release>.toml``)::

    files --ingest--> store (Zarr + objects.parquet)
          --Dask, one task per Zarr chunk--> catalog/part-NNNNNN.parquet
          --> catalog.fits, mzr.png, report.json

The inference graph has one task per block of the store's ``dask.array`` (one Zarr chunk of
rows, ``Release.array``): the task reads its chunk's flux, ivar and mask itself (so spectra
never travel between workers) and runs :func:`catalog_chunk`, which preprocesses the chunk
once (:func:`survey_ml.preprocess.spectra.model_inputs`), runs every task's network on it (the model cached per worker, :func:`survey_ml.infer.load_model`) - the
redshift task (:func:`survey_ml.redshift.predict_redshifts`: ``z_cnn``, ``z_cnn_err``,
``z_cnn_flag``, ``z_cnn_dchi2``) on the same arrays, so each chunk is read once - and
writes the chunk's Parquet part atomically. Parts already written by the same weights,
cuts and store are skipped, so re-running a command resumes it and never writes a row twice.

Every row of the store gets a catalog row. ``status`` says what happened to it:

``ok`` / ``masked_values``
    Predicted (``masked_values``: some pixels were NaN/inf in the file and were bridged).
``cut_z`` / ``cut_snr``
    Outside the release spec's ``[cuts]`` (catalogue redshift, S/N_r): not predicted.
``low_coverage``
    Less than ``min_coverage`` of the 3800-8000 A model grid has good pixels: not predicted.
anything else
    The ingest status (``truncated``, ``unreadable``, ``duplicate``, ...), with its message.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .catalog import export_fits, finished_parts, read_catalog, tidy_catalog_dir, write_part
from .progress import RunJournal
from .quality import USABLE_STATUSES
from .report import write_html_report
from .spec import spec_digest

__all__ = ["run_catalog", "catalog_chunk", "chunk_options", "resolve_weights", "RunReport", "CatalogRun", "CATALOG_COLUMNS", "attach_masses", "prepare_store"]

#: Columns of a metallicity catalog, in order, with their dtypes.
CATALOG_COLUMNS: dict[str, str] = {
    "row": "int64", "obsid": "int64", "ra": "float64", "dec": "float64", "z": "float64", "snr_r": "float32",
    "coverage": "float32", "oh12": "float32", "oh12_err": "float32", "p_starforming": "float32",
    "sf_flag": "bool", "z_cnn": "float64", "z_cnn_err": "float32", "z_cnn_flag": "int32", "z_cnn_dchi2": "float32",
    "status": "string", "message": "string",
}


# --------------------------------------------------------------------------- one chunk
def catalog_chunk(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, objects: pd.DataFrame,
                  wavelength: np.ndarray, cuts: dict[str, float], weights: dict[str, str],
                  confidence: float = 0.85, min_coverage: float = 0.5, batch_size: int = 512,
                  threads: int | None = None, device: str | None = None, redshift_refine: bool | None = None,
                  redshift_batch_size: int = 256, gpu_batch_size: int = 8192) -> pd.DataFrame:
    """Catalog rows of one chunk of a release store.

    Parameters
    ----------
    flux, ivar, mask : numpy.ndarray
        (n, n_pix) native-grid arrays of the chunk.
    objects : pandas.DataFrame
        The chunk's rows of ``objects.parquet`` (same order).
    wavelength : numpy.ndarray
        The store's grid.
    cuts : dict
        The release spec's ``[cuts]``.
    weights : dict
        Weights file per task: ``{"metallicity": path, "sfclass": path, "redshift": path}`` (any
        may be absent). The redshift task runs on every usable row, whatever the cuts (they
        select by the catalogue redshift, which it re-measures).
    confidence : float
        ``sf_flag = p_starforming >= confidence`` (the published rule: 0.85).
    min_coverage : float
        Least share of good model-grid pixels for a prediction.
    batch_size, threads, device
        Passed to the networks (see :func:`survey_ml.infer.predict_spectra`); ``device``
        defaults to this worker's GPU when it has one (a dask-cuda worker), else the CPU.
    gpu_batch_size
        Spectra per forward pass on a GPU (bounds GPU memory; ``batch_size`` is the CPU's).
    redshift_refine, redshift_batch_size
        Passed to :func:`survey_ml.redshift.predict_redshifts`.

    Returns
    -------
    pandas.DataFrame
        One row per input row, :data:`CATALOG_COLUMNS`.
    """
    import torch

    from .infer import _threads_for_this_worker, batch_size_for, forward_batches, load_model, starforming_probability
    from .preprocess.spectra import model_inputs, select_rows
    from .redshift import FLAGS, predict_redshifts

    n = len(objects)
    status = objects["status"].astype(str).to_numpy(dtype=object).copy()
    message = objects["message"].astype("string").fillna("").to_numpy(dtype=object).copy()
    usable = np.isin(status, list(USABLE_STATUSES))
    z = objects["z"].to_numpy(dtype=float)
    snr = objects["snrr"].to_numpy(dtype=float)
    in_z = select_rows(z, np.zeros(n), {k: v for k, v in cuts.items() if k.startswith("z_")})
    in_snr = select_rows(np.zeros(n), snr, {k: v for k, v in cuts.items() if k.startswith("snr")})
    for reason, fails, text in (("cut_z", usable & ~in_z, "catalogue z outside [{z_min}, {z_max}]"),
                                ("cut_snr", usable & in_z & ~in_snr, "S/N_r below {snr_r_min}")):
        status[fails] = reason
        message[fails] = text.format(**{"z_min": None, "z_max": None, "snr_r_min": None, **cuts})
    chosen = np.flatnonzero(usable & in_z & in_snr)

    out = {name: np.full(n, np.nan, dtype=np.float32) for name in ("coverage", "oh12", "oh12_err", "p_starforming")}
    redshift = {"z_cnn": np.full(n, np.nan), "z_cnn_err": np.full(n, np.nan, dtype=np.float32),
                "z_cnn_flag": np.full(n, FLAGS["NO_DATA"], dtype=np.int32),
                "z_cnn_dchi2": np.full(n, np.nan, dtype=np.float32)}
    if "redshift" in weights and usable.any():
        rows = np.flatnonzero(usable)
        zres = predict_redshifts(flux[rows], ivar[rows], mask[rows], wavelength, weights["redshift"],
                                 refine=redshift_refine, threads=threads, device=device,
                                 batch_size=batch_size_for(device, redshift_batch_size, gpu_batch_size))
        for name in redshift:
            redshift[name][rows] = zres[name].to_numpy()
    if chosen.size:
        models = {task: load_model(path, device) for task, path in weights.items() if task != "redshift"}
        batch_size = batch_size_for(device, batch_size, gpu_batch_size)
        channels = {info["config"]["in_channels"] for _, info in models.values()}
        torch.set_num_threads(threads or _threads_for_this_worker())
        x = model_inputs(flux[chosen], ivar[chosen], mask[chosen], wavelength, in_channels=2)
        cov = model_inputs_coverage(x)
        out["coverage"][chosen] = cov
        enough = cov >= min_coverage
        low = chosen[~enough]
        status[low] = "low_coverage"
        message[low] = [f"only {c:.0%} of 3800-8000 A has good pixels (< {min_coverage:.0%})" for c in cov[~enough]]
        keep, x = chosen[enough], x[enough]
        inputs = {c: np.ascontiguousarray(x[:, :c]) for c in channels}
        if "metallicity" in models and keep.size:
            model, info = models["metallicity"]
            pred = forward_batches(model, inputs[info["config"]["in_channels"]], batch_size)
            out["oh12"][keep] = pred[:, 0]
            if pred.shape[1] > 1:
                out["oh12_err"][keep] = pred[:, 1]
        if "sfclass" in models and keep.size:
            model, info = models["sfclass"]
            out["p_starforming"][keep] = starforming_probability(
                forward_batches(model, inputs[info["config"]["in_channels"]], batch_size))

    frame = pd.DataFrame({
        "row": objects["row"].to_numpy(np.int64), "obsid": objects["obsid"].to_numpy(np.int64, na_value=-1),
        "ra": objects["ra"].to_numpy(float, na_value=np.nan), "dec": objects["dec"].to_numpy(float, na_value=np.nan),
        "z": z, "snr_r": snr.astype(np.float32), **out,
        "sf_flag": np.nan_to_num(out["p_starforming"], nan=0.0) >= confidence, **redshift,
        "status": status, "message": message})
    return frame.astype(CATALOG_COLUMNS)


def model_inputs_coverage(x: np.ndarray) -> np.ndarray:
    """Share of good pixels per row of 2-channel model inputs (channel 1 is the coverage)."""
    return x[:, 1].mean(axis=1).astype(np.float32)


def _write_chunk(zarr_path: str, start: int, stop: int, objects: pd.DataFrame, chunk: int, catalog_dir: str,
                 provenance: dict[str, Any], grid: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """One Dask task: read one Zarr chunk of rows, make its catalog rows, write them as its part.

    The task reads its own block from the store rather than receiving it from a separate
    read task, so spectra never travel between workers (on 2 cores that transfer cost
    ~30% of the run); the block boundaries are the Zarr chunks, i.e. the chunks of the
    store's ``dask.array``.
    """
    import zarr

    from .wavelength import LogLinearGrid

    t0 = time.perf_counter()
    flux, ivar, mask = (zarr.open_array(f"{zarr_path}/spectra/{name}", mode="r")[start:stop]
                        for name in ("flux", "ivar", "mask"))
    frame = catalog_chunk(flux, ivar, mask, objects, wavelength=LogLinearGrid(**grid).wavelength(), **options)
    write_part(frame, catalog_dir, chunk, provenance)
    return {"chunk": chunk, "rows": len(frame), "seconds": time.perf_counter() - t0,
            "status": frame["status"].value_counts().to_dict()}


# --------------------------------------------------------------------------- the run
@dataclass
class CatalogRun:
    """What any run-catalog did (spectra or IFU): where, how many rows and parts, counts, timings."""

    release: str
    out: Path
    store: Path
    catalog_dir: Path
    n_rows: int
    parts_total: int
    parts_written: int
    status_counts: dict[str, int]
    timings: dict[str, float]
    outputs: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings): the content of ``report.json``."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


@dataclass
class RunReport(CatalogRun):
    """What a metallicity / redshift run did and where its outputs are (also written as ``report.json``)."""

    mzr: dict[str, Any] | None = None
    dashboard: str | None = None

    def summary(self) -> str:
        """The lines ``survey-ml run-catalog`` prints at the end."""
        t = self.timings
        resumed = self.parts_total - self.parts_written
        lines = [f"run-catalog {self.release}: {self.n_rows} rows -> {self.catalog_dir} ({self.parts_written} part"
                 f"{'' if self.parts_written == 1 else 's'} written" + (f", {resumed} already done and kept)" if resumed else ")")]
        counts = dict(self.status_counts)
        n_flagged = counts.pop("sf_flag", 0)
        n_reliable = counts.pop("z_cnn_reliable", None)
        for status, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {status:<14s} {count:8d}")
        lines.append(f"  star-forming (sf_flag, p_starforming >= 0.85): {n_flagged}")
        if n_reliable is not None:
            lines.append(f"  redshifts (z_cnn) with z_cnn_flag == 0: {n_reliable}")
        rate = t.get("inference_rows_per_s")
        lines.append("  timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items() if not k.endswith("_per_s"))
                     + (f"; inference {rate:.0f} spectra/s" if rate else ""))
        if self.mzr:
            lines.append(f"  MZR ({self.mzr['n']} sf_flag galaxies): {self.mzr['summary']}")
        elif self.mzr is None:
            lines.append("  MZR: not fitted (no stellar masses: pass --masses)")
        for name, path in self.outputs.items():
            lines.append(f"  {name:<8s} {path}")
        if self.dashboard:
            lines.append(f"  dashboard {self.dashboard}")
        return "\n".join(lines)


def resolve_weights(spec: dict[str, Any], weights: dict[str, str] | None) -> dict[str, str]:
    from .infer import WEIGHTS_DIR

    resolved = {}
    for task, table in spec.get("tasks", {}).items():
        if task not in ("metallicity", "sfclass", "redshift"):
            continue
        path = Path((weights or {}).get(task) or table["weights"])
        if not path.is_absolute() and not path.exists():
            path = WEIGHTS_DIR / path
        if not path.is_file():
            raise FileNotFoundError(f"weights for task {task!r} not found: {path}")
        resolved[task] = str(path)
    return resolved


def chunk_options(spec: dict[str, Any], weights: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments of :func:`catalog_chunk` a release spec asks for (its ``[cuts]`` and ``[tasks.*]``).

    ``weights`` are the resolved weights files per task (:func:`resolve_weights`).
    """
    task_spec = spec.get("tasks", {})
    return {"cuts": spec.get("cuts", {}), "weights": weights,
            "confidence": float(task_spec.get("sfclass", {}).get("confidence", 0.85)),
            "min_coverage": float(task_spec.get("metallicity", {}).get("min_coverage", 0.5)),
            "batch_size": int(task_spec.get("metallicity", {}).get("batch_size", 512)),
            "redshift_refine": task_spec.get("redshift", {}).get("refine"),
            "redshift_batch_size": int(task_spec.get("redshift", {}).get("batch_size", 256)),
            "gpu_batch_size": int(task_spec.get("metallicity", {}).get("gpu_batch_size", 8192))}


def prepare_store(spec: dict[str, Any], out: Path, input: str | os.PathLike | None, store: str | os.PathLike | None,
                  client, n_mock: int | None = None, progress: bool = True) -> tuple[Path, Path | None]:
    """The store to run on: ``store`` as given; else ``input`` ingested; else a mock release.

    Returns the store path and, for a mock release, its truth table (else None).
    """
    from .store import ingest

    release = spec["release"]["name"]
    chunk_rows = int(spec.get("ingest", {}).get("chunk_rows", 1024))
    if store is not None and input is None:
        if not (Path(store) / "release.json").exists():
            raise FileNotFoundError(f"{store} is not a release store (no release.json); "
                                    f"give --input to ingest survey files into it")
        return Path(store), None
    truth = None
    if input is None:
        input, truth = _mock_release(spec, out / "mock", client, n_mock, progress)
    source, data_root = _source_of(spec, Path(input))
    store = Path(store) if store is not None else out / "store"
    ingest(source, store, release, client=client, reader=spec["release"].get("reader", "lamost"),
           chunk_rows=chunk_rows, data_root=data_root, progress=progress)
    return store, truth


def _source_of(spec: dict[str, Any], path: Path) -> tuple[Path, Path | None]:
    """What to ingest from ``--input``: the spec's catalogue if it is there, else the files."""
    if path.is_file():
        return path, None
    named = spec["release"].get("catalogue")
    for candidate in ([path / named] if named else []) + [path / "catalogue.csv"]:
        if candidate.is_file():
            spectra = path / spec["release"].get("spectra", "spectra")
            return candidate, (spectra if spectra.is_dir() and candidate.name == named else None)
    return path, None


def _mock_release(spec: dict[str, Any], root: Path, client, n_mock: int | None, progress: bool) -> tuple[Path, Path]:
    """The default input: a mock release of the spec's ``[simulate]`` size (reused if already written)."""
    from .simulate import DEFECTS, inject_defect
    from .simulate.library import LibraryConfig, build_library
    from .simulate.release import ObservationPlan, simulate_release, simulate_settings

    sim = simulate_settings(spec)
    n = int(n_mock or sim.get("n_spectra", 5000))
    done = root / "done.json"
    if done.exists() and json.loads(done.read_text()).get("n") == n:
        return root, root / "truth.parquet"
    library = build_library(LibraryConfig(n=int(sim.get("library_size", 2000)), seed=0), client=client,
                            progress=progress)
    mock = simulate_release(library, root, n, seed=1, plan=ObservationPlan.from_spec(spec), client=client,
                            progress=progress)
    damaged = {}
    for k, defect in enumerate(DEFECTS):  # a real release has bad files: show they are flagged, not fatal
        if 97 * k < len(mock.files):
            damaged[mock.files[97 * k]] = inject_defect(mock.files[97 * k], defect)
    done.write_text(json.dumps({"n": n, "damaged": damaged}))
    return root, mock.truth


def attach_masses(catalog: pd.DataFrame, masses: str | os.PathLike, radius_arcsec: float = 1.0) -> np.ndarray:
    """Stellar masses (log Msun) for the catalog rows, from a table matched by obsid or position.

    The table (Parquet, CSV or FITS) needs a mass column - ``log_mstar`` (a mock
    release's truth table), or MPA-JHU ``lgm_fib_p50`` / ``lgm_tot_p50`` (their -9999 and
    other non-physical values count as missing) - and either ``obsid`` or ``ra``/``dec``
    (matched within ``radius_arcsec``, as the LAMOST study matched MPA-JHU within 1").
    """
    path = Path(masses)
    if path.suffix in (".parquet", ".pq"):
        table = pd.read_parquet(path)
    elif path.suffix in (".fits", ".fit") or path.name.endswith((".fits.gz", ".fit.gz")):
        from astropy.table import Table

        t = Table.read(path)
        table = t[[c for c in t.colnames if len(t[c].shape) <= 1]].to_pandas()
    else:
        table = pd.read_csv(path)
    table.columns = [str(c).lower() for c in table.columns]
    column = next((c for c in ("log_mstar", "lgm_fib_p50", "lgm_tot_p50") if c in table.columns), None)
    if column is None:
        raise ValueError(f"{path}: no stellar-mass column (log_mstar, lgm_fib_p50 or lgm_tot_p50)")
    mass = table[column].to_numpy(dtype=float)
    mass = np.where((mass > 5) & (mass < 13), mass, np.nan)
    if "obsid" in table.columns:
        lookup = pd.Series(mass, index=table["obsid"].to_numpy(np.int64))
        lookup = lookup[~lookup.index.duplicated()]
        return lookup.reindex(catalog["obsid"].to_numpy(np.int64)).to_numpy(dtype=float)
    if {"ra", "dec"} <= set(table.columns):
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        ours = SkyCoord(catalog["ra"].to_numpy(float) * u.deg, catalog["dec"].to_numpy(float) * u.deg)
        theirs = SkyCoord(table["ra"].to_numpy(float) * u.deg, table["dec"].to_numpy(float) * u.deg)
        index, sep, _ = ours.match_to_catalog_sky(theirs)
        return np.where(sep.arcsec <= radius_arcsec, mass[index], np.nan)
    raise ValueError(f"{path}: needs an obsid column or ra/dec to match the catalog")


def run_catalog(release: str | os.PathLike = "dr10", *, input: str | os.PathLike | None = None,
                store: str | os.PathLike | None = None, out: str | os.PathLike | None = None, client=None,
                masses: str | os.PathLike | None = None, weights: dict[str, str] | None = None,
                n_mock: int | None = None, catalogue: str | os.PathLike | None = None,
                progress: bool = True) -> RunReport:
    """Run a release spec end to end: (mock or ingest) -> inference -> catalog -> MZR -> report.

    Parameters
    ----------
    release : str or path
        Release spec name (``"dr10"``) or TOML path.
    input : path, optional
        Survey files to ingest: a folder (with the spec's catalogue and spectra folder, or
        just spectra), a catalogue, or a file list. With neither ``input`` nor ``store``, a
        mock release of the spec's ``[simulate]`` size is written first, and its truth
        table gives the stellar masses.
    store : path, optional
        An ingested release store (or where to ingest ``input``; default ``<out>/store``).
    out : path, optional
        Output folder (default ``./survey_ml_<release>``): ``catalog/``, ``catalog.fits``,
        ``mzr.png``, ``report.json``.
    client : distributed.Client, optional
        Cluster; default the current client, else a LocalCluster made (and closed) here.
    masses : path, optional
        Stellar-mass table for the MZR (see :func:`attach_masses`).
    weights : dict, optional
        Weights file per task, overriding the spec's (the shipped weights).
    n_mock : int, optional
        Size of the default mock release (default: the spec's ``n_spectra``).
    catalogue : path, optional
        IFU releases (``kind = "ifu"``: MaNGA, SAMI): the DRPall / SAMI catalogue to join
        (default: the spec's ``catalogue`` inside ``input``).
    progress : bool
        Progress bars.

    Returns
    -------
    RunReport
        (:class:`survey_ml.ifu_pipeline.IFURunReport` for an IFU release).
    """
    import dask

    from . import __version__
    from .cluster import connect, current_client
    from .infer import weights_sha256
    from .relations import fit_mzr, plot_mzr
    from .spec import load_release_spec
    from .store import open_release

    spec = load_release_spec(release)
    name = spec["release"]["name"]
    out = Path(out or f"survey_ml_{name}")
    out.mkdir(parents=True, exist_ok=True)
    own_client = client is None and current_client(None) is None
    client = connect(quiet=not progress) if own_client else current_client(client)
    timings: dict[str, float] = {}
    journal = None
    try:
        if spec["release"].get("kind") == "ifu":  # MaNGA / SAMI: maps -> kinematic catalog + TFR
            from .ifu_pipeline import run_ifu_catalog

            return run_ifu_catalog(spec, input=input, store=store, out=out, client=client, catalogue=catalogue,
                                   n_mock=n_mock, progress=progress)
        journal = RunJournal(out, name, out / spec.get("outputs", {}).get("catalog", "catalog"))
        journal.stage("prepare")
        t0 = time.perf_counter()
        store_path, truth = prepare_store(spec, out, input, store, client, n_mock, progress)
        timings["prepare"] = time.perf_counter() - t0
        data = open_release(store_path)
        resolved = resolve_weights(spec, weights)
        provenance = {"version": __version__, "release": name, "spec": Path(spec["release"]["spec_path"]).name,
                      "spec_digest": spec_digest(spec, ("cuts", "tasks")), "store": str(store_path.resolve()),
                      "weights_sha256": {t: weights_sha256(p) for t, p in resolved.items()},
                      "weights": {t: Path(p).name for t, p in resolved.items()}}
        catalog_dir = out / spec.get("outputs", {}).get("catalog", "catalog")
        n_chunks = -(-data.n_rows // data.chunk_rows)
        require = {k: provenance[k] for k in ("spec_digest", "store", "weights_sha256")}
        done = finished_parts(catalog_dir, n_chunks, require=require)
        todo = [k for k in range(n_chunks) if k not in done]
        tidy_catalog_dir(catalog_dir, n_chunks)  # parts of chunks the store lacks, old torn temporaries
        options = chunk_options(spec, resolved)
        journal.stage("inference", total=n_chunks, kept=done)
        t0 = time.perf_counter()
        results = _run_parts(data, todo, str(catalog_dir), provenance, options, client, progress,
                             on_result=journal.block_callback(todo))
        timings["inference"] = time.perf_counter() - t0
        rows_done = sum(r["rows"] for r in results)
        if rows_done:
            timings["inference_rows_per_s"] = rows_done / timings["inference"]

        journal.stage("outputs")
        t0 = time.perf_counter()
        catalog = read_catalog(catalog_dir)
        if len(catalog) != data.n_rows or not np.array_equal(catalog["row"].to_numpy(), np.arange(data.n_rows)):
            raise RuntimeError(f"{catalog_dir}: catalog rows do not match the store's {data.n_rows} rows")
        outputs = {"catalog": str(catalog_dir)}
        fits_name = spec.get("outputs", {}).get("fits", f"{name}_metallicity.fits")
        outputs["fits"] = str(export_fits(catalog_dir, out / fits_name))
        mzr = None
        masses = masses or truth
        if masses is not None:
            log_mstar = attach_masses(catalog, masses, float(spec.get("mzr", {}).get("match_radius_arcsec", 1.0)))
            sf = catalog["sf_flag"].to_numpy(bool) & np.isfinite(catalog["oh12"].to_numpy(float))
            mzr_spec = spec.get("mzr", {})
            x_range = tuple(mzr_spec.get("x_range", (8.5, 11.5)))
            try:
                fit = fit_mzr(log_mstar[sf], catalog["oh12"].to_numpy(float)[sf], x_range=x_range)
            except ValueError as err:
                mzr = {"n": int(sf.sum()), "summary": f"not fitted: {err}"}
            else:
                mzr = {"n": fit.n, "coeffs": fit.coeffs.tolist(), "coeffs_err": fit.coeffs_err.tolist(),
                       "scatter": fit.scatter, "x_range": list(fit.x_range), "summary": fit.summary(),
                       "masses": str(masses),
                       "running_median": {k: np.asarray(v).tolist() for k, v in fit.bins.items()}}
                outputs["mzr_plot"] = str(plot_mzr(fit, log_mstar[sf], catalog["oh12"].to_numpy(float)[sf],
                                                   out / "mzr.png", title=f"{name}: {fit.summary()}"))
        timings["outputs"] = time.perf_counter() - t0
        counts = {str(k): int(v) for k, v in catalog["status"].value_counts().items()}
        counts["sf_flag"] = int(catalog["sf_flag"].sum())
        if "redshift" in resolved:
            counts["z_cnn_reliable"] = int((catalog["z_cnn_flag"] == 0).sum())
        report = RunReport(release=name, out=out, store=store_path, catalog_dir=catalog_dir, n_rows=data.n_rows,
                           parts_total=n_chunks, parts_written=len(todo), status_counts=counts, timings=timings,
                           outputs=outputs, mzr=mzr, dashboard=getattr(client, "dashboard_link", None),
                           provenance=provenance | {"python": platform.python_version(),
                                                    "dask": dask.__version__})
        report.outputs["report"] = str(out / "report.json")
        report.outputs["html"] = str(out / "report.html")
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
        journal.stage("report")
        write_html_report(out, report.to_dict(), truth=truth or masses, catalog=catalog)
        journal.finish(report.outputs)
        return report
    except BaseException as err:
        if journal is not None:
            journal.fail(err)
        raise
    finally:
        if own_client:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def _run_parts(data, todo: list[int], catalog_dir: str, provenance: dict[str, Any], options: dict[str, Any],
               client, progress: bool, on_result=None) -> list[dict[str, Any]]:
    """One task per unfinished Zarr chunk of rows (the store's ``dask.array`` blocks); results in chunk order."""
    from .cluster import run_blocks

    bounds = np.cumsum([0, *data.array("flux").chunks[0]])
    slim = data.objects[["row", "obsid", "ra", "dec", "z", "snrr", "status", "message"]]
    blocks = [(str(data.zarr_path), int(bounds[k]), int(bounds[k + 1]), slim.iloc[bounds[k]: bounds[k + 1]], k,
               catalog_dir, provenance, data.grid.to_dict(), options) for k in todo]
    return run_blocks(_write_chunk, blocks, client, desc="catalog", progress=progress, on_result=on_result)
