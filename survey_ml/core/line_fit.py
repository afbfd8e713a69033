"""Gaussian fits of the strong emission lines of a block of spectra (the baseline's line fluxes).

Emission-line fluxes are measured by fitting Gaussian lines on a local linear continuum in
three independent groups (under Hbeta and Halpha with a stellar Balmer absorption trough of
fixed shape). This module holds the line model, the fitting windows and the vectorised
block fit; :mod:`survey_ml.core.line_fit_exact` holds the exact per-row fit on the same
model, and :mod:`survey_ml.core.calibrations` turns the fluxes into 12 + log(O/H).

Line groups (vacuum rest wavelengths, Angstrom), each with one common velocity offset
``dv`` and one common velocity dispersion:

========  =====================================================  =====================
group     lines                                                  ties
========  =====================================================  =====================
``hb``    Hbeta 4862.68 (+ stellar Hbeta absorption)             --
``oiii``  [OIII] 4960.30, 5008.24                                4959 / 5007 = 1 / 2.98
``ha``    [NII] 6549.86, Halpha 6564.61, [NII] 6585.27           6548 / 6584 = 1 / 3.05
          (+ stellar Halpha absorption)
========  =====================================================  =====================

Model choices (written down because the sources leave them open):

* A line is a Gaussian in wavelength, evaluated at pixel centres (as LAMOST and SDSS
  quote flux densities, and as the parametric mock draws them), with total width
  ``sigma_lambda = mu * hypot(sigma_inst, sigma_v) / c`` and
  ``sigma_inst = c / (2.3548 R)``: the instrument's FWHM resolution ``R`` added in
  quadrature to the gas dispersion ``sigma_v`` (fitted, 0-500 km/s). ``mu`` is the rest
  wavelength times ``(1 + z) (1 + dv / c)``, ``|dv| <= 300 km/s``.
* The continuum is ``c0 + c1 x`` over the group's window: the rest-frame span of its lines
  padded by 60 A on each side (Hbeta 4802.7-4922.7, [OIII] 4900.3-5068.2, Halpha+[NII]
  6489.9-6645.3 A, times ``1 + z``).
* There is no stellar-population fit, so the stellar Balmer absorption the Hbeta and
  Halpha emission sits in is modelled locally: the ``hb`` and ``ha`` continua also hold
  ``b T(lambda)``, a trough of FIXED shape and free amplitude ``b <= 0`` (absorption only).
  ``T`` is a unit-flux sum of two Gaussians centred on the Balmer line's rest wavelength
  times ``1 + z`` (catalogue z; no ``dv``): rest-frame FWHM 7 A holding 25% of the absorbed
  flux (the Doppler core, instrument and stellar velocity dispersion included) and 30 A
  holding 75% (the pressure-broadened wings of A/F stars), see
  :data:`BALMER_ABSORPTION_FWHM` and :data:`BALMER_ABSORPTION_WEIGHTS`. As ``b`` is
  linear and ``T`` depends on neither ``dv`` nor ``sigma``, ``b`` is solved in closed form
  with the continuum and its Jacobian column is ``T``. ``b`` (the absorbed flux, in line
  flux units; ``-b`` / continuum is the absorption EW) is returned as ``hb_absorption`` and
  ``ha_absorption``. Without the trough, Hbeta on the bagpipes (BC03 + CLOUDY) mocks came
  out a median 0.76 of its true flux and Halpha 0.95, and O3N2 metallicities ~0.02 dex low
  (PP04 or the library calibration); with it, 1.00 and 0.99, and O3N2 within 0.005 dex.
* How the shape was chosen: two Gaussians fitted to the median stellar Hbeta and Halpha
  absorption profiles of the bagpipes library (continuum-only, LAMOST-broadened) give a
  core of FWHM 5.6-7.4 A holding 27% and wings of 24-33 A; on noise-free library spectra at
  z = 0.03-0.16 the adopted shape recovers Hbeta to a median 1.002 of its true flux (16-84%:
  0.98-1.01) and Halpha to 0.995 (0.98-1.00). A single broad trough (a Gaussian of
  FWHM 20-40 A, the wings alone) leaves Hbeta 8-14% low, as it misses the core; a single
  12 A Gaussian or 13 A Lorentzian gets the median but scatters more.
* What it costs: the trough's core is nearly as narrow as the emission line, so a free
  trough raises the Hbeta and Halpha errors (~1.6x and ~1.9x at ``sigma_v`` = 90 km/s,
  1.3-1.5x at 30 km/s, ~3x at 230 km/s). It cannot take flux from the line: it is never
  positive, and its shape, width and centre are fixed (tested: a broad bump under Hbeta
  leaves it at 0; a narrow line in a trough is recovered to < 2% on both paths). Where there
  is no absorption at all (the parametric mock) the truth sits on the bound ``b = 0``, and
  the bounded fit puts noise that looks like a broad bump into the line: there Hbeta and
  Halpha come out biased high by ~0.3-0.4 sigma at line S/N ~15-35, while with absorption
  there is no bias (tested). In passive galaxies the fixed shape can differ from the real
  trough and a broad (large ``sigma_v``) line of either sign may take up the difference;
  they have no usable lines anyway.
* Fluxes are the integrated line fluxes in the observed frame, in the spectrum's flux
  density units times Angstrom. Amplitudes are not bounded, so a line that is not there
  comes out near zero with either sign and the errors stay Gaussian.
* Errors are 1 sigma from the linearised covariance ``(J^T W J)^-1`` of all parameters
  (continuum, Balmer trough, amplitudes, ``dv``, ``sigma``), i.e. marginalised over the line
  position and width and the absorption, and not rescaled by the reduced chi^2: ``ivar``
  is taken at its word. A trough on its bound (``b = 0``) counts as fixed.
* A line is measured only where its core (``|lambda - mu| < 3 sigma_inst``) lies inside
  the spectrum and at least 3 pixels and at least half of the core pixels are usable
  (``ivar > 0``, finite, ``mask == 0``); a group needs at least ``n_params + 5`` usable
  pixels in its window. Otherwise the line is NaN with a reason, never an exception.

Two paths give the same fit:

* ``fit_strong_lines_block`` fits a block of spectra on one common grid at once, in NumPy:
  a grid search over ``dv`` (9 values, 75 km/s apart) at a typical width, then over
  ``sigma_v`` (8 values) at the best ``dv``, with the linear parameters (continuum, trough
  and amplitudes) solved in closed form for each trial (solved again with ``b = 0`` where
  ``b`` comes out positive), then batched Levenberg-Marquardt steps on all parameters (a
  ``dv``, ``sigma`` or ``b`` pinned at its bound is frozen for the step), iterated on each
  row until it converges. It lands within 0.05 sigma of the least-squares path (tested;
  typically < 0.01 sigma) and is ~12x faster; see
  :data:`survey_ml.core.strong_lines.MEASURED_SPEED`.
* ``fit_strong_lines`` (:mod:`survey_ml.core.line_fit_exact`) fits one spectrum on any grid
  with :func:`scipy.optimize.least_squares`, started from this module's grid search.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["fit_strong_lines_block", "LINE_WAVELENGTHS", "LINE_NAMES", "GROUPS", "EXTRA_GROUPS", "EXTENDED_GROUPS",
           "BALMER_ABSORPTION_FWHM", "BALMER_ABSORPTION_WEIGHTS"]

C_KMS = 299_792.458
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # 2.3548

#: Vacuum rest wavelengths (A) of the lines fitted.
LINE_WAVELENGTHS = {"hb": 4862.68, "oiii4959": 4960.30, "oiii5007": 5008.24, "nii6548": 6549.86,
                    "ha": 6564.61, "nii6584": 6585.27,
                    "oii3726": 3727.09, "oii3729": 3729.88, "sii6717": 6718.29, "sii6731": 6732.67}

#: The four reported line fluxes.
LINE_NAMES = ("hb", "oiii5007", "ha", "nii6584")

#: Fixed doublet ratios (weak / strong line).
OIII_4959_5007 = 1.0 / 2.98
NII_6548_6584 = 1.0 / 3.05
#: [OII] 3726 / 3729 flux ratio, fixed: the doublet is 2.8 A apart (unresolved at R ~ 1800), so
#: only the sum is measured; 0.75 is the low-density limit's neighbourhood (n_e ~ 100 cm^-3).
OII_3726_3729 = 0.75

DV_MAX = 300.0      # km/s, bound on |dv|
SIGMA_V_MAX = 500.0  # km/s, bound on the gas dispersion
WINDOW_PAD = 60.0   # A (rest frame) on each side of a group's outermost lines
CORE_HALF_WIDTH = 3.0  # instrumental sigmas: a line's "core"
MIN_CORE_PIXELS = 3
MIN_CORE_FRACTION = 0.5
MIN_EXTRA_PIXELS = 5  # usable pixels a window needs beyond the number of parameters

#: Fixed shape of the stellar Balmer absorption trough under Hbeta and Halpha: a sum of
#: Gaussians centred on the line's rest wavelength times ``1 + z`` (catalogue z), with these
#: rest-frame FWHMs (A) and fractions of the absorbed flux: the Doppler core (instrument and
#: stellar velocity dispersion included) and the broad pressure-broadened wings of A/F
#: stars. Only its amplitude is fitted. See the module docstring for how it was chosen.
BALMER_ABSORPTION_FWHM = (7.0, 30.0)
BALMER_ABSORPTION_WEIGHTS = (0.25, 0.75)

_DV_GRID = np.linspace(-DV_MAX, DV_MAX, 9)
_SIGMA_V_GRID = np.array([0.0, 30.0, 60.0, 100.0, 150.0, 220.0, 320.0, 500.0])
_SIGMA_V_START = 80.0
_LM_STEPS = 50


@dataclass(frozen=True)
class _LineGroup:
    """Lines fitted together: one ``dv``, one ``sigma_v``, amplitudes tied by fixed ratios."""

    name: str
    rest: tuple[float, ...]      # rest wavelength of each line
    amp: tuple[int, ...]         # amplitude parameter each line scales with
    ratio: tuple[float, ...]     # line flux = ratio * amplitude
    report: tuple[tuple[str, int], ...]  # (output name, line index): reports that line's amplitude
    #                                    parameter (its flux at ratio 1; [OII]: the doublet's total)
    absorption: float | None = None  # rest wavelength of a stellar Balmer absorption trough

    @property
    def n_amp(self) -> int:
        return max(self.amp) + 1

    @property
    def n_cont(self) -> int:
        """Continuum parameters: c0, c1 and, with a Balmer trough, its amplitude."""
        return 2 if self.absorption is None else 3

    @property
    def n_par(self) -> int:
        """Continuum (2 or 3) + amplitudes + dv + sigma."""
        return self.n_cont + self.n_amp + 2

    @property
    def amp_slice(self) -> slice:
        """Where the line amplitudes sit in theta."""
        return slice(self.n_cont, self.n_cont + self.n_amp)

    @property
    def window(self) -> tuple[float, float]:
        return min(self.rest) - WINDOW_PAD, max(self.rest) + WINDOW_PAD

    def ratio_matrix(self) -> np.ndarray:
        """(n_lines, n_amp) matrix taking amplitudes to line fluxes."""
        mat = np.zeros((len(self.rest), self.n_amp))
        mat[np.arange(len(self.rest)), self.amp] = self.ratio
        return mat


_W = LINE_WAVELENGTHS
GROUPS = (
    _LineGroup("hb", (_W["hb"],), (0,), (1.0,), (("hb", 0),), absorption=_W["hb"]),
    _LineGroup("oiii", (_W["oiii5007"], _W["oiii4959"]), (0, 0), (1.0, OIII_4959_5007), (("oiii5007", 0),)),
    _LineGroup("ha", (_W["ha"], _W["nii6584"], _W["nii6548"]), (0, 1, 1), (1.0, 1.0, NII_6548_6584),
               (("ha", 0), ("nii6584", 1)), absorption=_W["ha"]),
)

#: The ionisation-sensitive lines (``fit_strong_lines_block(..., groups=EXTENDED_GROUPS)``):
#: [OII] 3726+3729 (one amplitude, reported as the doublet's total ``oii3727``) and the
#: [SII] 6717, 6731 doublet (two free amplitudes). With [OIII]/[OII] and [SII]/Halpha they
#: break the log U - metallicity degeneracy of the BPT lines.
EXTRA_GROUPS = (
    _LineGroup("oii", (_W["oii3729"], _W["oii3726"]), (0, 0), (1.0 / (1.0 + OII_3726_3729),
                                                                OII_3726_3729 / (1.0 + OII_3726_3729)),
               (("oii3727", 0),)),
    _LineGroup("sii", (_W["sii6717"], _W["sii6731"]), (0, 1), (1.0, 1.0), (("sii6717", 0), ("sii6731", 1))),
)
EXTENDED_GROUPS = GROUPS + EXTRA_GROUPS


# ----------------------------------------------------------------------------- windows


@dataclass
class _Windows:
    """One group's fitting windows for n spectra, padded to a common K pixels."""

    lam: np.ndarray      # (n, K) observed wavelength
    flux: np.ndarray     # (n, K), 0 where unusable
    weight: np.ndarray   # (n, K) ivar, 0 where unusable or outside the window
    cont: np.ndarray     # (n, K, n_cont) continuum columns: 1, x (about -1..1), unit-flux Balmer trough
    zp1: np.ndarray      # (n,) 1 + z
    active: np.ndarray   # (n, n_par) bool: parameter fitted
    line_code: np.ndarray  # (n, n_lines) object: "ok" or why that line cannot be measured
    line_detail: np.ndarray  # (n, n_lines) object: words


