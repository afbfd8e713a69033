"""Spectra -> network input, one block at a time.

The published metallicity CNN (SCIENCE.md section 1) reads each spectrum linearly
interpolated onto 3800-8000 A in 1 A steps (4201 pixels), in the observed frame (not
de-redshifted), min-max normalised to [0, 1]. These functions do exactly that for a block
of rows of a release store (``flux``, ``ivar``, ``mask`` on the release's native grid),
and are what ``dask.array.map_blocks`` lifts over the Zarr chunks.

Masked pixels (``ivar == 0`` or ``mask != 0``) are never used as data: the interpolation
runs over the good pixels only, so a gap is bridged linearly between its good neighbours
(the same straight line a reader of the plot would draw), and each model pixel also gets
the fraction of its native neighbours that were good (``coverage``), so a network or a
cut can see where the data were invented.
"""
from __future__ import annotations

import numpy as np

__all__ = ["MODEL_WAVELENGTH", "to_model_grid", "minmax_normalise", "select_rows", "model_inputs"]

#: The published model grid: 3800-8000 A (observed frame, vacuum), 1 A steps, 4201 pixels.
MODEL_WAVELENGTH = np.arange(3800.0, 8000.0 + 0.5, 1.0)


def to_model_grid(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, wavelength: np.ndarray,
                  model_wavelength: np.ndarray = MODEL_WAVELENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of a block of spectra onto the model grid, over good pixels only.

    Parameters
    ----------
    flux, ivar, mask : numpy.ndarray
        (n, n_pix) on the native grid; a pixel is good when ``ivar > 0`` and ``mask == 0``
        and its flux is finite.
    wavelength : numpy.ndarray
        (n_pix,) native wavelengths (A), increasing.
    model_wavelength : numpy.ndarray
        (m,) target wavelengths.

    Returns
    -------
    model_flux : numpy.ndarray
        (n, m) float32; rows without any good pixel are all zero.
    coverage : numpy.ndarray
        (n, m) float32 in [0, 1]: linear interpolation of the good-pixel indicator, i.e.
        1 where both native neighbours were good, 0 inside a gap.

    Examples
    --------
    >>> wave = np.array([1.0, 2.0, 3.0, 4.0])
    >>> f, c = to_model_grid(np.array([[0.0, 9.0, 2.0, 3.0]]), np.ones((1, 4)),
    ...                      np.array([[0, 1, 0, 0]]), wave, np.array([1.0, 1.5, 2.0, 3.5]))
    >>> f.tolist(), c.tolist()
    ([[0.0, 0.5, 1.0, 2.5]], [[1.0, 0.5, 0.0, 1.0]])
    """
    flux = np.asarray(flux)
    n = flux.shape[0]
    good = (np.asarray(ivar) > 0) & (np.asarray(mask) == 0) & np.isfinite(flux)
    model_flux = np.zeros((n, model_wavelength.size), dtype=np.float32)
    coverage = np.zeros((n, model_wavelength.size), dtype=np.float32)
    # Fast path: a row whose native pixels under the model grid are all good is the same
    # two-point weighted sum for every row - one vectorised expression for the whole block.
    left, weight = _interpolation_plan(wavelength, model_wavelength)
    span = slice(int(left.min()), int(left.max()) + 2)
    clean = good[:, span].all(axis=1)
    if clean.any():
        rows = flux[clean].astype(np.float32, copy=False)
        lo = rows[:, left]                # f(left) + w (f(left + 1) - f(left)), in place, float32
        step = rows[:, left + 1]
        step -= lo
        step *= weight.astype(np.float32)
        lo += step
        model_flux[clean] = lo
        coverage[clean] = 1.0
    for i in np.flatnonzero(~clean):  # gaps: interpolate over this row's good pixels only
        g = good[i]
        if not g.any():
            continue
        model_flux[i] = np.interp(model_wavelength, wavelength[g], flux[i, g])
        coverage[i] = np.interp(model_wavelength, wavelength, g.astype(np.float32))
    return model_flux, coverage


def _interpolation_plan(wavelength: np.ndarray, model_wavelength: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left native neighbour and linear weight of each model pixel (``np.interp``'s, ends clamped)."""
    wavelength = np.asarray(wavelength, dtype=np.float64)
    left = np.clip(np.searchsorted(wavelength, model_wavelength, side="right") - 1, 0, wavelength.size - 2)
    weight = (model_wavelength - wavelength[left]) / (wavelength[left + 1] - wavelength[left])
    return left, np.clip(weight, 0.0, 1.0)


def minmax_normalise(model_flux: np.ndarray) -> np.ndarray:
    """Scale each row to [0, 1] by its own minimum and maximum (the published normalisation).

    A constant row becomes all zeros rather than NaN.

    Examples
    --------
    >>> minmax_normalise(np.array([[2.0, 4.0, 3.0], [1.0, 1.0, 1.0]])).tolist()
    [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]
    """
    lo = model_flux.min(axis=1, keepdims=True)
    span = model_flux.max(axis=1, keepdims=True) - lo
    return np.where(span > 0, (model_flux - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def select_rows(z: np.ndarray, snr_r: np.ndarray, cuts: dict) -> np.ndarray:
    """Rows passing a release spec's ``[cuts]`` (``z_min <= z <= z_max``, ``snr_r >= snr_r_min``).

    Examples
    --------
    >>> select_rows(np.array([0.001, 0.1, 0.2, 0.4]), np.array([10, 2, 5, 9]),
    ...             {"z_min": 0.002, "z_max": 0.3, "snr_r_min": 3.0}).tolist()
    [False, False, True, False]
    """
    z, snr_r = np.asarray(z), np.asarray(snr_r)
    keep = np.isfinite(z) & np.isfinite(snr_r)
    keep &= (z >= cuts.get("z_min", -np.inf)) & (z <= cuts.get("z_max", np.inf))
    keep &= snr_r >= cuts.get("snr_r_min", -np.inf)
    return keep


def model_inputs(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, wavelength: np.ndarray,
                 in_channels: int = 1) -> np.ndarray:
    """Network input of a block of native-grid spectra: (n, in_channels, 4201) float32.

    Channel 0 is the min-max normalised flux; channel 1 (if asked) the good-pixel coverage.
    The one function that feeds both training (:mod:`survey_ml.train.spectral`) and inference
    (:func:`survey_ml.core.inference.predict_spectra`), so the two can never drift apart.
    """
    model_flux, coverage = to_model_grid(flux, ivar, mask, wavelength, MODEL_WAVELENGTH)
    x = minmax_normalise(model_flux)[:, None, :]
    if in_channels == 2:
        x = np.concatenate([x, coverage[:, None, :]], axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)
