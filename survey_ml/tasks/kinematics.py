"""Gas kinematics of IFU galaxies: rotation-curve parameters with Monte Carlo dropout errors.

Per galaxy: the maps are prepared (:func:`survey_ml.core.maps.prepare_galaxies`: the
release's ``[prepare]`` cuts, S/N >= 10, kinematic PA, de-rotation, 64 x 64, scalings), the
self-supervised kinematic model (:class:`survey_ml.models.kinematics.KinematicModel`) runs
with Monte Carlo dropout, the draws are turned into physical units, and the asymmetric-drift
correction uses the dispersion between 2 Re and r_max on the galaxy's own maps.

Weights (``[tasks.kinematics] train``, the published modes): absent - the spec's ``weights``
(shipped, trained on a mock release of the same survey); ``"solo"`` - trained self-supervised
on this release's own maps first; ``"combined"`` - on this release and the IFU stores listed
as ``[[tasks.kinematics.combine_with]]`` (``store``, ``spec``), each with its own cuts and PSF;
``"blind"`` - the shipped weights of the *other* survey.

Flags (``kin_flag``, bits; the published post cuts are flags, never deletions): 1 not prepared
(``status`` says why), 2 inclination < 30 deg, 4 reconstruction error more than 1 sigma above
the sample's mean (set by :meth:`Kinematics.finalize` once the whole catalog is known), 8 no
stellar mass. The TFR fits use rows with ``kin_flag == 0``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .base import Batch, Block, Column, SpecError, Task

__all__ = ["Kinematics", "FLAG", "PARAMETER_COLUMNS"]

FLAG = {"NOT_PREPARED": 1, "LOW_INCLINATION": 2, "POOR_FIT": 4, "NO_MASS": 8}
_PARAMS = (("inclination_deg", "deg", "disc inclination"), ("r_scale_arcsec", "arcsec", "exponential disc scale length"),
           ("r_turn_arcsec", "arcsec", "arctan rotation-curve turnover radius"),
           ("vmax_kms", "km / s", "asymptotic rotation velocity"), ("v22_kms", "km / s", "rotation velocity at 2.2 r_scale"))
PARAMETER_COLUMNS = tuple(p for p, _, _ in _PARAMS)
#: IVOA UCDs of the disc parameters.
_PARAM_UCDS = {"inclination_deg": "src.orbital.inclination", "r_scale_arcsec": "phys.angSize",
               "r_turn_arcsec": "phys.angSize", "vmax_kms": "phys.veloc.rotat", "v22_kms": "phys.veloc.rotat"}
_MODES = ("shipped", "solo", "combined", "blind")


@dataclass(frozen=True)
class KinematicsOptions:
    """``[tasks.kinematics]`` (the ``[prepare]`` cuts of the release spec come in as ``prepare``)."""

    psf_fwhm_arcsec: float = 2.0     #: the survey's PSF FWHM: the PSF-aware decoder blurs by it
    mc_samples: int = 100            #: Monte Carlo dropout passes (published T = 100)
    lsf_widening: float = 1.0        #: MaNGA: LSF widened by this and removed from the dispersion
    train: str = "shipped"           #: shipped, solo, combined or blind (see the module docstring)
    epochs: int = 120                #: solo / combined training epochs
    psf_aware: bool = True           #: solo / combined: train the PSF-aware decoder
    combine_with: tuple = ()         #: combined: tables with store = <IFU store>, spec = <release spec>
    prepare: dict = field(default_factory=dict)   #: the release's [prepare] cuts (min_snr, min_good, min_vmax)

    def __post_init__(self) -> None:
        if self.train not in _MODES:
            raise ValueError(f"train must be solo, combined, blind or absent, not {self.train!r}")


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


def prepare_maps(arrays: dict[str, np.ndarray], galaxies: pd.DataFrame, prepare: dict[str, float]
                 ) -> dict[str, np.ndarray]:
    """:func:`survey_ml.core.maps.prepare_galaxies` on a store block; rows not 'ok' get no good spaxel."""
    from ..core.maps import prepare_galaxies

    usable = galaxies["status"].astype(str).eq("ok").to_numpy()
    return prepare_galaxies({"flux": arrays["flux"], "flux_err": arrays["flux_err"], "velocity": arrays["velocity"],
                             "velocity_err": arrays["velocity_err"], "good": arrays["good"] & usable[:, None, None],
                             "pixel_scale": galaxies["pixel_scale"].to_numpy(float),
                             "fov_arcsec": _field_of_view(galaxies)}, **prepare)


class Kinematics(Task):
    """Kinematic PA, disc parameters with MC-dropout errors, asymmetric drift, ``kin_flag``."""

    name = "kinematics"
    input_kind = "maps"
    Options = KinematicsOptions
    columns = (
        Column("pa_deg", "float64", "deg", "kinematic position angle (east of north, receding side)", ucd="pos.posAng"),
        Column("pa_err", "float64", "deg", "1-sigma error of pa_deg", ucd="stat.error;pos.posAng"),
        *(Column(name + err, "float64", unit, description + (" (1-sigma MC-dropout error)" if err else ""),
                 ucd=("stat.error;" if err else "") + _PARAM_UCDS[name])
          for name, unit, description in _PARAMS for err in ("", "_err")),
        Column("vdisp_outer_kms", "float64", "km / s", "mean gas dispersion between 2 Re and r_max", ucd="phys.veloc.dispersion"),
        Column("r_max_arcsec", "float64", "arcsec", "largest deprojected radius with good spaxels", ucd="phys.angSize"),
        Column("vmax_ad_kms", "float64", "km / s", "vmax_kms corrected for asymmetric drift", ucd="phys.veloc.rotat"),
        Column("v22_ad_kms", "float64", "km / s", "v22_kms corrected for asymmetric drift", ucd="phys.veloc.rotat"),
        Column("recon_error", "float64", "", "moment-1 reconstruction MSE over Vmax (the published post-cut statistic)", ucd="stat.fit.residual"),
        Column("kin_flag", "int32", "", "bits: 1 not prepared, 2 inclination < 30 deg, 4 poor fit, 8 no stellar mass", ucd="meta.code.qual"),
    )

    @classmethod
    def from_spec(cls, table: dict[str, Any], spec_path: str = "<spec>", weights: str | None = None,
                  spec: dict[str, Any] | None = None) -> Kinematics:
        """As :meth:`Task.from_spec`; the weights follow the ``train`` mode and the release's survey."""
        from .base import options_from_table

        spec = spec or {}
        where = f"{spec_path} [tasks.{cls.name}]"
        table = dict(table)
        table["combine_with"] = tuple(table.get("combine_with", ()))
        table.setdefault("prepare", dict(spec.get("prepare", {})))
        options = options_from_table(cls.Options, table, where)
        survey = spec.get("release", {}).get("survey", "sami")
        if weights is None and options.train in ("shipped", "blind"):
            other = {"sami": "manga", "manga": "sami"}.get(survey, survey)
            default = f"kinematics_{other if options.train == 'blind' else survey}.pt"
            weights = table.get("weights", default) if options.train == "shipped" else default
        if options.train == "combined" and not options.combine_with:
            raise SpecError(f"{spec_path}: train = \"combined\" needs [[tasks.kinematics.combine_with]] tables "
                            "(store = ..., spec = ...)")
        path = cls.resolve_weights(weights, spec_path, where) if weights is not None else None
        return cls(options, path)

    @classmethod
    def train(cls, recipe, *, out=None, client=None, cache_dir=None, progress=True) -> dict:
        """Self-supervised on a mock release of the recipe's survey (:func:`survey_ml.train.kinematics.train_kinematics_task`)."""
        from ..train.kinematics import train_kinematics_task

        return train_kinematics_task(recipe, out=out, client=client, cache_dir=cache_dir, progress=progress)

    # ------------------------------------------------------------------ per block
    def select(self, block: Block) -> np.ndarray:
        return np.arange(len(block))   # every row is prepared: PA for all, the network for the usable

    def prepare(self, block: Block, rows: np.ndarray) -> Batch:
        prepared = prepare_maps(block.arrays, block.rows, self.options.prepare)
        usable = block.rows["status"].astype(str).eq("ok").to_numpy()
        block.status[usable] = prepared["status"][usable]
        block.message[usable] = prepared["message"][usable]
        return Batch(rows, {"prepared": prepared, "ok": block.status == "ok", "arrays": block.arrays,
                            "galaxies": block.rows})

    def predict(self, model, batch: Batch) -> dict[str, np.ndarray]:
        from ..train.kinematics import mc_dropout, physical_samples, reconstruction_error, summarise
        from ..relations.tfr import asymmetric_drift, mean_dispersion

        prepared, ok, arrays, galaxies = (batch.inputs[k] for k in ("prepared", "ok", "arrays", "galaxies"))
        n = len(ok)
        out = {c.name: np.full(n, np.nan) for c in self.columns if c.dtype == "float64"}
        out["pa_deg"], out["pa_err"] = prepared["pa_deg"], prepared["pa_err"]
        if not ok.any():
            return out
        network, _ = model
        draws = mc_dropout(network, prepared["m0"][ok], prepared["m1"][ok], self.options.mc_samples)
        est = summarise(physical_samples(draws, prepared["velocity_scale_kms"][ok], prepared["pixel_scale_arcsec"][ok]))
        for p in PARAMETER_COLUMNS:
            out[p][ok], out[f"{p}_err"][ok] = est[p], est[f"{p}_err"]
        psf = self.options.psf_fwhm_arcsec / 2.3548 / prepared["pixel_scale_arcsec"][ok]
        out["recon_error"][ok] = reconstruction_error(network, prepared["m0"][ok], prepared["m1"][ok],
                                                      prepared["mask"][ok], psf)
        r_e = galaxies["r_e_arcsec"].to_numpy(float)
        pixel_scale = galaxies["pixel_scale"].to_numpy(float)
        for k in np.flatnonzero(ok):
            good = arrays["good"][k] & np.isfinite(arrays["dispersion"][k]) & np.isfinite(arrays["flux"][k])
            radius = _deprojected_radius(good.shape, pixel_scale[k], out["pa_deg"][k], out["inclination_deg"][k])
            if not good.any():
                continue
            r_max = float(radius[good].max())
            dispersion = arrays["dispersion"][k]
            if self.options.lsf_widening != 1.0 and "instsigma" in arrays:  # MaNGA: remove the widened LSF
                dispersion = np.sqrt(np.clip(dispersion**2 - (self.options.lsf_widening * arrays["instsigma"][k]) ** 2,
                                             0, None))
            out["r_max_arcsec"][k] = r_max
            out["vdisp_outer_kms"][k] = mean_dispersion(radius, dispersion, good,
                                                        r_e[k] if np.isfinite(r_e[k]) else r_max / 2, r_max)
        scale = out["r_scale_arcsec"]
        out["vmax_ad_kms"] = asymmetric_drift(out["vmax_kms"], out["vdisp_outer_kms"], out["r_max_arcsec"], scale)
        out["v22_ad_kms"] = asymmetric_drift(out["v22_kms"], out["vdisp_outer_kms"], 2.2 * scale, scale)
        return out

    def finish(self, block: Block, values: dict[str, np.ndarray]) -> None:
        ok = block.status == "ok"
        flag = np.where(ok, 0, FLAG["NOT_PREPARED"])
        flag |= np.where(ok & (values["inclination_deg"] < 30), FLAG["LOW_INCLINATION"], 0)
        flag |= np.where(~np.isfinite(block.rows["log_mstar"].to_numpy(float)), FLAG["NO_MASS"], 0)
        values["kin_flag"] = flag.astype(np.int32)

    # ------------------------------------------------------------------ whole catalog
    def finalize(self, catalog: pd.DataFrame) -> pd.DataFrame:
        """Set POOR_FIT: reconstruction error more than 1 sigma above the sample's mean (the published post cut)."""
        recon = catalog["recon_error"].to_numpy(float)
        finite = np.isfinite(recon)
        if finite.sum() > 2:
            limit = np.mean(recon[finite]) + np.std(recon[finite])
            catalog = catalog.assign(kin_flag=(catalog["kin_flag"].to_numpy()
                                               | np.where(recon > limit, FLAG["POOR_FIT"], 0)).astype(np.int32))
        return catalog

    def fit_to_release(self, store: Path, spec: dict[str, Any], out: Path, client, progress: bool) -> Kinematics:
        """``solo`` / ``combined``: train on this release (and others) first; else this task as it is."""
        if self.options.train not in ("solo", "combined"):
            return self
        sources = [(Path(store), spec)]
        if self.options.train == "combined":
            sources += [_combined_source(entry) for entry in self.options.combine_with]
        path = train_on_releases(sources, out / f"kinematics_{self.options.train}.pt", self.options, client, progress)
        return type(self)(replace(self.options), str(path))


