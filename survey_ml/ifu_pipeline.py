"""``run-catalog`` for IFU releases (MaNGA DR17, SAMI DR3): maps in, a kinematic catalog and the TFR out.

::

    map files + catalogue --ingest_ifu--> IFU store (Zarr maps + galaxies.parquet)
        --Dask, one task per Zarr chunk--> catalog/part-NNNNNN.parquet
        --> <release>_kinematics.fits, tfr_reverse.png, tfr_forward.png, tfr_r_band.png, report.json

A task reads its chunk of galaxies, prepares each (:func:`survey_ml.preprocess.maps.prepare_galaxies`:
S/N >= 10, kinematic PA, de-rotation, 64 x 64, scalings), runs the kinematic model with Monte
Carlo dropout (the model cached per worker), turns the draws into physical units and applies
the asymmetric-drift correction (dispersion between 2 Re and r_max on the galaxy's own maps),
then writes its Parquet part atomically (resume: parts with the same weights and spec are kept).

Weights (``[tasks.kinematics] train``, the published modes):

* absent: the spec's ``weights`` (shipped, trained on a mock release of the same survey);
* ``"solo"``: trained self-supervised on this release's own maps first (a first Dask pass
  prepares them), written to ``<out>/kinematics_solo.pt``;
* ``"combined"``: trained on this release together with the IFU stores listed as
  ``[[tasks.kinematics.combine_with]]`` (``store``, ``spec``) - SAMI with MaNGA - each with its
  own cuts and PSF, written to ``<out>/kinematics_combined.pt``;
* ``"blind"``: the shipped weights of the *other* survey (trained on MaNGA, applied to SAMI).

Flags (``kin_flag``, bits; the published post cuts are flags, never deletions): 1 not prepared
(``status`` says why), 2 inclination < 30 deg, 4 reconstruction error (moment-1 MSE over Vmax)
more than 1 sigma above the sample's mean, 8 no stellar mass. The TFR fits use rows with
``kin_flag == 0``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .pipeline import CatalogRun
from .spec import spec_digest

__all__ = ["run_ifu_catalog", "kinematics_chunk", "KINEMATIC_COLUMNS", "IFURunReport"]

_PARAMS = ("inclination_deg", "r_scale_arcsec", "r_turn_arcsec", "vmax_kms", "v22_kms")
#: Catalog columns, in order, with dtypes.
KINEMATIC_COLUMNS: dict[str, str] = {
    "row": "int64", "id": "string", "ra": "float64", "dec": "float64", "z": "float64", "log_mstar": "float64",
    "abs_mag_r": "float64", "r_e_arcsec": "float64", "pa_deg": "float64", "pa_err": "float64",
    **{c: "float64" for p in _PARAMS for c in (p, f"{p}_err")},
    "vdisp_outer_kms": "float64", "r_max_arcsec": "float64", "vmax_ad_kms": "float64", "v22_ad_kms": "float64",
    "recon_error": "float64", "kin_flag": "int32", "status": "string", "message": "string",
}
FLAG = {"NOT_PREPARED": 1, "LOW_INCLINATION": 2, "POOR_FIT": 4, "NO_MASS": 8}


def _field_of_view(galaxies: pd.DataFrame) -> np.ndarray:
    """Each galaxy's own field (arcsec): its true map size, not the store's padded one."""
    size = np.fmax(galaxies["ny"].to_numpy(float), galaxies["nx"].to_numpy(float))
    fov = size * galaxies["pixel_scale"].to_numpy(float)
    return np.where(np.isfinite(fov) & (fov > 0), fov, 25.0)


def _deprojected_radius(shape: tuple[int, int], pixel_scale: float, pa_deg: float, inc_deg: float) -> np.ndarray:
    """Radius in the disc plane (arcsec) of every spaxel, centre at the map's middle."""
    ny, nx = shape
    y, x = np.indices(shape, dtype=float)
    x, y = (x - (nx - 1) / 2) * pixel_scale, (y - (ny - 1) / 2) * pixel_scale
    pa = math.radians(pa_deg)
    major = -x * math.sin(pa) + y * math.cos(pa)       # pafit's convention: major axis along (-sin PA, cos PA)
    minor = x * math.cos(pa) + y * math.sin(pa)
    cos_i = max(math.cos(math.radians(inc_deg)), 0.1)
    return np.hypot(major, minor / cos_i)


