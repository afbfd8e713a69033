"""IFU maps of one galaxy -> the kinematic model's inputs (SCIENCE.md section 4).

A galaxy arrives as 2-D maps from its survey's data-analysis pipeline: H-alpha flux and its
error, line-of-sight velocity and its error (km/s), a ``good`` spaxel mask and the pixel scale
(arcsec/spaxel); its dispersion map goes to :func:`survey_ml.relations.mean_dispersion` for the
asymmetric-drift correction. :func:`prepare_galaxy` turns them into what the network reads:
spaxels with S/N < 10 masked, the kinematic position angle measured, the maps de-rotated so
the receding half of the major axis lies on +x, bilinearly resampled to 64 x 64, moment 0
scaled to [0, 1] and moment 1 clipped at the 96th percentile of |v| and scaled to [-1, 1].
Galaxies that cannot be used keep their row with a ``status`` saying why
(``few_spaxels``, ``pa_failed``, ``low_velocity``); :func:`prepare_galaxies` stacks a block
of them for ``dask.array`` / ``dask.bag``.

Geometry. A map is indexed ``[row, column]``; column index -> ``x``, row index -> ``y``, shown
with ``origin="lower"``. Position angles follow ``pafit`` (its ``symmetrize_velfield``):
degrees counter-clockwise from +y, so the major axis points along ``(-sin PA, cos PA)``. With
North along +y and East along -x (the usual orientation of IFU maps: North up, East left)
that is the astronomical PA, East of North. ``pafit`` returns PA modulo 180 (the axis along
which |v| is largest); :func:`kinematic_pa` returns the PA of the *receding* half in
[0, 360), so ``pa % 180`` is pafit's angle.

The position angle. ``pafit.fit_kinematic_pa`` (Krajnovic et al. 2006, appendix C) builds,
for each of 361 trial angles, the bi-antisymmetric version of the field (the mean of v and
its three mirror images about the trial major and minor axes, the minor-axis ones with their
sign flipped) by Delaunay interpolation, and takes the angle minimising
chi2 = sum((v - v_sym) / dv)^2: about 3 s per galaxy. :func:`kinematic_pa` minimises the same
chi2, but on the map's own pixel grid: the mirror images are bilinear look-ups, the
point-mirror image does not depend on the angle at all, and the major- and minor-axis mirrors
are each other's point mirrors, so one reflected grid per angle serves both. All angles of a
coarse grid (6 deg) are evaluated in one vectorised pass, then a 0.5 deg grid around the best
one (pafit's step), then a parabola through the minimum. The error is pafit's: half the
width of the angles with chi2 - chi2_min <= 9 + 3 sqrt(2 N) (a 3-sigma limit that counts the
scatter of chi2 itself), at least 0.5 deg.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["MODEL_SIZE", "SCALAR_FIELDS", "KinematicPA", "PreparedGalaxy", "snr_mask", "kinematic_pa", "derotate",
           "resample", "scale_moment0", "scale_moment1", "prepare_galaxy", "prepare_galaxies"]

#: Side of the network's square input maps (pixels).
MODEL_SIZE = 64
#: SAMI and MaNGA maps: 0.5 arcsec per spaxel.
DEFAULT_PIXEL_SCALE = 0.5


def snr_mask(flux: np.ndarray, flux_err: np.ndarray, good: np.ndarray | None = None,
             min_snr: float = 10.0) -> np.ndarray:
    """Spaxels with S/N = flux / flux_err >= ``min_snr`` (and good, finite, with a positive error).

    Examples
    --------
    >>> snr_mask(np.array([[10.0, 50.0], [30.0, np.nan]]), np.array([[2.0, 2.0], [0.0, 1.0]]),
    ...          np.array([[True, True], [True, True]])).tolist()
    [[False, True], [False, False]]
    """
    flux, flux_err = np.asarray(flux, dtype=float), np.asarray(flux_err, dtype=float)
    ok = np.isfinite(flux) & np.isfinite(flux_err) & (flux_err > 0)
    if good is not None:
        ok &= np.asarray(good, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ok & (flux >= min_snr * np.where(ok, flux_err, np.inf))


# -- bilinear sampling ---------------------------------------------------------------------------------

def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware bilinear look-up of a map (or a stack (k, ny, nx) of maps) at fractional indices.

    Only finite neighbours inside the map count; their weights are renormalised, so a look-up
    next to a masked spaxel or the edge uses the good neighbours it has.

    Returns
    -------
    value : numpy.ndarray
        ``rows.shape`` (or (k,) + ``rows.shape``); NaN where no good neighbour has weight.
    cover : numpy.ndarray
        Same shape as ``value``: the summed bilinear weight of the good neighbours, in [0, 1]
        (1 inside good data, 0.5 half a pixel off its edge) - the interpolated good mask.
    """
    stack = image if image.ndim == 3 else image[None]
    k, ny, nx = stack.shape
    # One NaN frame around the maps: every neighbour index is then in range, and outside is bad.
    padded = np.full((k, ny + 2, nx + 2), np.nan, dtype=np.float64)
    padded[:, 1:-1, 1:-1] = stack
    flat = padded.reshape(k, -1)
    r = np.clip(rows + 1.0, 0.0, ny + 1.0)
    c = np.clip(cols + 1.0, 0.0, nx + 1.0)
    r0 = np.minimum(np.floor(r), ny).astype(np.intp)   # r0 + 1 stays in the frame
    c0 = np.minimum(np.floor(c), nx).astype(np.intp)
    fr, fc = r - r0, c - c0
    index = r0 * (nx + 2) + c0
    total = np.zeros((k,) + rows.shape)
    cover = np.zeros((k,) + rows.shape)
    for offset, weight in ((0, (1 - fr) * (1 - fc)), (1, (1 - fr) * fc),
                           (nx + 2, fr * (1 - fc)), (nx + 3, fr * fc)):
        v = flat[:, index + offset]
        ok = np.isfinite(v)
        w = np.where(ok, weight, 0.0)
        cover += w
        total += np.where(ok, v, 0.0) * w
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(cover > 0, total / np.where(cover > 0, cover, 1.0), np.nan)
    return (value, cover) if image.ndim == 3 else (value[0], cover[0])


