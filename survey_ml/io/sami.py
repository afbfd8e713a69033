"""SAMI DR3 emission-line maps, the GAMA input catalogue and the gas-kinematic position angles.

Data models (see ``DATAMODELS.md``; checked against the real files of galaxy 209807):

* Maps ``{CATID}_{A|B}_{quantity}_{default|adaptive|sectors}_{1-comp|recom-comp}.fits``:
  50 x 50 spaxels of 0.5" (WCS CDELT in degrees, CRPIX 25.5, CRVAL = the galaxy). No mask:
  spaxels without a measurement are NaN in values and errors alike.

  - ``Halpha``: primary float32 (n, 50, 50), plane 0 the total flux and planes 1.. the
    kinematic components (n = 2 for 1-comp, where planes 0 and 1 are identical);
    HDU ``HALPHA_ERR`` of the same shape. BUNIT reads '10**(-16) erg/s/cm**2/angstrom/pixel'
    but the values are integrated line fluxes, 1e-16 erg/s/cm2 per spaxel.
  - ``gas-velocity`` / ``gas-vdisp``: (n, 50, 50) km/s, one plane per kinematic component
    and no total plane (n = 1 for 1-comp, 3 for recom-comp); HDUs ``V_ERR`` / ``VDISP_ERR``.
  - Other lines (``NII6583``, ``Hbeta``, ``OIII5007``, ...): 2-D + ``{LINE}_ERR``.
* ``InputCatGAMADR3`` CSV: an unnamed index column, then catid, ra_obj, dec_obj, z_spec,
  m_r, r_e (arcsec), ellip, pa (deg), mstar (log Msun), g_i, ...
* ``samiDR3gaskinPA`` CSV: one row per cube (a galaxy observed more than once has several:
  cubeidpub ``{catid}_A``, ``_B``, ...), with catid, pa_gaskin, pa_gaskin_err.

Pure functions, no Dask; every unusable file raises :class:`~survey_ml.io.errors.SurveyFileError`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from .errors import SurveyFileError
from ._fits import header_value, open_fits
from .ifu import IFUMaps, good_spaxels, pixel_scale_arcsec, write_fits

__all__ = ["read_sami_maps", "write_sami_maps", "sami_filename", "read_sami_catalogue",
           "write_sami_catalogue", "read_sami_gaskin_pa", "CATALOGUE_DTYPES", "GASKIN_DTYPES"]

#: Map quantity -> EXTNAME of its error HDU.
ERR_EXTENSIONS = {"Halpha": "HALPHA_ERR", "gas-velocity": "V_ERR", "gas-vdisp": "VDISP_ERR"}
BINNINGS = ("default", "adaptive", "sectors")
COMPONENTS = ("1-comp", "recom-comp")
_NAME = re.compile(r"^(?P<catid>\d+)_(?P<cube>[A-Z])_(?P<quantity>[A-Za-z0-9-]+)_"
                   r"(?P<binning>default|adaptive|sectors)_(?P<components>1-comp|recom-comp)\.fits(\.gz)?$")
_LINE_BUNIT = "10**(-16) erg/s/cm**2/angstrom/pixel"  # as in the real files (see module notes)
FLUX_UNIT = "1e-16 erg/s/cm2/spaxel"


def sami_filename(catid: int, quantity: str, cube: str = "A", binning: str = "default",
                  components: str = "1-comp") -> str:
    """File name of a SAMI DR3 map.

    Examples
    --------
    >>> sami_filename(209807, "gas-velocity")
    '209807_A_gas-velocity_default_1-comp.fits'
    """
    if binning not in BINNINGS or components not in COMPONENTS:
        raise ValueError(f"binning must be one of {BINNINGS} and components one of {COMPONENTS}")
    return f"{int(catid)}_{cube}_{quantity}_{binning}_{components}.fits"


def _locate(path_or_folder: Path, catid: int | None, cube: str, binning: str,
            components: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The three map files (quantity -> path) and the name fields they were found by."""
    if path_or_folder.is_dir():
        if catid is None:
            raise ValueError("give catid when reading SAMI maps from a folder")
        folder = path_or_folder
        name = dict(catid=int(catid), cube=cube, binning=binning, components=components)
    else:
        match = _NAME.match(path_or_folder.name)
        if not match:
            if not path_or_folder.exists():
                raise SurveyFileError(path_or_folder, "file does not exist", code="missing")
            raise SurveyFileError(path_or_folder, "not a SAMI map file name "
                                  "({CATID}_{A|B}_{quantity}_{binning}_{components}.fits)",
                                  code="wrong_format")
        folder = path_or_folder.parent
        name = dict(catid=int(match["catid"]), cube=match["cube"], binning=match["binning"],
                    components=match["components"])
    files = {}
    for quantity in ERR_EXTENSIONS:
        plain = folder / sami_filename(quantity=quantity, **name)
        gz = plain.with_name(plain.name + ".gz")
        if not plain.exists() and not gz.exists():
            raise SurveyFileError(plain, f"SAMI {quantity} map not found (needed with the other maps "
                                  f"of {name['catid']} cube {name['cube']})", code="missing")
        files[quantity] = os.fspath(plain if plain.exists() else gz)
    return files, name