def _gather(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, good: np.ndarray, z: np.ndarray,
            group: _LineGroup, r_instrument: float) -> _Windows:
    """Cut the group's window out of every row of a block on the common grid ``wave``."""
    n, n_pix = flux.shape
    zp1 = 1.0 + z
    ok_z = np.isfinite(z) & (z > -0.5)
    zp1 = np.where(ok_z, zp1, 1.0)
    lo_rest, hi_rest = group.window
    lo = np.searchsorted(wave, lo_rest * zp1, side="left")
    hi = np.searchsorted(wave, hi_rest * zp1, side="right")
    k = max(int((hi - lo).max(initial=0)), 1)
    idx = lo[:, None] + np.arange(k)[None, :]
    inside = idx < hi[:, None]
    idx = np.minimum(idx, n_pix - 1)
    lam = wave[idx]
    f = np.take_along_axis(flux, idx, axis=1).astype(np.float64)
    w = np.take_along_axis(ivar, idx, axis=1).astype(np.float64)
    usable = inside & np.take_along_axis(good, idx, axis=1) & ok_z[:, None]
    w = np.where(usable, w, 0.0)
    f = np.where(usable, f, 0.0)
    mid = 0.5 * (lo_rest + hi_rest) * zp1
    x = (lam - mid[:, None]) / (0.5 * (hi_rest - lo_rest) * zp1[:, None])
    cont = [np.ones_like(x), x]
    if group.absorption is not None:
        cont.append(_trough(lam, group.absorption, zp1))
    cont = np.stack(cont, axis=2)
    code, detail, seen = _coverage(wave, lam, inside, usable, zp1, ok_z, group, r_instrument)
    active = np.zeros((n, group.n_par), dtype=bool)
    for j in range(group.n_amp):
        lines = [i for i, a in enumerate(group.amp) if a == j]
        active[:, group.n_cont + j] = seen[:, lines].any(axis=1)
    any_line = (code == "ok").any(axis=1)
    n_good = usable.sum(axis=1)
    few = any_line & (n_good < group.n_par + MIN_EXTRA_PIXELS)
    for i in np.flatnonzero(few):
        for li in range(len(group.rest)):
            if code[i, li] == "ok":
                code[i, li] = "masked"
                detail[i, li] = f"masked: only {n_good[i]} usable pixels in the {group.name} window"
    any_line &= ~few
    active[:, group.amp_slice] &= any_line[:, None]
    active[:, :group.n_cont] = any_line[:, None]
    active[:, -2:] = any_line[:, None]
    return _Windows(lam, f, w, cont, zp1, active, code, detail)