def _combined_source(entry: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """One ``[[tasks.kinematics.combine_with]]`` table: an ingested IFU store and its release spec."""
    from ..config import load_release_spec
    from ..store import open_release

    if "store" not in entry:
        raise SpecError(f"combine_with entry {entry!r} needs store = <an ingested IFU release store>")
    store = Path(entry["store"])
    open_release(store)  # fails here, naming the folder, if it is not a release store
    return store, load_release_spec(entry.get("spec", "sami-dr3"))


def _prepare_chunk(store: str, start: int, stop: int, prepare: dict[str, float]) -> dict[str, np.ndarray]:
    from ..store import open_release

    release = open_release(store)
    return prepare_maps(release.read_block(start, stop), release.rows.iloc[start:stop], prepare)


def train_on_releases(sources: list[tuple[Path, dict[str, Any]]], path: Path, options: KinematicsOptions, client,
                      progress: bool) -> Path:
    """Train the kinematic model self-supervised on the prepared maps of one or more IFU stores.

    ``solo`` is one store (the release being catalogued); ``combined`` adds others (SAMI with
    MaNGA, as published). Each store is prepared with its own spec's ``[prepare]`` cuts and
    blurred in the decoder by its own survey PSF (``psf_fwhm_arcsec``), so surveys of
    different seeing train one model. No labels are used.
    """
    from ..cluster.client import run_blocks
    from ..core.inference import save_weights
    from ..train.kinematics import KinematicTrainConfig, train_kinematic_model
    from ..store import open_release

    m0, m1, mask, psf_pix, names = [], [], [], [], []
    for store, source_spec in sources:
        release = open_release(store)
        prepare = dict(source_spec.get("prepare", {}))
        parts = run_blocks(_prepare_chunk, [(str(store), a, b, prepare) for a, b in release.block_bounds()], client)
        prep = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        ok = prep["status"] == "ok"
        fwhm = float(source_spec.get("tasks", {}).get("kinematics", {}).get("psf_fwhm_arcsec", 2.0))
        m0.append(prep["m0"][ok]), m1.append(prep["m1"][ok]), mask.append(prep["mask"][ok])
        psf_pix.append(fwhm / 2.3548 / prep["pixel_scale_arcsec"][ok])
        names.append(f"{source_spec['release']['name']}:{int(ok.sum())}")
    config = KinematicTrainConfig(epochs=options.epochs, psf_aware=options.psf_aware)
    result = train_kinematic_model(np.concatenate(m0), np.concatenate(m1), np.concatenate(mask),
                                   np.concatenate(psf_pix), config, progress=progress)
    survey = sources[0][1]["release"].get("survey", "sami")
    return save_weights(result.model, path, "kinematics", ["params"],
                        extra={"survey": survey, "psf_fwhm_arcsec": options.psf_fwhm_arcsec,
                               "training": {"mode": options.train, "releases": names,
                                            "best_epoch": result.best_epoch, "epochs_run": len(result.history)}})