def _read_map(path: str, err_name: str) -> tuple[np.ndarray, np.ndarray, fits.Header]:
    """Primary values and the named error HDU, both 3-D and of one shape, native byte order."""
    with open_fits(path) as hdul:
        header = hdul[0].header
        values = hdul[0].data
        if err_name not in hdul:
            raise SurveyFileError(path, f"extension {err_name} is missing", code="wrong_format")
        errors = hdul[err_name].data
        if values is None or values.ndim != 3:
            raise SurveyFileError(path, "primary HDU must be a (n, ny, nx) image, found "
                                  f"{None if values is None else values.shape}", code="wrong_format")
        if errors is None or errors.shape != values.shape:
            raise SurveyFileError(path, f"{err_name} has shape {None if errors is None else errors.shape} "
                                  f"but the primary HDU {values.shape}", code="wrong_format")
        values = np.asarray(values, dtype=np.float32)
        errors = np.asarray(errors, dtype=np.float32)
    return values, errors, header


def read_sami_maps(path_or_folder: str | os.PathLike, catid: int | None = None, cube: str = "A",
                   binning: str = "default", components: str = "1-comp") -> IFUMaps:
    """Read the H-alpha flux and gas kinematics of one SAMI DR3 galaxy.

    Parameters
    ----------
    path_or_folder : str or os.PathLike
        A folder holding the maps (then give ``catid``), or one of the map files (usually
        ``..._Halpha_...``): the other two are found beside it, and catid, cube, binning
        and components are taken from its name, overriding the arguments.
    catid : int, optional
        GAMA CATID, when a folder is given.
    cube : str
        "A", "B", ... for repeat observations.
    binning : {"default", "adaptive", "sectors"}
    components : {"1-comp", "recom-comp"}

    Returns
    -------
    IFUMaps
        float32 maps exactly as stored: ``flux``/``flux_err`` the total H-alpha (plane 0 of
        the Halpha file and of HALPHA_ERR); ``velocity``/``dispersion`` and their errors
        plane 0 of gas-velocity/V_ERR and gas-vdisp/VDISP_ERR, i.e. kinematic component 1
        (the only one in 1-comp files; the narrowest of up to 3 in recom-comp files, which
        have no total plane). ``good``: all six values finite and errors > 0.
        ``pixel_scale`` from CDELT (0.5"). ``meta``: survey="sami", id and catid (int),
        cube, binning, components, ra/dec (CRVAL1/2, the map centre), z (header Z if
        present, else NaN: take z_spec from the catalogue), file (the Halpha file), files
        (quantity -> path), flux_unit (1e-16 erg/s/cm2/spaxel - ten times MaNGA's unit),
        bunit (the BUNIT as written), n_components.

    Raises
    ------
    SurveyFileError
        A missing map file, an unreadable one, a missing error HDU, or shapes that disagree.
    """
    files, name = _locate(Path(path_or_folder), catid, cube, binning, components)
    planes = {}
    for quantity, err_name in ERR_EXTENSIONS.items():
        values, errors, header = _read_map(files[quantity], err_name)
        planes[quantity] = (values, errors, header)
    halpha = planes["Halpha"][0]
    if halpha.shape[0] < 2:
        raise SurveyFileError(files["Halpha"], f"Halpha must hold the total and >= 1 component "
                              f"(n >= 2 planes), found shape {halpha.shape}", code="wrong_format")
    for quantity in ("gas-velocity", "gas-vdisp"):
        shape = planes[quantity][0].shape
        if shape[1:] != halpha.shape[1:]:
            raise SurveyFileError(files[quantity], f"maps are {shape[1:]} but the Halpha map "
                                  f"{halpha.shape[1:]}", code="wrong_format")
    header = planes["Halpha"][2]
    path = files["Halpha"]
    flux, flux_err = planes["Halpha"][0][0], planes["Halpha"][1][0]
    velocity, velocity_err = planes["gas-velocity"][0][0], planes["gas-velocity"][1][0]
    dispersion, dispersion_err = planes["gas-vdisp"][0][0], planes["gas-vdisp"][1][0]
    meta = dict(
        survey="sami", id=name["catid"], **name,
        ra=header_value(header, "CRVAL1", path, float, required=False, default=np.nan),
        dec=header_value(header, "CRVAL2", path, float, required=False, default=np.nan),
        z=header_value(header, "Z", path, float, required=False, default=np.nan),
        file=path, files=files, flux_unit=FLUX_UNIT,
        bunit=header_value(header, "BUNIT", path, str, required=False, default=""),
        n_components=int(planes["gas-velocity"][0].shape[0]),
    )
    good = good_spaxels((flux, velocity, dispersion), (flux_err, velocity_err, dispersion_err))
    return IFUMaps(flux=flux, flux_err=flux_err, velocity=velocity, velocity_err=velocity_err,
                   dispersion=dispersion, dispersion_err=dispersion_err, good=good,
                   pixel_scale=pixel_scale_arcsec(header), meta=meta, path=path)