def kinematics_chunk(block: dict[str, np.ndarray], galaxies: pd.DataFrame, weights: str, survey: str,
                     psf_fwhm_arcsec: float, samples: int = 100, lsf_widening: float = 1.0,
                     prepare: dict[str, float] | None = None, threads: int | None = None) -> pd.DataFrame:
    """Catalog rows for one chunk of an IFU store (maps ``block`` and its ``galaxies`` rows).

    ``prepare`` holds the spec's ``[prepare]`` cuts (``min_snr``, ``min_good``, ``min_vmax``).
    """
    import torch

    from .infer import _threads_for_this_worker, load_model
    from .kinematics import mc_dropout, physical_samples, reconstruction_error, summarise
    from .relations import asymmetric_drift, mean_dispersion

    n = len(galaxies)
    torch.set_num_threads(threads or _threads_for_this_worker())
    usable = galaxies["status"].astype(str).eq("ok").to_numpy()
    pixel_scale = galaxies["pixel_scale"].to_numpy(float)
    prepared = _prepare_block(block, galaxies, prepare or {})
    status = np.where(usable, prepared["status"], galaxies["status"].astype(str).to_numpy()).astype(object)
    message = np.where(usable, prepared["message"], galaxies["message"].astype("string").fillna("").to_numpy())
    ok = status == "ok"
    out = {c: np.full(n, np.nan) for c, d in KINEMATIC_COLUMNS.items() if d == "float64"}
    out["pa_deg"], out["pa_err"] = prepared["pa_deg"], prepared["pa_err"]
    if ok.any():
        model, _ = load_model(weights, "cpu")
        draws = mc_dropout(model, prepared["m0"][ok], prepared["m1"][ok], samples)
        est = summarise(physical_samples(draws, prepared["velocity_scale_kms"][ok],
                                         prepared["pixel_scale_arcsec"][ok]))
        for p in _PARAMS:
            out[p][ok], out[f"{p}_err"][ok] = est[p], est[f"{p}_err"]
        psf = psf_fwhm_arcsec / 2.3548 / prepared["pixel_scale_arcsec"][ok]
        out["recon_error"][ok] = reconstruction_error(model, prepared["m0"][ok], prepared["m1"][ok],
                                                      prepared["mask"][ok], psf)
        r_e = galaxies["r_e_arcsec"].to_numpy(float)
        for k in np.flatnonzero(ok):
            good = block["good"][k] & np.isfinite(block["dispersion"][k]) & np.isfinite(block["flux"][k])
            radius = _deprojected_radius(good.shape, pixel_scale[k], out["pa_deg"][k], out["inclination_deg"][k])
            if not good.any():
                continue
            r_max = float(radius[good].max())
            dispersion = block["dispersion"][k]
            if lsf_widening != 1.0 and "instsigma" in block:  # MaNGA: remove the widened LSF in quadrature
                dispersion = np.sqrt(np.clip(dispersion**2 - (lsf_widening * block["instsigma"][k]) ** 2, 0, None))
            out["r_max_arcsec"][k] = r_max
            out["vdisp_outer_kms"][k] = mean_dispersion(radius, dispersion, good,
                                                        r_e[k] if np.isfinite(r_e[k]) else r_max / 2, r_max)
        scale = out["r_scale_arcsec"]
        out["vmax_ad_kms"] = asymmetric_drift(out["vmax_kms"], out["vdisp_outer_kms"], out["r_max_arcsec"], scale)
        out["v22_ad_kms"] = asymmetric_drift(out["v22_kms"], out["vdisp_outer_kms"], 2.2 * scale, scale)
    flag = np.where(ok, 0, FLAG["NOT_PREPARED"])
    flag |= np.where(ok & (out["inclination_deg"] < 30), FLAG["LOW_INCLINATION"], 0)
    flag |= np.where(~np.isfinite(galaxies["log_mstar"].to_numpy(float)), FLAG["NO_MASS"], 0)
    frame = pd.DataFrame({
        "row": galaxies["row"].to_numpy(np.int64), "id": galaxies["id"].astype(str).to_numpy(),
        **{c: galaxies[c].to_numpy(float) if c in galaxies else np.full(n, np.nan)
           for c in ("ra", "dec", "z", "log_mstar", "abs_mag_r", "r_e_arcsec")},
        **{c: out[c] for c in KINEMATIC_COLUMNS if c in out and c not in ("ra", "dec", "z", "log_mstar", "abs_mag_r",
                                                                         "r_e_arcsec")},
        "kin_flag": flag.astype(np.int32), "status": status.astype(str), "message": message.astype(str)})
    return frame[list(KINEMATIC_COLUMNS)].astype(KINEMATIC_COLUMNS)


