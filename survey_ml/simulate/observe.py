"""Observation model: a rest-frame library spectrum -> a LAMOST LRS spectrum as the survey ships it.

The steps, in the order the light meets them:

1. redshift and distance: ``f_obs(lambda (1+z)) = L(lambda) / (4 pi d_L^2 (1+z))`` (Planck18),
   in the 1e-17 erg s-1 cm-2 A-1 units of SDSS/LAMOST flux-calibrated spectra;
2. instrumental resolution: a Gaussian line-spread function of constant resolving power
   R (LAMOST LRS: R ~ 1800), applied on a fine log-wavelength grid;
3. pixels: flux-conserving integration onto the native log-linear LAMOST grid
   (COEFF0 = 3.5682, COEFF1 = 1e-4, 3909 pixels, 3700-9100 A);
4. flux calibration: smooth multiplicative wiggles (Legendre terms of a few per cent)
   and a small jump between the blue and red arms at the dichroic (~5900 A);
5. noise: Gaussian with variance from the object, a night-sky spectrum (continuum plus
   [OI] 5577/6300/6364, Na D and the red OH bands) and the system throughput, scaled so
   that the median S/N per pixel in the r band is the requested one; plus sky-subtraction
   residuals at the sky lines (a few per cent of their flux);
6. bad pixels: a few clusters of dead pixels (ivar = 0, andmask BADCCD) and bright
   sky lines flagged in ormask (BRIGHTSKY);
7. the header: SNRU..SNRZ measured from the simulated data as the pipeline would
   (median of smoothed flux x sqrt(ivar) per band), Z with a LAMOST-like error, CLASS.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

from ..io.lamost import lamost_filename
from ..io.spectrum import Spectrum
from ..core.wavelength import LAMOST_LRS_GRID, LogLinearGrid

__all__ = ["LamostInstrument", "observe_lamost", "sky_spectrum", "throughput", "measure_band_snr",
           "BANDS", "lamost_meta", "catalogue_row", "MASK_BADCCD", "MASK_BRIGHTSKY"]

C_KMS = 299_792.458
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))

#: Observed-frame windows (A) for SNRU..SNRZ (LAMOST quotes S/N per pixel per band).
BANDS = {"u": (3700.0, 4000.0), "g": (4000.0, 5500.0), "r": (5500.0, 6900.0),
         "i": (6900.0, 8200.0), "z": (8200.0, 9100.0)}

#: Pixel mask bits used by the simulator (LAMOST/SDSS spectro mask convention).
MASK_BADCCD = np.uint32(1 << 1)
MASK_BRIGHTSKY = np.uint32(1 << 23)

# Night-sky emission lines (vacuum A, relative peak intensity): [OI], Na D, and the
# strongest OH Meinel lines of the red arm (after Osterbrock et al. 1996).
_SKY_LINES = np.array([
    (5578.9, 1.00), (5891.6, 0.35), (5897.6, 0.30), (6302.0, 0.45), (6365.5, 0.15),
    (6865.8, 0.25), (6925.1, 0.20), (7278.4, 0.30), (7318.3, 0.35), (7342.9, 0.30),
    (7371.2, 0.25), (7403.7, 0.30), (7526.1, 0.20), (7573.7, 0.25), (7752.8, 0.40),
    (7796.3, 0.35), (7823.7, 0.40), (7856.1, 0.35), (7915.9, 0.45), (7995.5, 0.45),
    (8346.9, 0.55), (8401.5, 0.60), (8432.5, 0.60), (8467.7, 0.55), (8507.0, 0.50),
    (8763.7, 0.60), (8829.5, 0.65), (8888.4, 0.70), (8922.0, 0.70), (8960.5, 0.65),
    (9003.7, 0.60), (9039.5, 0.60),
])


@dataclass(frozen=True)
class LamostInstrument:
    """The LAMOST LRS as the observation model sees it.

    Attributes
    ----------
    resolution : float
        Resolving power R = lambda / FWHM of the line-spread function.
    grid : LogLinearGrid
        Native pixel grid; spectra take its first ``n_pix`` pixels.
    n_pix : int
        Pixels per spectrum.
    dichroic : float
        Wavelength (A) where the blue and red arms join.
    calibration_rms : float
        rms of each Legendre term (orders 1-3) of the flux-calibration error.
    arm_jump_rms : float
        rms fractional offset of the red arm against the blue.
    sky_to_object : float
        Night-sky continuum over object continuum in the r band (sets how much of the
        noise is the sky's; LAMOST galaxies at r ~ 17.5 are roughly sky-level).
    sky_residual_rms : float
        rms fractional error of the sky subtraction at the sky emission lines (the
        residual spikes at [OI] 5577 and in the OH bands of real LAMOST spectra).
    bad_clusters_per_spectrum : float
        Poisson mean of dead-pixel clusters (1-8 pixels each).
    resolution_range : (float, float) or None
        If set, every spectrum draws its own R uniformly from this range (fibre-to-fibre
        and night-to-night focus changes) instead of using ``resolution``.
    sky_to_object_range : (float, float) or None
        If set, every spectrum draws its sky-to-object ratio log-uniformly from this range
        (faint and bright targets, dark and bright nights).

    :meth:`randomised` is the domain-randomised instrument used for training: every
    effect above wider than the nominal LAMOST one, so a network does not learn one
    instrument's exact signature.
    """

    resolution: float = 1800.0
    grid: LogLinearGrid = LAMOST_LRS_GRID
    n_pix: int = 3909
    dichroic: float = 5900.0
    calibration_rms: float = 0.02
    arm_jump_rms: float = 0.02
    sky_to_object: float = 1.0
    sky_residual_rms: float = 0.03
    bad_clusters_per_spectrum: float = 1.0
    resolution_range: tuple[float, float] | None = None
    sky_to_object_range: tuple[float, float] | None = None

    @classmethod
    def randomised(cls) -> "LamostInstrument":
        """The training instrument: R 1400-2300, 5% calibration terms and arm jumps, sky
        residuals of 10% of the sky lines, sky/object 0.3-3 and twice the dead pixels.

        Examples
        --------
        >>> LamostInstrument.randomised().resolution_range
        (1400.0, 2300.0)
        """
        return cls(calibration_rms=0.05, arm_jump_rms=0.05, sky_residual_rms=0.10, bad_clusters_per_spectrum=2.0,
                   resolution_range=(1400.0, 2300.0), sky_to_object_range=(0.3, 3.0))

    @property
    def wavelength(self) -> np.ndarray:
        return self.grid.wavelength()[: self.n_pix]

    @property
    def pixel_edges(self) -> np.ndarray:
        return 10.0 ** (self.grid.coeff0 + self.grid.coeff1 * (np.arange(self.n_pix + 1) - 0.5))


def sky_spectrum(wavelength: np.ndarray, resolution: float = 1800.0, lines_only: bool = False) -> np.ndarray:
    """Night-sky surface brightness (relative units, 1 = continuum at 6500 A) at resolution R.

    With ``lines_only`` the emission lines without the continuum.
    """
    sky = np.zeros_like(wavelength) if lines_only else (wavelength / 6500.0) ** 1.5
    for centre, peak in _SKY_LINES:
        sigma = centre / resolution * FWHM_TO_SIGMA
        sky = sky + 8.0 * peak * np.exp(-0.5 * ((wavelength - centre) / sigma) ** 2)
    return sky


def throughput(wavelength: np.ndarray, dichroic: float = 5900.0) -> np.ndarray:
    """Relative system throughput: low in the near-UV and far red, a dip at the dichroic."""
    blue = 1.0 / (1.0 + np.exp(-(wavelength - 4000.0) / 180.0))
    red = 1.0 / (1.0 + np.exp((wavelength - 8900.0) / 250.0))
    dip = 1.0 - 0.35 * np.exp(-0.5 * ((wavelength - dichroic) / 60.0) ** 2)
    return 0.05 + 0.95 * blue * red * dip


@lru_cache(maxsize=4)
def _fine_log_grid(wmin: float, wmax: float, dlog: float) -> np.ndarray:
    return 10.0 ** np.arange(np.log10(wmin), np.log10(wmax), dlog)


def _luminosity_distance_cm(z: float) -> float:
    from astropy.cosmology import Planck18

    return float(Planck18.luminosity_distance(z).to_value("cm"))


def _rebin(src_wave: np.ndarray, src_flux: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean flux density in each [edges[i], edges[i+1]) bin: flux-conserving integration."""
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (src_flux[1:] + src_flux[:-1]) * np.diff(src_wave))])
    at_edges = np.interp(edges, src_wave, cumulative)
    return np.diff(at_edges) / np.diff(edges)


