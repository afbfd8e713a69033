"""SDSS spec / spec-lite spectra and the MPA-JHU galSpec value-added catalogue.

Data models (see ``DATAMODELS.md``):

* ``spec-{PLATE:04d}-{MJD}-{FIBER:04d}.fits(.gz)``: HDU1 ``COADD`` binary table with one row
  per pixel (flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model); HDU2 a one-row table
  named ``SPECOBJ`` (SDSS-I/II) or ``SPALL`` (BOSS/eBOSS), read by index.
* MPA-JHU DR8 galSpecInfo, galSpecLine and galSpecExtra: three row-matched FITS tables.

Pure functions, no Dask; every unusable file raises :class:`~survey_ml.io.errors.SurveyFileError`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from astropy.io import fits

from .errors import SurveyFileError
from ._fits import header_value, open_fits
from .spectrum import Spectrum

__all__ = ["read_sdss_spectrum", "write_sdss_spectrum", "read_galspec", "write_galspec"]

# HDU1 COADD columns and their TFORM in real spec-lite files.
_COADD = {"flux": "E", "loglam": "E", "ivar": "E", "and_mask": "J", "or_mask": "J",
          "wdisp": "E", "sky": "E", "model": "E"}
_EXTRA = ("wdisp", "sky", "model")


def _sn_median(value) -> float:
    """SN_MEDIAN_ALL is a scalar; a 5-vector (ugriz, as SN_MEDIAN) is reduced to its r band."""
    values = np.ravel(value)
    if values.size not in (1, 5):
        raise ValueError(f"expected 1 or 5 values, got {values.size}")
    return float(values[2] if values.size == 5 else values[0])


def _specobjid(value) -> int:
    """SPECOBJID is a decimal string in specObj/spAll (it can overflow int64), or an integer."""
    return int(str(value).strip())


def _str(value) -> str:
    return str(value).strip()


# HDU2 column -> (meta key, TFORM written, converter read).
_SPECOBJ: dict[str, tuple[str, str, Callable]] = {
    "PLATE": ("plate", "J", int),
    "MJD": ("mjd", "J", int),
    "FIBERID": ("fiberid", "J", int),
    "SPECOBJID": ("specobjid", "20A", _specobjid),  # 20 digits hold any uint64
    "PLUG_RA": ("ra", "D", float),
    "PLUG_DEC": ("dec", "D", float),
    "CLASS": ("class", "6A", _str),
    "SUBCLASS": ("subclass", "21A", _str),
    "Z": ("z", "E", float),
    "Z_ERR": ("z_err", "E", float),
    "ZWARNING": ("zwarning", "J", int),
    "SN_MEDIAN_ALL": ("sn_median_all", "E", _sn_median),
    "VDISP": ("vdisp", "E", float),
}

# MPA-JHU galSpec tables: lower-case column -> numpy dtype of the real files.
_GALSPEC_INFO = {"plateid": "i2", "mjd": "i4", "fiberid": "i2", "ra": "f4", "dec": "f4",
                 "z": "f4", "reliable": "i2"}
_GALSPEC_LINE = {f"{line}{suffix}": "f4"
                 for line in ("h_alpha_flux", "h_beta_flux", "oiii_5007_flux", "nii_6584_flux")
                 for suffix in ("", "_err")}
_GALSPEC_EXTRA = {"bptclass": "i2", "oh_p2p5": "f4", "oh_p16": "f4", "oh_p50": "f4",
                  "oh_p84": "f4", "oh_p97p5": "f4", "lgm_tot_p50": "f4", "lgm_fib_p50": "f4",
                  "sfr_tot_p50": "f4"}


def _lamost_hint(hdul: fits.HDUList, path: str) -> str:
    """A pointer to the right reader when the file is plainly a LAMOST spectrum."""
    header = hdul[0].header
    origin = " ".join(header_value(header, key, path, str, required=False, default="")
                      for key in ("TELESCOP", "DATA_V"))
    if "LAMOST" not in origin.upper():
        return ""
    return "; this is a LAMOST spectrum, read it with the LAMOST reader"


#: SDSS imaging bands, the order of SPECOBJ's SN_MEDIAN.
_BANDS = ("u", "g", "r", "i", "z")


def _optional_column(hdu, name: str) -> np.ndarray | None:
    """Column ``name`` of a binary table HDU (case-insensitive), or None when it lacks one."""
    names = {n.lower(): n for n in getattr(getattr(hdu, "columns", None), "names", []) or []}
    return None if name.lower() not in names else np.asarray(hdu.data[names[name.lower()]])


def _table(hdul: fits.HDUList, index: int, path: str, what: str,
           columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of the binary table at ``hdul[index]``, found case-insensitively.

    Returns
    -------
    dict
        Lower-case column name -> native-endian copy of the column (pandas needs native
        byte order; FITS is big-endian).

    Raises
    ------
    SurveyFileError
        ``code="wrong_format"`` when the HDU is absent, not a binary table, or lacks columns
        (all missing ones are named).
    """
    if len(hdul) <= index or not isinstance(hdul[index], fits.BinTableHDU):
        found = "absent" if len(hdul) <= index else f"a {type(hdul[index]).__name__}"
        raise SurveyFileError(path, f"HDU{index} ({what}) must be a binary table but is {found}"
                              + _lamost_hint(hdul, path), code="wrong_format")
    hdu = hdul[index]
    names = {name.lower(): name for name in hdu.columns.names}
    missing = [col for col in columns if col.lower() not in names]
    if missing:
        raise SurveyFileError(path, f"HDU{index} ({what}) lacks column(s) {', '.join(missing)}"
                              + _lamost_hint(hdul, path), code="wrong_format")
    out = {}
    for col in columns:
        arr = np.asarray(hdu.data[names[col.lower()]])
        out[col.lower()] = arr.astype(arr.dtype.newbyteorder("="))
    return out


