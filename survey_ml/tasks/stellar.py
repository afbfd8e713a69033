"""Stellar parameters from high-resolution spectra: Teff, log g, [Fe/H], v sin i with their covariance.

Reads an ``echelle`` store (HARPS / HARPS-N e2ds or s1d, ESPRESSO S2D, ESO 1-D: deblazed
segments at barycentric air wavelengths). Per exposure, :func:`model_input`:

1. measures the star's radial velocity by cross-correlation with the template the weights
   carry (:func:`survey_ml.core.echelle.cross_correlation_rv`) and moves the segments to
   the star's rest frame;
2. normalises each segment's continuum, combines overlapping orders by inverse variance on
   the network's order grid (8 x 4096 pixels over 5050-5350 A as published) and normalises
   each grid order again - as the training inputs were made
   (:func:`survey_ml.simulate.echelle_observe.observe`);
3. hands the network the flux and a good-pixel mask (CCD gaps, bad columns).

The network (:class:`~survey_ml.models.stellar_resnet.StellarResNet`) gives the mean and a
full covariance; the errors are rescaled per label by the calibration the weights carry
(fitted on held-out spectra for 68.3% coverage), and the correlations are catalog columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.echelle import continuum_normalise, cross_correlation_rv, input_snr, resample_segments
from ..core.uncertainty import ErrorCalibration, calibrated_sigma
from ..io.echelle import SPEED_OF_LIGHT_KMS
from .base import Batch, Block, Column, Task

__all__ = ["Stellar", "model_input", "FLAGS"]

#: stellar_flag bits.
FLAGS = {"LOW_SN": 1, "POOR_CCF": 2, "FEW_PIXELS": 4, "EDGE": 8, "NO_DATA": 16}
_PAIRS = (("teff", "logg"), ("teff", "feh"), ("teff", "vsini"), ("logg", "feh"), ("logg", "vsini"), ("feh", "vsini"))


@dataclass(frozen=True)
class StellarOptions:
    """``[tasks.stellar]``."""

    batch_size: int = 64             #: spectra per forward pass
    min_sn: float = 5.0              #: rows whose S/N (header's at 550 nm, else snr_pixel) is lower: LOW_SN (still predicted)
    min_good_fraction: float = 0.5   #: least share of good model-grid pixels to predict at all
    min_ccf_peak: float = 0.2        #: a lower CCF peak flags POOR_CCF (template mismatch or no star)
    v_max_kms: float = 500.0         #: radial-velocity search range, +-km/s


def _pieces(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> list[tuple[np.ndarray, np.ndarray,
                                                                                         np.ndarray]]:
    """The stored segments of one row (padding dropped)."""
    out = []
    for w, f, v in zip(wavelength, flux, ivar):
        n = int(np.count_nonzero(w > 0))
        if n > 50:
            out.append((w[:n], f[:n], v[:n]))
    return out


def model_input(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, grid: np.ndarray,
                template: tuple[np.ndarray, np.ndarray], v_max_kms: float = 500.0) -> tuple[np.ndarray, float, float]:
    """The network input ``(2, n_orders, n_pix)`` of one stored exposure, its RV (km/s) and CCF peak.

    ``wavelength``, ``flux``, ``ivar`` are the row's ``(n_segments, segment_pixels)`` store
    arrays; ``grid`` the model's order grid (rest-frame air A); ``template`` (wave, flux).
    """
    pieces = _pieces(wavelength, flux, ivar)
    x = np.zeros((2, *grid.shape), np.float32)
    if not pieces:
        return x, float("nan"), float("nan")
    rv, peak = cross_correlation_rv(pieces, template[0], template[1], v_max_kms=v_max_kms)
    shift = 1.0 + (rv if np.isfinite(rv) else 0.0) / SPEED_OF_LIGHT_KMS
    rest = []
    for w, f, v in pieces:
        norm_f, norm_v = continuum_normalise(f, v)
        rest.append((w / shift, norm_f[0], norm_v[0]))
    on_grid, on_grid_ivar = resample_segments(rest, grid)
    normalised, normalised_ivar = continuum_normalise(on_grid, on_grid_ivar)
    good = normalised_ivar > 0
    x[0] = np.where(good, normalised, 0.0)
    x[1] = good
    return x, rv, peak


class Stellar(Task):
    """``teff``, ``logg``, ``feh``, ``vsini`` with errors and correlations, the RV used, and a flag."""

    name = "stellar"
    input_kind = "echelle"
    Options = StellarOptions
    default_weights = "stellar.pt"
    columns = (
        Column("teff", "float32", "K", "effective temperature (network mean)", ucd="phys.temperature.effective"),
        Column("teff_err", "float32", "K", "1-sigma error of teff (calibrated)", ucd="stat.error;phys.temperature.effective"),
        Column("logg", "float32", "dex(cm / s2)", "surface gravity log10(g / cm s-2)", ucd="phys.gravity"),
        Column("logg_err", "float32", "dex(cm / s2)", "1-sigma error of logg (calibrated)", ucd="stat.error;phys.gravity"),
        Column("feh", "float32", "dex", "iron abundance [Fe/H]", ucd="phys.abund.Fe"),
        Column("feh_err", "float32", "dex", "1-sigma error of feh (calibrated)", ucd="stat.error;phys.abund.Fe"),
        Column("vsini", "float32", "km / s", "projected rotational velocity v sin i", ucd="phys.veloc.rotat"),
        Column("vsini_err", "float32", "km / s", "1-sigma error of vsini (calibrated)", ucd="stat.error;phys.veloc.rotat"),
        *(Column(f"rho_{a}_{b}", "float32", "", f"correlation coefficient of the {a} and {b} errors",
                 ucd="stat.correlation") for a, b in _PAIRS),
        Column("snr_pixel", "float32", "", "S/N per pixel of the continuum-normalised model input (DER_SNR), "
               "which the error calibration uses", ucd="stat.snr"),
        Column("rv_kms", "float32", "km / s", "barycentric radial velocity from the CCF with the weights' template",
               ucd="spect.dopplerVeloc.opt"),
        Column("ccf_peak", "float32", "", "normalised CCF peak height (1 = the template matches exactly)",
               ucd="stat.correlation"),
        Column("stellar_flag", "int32", "", "bits: 1 low S/N, 2 poor CCF, 4 few pixels, 8 at the grid edge, "
               "16 no data; 0 = reliable", fill=FLAGS["NO_DATA"], ucd="meta.code.qual"),
    )

    @classmethod
    def train(cls, recipe, *, out=None, client=None, cache_dir=None, progress=True) -> dict:
        """A stellar recipe: grid -> rendered training set -> network -> error calibration
        (:func:`survey_ml.train.stellar.train_stellar_task`)."""
        from ..train.stellar import train_stellar_task

        return train_stellar_task(recipe, out=out, client=client, cache_dir=cache_dir, progress=progress)

    def prepare(self, block: Block, rows: np.ndarray) -> Batch:
        _, info = self.load_model(block.device)
        grid = np.asarray(info["grid"], np.float64)
        template = (np.asarray(info["template_wave"], np.float64), np.asarray(info["template_flux"], np.float64))
        a = block.arrays
        inputs = np.zeros((len(rows), 2, *grid.shape), np.float32)
        rv = np.full(len(rows), np.nan)
        peak = np.full(len(rows), np.nan)
        for k, i in enumerate(rows):
            inputs[k], rv[k], peak[k] = model_input(a["wavelength"][i], a["flux"][i], a["ivar"][i], grid, template,
                                                    self.options.v_max_kms)
        coverage = inputs[:, 1].mean(axis=(1, 2))
        few = coverage < self.options.min_good_fraction
        block.reject(rows[few], "few_pixels", [f"only {c:.0%} of the model grid (5050-5350 A) has data"
                                               for c in coverage[few]])
        keep = ~few
        return Batch(rows[keep], {"x": inputs[keep], "rv": rv[keep], "peak": peak[keep],
                                  "snr": input_snr(inputs[keep, 0], inputs[keep, 1] > 0),
                                  "sn50": block.rows["sn50"].to_numpy(float)[rows[keep]],
                                  "coverage": coverage[keep]})

    def predict(self, model, batch: Batch) -> dict[str, np.ndarray]:
        import torch

        network, info = model
        device = next(network.parameters()).device
        means, covs = [], []
        with torch.no_grad():
            for start in range(0, len(batch.rows), self.options.batch_size):
                x = torch.from_numpy(batch.inputs["x"][start:start + self.options.batch_size]).to(device)
                mean, cov = network.physical(*network(x))
                means.append(mean.cpu().numpy())
                covs.append(cov.cpu().numpy())
        mean = np.concatenate(means).astype(np.float64)
        cov = np.concatenate(covs).astype(np.float64)
        raw_sigma = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 1e-30, None))
        snr = batch.inputs["snr"]
        if "error_calibration" in info:   # sigma rescaled in bins of the input's S/N (train.stellar.calibrate_errors)
            sigma = calibrated_sigma(cov, [ErrorCalibration.from_dict(c) for c in info["error_calibration"]], snr)
        else:                             # one factor per label
            sigma = raw_sigma * np.asarray(info.get("error_scale", [1.0, 1.0, 1.0, 1.0]), np.float64)
        corr = cov / (raw_sigma[:, :, None] * raw_sigma[:, None, :])
        labels = ("teff", "logg", "feh", "vsini")
        out: dict[str, np.ndarray] = {}
        for j, label in enumerate(labels):
            out[label] = mean[:, j].astype(np.float32)
            out[f"{label}_err"] = sigma[:, j].astype(np.float32)
        for a, b in _PAIRS:
            out[f"rho_{a}_{b}"] = corr[:, labels.index(a), labels.index(b)].astype(np.float32)
        out["snr_pixel"] = snr.astype(np.float32)
        out["rv_kms"] = batch.inputs["rv"].astype(np.float32)
        out["ccf_peak"] = batch.inputs["peak"].astype(np.float32)
        low, high = np.asarray(info["label_min"], np.float64), np.asarray(info["label_max"], np.float64)
        edge = ((mean < low + 0.02 * (high - low)) | (mean > high - 0.02 * (high - low)))[:, :3].any(axis=1)
        # the header's S/N at 550 nm where the file has one (HARPS DRS SN50), else the measured one
        header_sn = batch.inputs["sn50"]
        sn = np.where(np.isfinite(header_sn), header_sn, snr)
        flag = (np.where(~(sn >= self.options.min_sn), FLAGS["LOW_SN"], 0)
                | np.where(~(batch.inputs["peak"] >= self.options.min_ccf_peak), FLAGS["POOR_CCF"], 0)
                | np.where(batch.inputs["coverage"] < 0.8, FLAGS["FEW_PIXELS"], 0)
                | np.where(edge, FLAGS["EDGE"], 0))
        out["stellar_flag"] = flag.astype(np.int32)
        return out

    def figures(self, catalog) -> list:
        """The Kiel diagram (log g against Teff, coloured by [Fe/H], with error bars) of the predicted rows."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ok = np.isfinite(catalog["teff"].to_numpy(float)) & np.isfinite(catalog["logg"].to_numpy(float))
        rows = catalog[ok]
        fig, ax = plt.subplots(figsize=(5.6, 4.6))
        reliable = rows["stellar_flag"].to_numpy() == 0
        for mask, marker, label in ((reliable, "o", "stellar_flag = 0"), (~reliable, "x", "flagged")):
            if mask.any():
                ax.errorbar(rows["teff"][mask], rows["logg"][mask], xerr=rows["teff_err"][mask],
                            yerr=rows["logg_err"][mask], fmt="none", ecolor="0.7", lw=0.6, zorder=1)
                points = ax.scatter(rows["teff"][mask], rows["logg"][mask], c=rows["feh"][mask], cmap="viridis",
                                    marker=marker, s=18, label=label, zorder=2, vmin=-2.5, vmax=0.5)
        if len(rows):
            fig.colorbar(points, ax=ax, label="[Fe/H]")
            ax.legend(loc="lower left", fontsize=8)
        ax.invert_xaxis()
        ax.invert_yaxis()
        ax.set_xlabel("Teff [K]")
        ax.set_ylabel("log g [cm s-2]")
        ax.set_title(f"Kiel diagram: {len(rows)} stars")
        return [("Kiel diagram of the stellar-parameter catalog", fig)]