def _chunk_task(store: str, start: int, stop: int, galaxies: pd.DataFrame, chunk: int, catalog_dir: str,
                provenance: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """One Dask task: read one chunk of the IFU store, make and write its catalog part."""
    from .catalog import write_part
    from .ifu_store import open_ifu_release

    t0 = time.perf_counter()
    block = open_ifu_release(store).read_block(start, stop)
    frame = kinematics_chunk(block, galaxies, **options)
    write_part(frame, catalog_dir, chunk, provenance)
    return {"chunk": chunk, "rows": len(frame), "seconds": time.perf_counter() - t0}


def _prepare_task(store: str, start: int, stop: int, galaxies: pd.DataFrame,
                  prepare: dict[str, float]) -> dict[str, np.ndarray]:
    from .ifu_store import open_ifu_release

    return _prepare_block(open_ifu_release(store).read_block(start, stop), galaxies, prepare)


def _prepare_block(block: dict[str, np.ndarray], galaxies: pd.DataFrame, prepare: dict[str, float]
                   ) -> dict[str, np.ndarray]:
    """:func:`survey_ml.preprocess.maps.prepare_galaxies` on a store block; rows not 'ok' get no good spaxel."""
    from .preprocess.maps import prepare_galaxies

    usable = galaxies["status"].astype(str).eq("ok").to_numpy()
    return prepare_galaxies({"flux": block["flux"], "flux_err": block["flux_err"], "velocity": block["velocity"],
                             "velocity_err": block["velocity_err"], "good": block["good"] & usable[:, None, None],
                             "pixel_scale": galaxies["pixel_scale"].to_numpy(float),
                             "fov_arcsec": _field_of_view(galaxies)}, **prepare)


def _combined_source(entry: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """One ``[[tasks.kinematics.combine_with]]`` table: an ingested IFU store and its release spec."""
    from .ifu_store import open_ifu_release
    from .spec import load_release_spec

    if "store" not in entry:
        raise ValueError(f"combine_with entry {entry!r} needs store = <an ingested IFU release store>")
    store = Path(entry["store"])
    open_ifu_release(store)  # fails here, naming the folder, if it is not an IFU store
    return store, load_release_spec(entry.get("spec", "sami-dr3"))


def _train_on_releases(sources: list[tuple[Path, dict[str, Any]]], path: Path, task: dict[str, Any], client,
                       progress: bool) -> Path:
    """Train the kinematic model self-supervised on the prepared maps of one or more IFU stores.

    ``solo`` is one store (the release being catalogued); ``combined`` adds others (SAMI with
    MaNGA, as published). Each store is prepared with its own spec's ``[prepare]`` cuts and
    blurred in the decoder by its own survey PSF (``psf_fwhm_arcsec``), so surveys of
    different seeing train one model. No labels are used.
    """
    from .cluster import run_blocks
    from .infer import save_weights
    from .ifu_store import open_ifu_release
    from .kinematics import KinematicTrainConfig, train_kinematic_model

    m0, m1, mask, psf_pix, names = [], [], [], [], []
    for store, source_spec in sources:
        release = open_ifu_release(store)
        bounds = list(range(0, release.n_rows, release.chunk_rows)) + [release.n_rows]
        prepare = dict(source_spec.get("prepare", {}))
        parts = run_blocks(_prepare_task, [(str(store), a, b, release.galaxies.iloc[a:b], prepare)
                                           for a, b in zip(bounds, bounds[1:])], client)
        prep = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        ok = prep["status"] == "ok"
        fwhm = float(source_spec.get("tasks", {}).get("kinematics", {}).get("psf_fwhm_arcsec", 2.0))
        m0.append(prep["m0"][ok]), m1.append(prep["m1"][ok]), mask.append(prep["mask"][ok])
        psf_pix.append(fwhm / 2.3548 / prep["pixel_scale_arcsec"][ok])
        names.append(f"{source_spec['release']['name']}:{int(ok.sum())}")
    config = KinematicTrainConfig(epochs=int(task.get("epochs", 120)), psf_aware=bool(task.get("psf_aware", True)))
    result = train_kinematic_model(np.concatenate(m0), np.concatenate(m1), np.concatenate(mask),
                                   np.concatenate(psf_pix), config, progress=progress)
    survey = sources[0][1]["release"].get("survey", "sami")
    psf = float(task.get("psf_fwhm_arcsec", 2.0))
    return save_weights(result.model, path, "kinematics", ["params"],
                        extra={"survey": survey, "psf_fwhm_arcsec": psf,
                               "training": {"mode": "combined" if len(sources) > 1 else "solo",
                                            "releases": names, "best_epoch": result.best_epoch,
                                            "epochs_run": len(result.history)}})


@dataclass
class IFURunReport(CatalogRun):
    """What an IFU run did (also ``report.json``): the common fields and the TFR fits."""

    tfr: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"run-catalog {self.release}: {self.n_rows} galaxies -> {self.catalog_dir} "
                 f"({self.parts_written} of {self.parts_total} parts written)"]
        for status, count in sorted(self.status_counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {status:<16s} {count:8d}")
        for kind, fit in self.tfr.items():
            if "slope" in fit:
                lines.append(f"  TFR {kind:<8s} slope {fit['slope']:.3f} +- {fit['slope_err']:.3f}, intercept "
                             f"{fit['intercept']:.3f} +- {fit['intercept_err']:.3f} (pivot {fit['pivot']}), rms "
                             f"{fit['rms']:.3f}, {fit['n']} galaxies")
            else:
                lines.append(f"  TFR {kind:<8s} not fitted: {fit.get('error')}")
        lines += [f"  {k:<8s} {v}" for k, v in self.outputs.items()]
        lines.append("  timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        return "\n".join(lines)


def _fit_relations(catalog: pd.DataFrame, out: Path, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Reverse, forward and r-band TFR fits (ltsfit) on kin_flag == 0 rows, with plots."""
    from .relations import fit_tfr, plot_tfr

    good = catalog["kin_flag"].to_numpy() == 0
    log_v = np.log10(catalog["vmax_ad_kms"].to_numpy(float))
    log_v_err = catalog["vmax_kms_err"].to_numpy(float) / (catalog["vmax_kms"].to_numpy(float) * math.log(10)) + 0.01
    mass, mag = catalog["log_mstar"].to_numpy(float), catalog["abs_mag_r"].to_numpy(float)
    axes = {"reverse": (mass, log_v, 0.1, log_v_err), "forward": (log_v, mass, log_v_err, 0.1),
            "r_band": (log_v, mag, log_v_err, 0.1)}
    fits, plots = {}, {}
    for kind, (x, y, xe, ye) in axes.items():
        use = good & np.isfinite(x) & np.isfinite(y)
        if use.sum() < 10:
            fits[kind] = {"error": f"only {int(use.sum())} galaxies", "n": int(use.sum())}
            continue
        try:
            fit = fit_tfr(x[use], y[use], np.broadcast_to(xe, x.shape)[use], np.broadcast_to(ye, y.shape)[use],
                          kind=kind)
        except ValueError as err:
            fits[kind] = {"error": str(err), "n": int(use.sum())}
            continue
        fits[kind] = {"slope": fit.slope, "slope_err": fit.slope_err, "intercept": fit.intercept,
                      "intercept_err": fit.intercept_err, "pivot": fit.pivot, "sig_int": fit.sig_int,
                      "rms": fit.rms, "n": fit.n, "n_clipped": fit.n_clipped}
        plots[f"tfr_{kind}"] = str(plot_tfr(fit, x[use], y[use], out / f"tfr_{kind}.png", kind=kind,
                                            title=f"{name}: {kind} TFR"))
    return fits, plots


def run_ifu_catalog(spec: dict[str, Any], *, input: str | os.PathLike | None = None,
                    store: str | os.PathLike | None = None, out: str | os.PathLike | None = None, client=None,
                    catalogue: str | os.PathLike | None = None, n_mock: int | None = None,
                    progress: bool = True) -> IFURunReport:
    """Run an IFU release spec end to end (see the module docstring); called by :func:`survey_ml.run_catalog`.

    Progress is journaled in ``<out>/progress.json`` (``survey-ml status <out>``) and the run
    ends with ``<out>/report.html``.
    """
    from .progress import RunJournal

    name = spec["release"]["name"]
    out = Path(out or f"survey_ml_{name}")
    out.mkdir(parents=True, exist_ok=True)
    journal = RunJournal(out, name, out / spec.get("outputs", {}).get("catalog", "catalog"))
    try:
        report = _run_ifu_catalog(spec, input, store, out, client, catalogue, n_mock, progress, journal)
    except BaseException as err:
        journal.fail(err)
        raise
    journal.finish(report.outputs)
    return report


def _run_ifu_catalog(spec: dict[str, Any], input, store, out: Path, client, catalogue, n_mock: int | None,
                     progress: bool, journal) -> IFURunReport:
    from .catalog import export_fits, finished_parts, read_catalog, tidy_catalog_dir
    from .cluster import run_blocks
    from .ifu_store import ingest_ifu, open_ifu_release
    from .infer import WEIGHTS_DIR, weights_sha256
    from .report import write_html_report

    name, survey = spec["release"]["name"], spec["release"]["survey"]
    timings: dict[str, float] = {}
    truth = None
    journal.stage("prepare_store")
    t0 = time.perf_counter()
    if store is None or input is not None:
        if input is None:  # the embedded default: a mock release of the spec's size
            from .simulate.ifu import simulate_ifu_release

            mock_root = out / "mock"
            if not (mock_root / "truth.parquet").exists():
                simulate_ifu_release(mock_root, int(n_mock or spec.get("simulate", {}).get("n_galaxies", 300)),
                                     survey=survey, seed=0, client=client, progress=progress)
            input, truth = mock_root, mock_root / "truth.parquet"
            named = "InputCatGAMADR3.csv" if survey == "sami" else "drpall-v3_1_1.fits"
            catalogue = catalogue or (mock_root / named)
        named = Path(input) / spec["release"].get("catalogue", "")
        if catalogue is None and Path(input).is_dir() and named.is_file():
            catalogue = named
        store = Path(store) if store is not None else out / "store"
        ingest_ifu(input, store, name, survey, catalogue=catalogue, client=client,
                   chunk_rows=spec.get("ingest", {}).get("chunk_rows"), progress=progress,
                   **{k: spec["ingest"][k] for k in ("cube_window", "wave_chunk") if k in spec.get("ingest", {})})
    store = Path(store)
    release = open_ifu_release(store)
    galaxies = release.galaxies
    timings["prepare_store"] = time.perf_counter() - t0
    task = spec.get("tasks", {}).get("kinematics", {})
    psf = float(task.get("psf_fwhm_arcsec", 2.0))
    mode = str(task.get("train", "shipped"))
    if mode in ("solo", "combined"):  # self-supervised training on this release (and others) first
        journal.stage("training")
        t0 = time.perf_counter()
        sources = [(store, spec)] + ([_combined_source(entry) for entry in task.get("combine_with", [])]
                                     if mode == "combined" else [])
        if mode == "combined" and len(sources) < 2:
            raise ValueError(f"{spec['release']['spec_path']}: train = \"combined\" needs "
                             "[[tasks.kinematics.combine_with]] tables (store = ..., spec = ...)")
        weights = str(_train_on_releases(sources, out / f"kinematics_{mode}.pt", task, client, progress))
        timings["training"] = time.perf_counter() - t0
    elif mode in ("shipped", "blind"):
        other = {"sami": "manga", "manga": "sami"}[survey]
        default = f"kinematics_{other if mode == 'blind' else survey}.pt"
        weights = Path(task.get("weights", default) if mode == "shipped" else default)
        weights = str(weights if weights.is_absolute() or weights.exists() else WEIGHTS_DIR / weights)
    else:
        raise ValueError(f"[tasks.kinematics] train must be solo, combined, blind or absent, not {mode!r}")
    provenance = {"release": name, "spec_digest": spec_digest(spec, ("tasks", "prepare")), "store": str(store.resolve()),
                  "weights_sha256": {"kinematics": weights_sha256(weights)}}
    catalog_dir = out / spec.get("outputs", {}).get("catalog", "catalog")
    n_chunks = -(-release.n_rows // release.chunk_rows)
    tidy_catalog_dir(catalog_dir, n_chunks)
    done = finished_parts(catalog_dir, n_chunks, require=provenance)
    todo = [k for k in range(n_chunks) if k not in done]
    options = {"weights": weights, "survey": survey, "psf_fwhm_arcsec": psf,
               "samples": int(task.get("mc_samples", 100)), "lsf_widening": float(task.get("lsf_widening", 1.0)),
               "prepare": dict(spec.get("prepare", {}))}
    journal.stage("inference", total=n_chunks, kept=done)
    t0 = time.perf_counter()
    rc = release.chunk_rows
    run_blocks(_chunk_task, [(str(store), k * rc, min((k + 1) * rc, release.n_rows),
                              galaxies.iloc[k * rc: (k + 1) * rc], k, str(catalog_dir), provenance, options)
                             for k in todo], client, desc="kinematics", progress=progress,
               on_result=journal.block_callback(todo))
    timings["inference"] = time.perf_counter() - t0
    journal.stage("outputs")
    t0 = time.perf_counter()
    catalog = read_catalog(catalog_dir)
    if len(catalog) != release.n_rows:
        raise RuntimeError(f"{catalog_dir}: {len(catalog)} catalog rows for {release.n_rows} galaxies")
    # the published reconstruction post cut needs the whole sample: a flag, applied when reading
    recon = catalog["recon_error"].to_numpy(float)
    finite = np.isfinite(recon)
    if finite.sum() > 2:
        limit = np.mean(recon[finite]) + np.std(recon[finite])
        catalog["kin_flag"] = catalog["kin_flag"].to_numpy() | np.where(recon > limit, FLAG["POOR_FIT"], 0)
    tfr, plots = _fit_relations(catalog, out, name)
    outputs = {"catalog": str(catalog_dir),
               "fits": str(export_fits(catalog_dir, out / spec.get("outputs", {}).get("fits", f"{name}_kinematics.fits"))),
               **plots}
    timings["outputs"] = time.perf_counter() - t0
    report = IFURunReport(release=name, out=out, store=store, catalog_dir=catalog_dir, n_rows=release.n_rows,
                          parts_total=n_chunks, parts_written=len(todo),
                          status_counts={str(k): int(v) for k, v in catalog["status"].value_counts().items()},
                          timings=timings, tfr=tfr, outputs=outputs, provenance=provenance)
    report.outputs["report"] = str(out / "report.json")
    report.outputs["html"] = str(out / "report.html")
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    journal.stage("report")
    write_html_report(out, report.to_dict(), truth=truth, catalog=catalog)
    return report