def _grid_transform(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A^-1, origin) such that ``[row, col] = A^-1 @ ([x, y] - origin)`` on a regular map grid."""
    if x.ndim != 2 or x.shape != y.shape or min(x.shape) < 2:
        raise ValueError("kinematic_pa needs x, y, velocity as 2-D maps on a regular grid (e.g. from np.meshgrid); "
                         f"got shapes {x.shape}, {y.shape}")
    origin = np.array([x[0, 0], y[0, 0]])
    a = np.array([[x[1, 0] - x[0, 0], x[0, 1] - x[0, 0]],
                  [y[1, 0] - y[0, 0], y[0, 1] - y[0, 0]]])
    if abs(np.linalg.det(a)) < 1e-12 * max(1.0, np.abs(a).max()) ** 2:
        raise ValueError("x and y do not span a 2-D grid")
    rows, cols = np.indices(x.shape)
    if not (np.allclose(a[0, 0] * rows + a[0, 1] * cols + origin[0], x)
            and np.allclose(a[1, 0] * rows + a[1, 1] * cols + origin[1], y)):
        raise ValueError("x and y are not a regular grid (kinematic_pa works on maps, not on binned data)")
    return np.linalg.inv(a), origin


# -- kinematic position angle ------------------------------------------------------------------------

class KinematicPA(tuple):
    """``(pa_deg, pa_err)``, unpackable as a pair, that also carries the fit's by-products.

    Attributes
    ----------
    pa_deg : float
        PA of the receding half of the kinematic major axis, degrees in [0, 360) (NaN on failure).
    pa_err : float
        Its 3-sigma error (pafit's definition), degrees.
    v_sys : float
        Systemic velocity: the median of the input plus pafit's ``velsyst`` correction.
    n_spaxels : int
        Spaxels used.
    reason : str
        Empty when the fit worked, else why not (``few_spaxels``, ``no_velocity_gradient``).
    """

    def __new__(cls, pa_deg: float, pa_err: float, v_sys: float = np.nan, n_spaxels: int = 0, reason: str = ""):
        self = super().__new__(cls, (float(pa_deg), float(pa_err)))
        self.v_sys, self.n_spaxels, self.reason = float(v_sys), int(n_spaxels), reason
        return self

    def __reduce__(self):   # pickles whole (results travel between Dask workers)
        return (type(self), (self[0], self[1], self.v_sys, self.n_spaxels, self.reason))

    @property
    def pa_deg(self) -> float:
        return self[0]

    @property
    def pa_err(self) -> float:
        return self[1]

    @property
    def ok(self) -> bool:
        return not self.reason

    def __repr__(self) -> str:
        return (f"KinematicPA(pa_deg={self[0]:.2f}, pa_err={self[1]:.2f}, v_sys={self.v_sys:.2f}, "
                f"n_spaxels={self.n_spaxels}, reason={self.reason!r})")


def _mirror_images(angles_deg: np.ndarray, px: np.ndarray, py: np.ndarray, vmap: np.ndarray,
                   to_index: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """v at the mirror images of the spaxels about the major and the minor axis, per trial angle.

    The two mirrors are each other's point mirror, so one reflected set of positions gives both.
    Arrays are (n_angles, n_spaxels); NaN where the image falls off the good data.
    """
    theta = np.radians(np.atleast_1d(angles_deg))[:, None]
    ux, uy = -np.sin(theta), np.cos(theta)                 # unit vector along the trial major axis
    along = 2.0 * (px * ux + py * uy)
    mx, my = along * ux - px - origin[0], along * uy - py - origin[1]
    major = _bilinear(vmap, to_index[0, 0] * mx + to_index[0, 1] * my, to_index[1, 0] * mx + to_index[1, 1] * my)[0]
    mx, my = -mx - 2 * origin[0], -my - 2 * origin[1]
    minor = _bilinear(vmap, to_index[0, 0] * mx + to_index[0, 1] * my, to_index[1, 0] * mx + to_index[1, 1] * my)[0]
    return major, minor


def _symmetric_field(angles_deg: np.ndarray, v: np.ndarray, point_mirror: np.ndarray, *geometry) -> np.ndarray:
    """pafit's ``velSym``: mean of v, its major-axis mirror and the negated minor-axis and point mirrors."""
    major, minor = _mirror_images(angles_deg, *geometry)
    total = v + np.nan_to_num(point_mirror) + np.nan_to_num(major) - np.nan_to_num(minor)
    count = 1.0 + np.isfinite(point_mirror) + np.isfinite(major) + np.isfinite(minor)
    return total / count


def kinematic_pa(x: np.ndarray, y: np.ndarray, velocity: np.ndarray, velocity_err: np.ndarray | float | None = None,
                 *, coarse_step: float = 6.0, step: float = 0.5, min_spaxels: int = 20) -> KinematicPA:
    """Kinematic position angle of a velocity map: pafit's symmetrisation chi2, vectorised over angles.

    Parameters
    ----------
    x, y : numpy.ndarray
        (ny, nx) coordinates of the spaxels (a regular grid, e.g. ``np.meshgrid``), measured
        from the centre of rotation, any length unit. See the module notes for the axes.
    velocity : numpy.ndarray
        (ny, nx) line-of-sight velocity (km/s); NaN marks spaxels not to use. Its median is
        subtracted first (pafit asks its caller to do that).
    velocity_err : numpy.ndarray or float, optional
        Velocity errors (pafit's ``dvel``); default 10 km/s everywhere, like pafit. They
        weight the chi2 and so set the size of the error.
    coarse_step, step : float
        Angle steps (deg) of the first pass over 0-180 and of the refinement around its best.
    min_spaxels : int
        Fewer usable spaxels than this -> NaN with reason ``few_spaxels``.

    Returns
    -------
    KinematicPA
        ``(pa_deg, pa_err)`` (unpacks as a pair): PA of the receding side in [0, 360), East
        of North for maps with North up and East left; ``pa_deg % 180`` is pafit's
        ``angBest``. ``v_sys``, ``n_spaxels`` and ``reason`` ride along as attributes.

    Examples
    --------
    >>> yy, xx = np.mgrid[-10:11, -10:11].astype(float)
    >>> pa, err = kinematic_pa(xx, yy, 100.0 * np.tanh(-xx / 4))   # receding towards -x: East
    >>> round(pa, 1), err                                           # pafit: (90.0, 3.5)
    (90.0, 3.5)
    >>> kinematic_pa(xx, yy, np.full(xx.shape, np.nan)).reason
    'few_spaxels'
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    vel = np.asarray(velocity, dtype=float)
    to_index, origin = _grid_transform(x, y)
    if vel.shape != x.shape:
        raise ValueError(f"velocity has shape {vel.shape}, x and y {x.shape}")
    err = np.broadcast_to(np.asarray(10.0 if velocity_err is None else velocity_err, dtype=float), vel.shape)
    use = np.isfinite(vel) & np.isfinite(err) & (err > 0)
    n = int(use.sum())
    if n < min_spaxels:
        return KinematicPA(np.nan, np.nan, np.nan, n, "few_spaxels")
    v0 = float(np.median(vel[use]))
    vmap = np.where(use, vel - v0, np.nan)
    px, py, v, weight = x[use], y[use], vmap[use], 1.0 / err[use] ** 2
    geometry = (px, py, vmap, to_index, origin)
    # The point mirror (-x, -y) is the same for every angle: look it up once.
    mx, my = -px - origin[0], -py - origin[1]
    point_mirror = -_bilinear(vmap, to_index[0, 0] * mx + to_index[0, 1] * my,
                              to_index[1, 0] * mx + to_index[1, 1] * my)[0]

    def chi2(angles: np.ndarray) -> np.ndarray:
        return np.sum(weight * (v - _symmetric_field(angles, v, point_mirror, *geometry)) ** 2, axis=1)

    coarse = np.arange(0.0, 180.0, coarse_step)
    chi2_coarse = chi2(coarse)
    if np.ptp(chi2_coarse) <= 1e-9 * chi2_coarse.max():   # a field with no direction (constant, or noise-free zero)
        return KinematicPA(np.nan, np.nan, v0, n, "no_velocity_gradient")
    fine = coarse[np.argmin(chi2_coarse)] + np.arange(-coarse_step, coarse_step + step / 2, step)
    chi2_fine = chi2(fine)
    k = int(np.argmin(chi2_fine))
    pa = fine[k]
    if 0 < k < fine.size - 1:                               # a parabola through the minimum
        c_left, c_mid, c_right = chi2_fine[k - 1:k + 2]
        if c_left - 2 * c_mid + c_right > 0:
            pa += 0.5 * step * (c_left - c_right) / (c_left - 2 * c_mid + c_right)
    pa %= 180.0

    # pafit's 3-sigma error: half the spread of the angles with chi2 within 9 + 3 sqrt(2 N) of the minimum.
    angles, values = np.concatenate([coarse, fine]), np.concatenate([chi2_coarse, chi2_fine])
    offset = (angles[values - values.min() <= 9.0 + 3.0 * np.sqrt(2.0 * n)] - pa + 90.0) % 180.0 - 90.0
    pa_err = max(0.5, step / 2, (offset.max() - offset.min()) / 2.0)

    # pafit's velsyst correction at the best angle; then which half of the axis recedes.
    dv_sys = float(np.median(v - _symmetric_field(pa, v, point_mirror, *geometry)[0]))
    if np.sum((v - dv_sys) * (px * -np.sin(np.radians(pa)) + py * np.cos(np.radians(pa)))) < 0:
        pa += 180.0
    return KinematicPA(pa % 360.0, pa_err, v0 + dv_sys, n)


# -- geometry of the model grid ------------------------------------------------------------------

def _centre(shape: tuple[int, ...], centre: tuple[float, float] | None) -> tuple[float, float]:
    ny, nx = shape[-2:]
    return ((nx - 1) / 2.0, (ny - 1) / 2.0) if centre is None else (float(centre[0]), float(centre[1]))


def _sample(image: np.ndarray, centre: tuple[float, float], xo: np.ndarray, yo: np.ndarray,
            pa_deg: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of a map (or stack) at offsets (``xo``, ``yo``) input pixels from ``centre``.

    With ``pa_deg`` the offsets are first turned by PA + 90 deg, which takes +x onto the
    receding half of the major axis, ``(-sin PA, cos PA)``: the samples are then the map
    de-rotated. A bool ``image`` is the good mask (True = good). Returns the values (NaN where
    good data cover less than half a sample) and that cover - the bilinearly interpolated good
    mask, 0 outside the field.
    """
    if pa_deg is not None:
        turn = np.radians(pa_deg + 90.0)
        xo, yo = xo * np.cos(turn) - yo * np.sin(turn), xo * np.sin(turn) + yo * np.cos(turn)
    image = np.asarray(image)
    data = np.where(image, 1.0, np.nan) if image.dtype == bool else image.astype(float, copy=False)
    value, cover = _bilinear(data, centre[1] + yo, centre[0] + xo)
    return np.where(cover >= 0.5, value, np.nan), cover


def derotate(image: np.ndarray, pa_deg: float, centre: tuple[float, float] | None = None) -> np.ndarray:
    """Turn a map so the kinematic major axis lies along +x with its receding half at +x.

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) map, or a stack (k, ny, nx) of maps of one galaxy. NaN marks bad spaxels; a
        bool array is taken as the good mask itself.
    pa_deg : float
        Position angle of the receding side (:func:`kinematic_pa`'s convention).
    centre : tuple, optional
        (x, y) of the rotation centre in pixel indices (column, row); default the map's middle.
        It stays where it was.

    Returns
    -------
    numpy.ndarray
        Same shape (bool for a bool mask). Bilinear and NaN-aware: each output pixel
        averages its good neighbours, and is NaN where they cover less than half of it -
        exactly where the de-rotated good mask is False. Outside the input field is bad.

    Examples
    --------
    >>> v = np.zeros((5, 5)); v[4, 2] = 1.0          # receding side towards +y: PA = 0
    >>> derotate(v, 0.0)[2].round(6).tolist()
    [0.0, 0.0, 0.0, 0.0, 1.0]
    >>> derotate(np.ones((5, 5), dtype=bool), 45.0)[0].tolist()
    [False, True, True, True, False]
    """
    image = np.asarray(image)
    cx, cy = _centre(image.shape, centre)
    rows, cols = np.indices(image.shape[-2:], dtype=float)
    value, cover = _sample(image, (cx, cy), cols - cx, rows - cy, pa_deg)
    return cover >= 0.5 if image.dtype == bool else value


def _model_grid(size: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (x, y) of the pixel centres of a ``size`` x ``size`` grid of ``step`` from its middle."""
    axis = (np.arange(size) - (size - 1) / 2.0) * step
    yo, xo = np.meshgrid(axis, axis, indexing="ij")
    return xo, yo


def resample(image: np.ndarray, size: int = MODEL_SIZE, fov_arcsec: float | None = None,
             pixel_scale: float = DEFAULT_PIXEL_SCALE, centre: tuple[float, float] | None = None
             ) -> tuple[np.ndarray, float]:
    """Bilinear resampling of a map (or stack) onto ``size`` x ``size`` pixels, keeping the scale.

    Parameters
    ----------
    image : numpy.ndarray
        (ny, nx) or (k, ny, nx); NaN marks bad spaxels, a bool array is the good mask.
    size : int
        Output side (64 for the kinematic model).
    fov_arcsec : float, optional
        Side of the square field resampled; default the input's larger side,
        ``max(ny, nx) * pixel_scale``.
    pixel_scale : float
        Input arcsec per spaxel (SAMI, MaNGA: 0.5).
    centre : tuple, optional
        (x, y) in input pixel indices at the middle of the output; default the map's middle.

    Returns
    -------
    resampled : numpy.ndarray
        (size, size) or (k, size, size): values are surface densities (per pixel area), so
        the mean over a region is kept - sum over a region scales with the pixel area. NaN
        where good data cover less than half a pixel; bool in, bool out.
    pixel_scale_out : float
        Arcsec per output pixel, ``fov_arcsec / size``.

    Examples
    --------
    >>> out, scale = resample(np.arange(16.0).reshape(4, 4), size=8, pixel_scale=0.5)
    >>> out.shape, scale, round(float(np.nanmean(out[2:6, 2:6])), 6)
    ((8, 8), 0.25, 7.5)
    """
    image = np.asarray(image)
    fov = float(max(image.shape[-2:]) * pixel_scale if fov_arcsec is None else fov_arcsec)
    scale_out = fov / size
    xo, yo = _model_grid(size, scale_out / pixel_scale)
    value, cover = _sample(image, _centre(image.shape, centre), xo, yo)
    return (cover >= 0.5 if image.dtype == bool else value), scale_out


# -- scaling -------------------------------------------------------------------------------------

def scale_moment0(m0: np.ndarray) -> np.ndarray:
    """Moment 0 over its peak, negative values (noise) set to 0: [0, 1], NaN kept.

    A map without a positive value becomes all zeros.

    Examples
    --------
    >>> scale_moment0(np.array([[-1.0, 2.0], [4.0, np.nan]])).tolist()
    [[0.0, 0.5], [1.0, nan]]
    """
    m0 = np.asarray(m0, dtype=float)
    peak = np.nanmax(m0) if np.any(np.isfinite(m0)) else np.nan
    if not peak > 0:
        return np.where(np.isfinite(m0), 0.0, np.nan)
    return np.clip(m0, 0.0, None) / peak


def scale_moment1(m1: np.ndarray, percentile: float = 96.0) -> tuple[np.ndarray, float]:
    """Moment 1 clipped at the ``percentile`` of |v| and divided by it: [-1, 1], NaN kept.

    Returns
    -------
    scaled : numpy.ndarray
        ``clip(m1, -s, s) / s``.
    velocity_scale : float
        ``s`` in the input's unit (km/s per unit), so ``scaled * s`` is back in km/s; NaN
        (and a map of zeros) when the map has no non-zero finite velocity.

    Examples
    --------
    >>> v = np.linspace(-100.0, 100.0, 101)
    >>> scaled, s = scale_moment1(v)
    >>> s, float(scaled.min()), float(scaled.max()), float(scaled[50])
    (96.0, -1.0, 1.0, 0.0)
    """
    m1 = np.asarray(m1, dtype=float)
    finite = np.isfinite(m1)
    s = float(np.percentile(np.abs(m1[finite]), percentile)) if finite.any() else np.nan
    if not s > 0:
        return np.where(finite, 0.0, np.nan), np.nan
    return np.clip(m1, -s, s) / s, s


# -- one galaxy, and a block of them ---------------------------------------------------------------

@dataclass
class PreparedGalaxy:
    """One galaxy's network inputs on the model grid, or the reason it has none.

    Attributes
    ----------
    m0, m1 : numpy.ndarray
        (64, 64) float32: moment 0 over its peak ([0, 1]) and moment 1 minus ``v_sys_kms``
        over ``velocity_scale_kms`` ([-1, 1]), de-rotated (receding side on +x); 0 where
        ``mask`` is False and for dropped galaxies.
    mask : numpy.ndarray
        (64, 64) bool: good pixels (S/N cut, the survey's own mask, inside the field).
    pa_deg, pa_err : float
        Kinematic PA of the receding side (deg East of North) and its 3-sigma error.
    v_sys_kms : float
        Systemic velocity subtracted from moment 1.
    velocity_scale_kms : float
        km/s per unit of ``m1`` (the 96th percentile of |v|): ``m1 * velocity_scale_kms`` is km/s.
    pixel_scale_arcsec : float
        Arcsec per pixel of the 64 x 64 grid.
    n_good : int
        Good spaxels of the input maps.
    status : str
        ``ok``, or why the galaxy is dropped: ``few_spaxels`` (fewer than ``min_good`` good
        spaxels), ``low_velocity`` (max |v - v_sys| < ``min_vmax``), ``pa_failed``.
    message : str
        Details for a dropped galaxy.
    """

    m0: np.ndarray
    m1: np.ndarray
    mask: np.ndarray
    pa_deg: float = np.nan
    pa_err: float = np.nan
    v_sys_kms: float = np.nan
    velocity_scale_kms: float = np.nan
    pixel_scale_arcsec: float = np.nan
    n_good: int = 0
    status: str = "ok"
    message: str = ""


#: Columns of :func:`prepare_galaxies`' output besides the maps, with their dtypes.
SCALAR_FIELDS = {"pa_deg": np.float64, "pa_err": np.float64, "v_sys_kms": np.float64,
                 "velocity_scale_kms": np.float64, "pixel_scale_arcsec": np.float64, "n_good": np.int64,
                 "status": object, "message": object}


def prepare_galaxy(flux: np.ndarray, flux_err: np.ndarray, velocity: np.ndarray,
                   velocity_err: np.ndarray | None, good: np.ndarray | None,
                   pixel_scale: float = DEFAULT_PIXEL_SCALE, *, min_snr: float = 10.0, min_good: int = 200,
                   min_vmax: float = 10.0, size: int = MODEL_SIZE, fov_arcsec: float | None = None,
                   centre: tuple[float, float] | None = None, percentile: float = 96.0) -> PreparedGalaxy:
    """One galaxy's H-alpha maps -> de-rotated, resampled, scaled moment maps (SCIENCE.md section 4).

    Parameters
    ----------
    flux, flux_err : numpy.ndarray
        (ny, nx) H-alpha flux (moment 0) and its error.
    velocity, velocity_err : numpy.ndarray
        (ny, nx) line-of-sight velocity (moment 1) and its error, km/s; the error may be None
        (then 10 km/s, pafit's default, weights the PA fit).
    good : numpy.ndarray or None
        (ny, nx) bool: the survey's own good-spaxel mask (e.g. MaNGA's DAP "do not use" bit off).
    pixel_scale : float
        Arcsec per spaxel.
    min_snr, min_good, min_vmax : float
        The published SAMI cuts: spaxels with S/N < 10 masked; galaxies with < 200 good
        spaxels or max |v| < 10 km/s dropped.
    size, fov_arcsec, centre :
        The model grid (:func:`resample`) and the rotation centre (x, y) in spaxel indices
        (default the map's middle, where SAMI and MaNGA put the target).
    percentile : float
        Moment-1 clip (:func:`scale_moment1`).

    Notes
    -----
    De-rotation and resampling are one bilinear pass (the model grid's pixels are turned and
    scaled onto the input at once), not two: every map is interpolated only once. The low-
    velocity cut uses the median as systemic velocity, so it costs nothing for a galaxy it drops.
    """
    flux = np.asarray(flux, dtype=float)
    velocity = np.asarray(velocity, dtype=float)
    ny, nx = flux.shape
    fov = float(max(ny, nx) * pixel_scale if fov_arcsec is None else fov_arcsec)
    empty = np.zeros((size, size), dtype=np.float32)
    dropped = dict(m0=empty, m1=empty.copy(), mask=np.zeros((size, size), dtype=bool), pixel_scale_arcsec=fov / size)

    use = snr_mask(flux, flux_err, good, min_snr) & np.isfinite(velocity)
    if velocity_err is not None:
        velocity_err = np.asarray(velocity_err, dtype=float)
        use &= np.isfinite(velocity_err) & (velocity_err > 0)
    n_good = int(use.sum())
    if n_good < min_good:
        return PreparedGalaxy(**dropped, n_good=n_good, status="few_spaxels",
                              message=f"{n_good} spaxels with S/N >= {min_snr:g} (need {min_good})")
    v_peak = float(np.max(np.abs(velocity[use] - np.median(velocity[use]))))
    if v_peak < min_vmax:
        return PreparedGalaxy(**dropped, n_good=n_good, status="low_velocity",
                              message=f"max |v - v_sys| = {v_peak:.1f} km/s < {min_vmax:g}")
    cx, cy = _centre(flux.shape, centre)
    rows, cols = np.indices(flux.shape, dtype=float)
    pa = kinematic_pa(cols - cx, rows - cy, np.where(use, velocity, np.nan), velocity_err)
    if not pa.ok:
        return PreparedGalaxy(**dropped, n_good=n_good, status="pa_failed", message=pa.reason)

    maps = np.stack([np.where(use, flux, np.nan), np.where(use, velocity - pa.v_sys, np.nan)])
    xo, yo = _model_grid(size, fov / size / pixel_scale)
    (m0, m1), cover = _sample(maps, (cx, cy), xo, yo, pa.pa_deg)
    mask = cover[0] >= 0.5                  # both maps share one good mask
    m0 = scale_moment0(m0)
    m1, velocity_scale = scale_moment1(m1, percentile)
    return PreparedGalaxy(m0=np.where(mask, m0, 0.0).astype(np.float32), m1=np.where(mask, m1, 0.0).astype(np.float32),
                          mask=mask, pa_deg=pa.pa_deg, pa_err=pa.pa_err, v_sys_kms=pa.v_sys,
                          velocity_scale_kms=velocity_scale, pixel_scale_arcsec=fov / size, n_good=n_good)


def prepare_galaxies(galaxies: Iterable[Mapping] | Mapping[str, np.ndarray], **options) -> dict[str, np.ndarray]:
    """A block of galaxies -> stacked network inputs: numpy in, numpy out (a Dask block function).

    Parameters
    ----------
    galaxies : sequence of mappings, or a mapping of stacked arrays
        Each galaxy a mapping of :func:`prepare_galaxy`'s arguments (``flux``, ``flux_err``,
        ``velocity``, ``velocity_err``, ``good``, ``pixel_scale``, ...) - maps of different
        shapes are fine; or one mapping whose arrays are stacked (n, ny, nx) (``pixel_scale``
        a scalar or (n,)), as a Zarr chunk of a release's ``maps/`` group reads.
    **options
        Passed to every :func:`prepare_galaxy` call (cuts, grid).

    Returns
    -------
    dict
        ``m0``, ``m1`` (n, 64, 64) float32, ``mask`` (n, 64, 64) bool, and one (n,) array per
        scalar of :class:`PreparedGalaxy` (``status``, ``message`` as object arrays). An
        empty block gives arrays of length 0, so ``map_blocks``' meta inference is harmless.

    Examples
    --------
    >>> block = prepare_galaxies([])
    >>> block["m0"].shape, block["status"].shape
    ((0, 64, 64), (0,))
    """
    if isinstance(galaxies, Mapping):   # stacked arrays: one row each; scalars and None are shared
        galaxies = [{k: v if v is None or np.ndim(v) == 0 else v[i] for k, v in galaxies.items()}
                    for i in range(len(galaxies["flux"]))]
    prepared = [prepare_galaxy(**{**g, **options}) for g in galaxies]
    size = options.get("size", MODEL_SIZE)
    out: dict[str, np.ndarray] = {
        "m0": np.stack([p.m0 for p in prepared]) if prepared else np.zeros((0, size, size), np.float32),
        "m1": np.stack([p.m1 for p in prepared]) if prepared else np.zeros((0, size, size), np.float32),
        "mask": np.stack([p.mask for p in prepared]) if prepared else np.zeros((0, size, size), bool),
    }
    for name, dtype in SCALAR_FIELDS.items():
        out[name] = np.array([getattr(p, name) for p in prepared], dtype=dtype)
    return out
