"""H-alpha moment maps of an IFU data cube: continuum-subtracted moments 0, 1 and 2 per spaxel.

Pure numpy on one cube, no store and no Dask: :func:`moment_maps_from_cube` is what the IFU
store runs on each LOGCUBE (:mod:`survey_ml.store.kinds.cubes` lifts it over the Zarr cube chunks),
and :func:`halpha_planes` / :func:`halpha_window` say which wavelengths it needs, so that a
reader or a store touches only those.
"""
from __future__ import annotations

import numpy as np

from ..io.errors import SurveyFileError
from ..io.ifu import C_KMS, IFUCube, IFUMaps
from ..io.manga import DRP_DONOTUSE

__all__ = ["moment_maps_from_cube", "halpha_planes", "halpha_window", "HALPHA_VACUUM", "NII_VACUUM",
           "MOMENT_DEFAULTS", "MANGA_MAP_FLUX_UNIT"]

#: H-alpha and the [NII] doublet, vacuum Angstrom (SDSS line list).
HALPHA_VACUUM = 6564.61
NII_VACUUM = (6549.86, 6585.27)
#: Unit of a MaNGA flux map (the LOGCUBE's per-Angstrom unit times Angstrom).
MANGA_MAP_FLUX_UNIT = "1e-17 erg/s/cm2/spaxel"
#: The keyword defaults of :func:`moment_maps_from_cube` (JSON-friendly: as kept in a store's release.json).
MOMENT_DEFAULTS = {"window_kms": 600.0, "continuum_kms": [1000.0, 2500.0], "min_snr": 3.0,
                   "min_coverage": 0.9, "exclude_kms": 500.0}


def halpha_window(z_min: float, z_max: float, continuum_kms: float = MOMENT_DEFAULTS["continuum_kms"][1]
                  ) -> tuple[float, float]:
    """Observed wavelengths (A) that H-alpha's window and side bands span for redshifts ``z_min``-``z_max``.

    Parameters
    ----------
    z_min, z_max : float
        Redshift range of the galaxies.
    continuum_kms : float
        Outer |v| of the continuum side bands (``continuum_kms[1]`` of :func:`moment_maps_from_cube`).

    Returns
    -------
    (float, float)
        ``6564.61 (1 + z_min) (1 - v/c)`` and ``6564.61 (1 + z_max) (1 + v/c)``: a ``cube_window``
        for :func:`survey_ml.store.ingest` that keeps what the H-alpha maps need.

    Examples
    --------
    >>> [round(w, 1) for w in halpha_window(0.0, 0.15)]
    [6509.9, 7612.3]
    """
    dv = float(continuum_kms) / C_KMS
    return HALPHA_VACUUM * (1.0 + z_min) * (1.0 - dv), HALPHA_VACUUM * (1.0 + z_max) * (1.0 + dv)


def halpha_planes(wave: np.ndarray, z: float, continuum_kms: float = MOMENT_DEFAULTS["continuum_kms"][1]) -> slice:
    """The planes of ``wave`` that :func:`moment_maps_from_cube` reads at redshift ``z``, one spare each side.

    A cube cut to these planes gives the same maps as the whole cube (the spare planes keep
    the pixel widths at the ends exact). Clipped to the grid: check coverage separately.

    Examples
    --------
    >>> wave = 10 ** (3.5589 + 1e-4 * np.arange(4563))
    >>> s = halpha_planes(wave, 0.03)
    >>> s.start, s.stop, bool(wave[s.start] < halpha_window(0.03, 0.03)[0] <= wave[s.start + 1])
    (2675, 2749, True)
    """
    wave = np.asarray(wave, dtype=np.float64)
    lo, hi = halpha_window(z, z, continuum_kms)
    i0 = int(np.searchsorted(wave, lo, side="left"))
    i1 = int(np.searchsorted(wave, hi, side="right"))
    return slice(max(i0 - 1, 0), min(i1 + 1, wave.size))


def _pixel_widths(wave: np.ndarray) -> np.ndarray:
    """Width (A) of each pixel of a monotonic grid; edges at the geometric midpoints (exact on a log grid).

    Examples
    --------
    >>> _pixel_widths(np.array([1.0, 2.0, 4.0])).round(6).tolist()
    [0.707107, 1.414214, 2.828427]
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.size < 2:
        return np.ones_like(wave)
    mid = np.sqrt(wave[1:] * wave[:-1])
    edges = np.concatenate([[wave[0] ** 2 / mid[0]], mid, [wave[-1] ** 2 / mid[-1]]])
    return np.diff(edges)


def _window_pixels(wave: np.ndarray, z: float, window_kms: float, continuum_kms: tuple[float, float],
                   exclude_kms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Velocity of every pixel relative to H-alpha at ``z``, and the line and continuum pixel masks."""
    lam_obs = HALPHA_VACUUM * (1.0 + z)
    v = C_KMS * (np.asarray(wave, dtype=np.float64) / lam_obs - 1.0)
    line = np.abs(v) <= window_kms
    cont = (np.abs(v) >= continuum_kms[0]) & (np.abs(v) <= continuum_kms[1])
    for nii in NII_VACUUM:  # keep [NII] (and its rotation) out of the continuum
        cont &= np.abs(v - C_KMS * (nii / HALPHA_VACUUM - 1.0)) > exclude_kms
    return v, line, cont