def _wcs_header(ny: int, nx: int, ra: float, dec: float, scale: float, bunit: str) -> fits.Header:
    """The WCS block of the real SAMI maps (CDELT in degrees, reference pixel at the centre)."""
    header = fits.Header()
    for key, value in (("CRPIX1", (nx + 1) / 2), ("CRPIX2", (ny + 1) / 2),
                       # degrees to 15 decimals, as the real files write 0.5" (0.000138888888889)
                       ("CDELT1", -round(scale / 3600.0, 15)), ("CDELT2", round(scale / 3600.0, 15)),
                       ("CRVAL1", float(ra)), ("CRVAL2", float(dec)),
                       ("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"),
                       ("CUNIT1", "deg"), ("CUNIT2", "deg"), ("BUNIT", bunit)):
        header[key] = value
    return header


def write_sami_maps(folder: str | os.PathLike, catid: int, maps: IFUMaps, cube: str = "A",
                    lines: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                    overwrite: bool = False) -> list[Path]:
    """Write ``maps`` as SAMI DR3 default 1-comp map files in ``folder``.

    Files: ``{catid}_{cube}_Halpha_default_1-comp.fits`` (primary (2, ny, nx): total and
    component 1, both ``maps.flux``; HALPHA_ERR likewise), ``..._gas-velocity_...`` (1, ny,
    nx) + V_ERR and ``..._gas-vdisp_...`` + VDISP_ERR, with the real files' WCS (CRVAL from
    ``meta["ra"]``/``["dec"]``, CDELT from ``pixel_scale``), BUNIT and HISTORY cards; a
    finite ``meta["z"]`` is added as keyword Z (the real files have none). SAMI files have no
    mask, so spaxels not ``good`` are written as NaN in every value and error map - reading
    back gives ``maps`` again when it follows that convention, as maps read from SAMI do.

    Parameters
    ----------
    folder : str or os.PathLike
        Output folder (created if needed).
    catid : int
        GAMA CATID, used in the file names.
    maps : IFUMaps
        ``meta`` needs ra and dec.
    cube : str
        "A", "B", ...
    lines : mapping, optional
        Further 2-D line maps, name -> (flux, error), e.g. ``{"NII6583": (f, e)}``, written
        as ``{catid}_{cube}_{name}_default_1-comp.fits`` with HDU ``{NAME}_ERR``.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    list of pathlib.Path
        The files written, Halpha, gas-velocity, gas-vdisp, then ``lines`` in order.
    """
    ra, dec = maps.meta.get("ra"), maps.meta.get("dec")
    if ra is None or dec is None or not (np.isfinite(ra) and np.isfinite(dec)):
        raise ValueError("maps.meta needs finite ra and dec to write SAMI maps")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = np.asarray(maps.good, dtype=bool)
    ny, nx = good.shape

    def masked(arr: np.ndarray) -> np.ndarray:
        return np.where(good, np.asarray(arr, dtype=np.float32), np.float32(np.nan)).astype(np.float32)

    z = maps.meta.get("z")
    history = ("Halpha has 2 components", "These represent the total (0) and 1 velocity components")
    layout = {"Halpha": (maps.flux, maps.flux_err, 2, _LINE_BUNIT, history),
              "gas-velocity": (maps.velocity, maps.velocity_err, 1, "km/s", ()),
              "gas-vdisp": (maps.dispersion, maps.dispersion_err, 1, "km/s", ())}
    written = []
    for quantity, (value, err, n_planes, bunit, hist) in layout.items():
        header = _wcs_header(ny, nx, ra, dec, float(maps.pixel_scale), bunit)
        if z is not None and np.isfinite(z):
            header["Z"] = float(z)
        for line in hist:
            header.add_history(line)
        value_cube = np.repeat(masked(value)[None], n_planes, axis=0)
        err_cube = np.repeat(masked(err)[None], n_planes, axis=0)
        primary = fits.PrimaryHDU(value_cube, header=header)
        err_hdu = fits.ImageHDU(err_cube, header=header.copy(), name=ERR_EXTENSIONS[quantity])
        written.append(write_fits(folder / sami_filename(catid, quantity, cube),
                                  fits.HDUList([primary, err_hdu]), overwrite=overwrite))
    for line, (value, err) in (lines or {}).items():
        header = _wcs_header(ny, nx, ra, dec, float(maps.pixel_scale), _LINE_BUNIT)
        primary = fits.PrimaryHDU(masked(value), header=header)
        err_hdu = fits.ImageHDU(masked(err), header=header.copy(), name=f"{line.upper()}_ERR")
        written.append(write_fits(folder / sami_filename(catid, line, cube),
                                  fits.HDUList([primary, err_hdu]), overwrite=overwrite))
    return written