def read_sdss_spectrum(path: str | os.PathLike) -> Spectrum:
    """Read an SDSS spec or spec-lite file ``spec-PLATE-MJD-FIBER.fits(.gz)``.

    Parameters
    ----------
    path : str or os.PathLike
        The spectrum file.

    Returns
    -------
    Spectrum
        ``flux`` and ``ivar`` float32 (1e-17 erg s-1 cm-2 A-1); ``wavelength = 10**loglam``
        in vacuum Angstrom, float64 (the float32 loglam of the file holds more precision
        than a float32 wavelength would); ``andmask``/``ormask`` uint32 (the file's int32
        bits, reinterpreted); ``extra`` with ``wdisp``, ``sky``, ``model`` (float32);
        ``format="sdss-spec"``. ``meta`` holds, from HDU2: ``plate``, ``mjd``, ``fiberid``,
        ``specobjid`` (Python int), ``ra``/``dec`` (PLUG_RA/PLUG_DEC, deg), ``class``,
        ``subclass``, ``z``, ``z_err``, ``zwarning``, ``sn_median_all`` (a scalar; should a
        file carry it per band, the r-band value of the ugriz 5-vector), ``vdisp`` (km/s),
        ``snru`` ... ``snrz`` from the SN_MEDIAN column (ugriz) when HDU2 has it (the store's
        ``snrr`` and the release cut read it), and ``obsid``: SPECOBJID as int64 (values >= 2**63, eBOSS plates >= 8192, wrap to
        negative like a C cast, which keeps them unique).

    Raises
    ------
    SurveyFileError
        For a missing, empty, truncated or non-FITS file, and with ``code="wrong_format"``
        for one without the COADD columns or the one-row HDU2 (a LAMOST file among them).
    """
    path = os.fspath(path)
    with open_fits(path) as hdul:
        coadd = _table(hdul, 1, path, "COADD", list(_COADD))
        specobj = _table(hdul, 2, path, "SPECOBJ/SPALL", list(_SPECOBJ))
        per_band = _optional_column(hdul[2], "SN_MEDIAN")
    if any(arr.ndim != 1 for arr in coadd.values()):
        raise SurveyFileError(path, "HDU1 COADD must have one row per pixel, not array columns",
                              code="wrong_format")
    n_rows = len(specobj["plate"])
    if n_rows != 1:
        raise SurveyFileError(path, f"HDU2 SPECOBJ/SPALL must have one row, has {n_rows}",
                              code="wrong_format")
    meta = {}
    for col, (key, _, convert) in _SPECOBJ.items():
        value = specobj[col.lower()][0]
        try:
            meta[key] = convert(value)
        except (TypeError, ValueError) as exc:
            raise SurveyFileError(path, f"HDU2 column {col}={value!r} is unusable ({exc})",
                                  code="bad_header") from exc
    if per_band is not None and np.size(per_band[0]) == len(_BANDS):  # the S/N per band of the store's columns
        meta.update({f"snr{band}": float(v) for band, v in zip(_BANDS, np.ravel(per_band[0]))})
    specobjid = meta["specobjid"]
    meta["obsid"] = np.int64(specobjid - (1 << 64) if specobjid >= (1 << 63) else specobjid)
    return Spectrum(
        flux=coadd["flux"].astype(np.float32),
        ivar=coadd["ivar"].astype(np.float32),
        wavelength=10.0 ** coadd["loglam"].astype(np.float64),
        andmask=coadd["and_mask"].astype(np.int32).view(np.uint32),
        ormask=coadd["or_mask"].astype(np.int32).view(np.uint32),
        meta=meta,
        path=path,
        format="sdss-spec",
        extra={name: coadd[name].astype(np.float32) for name in _EXTRA},
    )