def measure_band_snr(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> dict[str, float]:
    """S/N per pixel in each band as a pipeline measures it: median of smoothed flux x sqrt(ivar)."""
    good = ivar > 0
    smooth = median_filter(flux, size=21, mode="nearest")
    snr = {}
    for band, (lo, hi) in BANDS.items():
        sel = good & (wavelength >= lo) & (wavelength < hi)
        snr[band] = round(float(np.median(np.abs(smooth[sel]) * np.sqrt(ivar[sel]))), 2) if sel.sum() > 10 else 0.0
    return snr


def lamost_meta(obsid: int, z: float, z_err: float, snr: dict[str, float], ra: float, dec: float,
                class_: str = "GALAXY", data_v: str = "survey_ml mock DR10") -> dict:
    """LAMOST LRS header fields (``Spectrum.meta``) for a simulated observation.

    Plan, spectrograph and fibre follow from the obsid (250 fibres x 16 spectrographs
    per plan), so file names are unique and stable.
    """
    grid = LAMOST_LRS_GRID
    planid, spid, fiberid = f"MOCK{obsid // 4000:05d}", 1 + (obsid // 250) % 16, 1 + obsid % 250
    lmjd = 58000 + (obsid // 4000) % 4000
    meta = {
        "filename": lamost_filename(lmjd, planid, spid, fiberid, gz=False), "obsid": int(obsid),
        "data_v": data_v, "lmjd": lmjd, "mjd": lmjd - 1, "planid": planid, "spid": spid,
        "fiberid": fiberid, "ra": round(float(ra), 6), "dec": round(float(dec), 6),
        "desig": f"LAMOST MOCK{obsid:09d}", "objtype": "galaxy", "helio_rv": 0.0, "vacuum": True,
        "coeff0": grid.coeff0, "coeff1": grid.coeff1, "class": class_, "subclass": "",
        "z": round(float(z), 8), "z_err": round(float(z_err), 8), "zflag": "MOCK", "nexp": 3,
        "exptime": 5400.0, **{f"snr{b}": v for b, v in snr.items()}, "fibertype": "Obj",
        "fibermask": 0, "mags": {},
    }
    meta["ra_obs"], meta["dec_obs"] = meta["ra"], meta["dec"]
    return meta


def catalogue_row(meta: dict, file: str, obsdate: str = "2017-09-01") -> dict:
    """The LRS general catalogue columns of one spectrum, from its header fields, plus ``file``."""
    return {"file": file, "obsid": meta["obsid"], "designation": meta["desig"], "obsdate": obsdate,
            "lmjd": meta["lmjd"], "mjd": meta["mjd"], "planid": meta["planid"], "spid": meta["spid"],
            "fiberid": meta["fiberid"], "ra_obs": meta["ra_obs"], "dec_obs": meta["dec_obs"],
            **{f"snr{b}": meta[f"snr{b}"] for b in BANDS}, "class": meta["class"], "subclass": meta["subclass"],
            "z": meta["z"], "z_err": meta["z_err"], "ra": meta["ra"], "dec": meta["dec"],
            "fibermask": meta["fibermask"]}


def observe_lamost(rest_wave: np.ndarray, rest_luminosity: np.ndarray, z: float, snr_r: float,
                   rng: np.random.Generator, obsid: int, instrument: LamostInstrument = LamostInstrument(),
                   ) -> tuple[Spectrum, dict]:
    """Observe one rest-frame spectrum with the LAMOST LRS.

    Parameters
    ----------
    rest_wave : numpy.ndarray
        Rest-frame vacuum wavelengths (A), increasing; must cover the observed range
        divided by (1 + z).
    rest_luminosity : numpy.ndarray
        L_lambda in erg s-1 A-1 (a bagpipes model at redshift 0).
    z : float
        True redshift.
    snr_r : float
        Requested median S/N per pixel in the r band (noise-free flux over sigma).
    rng : numpy.random.Generator
    obsid : int
        OBSID of the observation (names the file).
    instrument : LamostInstrument

    Returns
    -------
    spectrum : Spectrum
        DR8+ layout, flux in 1e-17 erg s-1 cm-2 A-1, header fields in ``meta``.
    record : dict
        What was done: z, snr_r requested, measured band S/N, calibration terms, number
        of dead pixels, flux scale.
    """
    wave = instrument.wavelength
    lo, hi = instrument.pixel_edges[0] / (1 + z), instrument.pixel_edges[-1] / (1 + z)
    if rest_wave[0] > lo or rest_wave[-1] < hi:
        raise ValueError(f"rest-frame spectrum {rest_wave[0]:.0f}-{rest_wave[-1]:.0f} A does not cover "
                         f"{lo:.0f}-{hi:.0f} A needed at z = {z}")
    # 0. per-spectrum instrument state (only when the instrument is randomised)
    resolution, sky_to_object = instrument.resolution, instrument.sky_to_object
    if instrument.resolution_range is not None:
        resolution = float(rng.uniform(*instrument.resolution_range))
    if instrument.sky_to_object_range is not None:
        sky_to_object = float(np.exp(rng.uniform(*np.log(instrument.sky_to_object_range))))
    # 1-2. fine log grid (5 km/s), LSF of constant R, then to the observed frame
    dlog = 5.0 / C_KMS / np.log(10.0)
    fine = _fine_log_grid(float(lo * 0.995), float(hi * 1.005), dlog)
    lum = np.interp(fine, rest_wave, rest_luminosity)
    sigma_pix = (C_KMS / resolution * FWHM_TO_SIGMA) / 5.0
    lum = gaussian_filter1d(lum, sigma_pix, mode="nearest")
    d_l = _luminosity_distance_cm(z)
    flux_fine = lum / (4.0 * np.pi * d_l**2 * (1.0 + z)) * 1e17
    # 3. pixels
    flux = _rebin(fine * (1.0 + z), flux_fine, instrument.pixel_edges)
    # 4. flux calibration: Legendre wiggles and an arm offset
    x = np.linspace(-1.0, 1.0, wave.size)
    terms = rng.normal(0.0, instrument.calibration_rms, 3)
    wiggle = 1.0 + np.polynomial.legendre.legval(x, np.concatenate([[0.0], terms]))
    jump = rng.normal(0.0, instrument.arm_jump_rms)
    wiggle *= 1.0 + jump / (1.0 + np.exp(-(wave - instrument.dichroic) / 15.0))
    flux = flux * wiggle
    # 5. noise: object + sky through the throughput, scaled to the requested S/N_r
    r_band = (wave >= BANDS["r"][0]) & (wave < BANDS["r"][1])
    object_r = float(np.median(np.abs(flux[r_band])))
    sky = sky_spectrum(wave, instrument.resolution)
    sky_in_flux_units = sky_to_object * object_r / np.median(sky[r_band])
    shape = np.sqrt((np.abs(flux) + sky_in_flux_units * sky) / throughput(wave, instrument.dichroic))
    scale = float(np.median(np.abs(flux[r_band]) / shape[r_band])) / snr_r
    sigma = scale * shape
    # imperfect sky subtraction leaves line residuals of a few per cent of the sky lines
    residual = rng.normal(0.0, instrument.sky_residual_rms) * sky_in_flux_units * sky_spectrum(
        wave, instrument.resolution, lines_only=True)
    noisy = (flux + residual + rng.normal(0.0, 1.0, wave.size) * sigma).astype(np.float32)
    ivar = (1.0 / sigma**2).astype(np.float32)
    # 6. dead pixels and bright sky
    andmask = np.zeros(wave.size, dtype=np.uint32)
    n_dead = 0
    for _ in range(rng.poisson(instrument.bad_clusters_per_spectrum)):
        start, length = int(rng.integers(0, wave.size)), int(rng.integers(1, 9))
        andmask[start: start + length] |= MASK_BADCCD
    dead = andmask != 0
    ivar[dead] = 0.0
    n_dead = int(dead.sum())
    ormask = np.where(sky > 3.0 * np.median(sky), MASK_BRIGHTSKY, np.uint32(0)).astype(np.uint32)
    # 7. header as the pipeline writes it
    snr = measure_band_snr(wave, noisy, ivar)
    z_err = 3e-5 * (1.0 + z)
    meta = lamost_meta(obsid, z + rng.normal(0.0, z_err), z_err, snr,
                       ra=rng.uniform(0.0, 360.0), dec=np.degrees(np.arcsin(rng.uniform(-0.2, 1.0))))
    spectrum = Spectrum(flux=noisy, ivar=ivar, wavelength=wave.astype(np.float32), andmask=andmask,
                        ormask=ormask, meta=meta, format="lamost-new")
    record = {"obsid": int(obsid), "z": float(z), "snr_r_requested": float(snr_r),
              **{f"snr{b}_measured": v for b, v in snr.items()}, "calibration_terms": terms.tolist(),
              "arm_jump": float(jump), "n_dead_pixels": n_dead, "resolution": resolution,
              "sky_to_object": sky_to_object, "flux_scale_1e17": 1e17 / (4 * np.pi * d_l**2 * (1 + z))}
    return spectrum, record