def _coverage(wave: np.ndarray, lam: np.ndarray, inside: np.ndarray, usable: np.ndarray, zp1: np.ndarray,
              ok_z: np.ndarray, group: _LineGroup, r_instrument: float) -> tuple[np.ndarray, ...]:
    """Per row and line: "ok", "out_of_range", "masked" or "bad_redshift", a message, and
    whether the line is modelled at all (some usable core pixel: a line too poorly covered
    to be reported is still fitted, so that its wings do not bias its neighbours)."""
    n = lam.shape[0]
    code = np.full((n, len(group.rest)), "ok", dtype=object)
    detail = np.full((n, len(group.rest)), "", dtype=object)
    seen = np.zeros((n, len(group.rest)), dtype=bool)
    for li, rest in enumerate(group.rest):
        mu = rest * zp1
        half = CORE_HALF_WIDTH * mu / (FWHM_PER_SIGMA * r_instrument)
        core = inside & (np.abs(lam - mu[:, None]) < half[:, None])
        n_core = core.sum(axis=1)
        n_core_good = (core & usable).sum(axis=1)
        outside = (mu - half < wave[0]) | (mu + half > wave[-1])
        masked = (n_core_good < MIN_CORE_PIXELS) | (n_core_good < MIN_CORE_FRACTION * n_core)
        seen[:, li] = ok_z & ~outside & (n_core_good > 0)
        for i in np.flatnonzero(~ok_z | outside | masked):
            if not ok_z[i]:
                code[i, li], detail[i, li] = "bad_redshift", "bad_redshift: z is not finite or <= -0.5"
            elif outside[i]:
                code[i, li] = "out_of_range"
                detail[i, li] = (f"out_of_range: line at {mu[i]:.1f} A, spectrum covers "
                                 f"{wave[0]:.1f}-{wave[-1]:.1f} A")
            else:
                code[i, li] = "masked"
                detail[i, li] = f"masked: {n_core_good[i]} of {n_core[i]} core pixels usable"
    return code, detail, seen