def write_sdss_spectrum(path: str | os.PathLike, spectrum: Spectrum,
                        overwrite: bool = False) -> None:
    """Write ``spectrum`` as an SDSS spec-lite file (gzipped when ``path`` ends in ``.gz``).

    Layout: primary HDU with TELESCOP, PLATEID, MJD, FIBERID, PLUG_RA, PLUG_DEC; HDU1
    ``COADD`` (flux E, loglam E, ivar E, and_mask J, or_mask J, wdisp E, sky E, model E);
    HDU2 ``SPECOBJ``, one row with the columns :func:`read_sdss_spectrum` reads, in the
    dtypes of the real files (Z, Z_ERR, SN_MEDIAN_ALL, VDISP float32, so a read-back equals
    the meta when those values are float32-representable, as they are after a read).

    Parameters
    ----------
    path : str or os.PathLike
        Output file, ``.fits`` or ``.fits.gz``.
    spectrum : Spectrum
        Needs ``meta`` keys plate, mjd, fiberid, ra, dec, z. Defaults for the rest:
        z_err 0, zwarning 0, class "GALAXY", subclass "", sn_median_all 0, vdisp 0, and
        specobjid packed as SDSS does from plate, fiber and MJD (run2d bits 0); with
        snru ... snrz, an SN_MEDIAN (ugriz) column is written too. Missing
        ``extra`` arrays (wdisp, sky, model) are written as zeros.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    ValueError
        When required meta keys are missing or the per-pixel arrays differ in length.
    """
    meta = spectrum.meta
    missing = [key for key in ("plate", "mjd", "fiberid", "ra", "dec", "z") if key not in meta]
    if missing:
        raise ValueError(f"spectrum.meta lacks {', '.join(missing)}")
    plate, mjd, fiberid = int(meta["plate"]), int(meta["mjd"]), int(meta["fiberid"])
    meta = {"z_err": 0.0, "zwarning": 0, "class": "GALAXY", "subclass": "",
            "sn_median_all": 0.0, "vdisp": 0.0,
            "specobjid": (plate << 50) | (fiberid << 38) | ((mjd - 50000) << 24), **meta}

    n_pix = spectrum.n_pix
    pixels = {
        "flux": spectrum.flux,
        "loglam": np.log10(np.asarray(spectrum.wavelength, dtype=np.float64)),
        "ivar": spectrum.ivar,
        "and_mask": np.asarray(spectrum.andmask).astype(np.uint32).view(np.int32),
        "or_mask": np.asarray(spectrum.ormask).astype(np.uint32).view(np.int32),
        **{name: spectrum.extra.get(name, np.zeros(n_pix, np.float32)) for name in _EXTRA},
    }
    bad = [name for name, arr in pixels.items() if np.shape(arr) != (n_pix,)]
    if bad:
        raise ValueError(f"per-pixel arrays {', '.join(bad)} are not of length {n_pix}")
    coadd = fits.BinTableHDU.from_columns(
        [fits.Column(name=name, format=tform, array=pixels[name])
         for name, tform in _COADD.items()], name="COADD")
    columns = [fits.Column(name=col, format=tform, array=[str(meta[key]) if tform.endswith("A") else meta[key]])
               for col, (key, tform, _) in _SPECOBJ.items()]
    if all(f"snr{band}" in meta for band in _BANDS):  # SN_MEDIAN (ugriz), as the real specObj has it
        columns.append(fits.Column(name="SN_MEDIAN", format="5E",
                                   array=[[float(meta[f"snr{band}"]) for band in _BANDS]]))
    specobj = fits.BinTableHDU.from_columns(columns, name="SPECOBJ")
    primary = fits.PrimaryHDU()
    primary.header.update({"TELESCOP": "SDSS 2.5-M", "PLATEID": plate, "MJD": mjd,
                           "FIBERID": fiberid, "PLUG_RA": float(meta["ra"]),
                           "PLUG_DEC": float(meta["dec"])})
    fits.HDUList([primary, coadd, specobj]).writeto(os.fspath(path), overwrite=overwrite)