# ----------------------------------------------------------------------------- catalogues
#: Columns of the SAMI GAMA input catalogue the reader requires, and their dtypes.
CATALOGUE_DTYPES: dict[str, str] = {
    "catid": "int64", "ra_obj": "float64", "dec_obj": "float64", "z_spec": "float64",
    "m_r": "float64", "r_e": "float64", "ellip": "float64", "pa": "float64", "mstar": "float64",
    "g_i": "float64",
}
#: Columns of the gas-kinematic PA table the reader requires.
GASKIN_DTYPES: dict[str, str] = {"catid": "int64", "pa_gaskin": "float64", "pa_gaskin_err": "float64"}


def _read_csv(path: str | os.PathLike, dtypes: Mapping[str, str], what: str) -> pd.DataFrame:
    """A CSV with lower-cased columns, the unnamed index column dropped, required columns typed."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SurveyFileError(path, "file does not exist", code="missing")
    try:
        df = pd.read_csv(path)
    except (OSError, EOFError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise SurveyFileError(path, f"unreadable CSV ({type(exc).__name__}: {exc})") from exc
    df = df.loc[:, [not (str(c).startswith("Unnamed:") or str(c).strip() == "") for c in df.columns]]
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in dtypes if c not in df.columns]
    if missing:
        raise SurveyFileError(path, f"not a {what}: column(s) {', '.join(missing)} missing",
                              code="wrong_format")
    for col, dtype in dtypes.items():
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(dtype)
        except (TypeError, ValueError) as exc:
            raise SurveyFileError(path, f"{what} column {col!r} is not {dtype} ({exc})",
                                  code="bad_values") from exc
    return df.reset_index(drop=True)


def read_sami_catalogue(path: str | os.PathLike) -> pd.DataFrame:
    """Read the SAMI DR3 GAMA input catalogue (``InputCatGAMADR3`` CSV).

    Returns
    -------
    pandas.DataFrame
        All columns under lower-case names (the leading unnamed index column dropped), the
        columns of :data:`CATALOGUE_DTYPES` with those dtypes: catid, ra_obj, dec_obj (deg),
        z_spec, m_r, r_e (arcsec), ellip, pa (deg), mstar (log Msun), g_i; missing values NaN.

    Raises
    ------
    SurveyFileError
        A missing or unreadable file, or a required column missing or not numeric.
    """
    return _read_csv(path, CATALOGUE_DTYPES, "SAMI input catalogue")


def write_sami_catalogue(path: str | os.PathLike, table: pd.DataFrame, overwrite: bool = False) -> Path:
    """Write ``table`` as a SAMI input-catalogue CSV in the real layout.

    An unnamed 0..n-1 index column first, lower-case column names, NaN written as ``nan``.

    Raises
    ------
    ValueError
        When a column of :data:`CATALOGUE_DTYPES` is missing.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    df = table.rename(columns=lambda c: str(c).lower()).reset_index(drop=True)
    missing = [c for c in CATALOGUE_DTYPES if c not in df.columns]
    if missing:
        raise ValueError(f"table lacks SAMI catalogue column(s) {', '.join(missing)}")
    tmp = path.with_name(f"{path.name}.part-{os.getpid()}")
    df.to_csv(tmp, index=True, na_rep="nan")
    os.replace(tmp, path)
    return path


def read_sami_gaskin_pa(path: str | os.PathLike) -> pd.DataFrame:
    """Read the SAMI DR3 gas-kinematic position angles (``samiDR3gaskinPA`` CSV).

    Returns
    -------
    pandas.DataFrame
        One row per cube - a galaxy observed more than once has several rows (cubeidpub
        ``{catid}_A``, ``_B``, ...) - with catid (int64), pa_gaskin and pa_gaskin_err (deg,
        float64; NaN where not measured), and the cubeid, cubeidpub and cubename columns as read.

    Raises
    ------
    SurveyFileError
        A missing or unreadable file, or a required column missing or not numeric.
    """
    return _read_csv(path, GASKIN_DTYPES, "SAMI gas-kinematic PA table")