# ----------------------------------------------------------------------------- model


def _trough(lam: np.ndarray, rest: float, zp1: np.ndarray) -> np.ndarray:
    """Unit-flux Balmer absorption profile (n, K) at ``rest * (1 + z)``: fixed shape, no free width.

    Positive (it is subtracted by a negative amplitude) and integrating to 1, so that its
    amplitude is the absorbed flux in the lines' units; widths scale with ``1 + z``.
    """
    mu = rest * zp1[:, None]
    profile = np.zeros(np.broadcast_shapes(np.shape(lam), mu.shape))
    for fwhm, weight in zip(BALMER_ABSORPTION_FWHM, BALMER_ABSORPTION_WEIGHTS):
        sig = fwhm / FWHM_PER_SIGMA * zp1[:, None]
        profile += weight * np.exp(-0.5 * ((lam - mu) / sig) ** 2) / (np.sqrt(2.0 * np.pi) * sig)
    return profile


def _profiles(win: _Windows, group: _LineGroup, dv: np.ndarray, s: np.ndarray):
    """Unit-flux Gaussians of each line, (n, K, n_lines), with u = (lam - mu) / sigma, mu, sigma."""
    rest = np.asarray(group.rest)[None, None, :]
    mu = rest * (win.zp1 * (1.0 + dv / C_KMS))[:, None, None]
    sig = mu * (s / C_KMS)[:, None, None]
    u = (win.lam[:, :, None] - mu) / sig
    g = np.exp(-0.5 * u * u) / (np.sqrt(2.0 * np.pi) * sig)
    return g, u, mu, sig


