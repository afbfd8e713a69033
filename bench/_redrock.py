"""Bridge to DESI's template redshift fitter redrock, on in-memory spectra and our own PCA templates.

redrock (``pip install redrock``; tested with 0.21.0) fits every spectrum with a linear
combination of PCA eigen-spectra on a grid of trial redshifts, then refines the best
chi2 minima with a parabola. It normally reads its templates from the
``redrock-templates`` git repository (``$RR_TEMPLATE_DIR``), which we cannot reach;
:func:`write_redrock_templates` writes templates built from our own galaxy library in
redrock's file format instead, and :func:`run_redrock` runs redrock's own ``zfind`` on
arrays, in this process (no MPI, and no multiprocessing with ``ncpu=1``).

Usage: python bench/_redrock.py   (self-check on a toy template set; prints JSON)
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse
from astropy.io import fits
from threadpoolctl import threadpool_limits

import redrock
from redrock.rebin import trapz_rebin
from redrock.targets import DistTargetsCopy, Spectrum, Target
from redrock.templates import DistTemplate, Template, load_templates
from redrock.zfind import zfind

#: redrock's own coarse-scan steps in log10(1 + z) (``Template.__init__`` defaults for
#: template files without a REDSHIFTS HDU); its STAR grid is linear in z (4e-5), here
#: the equivalent log step at z ~ 0.
DEFAULT_DLOG10Z = {"GALAXY": 3e-4, "QSO": 5e-4, "STAR": 4e-5 / math.log(10.0)}

#: Columns of redrock's best fit (``znum == 0``) returned by :func:`run_redrock`, and their dtypes.
_COLUMNS = {"z": np.float64, "zerr": np.float64, "zwarn": np.int64, "chi2": np.float64, "deltachi2": np.float64,
            "spectype": str, "subtype": str, "npixels": np.int64}

#: FWHM of a Gaussian in units of its sigma.
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _uniform_step(x: np.ndarray) -> float | None:
    """The step of ``x`` if it is ``x[0] + step * i`` to within 1e-3 of a step, else None."""
    step = (x[-1] - x[0]) / (x.size - 1)
    if np.max(np.abs(x - (x[0] + step * np.arange(x.size)))) <= 1e-3 * step:
        return float(step)
    return None


def write_redrock_templates(folder: str | Path, rest_wave: np.ndarray, components: np.ndarray, *,
                            spectype: str = "GALAXY", subtype: str = "", z_min: float, z_max: float,
                            dlog10z: float | None = None, version: str = "survey_ml") -> Path:
    """Write PCA eigen-spectra as a redrock template file that redrock's own loader reads.

    redrock's default templates are downloaded from the ``redrock-templates`` repository
    (the galaxy set made by redrock's ``rrgaltemplate`` script: EMPCA of DESI's simulated
    ELG/LRG/BGS spectra, each divided by its median, no mean subtracted). We cannot reach
    it, and want templates that match our simulated galaxies anyway, so we build them the
    same way from our library: the caller divides the library's rest-frame spectra by
    their medians and takes the leading right-singular vectors of that *uncentred* matrix
    (numpy SVD), so the first component is close to the mean spectrum. redrock fits each spectrum with
    free (any sign) coefficients on these components at every trial redshift.

    The file is what ``redrock.templates.Template(filename)`` reads:

    * primary HDU, ``EXTNAME = 'BASIS_VECTORS'``: image ``(n_comp, n_wave)`` float64;
      rest-frame vacuum wavelengths ``CRVAL1 + CDELT1 * i`` (Angstrom), or
      ``10**(CRVAL1 + CDELT1 * i)`` when ``LOGLAM = 1``. A grid uniform in wavelength or
      in log10(wavelength) is written as given; any other grid is resampled (linear
      interpolation) to a log10-uniform grid with the input's finest log step.
    * header: ``RRTYPE`` (spectype), ``RRSUBTYP`` (subtype), ``RRMETHOD = 'PCA'``
      (linear least squares, coefficients of any sign), ``RRIGM = 'Inoue14'`` (Lyman
      series IGM absorption; a no-op unless the templates reach below 1216 A), ``VERSION``
      (template version, reported by redrock), plus the informational ``RRVER`` (redrock
      version used to write), ``INSPEC`` (origin of the input spectra), ``ZMIN``, ``ZMAX``,
      ``DLOG10Z``.
    * ``REDSHIFTS`` image HDU: the coarse redshift scan grid, uniform in log10(1 + z) from
      ``z_min`` to ``z_max`` inclusive with a step of at most ``dlog10z``. Without it,
      redrock would fall back to its built-in GALAXY grid (z = -0.005..1.7).

    For GALAXY templates redrock also adds its ad-hoc penalty on negative [OII] flux,
    using the components between 3724 and 3733 A rest frame.

    Parameters
    ----------
    folder : str or Path
        Output folder (created if needed).
    rest_wave : (n_wave,) array
        Increasing rest-frame vacuum wavelength (Angstrom).
    components : (n_comp, n_wave) array
        PCA eigen-spectra.
    spectype, subtype : str
        redrock spectral type (GALAXY, QSO or STAR) and subtype; they name the file and
        become redrock's ``spectype`` / ``subtype`` output.
    z_min, z_max : float
        Redshift range scanned. A fit whose minimum falls on the first or last two grid
        points gets ZWARN bit Z_FITLIMIT (32); redrock's own galaxy grid starts at
        z = -0.005 for that reason.
    dlog10z : float, optional
        Largest step of the scan in log10(1 + z). Default: redrock's own step for the
        spectype, 3e-4 for GALAXY (about 210 km/s; each minimum is then refined on 15
        finer points and a parabola), 5e-4 for QSO, 1.7e-5 for STAR.
    version : str
        ``VERSION`` keyword.

    Returns
    -------
    Path
        ``folder/rrtemplate-<spectype>[-<subtype>].fits`` (lower-case spectype, as
        redrock's own file names); :func:`run_redrock` accepts it or the folder.
    """
    spectype = spectype.strip().upper()
    subtype = subtype.strip()
    rest_wave = np.asarray(rest_wave, dtype=np.float64)
    components = np.atleast_2d(np.asarray(components, dtype=np.float64))
    if rest_wave.ndim != 1 or components.shape[1] != rest_wave.size or rest_wave.size < 2:
        raise ValueError(f"components {components.shape} do not match rest_wave {rest_wave.shape}")
    if np.any(np.diff(rest_wave) <= 0) or rest_wave[0] <= 0:
        raise ValueError("rest_wave must be positive and increasing")
    if not np.all(np.isfinite(components)):
        raise ValueError("components must be finite")
    if not -1.0 < z_min < z_max:
        raise ValueError(f"need -1 < z_min < z_max, got {z_min}, {z_max}")
    if dlog10z is None:
        dlog10z = DEFAULT_DLOG10Z[spectype]
    if dlog10z <= 0:
        raise ValueError("dlog10z must be positive")

    header = fits.Header()
    step = _uniform_step(rest_wave)
    if step is not None:
        header["CRVAL1"] = (rest_wave[0], "rest-frame starting wavelength [Angstrom]")
        header["CDELT1"] = (step, "rest-frame wavelength step [Angstrom]")
        header["LOGLAM"] = (0, "wavelength grid linear in Angstrom")
    else:
        loglam = np.log10(rest_wave)
        step = _uniform_step(loglam)
        if step is None:
            step = float(np.min(np.diff(loglam)))
            n = int(math.floor((loglam[-1] - loglam[0]) / step + 1e-9)) + 1
            grid = loglam[0] + step * np.arange(n)
            components = np.stack([np.interp(grid, loglam, c) for c in components])
        header["CRVAL1"] = (loglam[0], "log10 rest-frame starting wavelength [Angstrom]")
        header["CDELT1"] = (step, "log10 rest-frame wavelength step")
        header["LOGLAM"] = (1, "wavelength grid linear in log10(Angstrom)")
    header["RRTYPE"] = (spectype, "redrock spectral type")
    header["RRSUBTYP"] = (subtype, "redrock spectral subtype")
    header["RRMETHOD"] = ("PCA", "linear least-squares fit, any-sign coefficients")
    header["RRIGM"] = ("Inoue14", "IGM absorption model")
    header["VERSION"] = (version, "template version")
    header["RRVER"] = (redrock.__version__, "redrock version used to write")
    header["INSPEC"] = ("survey_ml", "origin of the input spectra")
    header["ZMIN"], header["ZMAX"] = float(z_min), float(z_max)
    header["DLOG10Z"] = (float(dlog10z), "max step of REDSHIFTS in log10(1+z)")
    header["EXTNAME"] = "BASIS_VECTORS"

    lo, hi = math.log10(1.0 + z_min), math.log10(1.0 + z_max)
    redshifts = 10.0 ** np.linspace(lo, hi, int(math.ceil((hi - lo) / dlog10z)) + 1) - 1.0

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"rrtemplate-{spectype.lower()}" + (f"-{subtype}" if subtype else "") + ".fits"
    hdus = fits.HDUList([fits.PrimaryHDU(components, header=header),
                         fits.ImageHDU(redshifts, name="REDSHIFTS")])
    hdus.writeto(folder / name, overwrite=True)
    return folder / name


def gaussian_resolution(wave: np.ndarray, lsf_resolution: float | None) -> scipy.sparse.dia_matrix:
    """Banded resolution matrix of a Gaussian line-spread function, in redrock's format.

    Row ``i`` holds the weights that turn the model (already averaged over the pixels
    by redrock) into the observed pixel ``i``: a Gaussian of FWHM
    ``wave[i] / lsf_resolution`` sampled at the pixel centres out to 4 sigma, each row
    normalised to 1 (redrock masks pixels whose row sums below 0.99).

    Parameters
    ----------
    wave : (n_pix,) array
        Observed wavelength of the pixel centres (Angstrom), increasing.
    lsf_resolution : float or None
        R = lambda / FWHM; None gives the identity (no convolution).

    Returns
    -------
    scipy.sparse.dia_matrix
        ``(n_pix, n_pix)``.
    """
    n = wave.size
    if lsf_resolution is None:
        return scipy.sparse.dia_matrix((np.ones((1, n)), [0]), shape=(n, n))
    sigma = wave / (lsf_resolution * _FWHM_PER_SIGMA)
    half = int(math.ceil(4.0 * np.max(sigma[:-1] / np.diff(wave))))
    offsets = np.arange(-half, half + 1)
    cols = np.arange(n)[:, None] + offsets[None, :]
    inside = (cols >= 0) & (cols < n)
    weights = np.where(inside, np.exp(-0.5 * ((wave[cols.clip(0, n - 1)] - wave[:, None]) / sigma[:, None]) ** 2), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    data = np.zeros((offsets.size, n))  # dia_matrix stores A[i, i + off] at data[k, i + off]
    for k, off in enumerate(offsets):
        if off >= 0:
            data[k, off:] = weights[:n - off, k]
        else:
            data[k, :n + off] = weights[-off:, k]
    return scipy.sparse.dia_matrix((data, offsets), shape=(n, n))


@functools.cache
def _compile_numba() -> None:
    """Compile redrock's numba rebinning kernels once, so their JIT time is not timed."""
    x = np.linspace(1.0, 10.0, 10)
    trapz_rebin(x, np.ones((2, 10)), xnew=np.linspace(3.0, 6.0, 4), myz=np.array([0.0, 0.1]))


def run_redrock(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, template_folder_or_file: str | Path, *,
                ncpu: int = 1, lsf_resolution: float | None = None, nminima: int = 3,
                verbose: bool = False) -> pd.DataFrame:
    """Redshifts of in-memory spectra with redrock's ``zfind`` and our templates.

    Each spectrum becomes a ``redrock.targets.Target`` holding one ``Spectrum`` (flux,
    ivar and a sparse resolution matrix, :func:`gaussian_resolution`); the targets go
    into a ``DistTargetsCopy`` (no MPI communicator); every template read by
    ``redrock.templates.load_templates`` is redshifted and rebinned onto the spectra's
    grid over its whole REDSHIFTS grid by ``DistTemplate``; ``redrock.zfind.zfind`` then
    scans chi2(z) and refines the ``nminima`` best minima. Spectra on different grids are
    run one grid at a time (the rebinned templates, n_z x n_pix x n_comp float64, are
    the memory peak: ~190 MB for 590 redshifts, 3950 pixels, 10 components).

    redrock needs the redshifted templates to cover every fitted pixel at every trial
    redshift, so only pixels between the largest ``rest_min * (1 + z_max)`` and the
    smallest ``rest_max * (1 + z_min)`` over the templates (less a two-pixel margin) are
    fitted; the rest are dropped (``df.attrs["wave_range"]``).

    Parameters
    ----------
    wave : (n_pix,) or (n_spec, n_pix) array
        Observed vacuum wavelength (Angstrom), increasing; shared or per spectrum.
    flux, ivar : (n_spec, n_pix) arrays
        Flux (any units) and inverse variance; ivar = 0 (or non-finite flux/ivar) marks
        bad pixels.
    template_folder_or_file : str or Path
        A template file from :func:`write_redrock_templates`, or a folder: all its
        ``rrtemplate-*.fits`` (or those listed in its ``templates-default.txt``).
    ncpu : int
        Processes and BLAS threads. 1 runs everything in this process on one thread;
        more uses redrock's own multiprocessing.
    lsf_resolution : float, optional
        Instrumental R = lambda / FWHM of a Gaussian LSF applied to the templates;
        None applies none (identity resolution matrix).
    nminima : int
        chi2 minima refined per template (redrock's default, 3).
    verbose : bool
        Let redrock print its progress (it is silenced otherwise).

    Returns
    -------
    pandas.DataFrame
        One row per spectrum, in input order: ``z``, ``zerr``, ``zwarn`` (redrock ZWARN
        bits; 0 = no warning), ``chi2`` (best-fit chi2, not reduced), ``deltachi2``
        (chi2 gap to the next-best distinct fit), ``spectype``, ``subtype``, ``npixels``
        (pixels fitted). ``attrs``: ``seconds`` (wall time of the fit, numba compilation
        excluded), ``cpu_seconds`` (CPU time of this process over the same span, robust to
        other load on the machine; worker processes not counted), ``seconds_templates``
        (redshifting the templates, once per grid), ``seconds_zfind``, ``n_redshifts``,
        ``wave_range``.
    """
    flux = np.atleast_2d(np.asarray(flux, dtype=np.float64))
    ivar = np.atleast_2d(np.asarray(ivar, dtype=np.float64))
    wave = np.asarray(wave, dtype=np.float64)
    n_spec, n_pix = flux.shape
    if ivar.shape != flux.shape:
        raise ValueError(f"ivar {ivar.shape} does not match flux {flux.shape}")
    if wave.shape not in ((n_pix,), (n_spec, n_pix)):
        raise ValueError(f"wave {wave.shape} must be ({n_pix},) or ({n_spec}, {n_pix})")
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    flux = np.where(good, flux, 0.0)
    ivar = np.where(good, ivar, 0.0)

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet, threadpool_limits(limits=ncpu):
        _compile_numba()
        templates = load_templates(str(template_folder_or_file))
        lo = max(t.minwave * (1.0 + t.redshifts[-1]) for t in templates)
        hi = min(t.maxwave * (1.0 + t.redshifts[0]) for t in templates)

        start, cpu_start = time.perf_counter(), time.process_time()
        seconds_templates = 0.0
        if wave.ndim == 1:
            grids, group = wave[None, :], np.zeros(n_spec, dtype=int)
        else:
            grids, group = np.unique(wave, axis=0, return_inverse=True)
        rows = []
        for g, grid in enumerate(grids):
            margin = 1.0 + 2.0 * np.max(np.diff(grid) / grid[1:])
            keep = (grid >= lo * margin) & (grid <= hi / margin)
            if keep.sum() < 2:
                raise ValueError(f"no pixel of {grid[0]:.0f}-{grid[-1]:.0f} A is covered by the templates "
                                 f"at all their redshifts ({lo:.0f}-{hi:.0f} A)")
            w = grid[keep]
            res = gaussian_resolution(w, lsf_resolution)
            res_csr = res.tocsr()
            members = np.flatnonzero(group.ravel() == g)
            targets = DistTargetsCopy([Target(int(i), [Spectrum(w, flux[i, keep], ivar[i, keep], res, res_csr)])
                                       for i in members])
            t0 = time.perf_counter()
            dtemplates = [DistTemplate(t, targets.wavegrids(), mp_procs=ncpu) for t in templates]
            seconds_templates += time.perf_counter() - t0
            _, zfit = zfind(targets, dtemplates, mp_procs=ncpu, nminima=nminima)
            del dtemplates  # free this grid's rebinned templates before the next grid's
            best = zfit[zfit["znum"] == 0]
            rows.append(pd.DataFrame({name: np.asarray(best[name], dtype) for name, dtype in _COLUMNS.items()},
                                     index=np.asarray(best["targetid"], np.int64)))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    df = pd.concat(rows).sort_index().reset_index(drop=True)
    df.attrs.update(seconds=seconds, cpu_seconds=cpu_seconds, seconds_templates=seconds_templates,
                    seconds_zfind=seconds - seconds_templates, n_redshifts=[len(t.redshifts) for t in templates],
                    wave_range=(float(lo), float(hi)))
    return df


def _toy_spectra(rng: np.random.Generator, wave_rest: np.ndarray, n: int, sigma_extra: np.ndarray | float = 0.0
                 ) -> np.ndarray:
    """Smooth continuum with a 4000 A break plus Gaussian emission lines of random strengths.

    ``wave_rest`` is (n_pix,) or (n, n_pix); lines have a velocity dispersion of 100 km/s
    added in quadrature to ``sigma_extra`` (rest-frame Angstrom, e.g. an instrumental LSF).
    """
    lines = np.array([6564.6, 6585.3, 4862.7, 5008.2, 3728.0])
    wave_rest = np.broadcast_to(wave_rest, (n, np.shape(wave_rest)[-1]))
    slope = rng.uniform(-2.0, 0.5, (n, 1))
    brk = rng.uniform(0.0, 0.6, (n, 1))
    spec = (wave_rest / 5500.0) ** slope * (1.0 - brk * (0.5 - 0.5 * np.tanh((wave_rest - 4000.0) / 60.0)))
    ew = np.exp(rng.uniform(np.log(0.5), np.log(60.0), (n, lines.size)))
    for k, centre in enumerate(lines):
        sigma = np.sqrt((centre * 100.0 / 299792.458) ** 2 + np.square(sigma_extra))
        spec += ew[:, k, None] * (centre / 5500.0) ** slope * np.exp(-0.5 * ((wave_rest - centre) / sigma) ** 2) \
            / (np.sqrt(2.0 * np.pi) * sigma)
    return spec


if __name__ == "__main__":
    import tempfile

    rng = np.random.default_rng(42)
    rest = np.arange(2400.0, 9300.0 + 0.25, 0.5)
    train = _toy_spectra(rng, rest, 50)
    train /= np.median(train, axis=1, keepdims=True)
    components = np.linalg.svd(train, full_matrices=False)[2][:10]

    n_obs, snr, r_lsf = 20, 10.0, 1800.0
    wave = 10 ** (3.5682 + 1e-4 * np.arange(3950))
    z_true = rng.uniform(0.0, 0.5, n_obs)
    rest_obs = wave[None, :] / (1.0 + z_true[:, None])
    truth = _toy_spectra(rng, rest_obs, n_obs, sigma_extra=rest_obs / (r_lsf * _FWHM_PER_SIGMA))
    noise = np.median(truth, axis=1, keepdims=True) / snr
    flux = truth + rng.normal(0.0, 1.0, truth.shape) * noise
    ivar = np.broadcast_to(1.0 / noise ** 2, flux.shape).copy()
    ivar[:, 1000:1010] = 0.0  # a masked stretch

    with tempfile.TemporaryDirectory() as tmp:
        path = write_redrock_templates(tmp, rest, components, z_min=0.0, z_max=0.5)
        with contextlib.redirect_stdout(io.StringIO()):
            check = Template(str(path))
        assert check.template_type == "GALAXY" and check.nbasis == 10 and np.allclose(check.wave, rest)
        df = run_redrock(wave, flux, ivar, tmp, ncpu=1, lsf_resolution=r_lsf)
    dz = np.abs(df["z"].to_numpy() - z_true) / (1.0 + z_true)
    print(json.dumps({"n_spectra": n_obs, "snr_per_pixel": snr, "n_redshifts": df.attrs["n_redshifts"],
                      "fitted_wave_range": [round(x, 1) for x in df.attrs["wave_range"]],
                      "median_abs_dz_1pz": float(np.median(dz)),
                      "outlier_fraction_dz_gt_0.05": float(np.mean(dz > 0.05)),
                      "zwarn_nonzero": int((df["zwarn"] != 0).sum()), "seconds": round(df.attrs["seconds"], 3),
                      "seconds_templates": round(df.attrs["seconds_templates"], 3),
                      "cpu_seconds": round(df.attrs["cpu_seconds"], 3),
                      "spectra_per_s": round(n_obs / df.attrs["seconds"], 2),
                      "spectra_per_cpu_s": round(n_obs / df.attrs["cpu_seconds"], 2),
                      "spectra_per_s_zfind_only": round(n_obs / df.attrs["seconds_zfind"], 2)}, indent=2))