def moment_maps_from_cube(cube: IFUCube, z: float, window_kms: float = 600.0,
                          continuum_kms: tuple[float, float] = (1000.0, 2500.0), *, min_snr: float = 3.0,
                          min_coverage: float = 0.9, exclude_kms: float = 500.0) -> IFUMaps:
    """H-alpha moment maps (flux, velocity, dispersion, errors) of a data cube, all spaxels at once.

    Velocities are ``v = c (lambda / lambda_Ha,obs - 1)`` with ``lambda_Ha,obs = 6564.61 A (1 + z)``
    (vacuum). Per spaxel, a straight line ``a + b v`` is fitted by weighted least squares
    (weights ivar) to the continuum side bands ``continuum_kms[0] <= |v| <= continuum_kms[1]``
    (less pixels within ``exclude_kms`` of [NII] 6550, 6585) and subtracted; then over the line
    window ``|v| <= window_kms``, with ``F_i = (f_i - a - b v_i) dlambda_i``::

        flux       = sum F_i                                   (moment 0)
        velocity   = sum v_i F_i / sum F_i                     (moment 1, km/s relative to z)
        dispersion = sqrt(sum (v_i - velocity)^2 F_i / sum F_i)

    less ``cube.meta["instsigma"]`` (km/s) in quadrature when the meta has a finite one (0
    where the line is narrower). Errors are propagated linearly from IVAR, including the
    continuum fit's covariance. Pixels with ivar <= 0, non-finite values or DONOTUSE (MaNGA
    DRP bit 10) count in neither fit nor sums.

    Parameters
    ----------
    cube : IFUCube
        (nwave, ny, nx) flux density per A (MaNGA 1e-17 erg/s/cm2/A/spaxel), ivar, mask, wave.
        Only the planes in the window and side bands are used, so a cube cut to them gives the
        same maps.
    z : float
        Redshift the velocities are relative to.
    window_kms : float
        Half-width of the line window.
    continuum_kms : (float, float)
        Inner and outer |v| of the two continuum side bands.
    min_snr : float
        Spaxels with flux S/N below this are not ``good``.
    min_coverage : float
        Share of the window's pixels that must be usable for a spaxel to be ``good``.
    exclude_kms : float
        Continuum pixels this close to the [NII] lines are left out.

    Returns
    -------
    IFUMaps
        float32 maps; flux in the cube's flux unit times A (MaNGA 1e-17 erg/s/cm2/spaxel).
        NaN (errors inf) where nothing could be measured: no continuum fit (fewer than 2 usable
        pixels in either side band), no usable window pixel, and for velocity and dispersion
        also where the flux is not positive. ``good``: all values finite, errors finite and
        > 0, S/N >= ``min_snr`` and ``min_coverage`` of the window usable. ``meta`` is the
        cube's plus z, window_kms, continuum_kms, flux_unit.

    Raises
    ------
    SurveyFileError
        (code ``no_coverage``) when the cube's wavelengths do not reach across the window and
        both side bands.

    Notes
    -----
    The moments of a line are those of its observed profile: the dispersion includes the
    instrumental broadening (and the pixel width, as a post-pixelisation LSF does) unless
    ``instsigma`` is given. [NII] 6550 lies 674 km/s blue of H-alpha, so its wing enters a
    wide window when the gas is broad or the galaxy rotates fast.
    """
    wave = np.asarray(cube.wave, dtype=np.float64)
    name = cube.path or str(cube.meta.get("file") or "<cube>")
    if not np.isfinite(z):
        raise SurveyFileError(name, "no redshift to place the H-alpha window", code="no_redshift")
    lam_obs = HALPHA_VACUUM * (1.0 + z)
    lo, hi = lam_obs * (1 - continuum_kms[1] / C_KMS), lam_obs * (1 + continuum_kms[1] / C_KMS)
    if wave.size < 2 or wave[0] > lo or wave[-1] < hi:
        raise SurveyFileError(name, f"wavelengths {wave[0]:.1f}-{wave[-1]:.1f} A do not cover the H-alpha "
                              f"window and side bands at z = {z:.5f} ({lo:.1f}-{hi:.1f} A)", code="no_coverage")
    v_all, line_all, cont_all = _window_pixels(wave, z, window_kms, continuum_kms, exclude_kms)
    dlam_all = _pixel_widths(wave)
    used = np.flatnonzero(line_all | cont_all)
    line, cont, v, dlam = line_all[used], cont_all[used], v_all[used], dlam_all[used]
    ny, nx = np.shape(cube.flux)[1:]
    shape = (len(used), ny * nx)
    flux = np.asarray(cube.flux)[used].reshape(shape).astype(np.float64)
    ivar = np.asarray(cube.ivar)[used].reshape(shape).astype(np.float64)
    mask = np.asarray(cube.mask)[used].reshape(shape)
    usable = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & ((mask & DRP_DONOTUSE) == 0)
    flux = np.where(usable, flux, 0.0)
    ivar = np.where(usable, ivar, 0.0)

    # Continuum: weighted straight line in x = v / 1000 (for conditioning), per spaxel.
    x = (v / 1000.0)[:, None]
    w = np.where(cont[:, None], ivar, 0.0)
    s0, s1, s2 = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    t0, t1 = (w * flux).sum(0), (w * x * flux).sum(0)
    det = s0 * s2 - s1 * s1
    n_side = [(usable & (cont & (v < 0))[:, None]).sum(0), (usable & (cont & (v > 0))[:, None]).sum(0)]
    fitted = (n_side[0] >= 2) & (n_side[1] >= 2) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = np.where(fitted, det, 1.0)
        a, b = (s2 * t0 - s1 * t1) / det, (s0 * t1 - s1 * t0) / det
        c_aa, c_ab, c_bb = s2 / det, -s1 / det, s0 / det        # covariance of (a, b)

        in_line = usable & line[:, None]
        dl = np.where(in_line, dlam[:, None], 0.0)
        resid = (flux - a - b * x) * dl                          # F_i, 0 outside the usable window
        var = np.where(in_line, dl * dl / np.where(ivar > 0, ivar, 1.0), 0.0)

        def continuum_var(g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
            """Variance that the continuum fit adds to sum_i g_i (a + b x_i)."""
            return g0 * g0 * c_aa + 2 * g0 * g1 * c_ab + g1 * g1 * c_bb

        vv = v[:, None]
        m0 = resid.sum(0)
        m0_var = var.sum(0) + continuum_var(dl.sum(0), (dl * x).sum(0))
        m1 = (vv * resid).sum(0) / m0
        d1 = np.where(in_line, vv - m1, 0.0)                     # d m1 / d F_i = (v_i - m1) / m0
        m1_var = ((d1 * d1 * var).sum(0) + continuum_var((d1 * dl).sum(0), (d1 * dl * x).sum(0))) / m0**2
        m2 = (d1 * d1 * resid).sum(0) / m0
        d2 = np.where(in_line, d1 * d1 - m2, 0.0)                # d m2 / d F_i = ((v_i - m1)^2 - m2) / m0
        m2_var = ((d2 * d2 * var).sum(0) + continuum_var((d2 * dl).sum(0), (d2 * dl * x).sum(0))) / m0**2
        sigma = np.sqrt(m2)
        sigma_err = np.sqrt(m2_var) / (2.0 * sigma)
        flux_err = np.sqrt(m0_var)
        velocity_err = np.sqrt(m1_var)

        instsigma = float(cube.meta.get("instsigma", np.nan) or np.nan)
        if np.isfinite(instsigma) and instsigma > 0:
            corrected = np.sqrt(np.clip(m2 - instsigma**2, 0.0, None))
            sigma_err = np.where(corrected > 0.1 * instsigma,
                                 sigma * sigma_err / np.maximum(corrected, 0.1 * instsigma), sigma_err)
            sigma = corrected

    n_line = int(line.sum())
    coverage = in_line.sum(0) / max(n_line, 1)
    measured = fitted & (in_line.sum(0) > 0)
    kinematic = measured & (m0 > 0) & (m2 > 0)
    maps = {"flux": (m0, flux_err, measured), "velocity": (m1, velocity_err, kinematic),
            "dispersion": (sigma, sigma_err, kinematic)}
    out: dict[str, np.ndarray] = {}
    for key, (value, err, ok) in maps.items():
        ok = ok & np.isfinite(value) & np.isfinite(err)
        out[key] = np.where(ok, value, np.nan).astype(np.float32).reshape(ny, nx)
        out[f"{key}_err"] = np.where(ok, err, np.inf).astype(np.float32).reshape(ny, nx)
    good = (np.isfinite(out["flux"]) & np.isfinite(out["velocity"]) & np.isfinite(out["dispersion"])
            & np.isfinite(out["flux_err"]) & (out["flux_err"] > 0)
            & np.isfinite(out["velocity_err"]) & (out["velocity_err"] > 0)
            & np.isfinite(out["dispersion_err"]) & (out["dispersion_err"] > 0)
            & (out["flux"] >= min_snr * out["flux_err"]) & (coverage >= min_coverage).reshape(ny, nx))
    unit = str(cube.meta.get("flux_unit", "")).replace("/Ang", "").replace("/A/", "/") or MANGA_MAP_FLUX_UNIT
    meta = {**cube.meta, "z": float(z), "window_kms": float(window_kms),
            "continuum_kms": tuple(float(c) for c in continuum_kms), "flux_unit": unit}
    return IFUMaps(flux=out["flux"], flux_err=out["flux_err"], velocity=out["velocity"],
                   velocity_err=out["velocity_err"], dispersion=out["dispersion"],
                   dispersion_err=out["dispersion_err"], good=good, pixel_scale=float(cube.pixel_scale),
                   meta=meta, path=cube.path)