def _design(win: _Windows, group: _LineGroup, dv: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Columns of the linear parameters (1, x, [trough], amplitudes), (n, K, n_cont + n_amp)."""
    g = _profiles(win, group, dv, s)[0]
    return np.concatenate([win.cont, g @ group.ratio_matrix()], axis=2)


def _model_and_jacobian(win: _Windows, group: _LineGroup, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model (n, K) and its Jacobian (n, K, n_par) for parameters (c0, c1, [b], A..., dv, s)."""
    dv, s = theta[:, -2], theta[:, -1]
    g, u, mu, sig = _profiles(win, group, dv, s)
    rmat = group.ratio_matrix()
    lin = np.concatenate([win.cont, g @ rmat], axis=2)
    model = np.einsum("nkp,np->nk", lin, theta[:, :-2])
    line_flux = theta[:, None, group.amp_slice] @ rmat.T  # (n, 1, n_lines)
    dmu_ddv = mu / (1.0 + dv / C_KMS)[:, None, None] / C_KMS
    dsig_ddv = dmu_ddv * (s / C_KMS)[:, None, None]
    common = line_flux * g
    d_dv = (common * (u / sig * dmu_ddv + (u * u - 1.0) / sig * dsig_ddv)).sum(axis=2)
    d_s = (common * (u * u - 1.0) / sig * (mu / C_KMS)).sum(axis=2)
    jac = np.concatenate([lin, d_dv[..., None], d_s[..., None]], axis=2)
    return model, jac


def _masked_normal(a: np.ndarray, b: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace inactive parameters' rows/columns of the normal equations by the identity."""
    both = active[:, :, None] & active[:, None, :]
    eye = np.eye(a.shape[1])[None] * (~active)[:, :, None]
    return np.where(both, a, 0.0) + eye, np.where(active, b, 0.0)


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``a x = b``; falls back to a pseudo-inverse where ``a`` is singular."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return (np.linalg.pinv(a) @ b[..., None])[..., 0]


def _linear_fit(win: _Windows, group: _LineGroup, dv: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best continuum and amplitudes at fixed (dv, s), and the chi^2, per row.

    The Balmer trough amplitude is kept <= 0: where the free solution has it > 0, the
    rows are solved again with it fixed at 0 (the exact solution of the bounded problem,
    as only one parameter is bounded).
    """
    design = _design(win, group, dv, s)
    dw = design * win.weight[..., None]
    a = dw.transpose(0, 2, 1) @ design
    b = (dw * win.flux[..., None]).sum(axis=1)
    active = win.active[:, :-2]
    coef = _solve(*_masked_normal(a, b, active))
    if group.absorption is not None:
        rows = np.flatnonzero(coef[:, 2] > 0)
        if rows.size:
            pinned = active[rows].copy()
            pinned[:, 2] = False
            coef[rows] = _solve(*_masked_normal(a[rows], b[rows], pinned))
    resid = win.flux - np.einsum("nkp,np->nk", design, coef)
    return coef, (win.weight * resid * resid).sum(axis=1)


def _sigma_total(sigma_v: np.ndarray | float, r_instrument: float) -> np.ndarray:
    """Total velocity dispersion (km/s): gas and instrument in quadrature."""
    return np.hypot(sigma_v, C_KMS / (FWHM_PER_SIGMA * r_instrument))


def _grid_start(win: _Windows, group: _LineGroup, r_instrument: float) -> np.ndarray:
    """Starting parameters from a grid in dv (at a typical width), then in sigma_v."""
    n = win.lam.shape[0]
    best_chi2 = np.full(n, np.inf)
    best_dv = np.zeros(n)
    s0 = np.full(n, _sigma_total(_SIGMA_V_START, r_instrument))
    for dv in _DV_GRID:
        chi2 = _linear_fit(win, group, np.full(n, dv), s0)[1]
        better = chi2 < best_chi2
        best_chi2, best_dv = np.where(better, chi2, best_chi2), np.where(better, dv, best_dv)
    best_chi2 = np.full(n, np.inf)
    theta = np.zeros((n, group.n_par))
    for sv in _SIGMA_V_GRID:
        s = np.full(n, _sigma_total(sv, r_instrument))
        coef, chi2 = _linear_fit(win, group, best_dv, s)
        better = chi2 < best_chi2
        best_chi2 = np.where(better, chi2, best_chi2)
        theta[better] = np.concatenate([coef, best_dv[:, None], s[:, None]], axis=1)[better]
    return theta


def _bounds(group: _LineGroup, r_instrument: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of all parameters: the Balmer trough amplitude <= 0, dv and s bounded."""
    lower = np.full(group.n_par, -np.inf)
    upper = np.full(group.n_par, np.inf)
    if group.absorption is not None:
        upper[2] = 0.0
    lower[-2:] = -DV_MAX, _sigma_total(0.0, r_instrument)
    upper[-2:] = DV_MAX, _sigma_total(SIGMA_V_MAX, r_instrument)
    return lower, upper


def _model(win: _Windows, group: _LineGroup, theta: np.ndarray) -> np.ndarray:
    """Model (n, K) for parameters (c0, c1, [b], A..., dv, s)."""
    g = _profiles(win, group, theta[:, -2], theta[:, -1])[0]
    lines = (theta[:, None, group.amp_slice] @ group.ratio_matrix().T * g).sum(axis=2)
    return np.einsum("nkp,np->nk", win.cont, theta[:, :group.n_cont]) + lines


def _chi2(win: _Windows, group: _LineGroup, theta: np.ndarray) -> np.ndarray:
    resid = win.flux - _model(win, group, theta)
    return (win.weight * resid * resid).sum(axis=1)


def _rows(win: _Windows, rows: np.ndarray) -> _Windows:
    """The windows of a subset of rows."""
    return _Windows(win.lam[rows], win.flux[rows], win.weight[rows], win.cont[rows], win.zp1[rows],
                    win.active[rows], win.line_code[rows], win.line_detail[rows])


def _lm_step(win: _Windows, group: _LineGroup, theta: np.ndarray, damping: np.ndarray,
             lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """One damped Gauss-Newton step; a parameter sitting on a bound and pushed out of it is frozen."""
    model, jac = _model_and_jacobian(win, group, theta)
    jw = jac * win.weight[..., None]
    a = jw.transpose(0, 2, 1) @ jac
    b = (jw * (win.flux - model)[..., None]).sum(axis=1)
    diag = np.einsum("npp->np", a)
    a = a + damping[:, None, None] * np.eye(a.shape[1])[None] * diag[:, :, None]
    active = win.active.copy()
    low_edge = lower + 1e-9 * np.abs(np.where(np.isfinite(lower), lower, 0.0))
    high_edge = upper - 1e-9 * np.abs(np.where(np.isfinite(upper), upper, 0.0))
    for _ in range(4):  # at most three bounded parameters to freeze
        step = _solve(*_masked_normal(a, b, active))
        at_low = (theta <= low_edge) & (step < 0)
        at_high = (theta >= high_edge) & (step > 0)
        pushed = (at_low | at_high) & active
        if not pushed.any():
            break
        active &= ~pushed
    return np.clip(theta + step, lower, upper)


def _levenberg_marquardt(win: _Windows, group: _LineGroup, theta: np.ndarray, r_instrument: float,
                         max_steps: int = _LM_STEPS) -> np.ndarray:
    """Batched Levenberg-Marquardt on all parameters, iterating only on rows not yet converged.

    A step is kept where chi^2 drops; a row is done when an accepted step gains less than
    ``1e-8`` in chi^2 or the damping has grown past ``1e6`` (no downhill step left).
    """
    lower, upper = _bounds(group, r_instrument)
    theta = theta.copy()
    damping = np.full(theta.shape[0], 1e-3)
    chi2 = _chi2(win, group, theta)
    todo = np.flatnonzero(win.active[:, -1] & np.isfinite(chi2))
    for _ in range(max_steps):
        if todo.size == 0:
            break
        sub = _rows(win, todo)
        trial = _lm_step(sub, group, theta[todo], damping[todo], lower, upper)
        trial_chi2 = _chi2(sub, group, trial)
        gain = chi2[todo] - trial_chi2
        better = np.isfinite(trial_chi2) & (gain > 0)
        theta[todo[better]] = trial[better]
        chi2[todo[better]] = trial_chi2[better]
        damping[todo] = np.where(better, damping[todo] * 0.3, damping[todo] * 10.0)
        done = (better & (gain < 1e-8)) | (damping[todo] > 1e6)
        todo = todo[~done]
    return theta


def _covariance(win: _Windows, group: _LineGroup, theta: np.ndarray) -> np.ndarray:
    """Parameter covariance (J^T W J)^-1 with columns normalised first (pseudo-inverse).

    A Balmer trough pinned at its bound (amplitude 0) counts as fixed, not marginalised over.
    """
    jac = _model_and_jacobian(win, group, theta)[1]
    jw = jac * win.weight[..., None]
    a = jw.transpose(0, 2, 1) @ jac
    active = win.active & (np.einsum("npp->np", a) > 0)
    if group.absorption is not None:
        # pinned: within 1e-6 of its own (conditional) sigma of the bound
        active[:, 2] &= theta[:, 2] * np.sqrt(np.maximum(a[:, 2, 2], 0.0)) < -1e-6
    a, _ = _masked_normal(a, np.zeros(a.shape[:2]), active)
    scale = 1.0 / np.sqrt(np.einsum("npp->np", a))
    norm = a * scale[:, :, None] * scale[:, None, :]
    cov = np.linalg.pinv(norm, rcond=1e-10, hermitian=True) * scale[:, :, None] * scale[:, None, :]
    return np.where(active[:, :, None] & active[:, None, :], cov, np.nan)


# ----------------------------------------------------------------------------- results


def _line_names(groups: tuple[_LineGroup, ...]) -> tuple[str, ...]:
    return tuple(name for group in groups for name, _ in group.report)


def _empty_result(n: int, groups: tuple[_LineGroup, ...] = GROUPS) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    names = _line_names(groups)
    for name in names:
        out[name] = np.full(n, np.nan)
        out[f"{name}_err"] = np.full(n, np.nan)
    for group in groups:
        for key in ("dv", "sigma", "rchi2") + (("absorption",) if group.absorption is not None else ()):
            out[f"{group.name}_{key}"] = np.full(n, np.nan)
    out["line_code"] = {name: np.full(n, "ok", dtype=object) for name in names}
    out["line_detail"] = {name: np.full(n, "", dtype=object) for name in names}
    return out


def _store_group(out: dict, win: _Windows, group: _LineGroup, theta: np.ndarray, cov: np.ndarray,
                 converged: np.ndarray, r_instrument: float) -> None:
    """Write one group's fluxes, errors, kinematics and per-line codes into ``out``."""
    fitted = win.active[:, -1]
    n_free = win.active.sum(axis=1)
    n_good = (win.weight > 0).sum(axis=1)
    chi2 = _chi2(win, group, theta)
    sigma_v = np.sqrt(np.maximum(theta[:, -1] ** 2 - _sigma_total(0.0, r_instrument) ** 2, 0.0))
    out[f"{group.name}_dv"] = np.where(fitted, theta[:, -2], np.nan)
    out[f"{group.name}_sigma"] = np.where(fitted, sigma_v, np.nan)
    out[f"{group.name}_rchi2"] = np.where(fitted, chi2 / np.maximum(n_good - n_free, 1), np.nan)
    if group.absorption is not None:
        out[f"{group.name}_absorption"] = np.where(fitted, theta[:, 2], np.nan)
    for name, li in group.report:
        j = group.n_cont + group.amp[li]
        err = np.sqrt(cov[:, j, j])
        ok = (win.line_code[:, li] == "ok") & converged & np.isfinite(err) & np.isfinite(theta[:, j])
        failed = (win.line_code[:, li] == "ok") & ~ok
        code = np.where(failed, "fit_failed", win.line_code[:, li])
        detail = np.where(failed, "fit_failed: no converged fit or singular covariance", win.line_detail[:, li])
        out[name] = np.where(ok, theta[:, j], np.nan)
        out[f"{name}_err"] = np.where(ok, err, np.nan)
        out["line_code"][name] = code
        out["line_detail"][name] = detail


def _check_block(wavelength, flux, ivar, mask, z) -> tuple[np.ndarray, ...]:
    """Validate shapes and return float64 wavelength, flux, ivar, the usable mask and z."""
    wave = np.asarray(wavelength, dtype=np.float64)
    flux = np.asarray(flux)
    ivar = np.asarray(ivar)
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    if flux.ndim != 2 or ivar.shape != flux.shape:
        raise ValueError(f"flux and ivar must be 2-D of one shape (n, n_pix), got {flux.shape} and {ivar.shape}")
    if wave.ndim != 1 or wave.shape[0] != flux.shape[1]:
        raise ValueError(f"wavelength must be 1-D with n_pix = {flux.shape[1]} values, got shape {wave.shape}")
    if z.shape != (flux.shape[0],):
        raise ValueError(f"z must hold one redshift per row ({flux.shape[0]}), got shape {z.shape}")
    if mask is not None and np.shape(mask) != flux.shape:
        raise ValueError(f"mask must have the shape of flux {flux.shape}, got {np.shape(mask)}")
    if wave.size > 1 and not (np.all(np.isfinite(wave)) and np.all(np.diff(wave) > 0)):
        raise ValueError("wavelength must be finite and strictly increasing")
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    if mask is not None:
        good &= np.asarray(mask) == 0
    return wave, flux, ivar, good, z


def fit_strong_lines_block(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: np.ndarray,
                           mask: np.ndarray | None = None, r_instrument: float = 1800.0,
                           groups: tuple[_LineGroup, ...] = GROUPS) -> dict[str, np.ndarray]:
    """Fit the strong lines of a block of spectra on one common grid, vectorised (fast path).

    Grid search in ``dv`` then ``sigma_v`` with closed-form linear parameters, then batched
    Levenberg-Marquardt on all parameters until each row converges (at most 50 steps); the
    model, bounds, coverage rules and errors are those of :func:`fit_strong_lines` (see the
    module docstring). Memory: a few (n, ~150, 8) float64 arrays per group, ~10 MB per
    1,000 rows.

    Parameters
    ----------
    wavelength : numpy.ndarray
        (n_pix,) observed-frame vacuum wavelengths (A), strictly increasing, shared by all rows.
    flux, ivar : numpy.ndarray
        (n, n_pix) flux density and inverse variance; ``ivar == 0`` marks a bad pixel.
    z : numpy.ndarray
        (n,) redshifts.
    mask : numpy.ndarray, optional
        (n, n_pix) pixel mask; non-zero marks a bad pixel.
    r_instrument : float
        Resolving power lambda / FWHM of the instrument.
    groups : tuple
        Line groups to fit: :data:`GROUPS` (the baseline's four lines) or
        :data:`EXTENDED_GROUPS` (also ``oii3727``, ``sii6717``, ``sii6731``, with ``oii_*`` and
        ``sii_*`` kinematics; ``status`` then counts all seven lines).

    Returns
    -------
    dict
        Arrays of length n: ``hb, oiii5007, ha, nii6584`` (integrated observed-frame fluxes)
        and their ``*_err``; per group (``hb``, ``oiii``, ``ha``) ``*_dv`` and ``*_sigma``
        (gas dispersion, instrument removed; km/s) and ``*_rchi2``; ``hb_absorption`` and
        ``ha_absorption`` (the fitted stellar Balmer trough's flux, <= 0, in line flux
        units; NaN where the group is not fitted); ``status``
        (``"ok"``: all four lines measured, ``"partial"``, ``"failed"``); ``message``
        (why lines are NaN, "" when none is); ``line_code`` (dict of per-line code arrays:
        ``ok``, ``out_of_range``, ``masked``, ``fit_failed``, ``bad_redshift``).

    Raises
    ------
    ValueError
        When the arrays' shapes do not match, or ``wavelength`` is not finite and strictly
        increasing (bad pixels or redshifts never raise: they give NaN and a reason).
    """
    wave, flux, ivar, good, z = _check_block(wavelength, flux, ivar, mask, z)
    out = _empty_result(flux.shape[0], groups)
    if flux.shape[0] == 0:
        return _finish(out, _line_names(groups))
    for group in groups:
        win = _gather(wave, flux, ivar, good, z, group, r_instrument)
        theta = _grid_start(win, group, r_instrument)
        theta = _levenberg_marquardt(win, group, theta, r_instrument)
        cov = _covariance(win, group, theta)
        _store_group(out, win, group, theta, cov, np.ones(len(z), dtype=bool), r_instrument)
    return _finish(out, _line_names(groups))


def _finish(out: dict, names: tuple[str, ...] = LINE_NAMES) -> dict:
    """Add ``status`` and ``message`` from the per-line codes."""
    codes = out["line_code"]
    n = len(out["hb"])
    n_ok = sum((codes[name] == "ok").astype(int) for name in names) if n else np.zeros(0, dtype=int)
    out["status"] = np.where(n_ok == len(names), "ok", np.where(n_ok == 0, "failed", "partial")).astype(object)
    out["message"] = np.array(["; ".join(f"{name}: {out['line_detail'][name][i]}" for name in names
                                         if codes[name][i] != "ok") for i in range(n)], dtype=object)
    return out