def read_galspec(info_path: str | os.PathLike, line_path: str | os.PathLike | None = None,
                 extra_path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read the MPA-JHU galSpec tables and join them column-wise into one DataFrame.

    The three tables are row-matched (row i of each describes the same spectrum), so they
    are joined by position, after checking that their row counts agree.

    Parameters
    ----------
    info_path : str or os.PathLike
        galSpecInfo: plateid, mjd, fiberid, ra, dec, z, reliable.
    line_path : str or os.PathLike, optional
        galSpecLine: h_alpha_flux, h_beta_flux, oiii_5007_flux, nii_6584_flux and their
        ``_err`` columns (1e-17 erg s-1 cm-2).
    extra_path : str or os.PathLike, optional
        galSpecExtra: bptclass (-1 unclassifiable, 1 star-forming, 2 low-S/N star-forming,
        3 composite, 4 AGN, 5 low-S/N LINER); oh_p2p5, oh_p16, oh_p50, oh_p84, oh_p97p5
        (12 + log O/H percentiles); lgm_tot_p50, lgm_fib_p50 (log stellar mass, total and
        in the fibre); sfr_tot_p50 (log SFR).

    Returns
    -------
    pandas.DataFrame
        Lower-case columns in native byte order, the info columns first.

    Raises
    ------
    SurveyFileError
        For an unreadable file, one lacking a column (``code="wrong_format"``), or row
        counts that disagree (``code="wrong_format"``, naming both files).
    """
    info_path = os.fspath(info_path)
    frames = []
    for table_path, columns, what in ((info_path, _GALSPEC_INFO, "galSpecInfo"),
                                      (line_path, _GALSPEC_LINE, "galSpecLine"),
                                      (extra_path, _GALSPEC_EXTRA, "galSpecExtra")):
        if table_path is None:
            continue
        table_path = os.fspath(table_path)
        with open_fits(table_path) as hdul:
            frame = pd.DataFrame(_table(hdul, 1, table_path, what, list(columns)))
        if frames and len(frame) != len(frames[0]):
            raise SurveyFileError(table_path, f"{what} has {len(frame)} rows but galSpecInfo "
                                  f"{info_path} has {len(frames[0])}; the tables must be "
                                  "row-matched", code="wrong_format")
        frames.append(frame)
    return pd.concat(frames, axis=1)


def write_galspec(df: pd.DataFrame, info_path: str | os.PathLike, line_path: str | os.PathLike,
                  extra_path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``df`` as the three MPA-JHU galSpec FITS tables (for tests and mock releases).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per spectrum with the columns :func:`read_galspec` returns (names matched
        case-insensitively); values are cast to the dtypes of the real files (plateid,
        fiberid, reliable, bptclass int16; mjd int32; the rest float32) and written under
        upper-case names. BPTCLASS codes: -1 unclassifiable, 1 SF, 2 low-S/N SF,
        3 composite, 4 AGN, 5 low-S/N LINER.
    info_path, line_path, extra_path : str or os.PathLike
        Output files for galSpecInfo, galSpecLine and galSpecExtra.
    overwrite : bool
        Replace existing files.

    Raises
    ------
    ValueError
        When ``df`` lacks columns.
    """
    lower = {name.lower(): name for name in df.columns}
    tables = ((info_path, _GALSPEC_INFO), (line_path, _GALSPEC_LINE), (extra_path, _GALSPEC_EXTRA))
    missing = [col for _, columns in tables for col in columns if col not in lower]
    if missing:
        raise ValueError(f"df lacks galSpec column(s) {', '.join(missing)}")
    for table_path, columns in tables:
        table = fits.BinTableHDU(np.rec.fromarrays(
            [df[lower[col]].to_numpy(dtype=dtype) for col, dtype in columns.items()],
            names=[col.upper() for col in columns]))
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(os.fspath(table_path), overwrite=overwrite)
