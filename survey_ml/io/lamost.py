"""LAMOST LRS single spectra (DR7 ... DR10) and the LRS general catalogue.

Two file layouts exist and are told apart by structure, never by ``DATA_V``:

* old (DR7 and earlier): the primary HDU is a float32 image of shape (5, n_pix) whose
  rows are flux, ivar, wavelength, andmask, ormask; no other HDU.
* new (DR8 and later): an empty primary HDU and a binary table ``COADD`` with ONE row of
  array columns FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK, NORMALIZATION (all float32;
  NORMALIZATION is -9999 where the header says NORM = 0).

Wavelengths are vacuum Angstrom on a log-linear grid, ``10**(COEFF0 + COEFF1 * i)``.
"""
from __future__ import annotations

import gzip
import io
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.table import Table

from .errors import SurveyFileError
from . import _cards
from ._fits import header_value, load_fits_bytes, open_fits
from .spectrum import Spectrum

__all__ = [
    "read_lamost_spectrum",
    "read_lamost_bytes",
    "write_lamost_spectrum",
    "lamost_filename",
    "read_lamost_catalogue",
    "write_lamost_catalogue",
    "CATALOGUE_DTYPES",
    "PartialCatalogueWarning",
]

#: Header fields returned in ``Spectrum.meta`` (lower-cased), with their Python types.
HEADER_FIELDS: dict[str, type] = {
    "FILENAME": str, "OBSID": int, "DATA_V": str, "LMJD": int, "MJD": int,
    "PLANID": str, "SPID": int, "FIBERID": int, "RA": float, "DEC": float,
    "RA_OBS": float, "DEC_OBS": float, "DESIG": str, "OBJTYPE": str,
    "HELIO_RV": float, "VACUUM": bool, "COEFF0": float, "COEFF1": float,
    "CLASS": str, "SUBCLASS": str, "Z": float, "Z_ERR": float, "ZFLAG": str,
    "SNRU": float, "SNRG": float, "SNRR": float, "SNRI": float, "SNRZ": float,
    "NEXP": int, "EXPTIME": float,
}
#: Without these a spectrum cannot be placed on the sky or on a wavelength grid.
REQUIRED_FIELDS = ("OBSID", "RA", "DEC", "COEFF0", "COEFF1")
#: Fields whose keyword differs between the layouts: canonical name -> (old, new).
RENAMED_FIELDS: dict[str, tuple[str, str, type]] = {
    "fibertype": ("FIBERTYP", "FIB_TYPE", str),
    "fibermask": ("FIBERMAS", "FIB_MASK", int),
}
MAG_KEYS = {"old": ("MAG1", "MAG2", "MAG3", "MAG4", "MAG5", "MAG6", "MAG7"),
            "new": ("MAG_PS_G", "MAG_PS_R", "MAG_PS_I", "MAG_PS_Z", "MAG_PS_Y")}
ARRAY_COLUMNS = ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK")
#: Physical ranges of header values (inclusive bounds; None: open). A value outside is a
#: ``bad_header`` naming the keyword and the value; LAMOST's "not measured" -9999 of the
#: optional ones reads as missing (NaN).
HEADER_RANGES: dict[str, tuple[float | None, float | None, str]] = {
    "OBSID": (1, None, ""), "RA": (0.0, 360.0, "deg"), "DEC": (-90.0, 90.0, "deg"),
    "Z": (-0.1, 10.0, ""), "Z_ERR": (0.0, None, ""),
    "SNRU": (0.0, None, ""), "SNRG": (0.0, None, ""), "SNRR": (0.0, None, ""), "SNRI": (0.0, None, ""),
    "SNRZ": (0.0, None, ""), "EXPTIME": (0.0, None, "s"), "LMJD": (50000, 90000, "d"), "MJD": (50000, 90000, "d"),
}
#: LAMOST's placeholder for a value the pipeline did not measure.
NOT_MEASURED = -9999.0
NORMALIZATION_FILL = np.float32(-9999.0)


def lamost_filename(lmjd: int, planid: str, spid: int, fiberid: int, gz: bool = True) -> str:
    """File name of a LAMOST LRS spectrum, ``spec-{LMJD}-{PLANID}_sp{SPID:02d}-{FIBERID:03d}.fits``.

    Examples
    --------
    >>> lamost_filename(55859, "F5902", 1, 13)
    'spec-55859-F5902_sp01-013.fits.gz'
    """
    return f"spec-{int(lmjd)}-{planid.strip()}_sp{int(spid):02d}-{int(fiberid):03d}.fits" + (".gz" if gz else "")


