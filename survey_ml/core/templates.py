"""PCA galaxy templates from the library, and the local template chi^2 redshift refinement.

A redshift CNN finds *which* redshift bin a galaxy is in; a template fit measures *where* in
it, to a fraction of a pixel, the way redrock (DESI's fitter) does - but only around the
network's few candidates instead of over the whole redshift range, which is what makes it
~100x cheaper than redrock at the same precision.

Templates (:func:`pca_templates`): rest-frame library spectra on a fine ln(lambda) grid,
optionally blurred to an instrument's resolving power, each scaled to unit mean, and their
first principal components (an SVD without mean subtraction, as redrock's galaxy templates
are made). A spectrum is modelled at a trial redshift as a linear combination of the
templates sampled at ``lambda_obs / (1 + z)`` plus ``n_poly`` Legendre terms in the observed
frame (they absorb flux-calibration and sky-continuum errors); the coefficients are the
weighted least-squares solution, and chi^2 = sum ivar (flux - model)^2.

Refinement (:func:`refine_redshifts`) works on a log-linear observed grid whose step is a
whole number ``r`` of template steps (LAMOST and the survey_ml model grids: dlog10 = 1e-4,
templates at a quarter of that). A trial redshift is then a whole shift ``s`` of template
pixels, and the templates at that redshift are the rows ``p r + s`` of the template table -
no interpolation, one contiguous gather. Per spectrum, in batched matrix algebra:

1. a coarse scan: ``coarse_steps`` trials ``coarse_stride`` template pixels apart, centred on
   each candidate;
2. a fine scan: ``fine_steps`` trials ``fine_stride`` template pixels apart around the best coarse trial,
   moved and repeated (up to ``max_recentre`` times) while its minimum is at its edge;
3. a parabola through the fine minimum and its two neighbours gives ln(1 + z) and its error
   from the curvature (delta chi^2 = 1), inflated by sqrt(chi^2 per degree of freedom)
   when that exceeds one (template mismatch);
4. ``delta_chi2``: the best chi^2 of the *other* candidates minus the best's - redrock's
   reliability figure (it flags delta chi^2 < 9).

The normal equations are assembled from blocks: template x template and template x
(flux, polynomials) by one batched matmul of the sqrt(ivar)-weighted templates, and the
polynomial x polynomial block once per spectrum, since it does not depend on z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

__all__ = ["TemplateSet", "pca_templates", "refine_redshifts", "RefineResult"]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Natural-log pixel step of LAMOST (and of the redshift model grids): dlog10 lambda = 1e-4.
LAMOST_DLOGLAM = 1e-4 * math.log(10.0)


@dataclass
class TemplateSet:
    """Rest-frame templates on a uniform ln(lambda) grid.

    Attributes
    ----------
    loglam0 : float
        ln(lambda / A) of the first pixel.
    dloglam : float
        Natural-log step.
    components : numpy.ndarray
        (n_components, n_wave) float32.
    """

    loglam0: float
    dloglam: float
    components: np.ndarray

    @property
    def wave(self) -> np.ndarray:
        """Rest-frame wavelength of each template pixel (A)."""
        return np.exp(self.loglam0 + self.dloglam * np.arange(self.components.shape[1]))


def pca_templates(rest_wave: np.ndarray, rest_flux: np.ndarray, n_components: int = 8,
                  wave_range: tuple[float, float] | None = None, dloglam: float = LAMOST_DLOGLAM / 4,
                  resolution: float | None = None) -> TemplateSet:
    """Principal-component templates of rest-frame spectra.

    Parameters
    ----------
    rest_wave : numpy.ndarray
        (n_wave,) rest-frame wavelengths (A), increasing.
    rest_flux : numpy.ndarray
        (n_spec, n_wave) rest-frame spectra (any flux unit; each is scaled to unit mean).
    n_components : int
        Templates kept.
    wave_range : tuple of float, optional
        Rest-frame range (A) of the templates (default: all of ``rest_wave``).
    dloglam : float
        ln(lambda) step of the template grid (default a quarter of a LAMOST pixel, so
        redshift trials on the LAMOST grid are whole shifts of 17 km/s).
    resolution : float, optional
        Blur to this resolving power R = lambda / FWHM (the instrument's line-spread
        function); None keeps the library's own sampling.

    Returns
    -------
    TemplateSet
        Components ordered by singular value, each of unit norm, the first made positive.

    Examples
    --------
    >>> wave = np.linspace(3000.0, 7000.0, 4001)
    >>> rng = np.random.default_rng(0)
    >>> flux = 1.0 + rng.uniform(0, 1, (30, 1)) * np.exp(-0.5 * ((wave - 5000) / 3) ** 2)
    >>> t = pca_templates(wave, flux, n_components=2)
    >>> t.components.shape[0], bool(np.all(t.components[0] > 0))
    (2, True)
    """
    lo, hi = wave_range or (float(rest_wave[0]), float(rest_wave[-1]))
    lo, hi = max(lo, float(rest_wave[0])), min(hi, float(rest_wave[-1]))
    loglam0 = math.log(lo)
    n = int(math.floor((math.log(hi) - loglam0) / dloglam)) + 1
    grid = np.exp(loglam0 + dloglam * np.arange(n))
    data = np.stack([np.interp(grid, rest_wave, row) for row in np.asarray(rest_flux, dtype=np.float64)])
    if resolution:
        data = gaussian_filter1d(data, FWHM_TO_SIGMA / resolution / dloglam, axis=1, mode="nearest")
    data /= np.mean(data, axis=1, keepdims=True)
    data = data[np.all(np.isfinite(data), axis=1)]
    # SVD through the small Gram matrix (n_spec x n_spec): cheap for a few thousand spectra.
    gram = data @ data.T
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:n_components]
    components = vectors[:, order].T @ data
    components /= np.linalg.norm(components, axis=1, keepdims=True)
    components *= np.sign(components.sum(axis=1, keepdims=True))
    return TemplateSet(loglam0=loglam0, dloglam=dloglam, components=components.astype(np.float32))


def _legendre(n_pix: int, n_poly: int) -> np.ndarray:
    x = np.linspace(-1.0, 1.0, n_pix)
    return np.stack([np.polynomial.legendre.legval(x, np.eye(n_poly)[d]) for d in range(n_poly)], axis=1)


@dataclass
class RefineResult:
    """Per-spectrum output of :func:`refine_redshifts` (NaN where nothing could be fitted)."""

    z: np.ndarray            # refined redshift
    z_err: np.ndarray        # 1-sigma error (delta chi^2 = 1, inflated by sqrt(reduced chi^2) when > 1)
    chi2: np.ndarray         # chi^2 of the best fit
    dof: np.ndarray          # good pixels - fitted coefficients
    delta_chi2: np.ndarray   # best chi^2 of the other candidates - chi^2 of the best (inf: no rival)
    candidate: np.ndarray    # index of the candidate the solution came from (-1: none)
    edge: np.ndarray         # the fine minimum sat at the edge of its scan


def _chi2(sw_flux: torch.Tensor, sw: torch.Tensor, sw_poly: torch.Tensor, pp: torch.Tensor, fp: torch.Tensor,
          table: torch.Tensor, shifts: torch.Tensor, r: int) -> torch.Tensor:
    """chi^2 of the weighted least-squares template + polynomial fit, per spectrum and trial.

    ``sw_flux`` (B, P) and ``sw_poly`` (B, P, L) are the flux and polynomials times sqrt(ivar),
    ``sw`` (B, P) is sqrt(ivar), ``pp`` (B, L, L) and ``fp`` (B, L) the z-independent blocks,
    ``shifts`` (B, T) whole template-pixel shifts. Returns chi^2 minus sum(ivar flux^2) - the
    constant is added by the caller.
    """
    b, t = shifts.shape
    p = sw_flux.shape[1]
    rows = (shifts[:, :, None] + r * torch.arange(p)[None, None, :]).clamp(0, table.shape[0] - 1)
    tz = torch.index_select(table, 0, rows.reshape(-1)).reshape(b, t, p, -1)       # (B, T, P, C)
    tz.mul_(sw[:, None, :, None])
    c = tz.shape[-1]
    tt = tz.transpose(-1, -2) @ tz                                                    # (B, T, C, C)
    rhs_cols = torch.cat([sw_flux[:, :, None], sw_poly], dim=2)[:, None]             # (B, 1, P, 1 + L)
    tx = tz.transpose(-1, -2) @ rhs_cols                                              # (B, T, C, 1 + L)
    n_poly = sw_poly.shape[2]
    m = c + n_poly
    normal = torch.empty(b, t, m, m, dtype=tt.dtype)
    normal[..., :c, :c] = tt
    normal[..., :c, c:] = tx[..., 1:]
    normal[..., c:, :c] = tx[..., 1:].transpose(-1, -2)
    normal[..., c:, c:] = pp[:, None]
    rhs = torch.cat([tx[..., :1], fp[:, None, :, None].expand(b, t, n_poly, 1)], dim=2)  # (B, T, M, 1)
    scale = torch.diagonal(normal, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)
    normal = normal + 1e-6 * scale[..., None, None] * torch.eye(m, dtype=normal.dtype)
    coef = torch.linalg.solve(normal.double(), rhs.double())
    return -(rhs.double() * coef).sum((-1, -2))


def refine_redshifts(log_wave0: float, dlog_wave: float, flux: np.ndarray, ivar: np.ndarray,
                     candidates: np.ndarray, templates: TemplateSet, coarse_stride: int = 8, coarse_steps: int = 3,
                     fine_stride: int = 2, fine_steps: int = 7, n_poly: int = 3, max_recentre: int = 3,
                     batch: int = 8) -> RefineResult:
    """Refine candidate redshifts by a local template chi^2 (see the module docstring).

    Parameters
    ----------
    log_wave0, dlog_wave : float
        The observed grid: ln(lambda_p) = log_wave0 + dlog_wave p (natural log, A).
    flux, ivar : numpy.ndarray
        (n, n_pix); ivar = 0 (or non-finite flux) marks pixels not to use.
    candidates : numpy.ndarray
        (n, K) candidate redshifts per spectrum, most probable first (NaN: no candidate).
    templates : TemplateSet
        Its ``dloglam`` must divide ``dlog_wave`` a whole number of times.
    coarse_stride : int
        Template pixels between coarse trials.
    coarse_steps : int
        Coarse trials per candidate (odd: centred on it).
    fine_stride : int
        Template pixels between the fine trials around the best coarse one.
    fine_steps : int
        Fine trials (odd, at least 3).
    n_poly : int
        Legendre terms (orders 0 .. n_poly - 1) in the observed frame.
    max_recentre : int
        Times a fine scan whose minimum is at its edge is moved there and repeated.
    batch : int
        Spectra per batched solve (memory: batch x trials x pixels x templates floats).

    Returns
    -------
    RefineResult

    Examples
    --------
    >>> wave = np.exp(np.log(3000.0) + 5e-5 * np.arange(30000))
    >>> line = lambda w, c: np.exp(-0.5 * ((w - c) / 2.0) ** 2)
    >>> t = TemplateSet(math.log(3000.0), 5e-5, np.stack([np.ones(30000), line(wave, 5000.0)]).astype(np.float32))
    >>> obs = np.exp(np.log(3600.0) + 2e-4 * np.arange(3000))
    >>> flux = (1.0 + 5 * line(obs, 5000.0 * 1.1234))[None]
    >>> res = refine_redshifts(math.log(3600.0), 2e-4, flux, np.full_like(flux, 100.0), np.array([[1.1237 - 1]]), t)
    >>> round(float(res.z[0]), 4)
    0.1234
    """
    ratio = dlog_wave / templates.dloglam
    r = int(round(ratio))
    if abs(ratio - r) > 1e-6 * r or r < 1:
        raise ValueError(f"the observed log step {dlog_wave:g} is not a whole multiple of the templates' "
                         f"{templates.dloglam:g}")
    n, k = candidates.shape
    n_pix = flux.shape[1]
    table = torch.from_numpy(np.ascontiguousarray(np.asarray(templates.components, dtype=np.float32).T))
    poly = torch.from_numpy(_legendre(n_pix, n_poly)).float()
    half = coarse_steps // 2
    coarse = coarse_stride * torch.arange(-half, half + 1)
    fine = fine_stride * torch.arange(-(fine_steps // 2), fine_steps // 2 + 1)
    step = templates.dloglam
    offset = (log_wave0 - templates.loglam0) / step          # shift s = offset - ln(1+z) / step
    out = {name: np.full(n, np.nan) for name in ("z", "z_err", "chi2", "dof", "delta_chi2")}
    out["candidate"] = np.full(n, -1, dtype=np.int64)
    out["edge"] = np.zeros(n, dtype=bool)
    log1pz = np.log1p(np.asarray(candidates, dtype=np.float64))
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        f_np = np.asarray(flux[sl], dtype=np.float32)
        w_np = np.where(np.isfinite(f_np), np.asarray(ivar[sl], dtype=np.float32), 0.0).clip(min=0.0)
        f = torch.from_numpy(np.nan_to_num(f_np) * (w_np > 0))
        sw = torch.from_numpy(np.sqrt(w_np)).float()
        sw_flux, sw_poly = f * sw, poly[None] * sw[:, :, None]
        pp = (sw_poly.transpose(1, 2) @ sw_poly).double()
        # Remove the polynomial-only fit first: the polynomials are in every trial's model, so
        # chi^2 is unchanged, and the smaller numbers keep float32 sums accurate at high S/N.
        ridge = 1e-9 * torch.diagonal(pp, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)[:, None, None]
        a = torch.linalg.solve(pp + ridge * torch.eye(n_poly, dtype=pp.dtype),
                               (sw_poly.double() * sw_flux.double()[:, :, None]).sum(1, keepdim=True).transpose(1, 2))
        sw_flux = (sw_flux.double() - (sw_poly.double() @ a)[:, :, 0]).float()
        pp = pp.float()
        fp = (sw_poly * sw_flux[:, :, None]).sum(1)
        fwf = (sw_flux.double() ** 2).sum(1)
        dof = (w_np > 0).sum(1) - (table.shape[1] + n_poly)
        c = torch.from_numpy(log1pz[sl])
        valid = torch.isfinite(c) & torch.from_numpy(dof > 0)[:, None]
        centre = torch.round(offset - c.nan_to_num(0.0) / step).long()                  # (B, K) shifts
        trials = centre[:, :, None] - coarse[None, None, :]                              # (B, K, J)
        # only real candidates are scanned: (spectrum, candidate) pairs, each with its J trials
        pb, pk = torch.nonzero(valid, as_tuple=True)
        chi = torch.full(trials.shape, np.inf, dtype=torch.float64)
        if len(pb):
            chi[pb, pk] = _chi2(sw_flux[pb], sw[pb], sw_poly[pb], pp[pb], fp[pb], table, trials[pb, pk], r) \
                + fwf[pb, None]
        per_candidate = chi.min(dim=2)
        best_k = per_candidate.values.argmin(dim=1)
        rows = torch.arange(len(c))
        best_coarse = trials[rows, best_k, per_candidate.indices[rows, best_k]]
        fine_trials = best_coarse[:, None] + fine[None, :]
        chi_f = _chi2(sw_flux, sw, sw_poly, pp, fp, table, fine_trials, r) + fwf[:, None]
        raw_j = chi_f.argmin(dim=1)
        for _ in range(max_recentre):  # a minimum at the scan's edge: move the fine scan there and look again
            at_edge = torch.nonzero((raw_j == 0) | (raw_j == len(fine) - 1), as_tuple=True)[0]
            if not len(at_edge):
                break
            fine_trials[at_edge] = fine_trials[at_edge, raw_j[at_edge]][:, None] + fine[None, :]
            chi_f[at_edge] = _chi2(sw_flux[at_edge], sw[at_edge], sw_poly[at_edge], pp[at_edge], fp[at_edge], table,
                                   fine_trials[at_edge], r) + fwf[at_edge, None]
            raw_j = chi_f.argmin(dim=1)
        j = raw_j.clamp(1, len(fine) - 2)
        y0, y1, y2 = (chi_f[rows, j + d] for d in (-1, 0, 1))
        curvature = y0 - 2 * y1 + y2                                                     # per stride^2
        vertex = torch.where(curvature > 0, 0.5 * (y0 - y2) / curvature.clamp_min(1e-30), torch.zeros_like(y1))
        vertex = vertex.clamp(-1.0, 1.0)
        shift = fine_trials[rows, j].double() + vertex * fine_stride
        chi2_min = y1 - 0.25 * (y0 - y2) * vertex
        reduced = (chi2_min / torch.from_numpy(dof).double().clamp_min(1.0)).clamp_min(1.0)
        sigma_ln = torch.where(curvature > 0, fine_stride * step * torch.sqrt(2.0 / curvature.clamp_min(1e-30)),
                               torch.full_like(y1, np.inf)) * torch.sqrt(reduced)
        loc = trials[rows[:, None], torch.arange(k)[None, :], per_candidate.indices]    # each candidate's best shift
        rivals = torch.where((loc - shift[:, None]).abs() <= coarse_stride, torch.tensor(np.inf, dtype=chi.dtype),
                             per_candidate.values)
        rivals[rows, best_k] = np.inf
        ln1pz = (offset - shift) * step
        ok = valid.any(dim=1).numpy()
        z = np.expm1(ln1pz.numpy())
        out["z"][sl] = np.where(ok, z, np.nan)
        out["z_err"][sl] = np.where(ok, (torch.exp(ln1pz) * sigma_ln).numpy(), np.nan)
        out["chi2"][sl] = np.where(ok, chi2_min.numpy(), np.nan)
        out["dof"][sl] = dof
        out["delta_chi2"][sl] = np.where(ok, (rivals.min(dim=1).values - chi2_min).numpy(), np.nan)
        out["candidate"][sl] = np.where(ok, best_k.numpy(), -1)
        out["edge"][sl] = ok & ((raw_j == 0) | (raw_j == len(fine) - 1)).numpy()
    return RefineResult(**out)