def _read_meta(header: fits.Header, path: str, layout: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, kind in HEADER_FIELDS.items():
        default = {str: "", int: -1, float: np.nan, bool: True}[kind]
        meta[key.lower()] = header_value(header, key, path, kind, required=key in REQUIRED_FIELDS,
                                         default=default)
    for name, (old_key, new_key, kind) in RENAMED_FIELDS.items():
        key = old_key if layout == "old" else new_key
        meta[name] = header_value(header, key, path, kind, required=False,
                                  default="" if kind is str else -1)
    meta["mags"] = {k: float(header[k]) for k in MAG_KEYS["old"] + MAG_KEYS["new"] if k in header}
    if "MAGTYPE" in header:
        meta["magtype"] = str(header["MAGTYPE"]).strip()
    if layout == "new":
        meta["norm"] = header_value(header, "NORM", path, int, required=False, default=0)
    return _checked(meta, path)


def _checked(meta: dict[str, Any], path: str) -> dict[str, Any]:
    """``meta`` with LAMOST's -9999 placeholders read as missing; a value out of its range is a bad_header.

    Examples
    --------
    >>> _checked({"ra": 10.0, "dec": -95.0, "obsid": 5}, "spec.fits")
    Traceback (most recent call last):
    ...
    survey_ml.io.errors.SurveyFileError: spec.fits: header DEC = -95.0 is outside [-90.0, 90.0] deg
    >>> _checked({"z": -9999.0, "snrr": 12.5}, "spec.fits")
    {'z': nan, 'snrr': 12.5}
    """
    for key, (low, high, unit) in HEADER_RANGES.items():
        name = key.lower()
        value = meta.get(name)
        if value is None or isinstance(value, str):
            continue
        if key not in REQUIRED_FIELDS and (value == NOT_MEASURED or (isinstance(value, int) and value == -1)):
            meta[name] = np.nan if isinstance(value, float) else value
            continue
        if isinstance(value, float) and np.isnan(value) and key not in REQUIRED_FIELDS:
            continue
        if not np.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise SurveyFileError(path, f"header {key} = {value!r} is outside {bounds}{' ' + unit if unit else ''}",
                                  code="bad_header")
    return meta


def _as_mask(values: np.ndarray, path: str, name: str) -> np.ndarray:
    """LAMOST stores bitmasks as float32; return them as exact uint32 bit patterns."""
    values = np.asarray(values)
    finite = np.isfinite(values)
    if not finite.all() or (values[finite] < 0).any() or (values != np.round(values)).any():
        raise SurveyFileError(path, f"{name} holds values that are not bit patterns", code="bad_values")
    return values.astype(np.uint32)


def _old_layout(data: np.ndarray, header, path: str) -> Spectrum:
    if data.shape[0] != 5:
        raise SurveyFileError(path, f"old-layout primary image must have 5 rows "
                              f"(flux, ivar, wavelength, andmask, ormask), found shape {data.shape}",
                              code="wrong_format")
    data = data.astype(np.float32, copy=False)
    return Spectrum(
        flux=np.ascontiguousarray(data[0]), ivar=np.ascontiguousarray(data[1]),
        wavelength=np.ascontiguousarray(data[2]),
        andmask=_as_mask(data[3], path, "andmask"), ormask=_as_mask(data[4], path, "ormask"),
        meta=_read_meta(header, path, "old"), path=path, format="lamost-old",
    )


def _new_layout(cols: dict[str, np.ndarray], header, path: str) -> Spectrum:
    missing = [c for c in ARRAY_COLUMNS if c not in cols]
    if missing:
        raise SurveyFileError(path, f"COADD table lacks column(s) {', '.join(missing)}", code="wrong_format")
    if len({cols[c].shape for c in ARRAY_COLUMNS}) != 1 or cols["FLUX"].ndim != 1:
        raise SurveyFileError(path, "COADD array columns differ in length", code="wrong_format")
    meta = _read_meta(header, path, "new")
    normalization = cols.get("NORMALIZATION") if meta["norm"] != 0 else None
    return Spectrum(
        flux=cols["FLUX"], ivar=cols["IVAR"], wavelength=cols["WAVELENGTH"],
        andmask=_as_mask(cols["ANDMASK"], path, "ANDMASK"),
        ormask=_as_mask(cols["ORMASK"], path, "ORMASK"),
        meta=meta, path=path, format="lamost-new", normalization=normalization,
    )


def _read_fast(raw: bytes, path: str) -> Spectrum:
    """Both layouts straight from the bytes; raises _cards.Unsupported for anything unusual."""
    header, data_start = _cards.parse_header(raw, 0)
    if header.get("NAXIS") == 2:
        image = _cards.image_f32(raw, header, data_start)
        _cards.check_whole_hdus(raw, _cards.hdu_after(header, data_start))
        return _old_layout(image, header, path)
    if header.get("NAXIS") == 0:
        _, cols, end = _cards.one_row_f32_table(raw, _cards.hdu_after(header, data_start), "COADD")
        _cards.check_whole_hdus(raw, end)
        return _new_layout(cols, header, path)
    raise _cards.Unsupported("neither layout")


def _read_astropy(raw: bytes, path: str) -> Spectrum:
    """Both layouts through astropy: slower, general, and the source of error messages."""
    with open_fits(path, raw=raw) as hdul:
        primary = hdul[0]
        if primary.header.get("NAXIS", 0) == 2:
            return _old_layout(primary.data, primary.header, path)
        if "COADD" not in hdul:
            raise SurveyFileError(path, "not a LAMOST LRS spectrum: neither a (5, n_pix) primary "
                                  "image nor a COADD table", code="wrong_format")
        coadd = hdul["COADD"]
        if not isinstance(coadd, fits.BinTableHDU):
            raise SurveyFileError(path, "HDU COADD is not a binary table", code="wrong_format")
        if len(coadd.data) != 1:
            raise SurveyFileError(path, f"COADD table must hold one row, found {len(coadd.data)}",
                                  code="wrong_format")
        row = coadd.data[0]
        cols = {n.upper(): np.asarray(row[n]).astype(np.float32) for n in coadd.columns.names}
        return _new_layout(cols, primary.header, path)


def read_lamost_spectrum(path: str | os.PathLike) -> Spectrum:
    """Read one LAMOST LRS spectrum file of either layout.

    Parameters
    ----------
    path : str or os.PathLike
        ``spec-*.fits`` or ``spec-*.fits.gz``.

    Returns
    -------
    Spectrum
        float32 flux, ivar and wavelength (vacuum A), uint32 and/or masks, and ``meta``
        with the DATAMODELS.md header fields lower-cased (``obsid``, ``ra``, ``dec``,
        ``coeff0``, ``coeff1``, ``z``, ``class``, ``snru`` ... ``snrz``, ...), plus
        ``fibertype``/``fibermask`` (FIBERTYP/FIBERMAS or FIB_TYPE/FIB_MASK) and ``mags``
        (keyword -> magnitude, MAG1..7 or MAG_PS_*). Absent optional keywords read as
        "" / -1 / NaN.

    Raises
    ------
    SurveyFileError
        Missing, empty, truncated, non-FITS or corrupt file; a layout that is neither old
        nor new; a required keyword (OBSID, RA, DEC, COEFF0, COEFF1) missing.

    Notes
    -----
    Files in the exact published layouts are decoded directly from their bytes (about
    5x faster than astropy); anything else goes through astropy. Tests check that both
    paths return identical spectra.
    """
    path = os.fspath(path)
    return read_lamost_bytes(load_fits_bytes(path), path)


def read_lamost_bytes(raw: bytes, path: str) -> Spectrum:
    """:func:`read_lamost_spectrum` of a file's FITS bytes already read (and gunzipped) by
    :func:`~survey_ml.io._fits.load_fits_bytes`."""
    try:
        return _read_fast(raw, path)
    except (_cards.Unsupported, UnicodeDecodeError):
        return _read_astropy(raw, path)


def _header_for(spec: Spectrum, layout: str) -> fits.Header:
    header = fits.Header()
    meta = spec.meta
    for key, kind in HEADER_FIELDS.items():
        value = meta.get(key.lower())
        if value is None or (kind is float and np.isnan(value)) or (kind is str and value == ""):
            if key in REQUIRED_FIELDS:
                raise ValueError(f"cannot write a LAMOST spectrum without {key}")
            continue
        header[key] = kind(value)
    for name, (old_key, new_key, kind) in RENAMED_FIELDS.items():
        value = meta.get(name)
        if value not in (None, "", -1):
            header[old_key if layout == "old" else new_key] = kind(value)
    if meta.get("magtype"):
        header["MAGTYPE"] = meta["magtype"]
    for key, value in meta.get("mags", {}).items():
        header[key] = float(value)
    header["WFITTYPE"] = "LOG-LINEAR"
    return header


def write_lamost_spectrum(path: str | os.PathLike, spec: Spectrum, layout: str = "new",
                          overwrite: bool = False, compresslevel: int = 6) -> str:
    """Write a spectrum as a LAMOST LRS file in the real data model.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; gzip-compressed when it ends in ``.gz`` (as the survey ships them).
    spec : Spectrum
        Arrays and ``meta`` as returned by :func:`read_lamost_spectrum`.
    layout : {"new", "old"}
        ``"new"``: DR8+ COADD table; ``"old"``: DR7 (5, n_pix) primary image.
    overwrite : bool
        Replace an existing file.
    compresslevel : int
        gzip level for ``.gz`` output.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    if layout not in ("new", "old"):
        raise ValueError(f"layout must be 'new' or 'old', not {layout!r}")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(path)
    header = _header_for(spec, layout)
    arrays = [spec.flux, spec.ivar, spec.wavelength, spec.andmask, spec.ormask]
    arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    if layout == "old":
        payload = fits.PrimaryHDU(np.stack(arrays), header=header)
        payload.header["EXTNAME"] = "Flux"
        blob = _hdul_bytes(fits.HDUList([payload]))
    else:
        norm = spec.normalization
        header["NORM"] = 0 if norm is None else 1
        norm = np.full_like(arrays[0], NORMALIZATION_FILL) if norm is None else np.asarray(norm, np.float32)
        primary_hdu = fits.PrimaryHDU(header=header)
        primary_hdu.header.set("EXTEND", True, after="NAXIS")
        primary = _hdul_bytes(fits.HDUList([primary_hdu]))
        blob = primary + _one_row_table_bytes(dict(zip(ARRAY_COLUMNS + ("NORMALIZATION",), arrays + [norm])),
                                              "COADD")
    tmp = f"{path}.part-{os.getpid()}"
    if path.endswith(".gz"):
        with gzip.open(tmp, "wb", compresslevel=compresslevel) as gz:
            gz.write(blob)
    else:
        with open(tmp, "wb") as fh:
            fh.write(blob)
    os.replace(tmp, path)
    return path


def _hdul_bytes(hdul: fits.HDUList) -> bytes:
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def _pad(block: bytes, fill: bytes) -> bytes:
    return block + fill * (-len(block) % 2880)


def _one_row_table_bytes(columns: dict[str, np.ndarray], extname: str) -> bytes:
    """A FITS binary-table extension holding ONE row of float32 array columns.

    Written directly (header cards + big-endian bytes): astropy's generic table writer
    spends ~30 ms converting such a row, which dominates writing a mock release.
    """
    n = {a.shape[0] for a in columns.values()}
    if len(n) != 1:
        raise ValueError("array columns must have equal length")
    n_pix = n.pop()
    header = fits.Header([("XTENSION", "BINTABLE"), ("BITPIX", 8), ("NAXIS", 2),
                          ("NAXIS1", 4 * n_pix * len(columns)), ("NAXIS2", 1), ("PCOUNT", 0),
                          ("GCOUNT", 1), ("TFIELDS", len(columns))])
    for k, name in enumerate(columns, start=1):
        header[f"TTYPE{k}"] = name
        header[f"TFORM{k}"] = f"{n_pix}E"
    header["EXTNAME"] = extname
    data = b"".join(np.asarray(a, dtype=">f4").tobytes() for a in columns.values())
    return _pad(header.tostring().encode("ascii"), b" ") + _pad(data, b"\0")


# ----------------------------------------------------------------------------- catalogue
#: Column names and dtypes of the LRS general catalogue as returned by the reader.
CATALOGUE_DTYPES: dict[str, str] = {
    "obsid": "int64", "designation": "string", "obsdate": "string", "lmjd": "int32",
    "mjd": "int32", "planid": "string", "spid": "int16", "fiberid": "int16",
    "ra_obs": "float64", "dec_obs": "float64", "snru": "float32", "snrg": "float32",
    "snrr": "float32", "snri": "float32", "snrz": "float32", "class": "string",
    "subclass": "string", "z": "float64", "z_err": "float64", "ra": "float64",
    "dec": "float64", "fibermask": "int32",
}


#: What a catalogue row needs at least: the observation, and how to find its file.
CATALOGUE_KEYS = ("obsid",)
#: Columns that name a row's file, either of them: a path, or the parts of LAMOST's file name.
FILE_NAME_COLUMNS = (("file",), ("filename",), ("lmjd", "planid", "spid", "fiberid"))


class PartialCatalogueWarning(UserWarning):
    """A LAMOST catalogue lacks documented columns; they come from each spectrum's header instead."""


def _typed_catalogue(df: pd.DataFrame, path: str) -> pd.DataFrame:
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "obsid" not in df.columns or not any(set(cols) <= set(df.columns) for cols in FILE_NAME_COLUMNS):
        raise SurveyFileError(path, "not a LAMOST LRS catalogue: it needs obsid and a file name per row (a file or "
                              "filename column, or lmjd, planid, spid and fiberid); it has "
                              f"{', '.join(map(str, df.columns[:12])) or 'no columns'}", code="wrong_format")
    missing = [c for c in CATALOGUE_DTYPES if c not in df.columns]
    if missing:
        warnings.warn(f"{path}: LAMOST catalogue lacks column(s) {', '.join(missing)}; ingest reads them from each "
                      "spectrum's header", PartialCatalogueWarning, stacklevel=3)
        for col in missing:  # integers cannot be missing in numpy's types: pandas' nullable ones
            dtype = CATALOGUE_DTYPES[col]
            df[col] = pd.Series(np.nan if dtype.startswith("float") else pd.NA, index=df.index,
                                dtype=dtype if dtype.startswith("float") else "string" if dtype == "string" else "Int64")
    for col, dtype in CATALOGUE_DTYPES.items():
        if col in missing:
            continue
        series = df[col]
        try:
            if dtype == "string":
                df[col] = series.astype("string").str.strip()
            else:
                if series.dtype == object or str(series.dtype).startswith("string"):
                    series = pd.to_numeric(series.astype("string").str.strip(), errors="raise")
                if "int" in dtype and series.isna().any():
                    raise ValueError("missing values in an integer column")
                df[col] = series.astype(dtype)
        except (TypeError, ValueError) as exc:
            raise SurveyFileError(path, f"catalogue column {col!r} is not {dtype} ({exc})",
                                  code="bad_values") from exc
    return df


def read_lamost_catalogue(path: str | os.PathLike) -> pd.DataFrame:
    """Read the LAMOST LRS general catalogue (FITS table or CSV) into pandas.

    Parameters
    ----------
    path : str or os.PathLike
        ``.fits``/``.fits.gz`` (first table HDU) or ``.csv``/``.csv.gz``; the CSV
        delimiter (``,`` or the ``|`` of older releases) is detected from the header line.

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`CATALOGUE_DTYPES` with those dtypes (lower-case names), plus any
        further columns (magnitudes, ...) as read. Only ``obsid`` and a file name per row
        (:data:`FILE_NAME_COLUMNS`) are required: a documented column the file lacks comes back
        missing (NA), with a :class:`PartialCatalogueWarning` naming them all - ingest takes
        those values from each spectrum's header anyway.

    Raises
    ------
    SurveyFileError
        Unreadable file, no ``obsid`` or file name, or a column of the wrong type.
    """
    path = os.fspath(path)
    name = path.lower()
    if name.endswith((".fits", ".fits.gz", ".fit", ".fit.gz")):
        with open_fits(path) as hdul:
            tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
            if not tables:
                raise SurveyFileError(path, "no binary table HDU in the catalogue", code="wrong_format")
            table = Table(tables[0].data)
            for col in table.colnames:  # FITS is big-endian; pandas wants native byte order
                if table[col].dtype.byteorder == ">":
                    table[col] = table[col].astype(table[col].dtype.newbyteorder("="))
            df = table.to_pandas()
        return _typed_catalogue(df, path)
    if name.endswith((".csv", ".csv.gz")):
        if not os.path.exists(path):
            raise SurveyFileError(path, "file does not exist", code="missing")
        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(path, "rt") as fh:
                first = fh.readline()
            sep = "|" if first.count("|") > first.count(",") else ","
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
        except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise SurveyFileError(path, f"unreadable CSV ({type(exc).__name__}: {exc})") from exc
        return _typed_catalogue(df, path)
    raise SurveyFileError(path, "catalogue must be .fits(.gz) or .csv(.gz)", code="wrong_format")


def write_lamost_catalogue(df: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False) -> str:
    """Write an LRS general catalogue as FITS (``.fits``) or CSV (``.csv``), lower-case columns.

    Parameters
    ----------
    df : pandas.DataFrame
        At least the columns of :data:`CATALOGUE_DTYPES`.
    path : str or os.PathLike
        Destination; the format follows the extension.
    overwrite : bool
        Replace an existing file.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(path)
    df = _typed_catalogue(df.copy(), path)
    if path.lower().endswith((".fits", ".fits.gz")):
        table = Table.from_pandas(df.astype({c: object for c, t in CATALOGUE_DTYPES.items()
                                             if t == "string"}))
        table.write(path, format="fits", overwrite=True)
    else:
        df.to_csv(path, index=False)
    return path
