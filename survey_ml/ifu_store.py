"""The on-disk layout of an ingested IFU release (SAMI, MaNGA), and ``ingest_ifu()`` that builds it.

An IFU release store is one directory::

    <store>/
        release.json           kind="ifu", release name, survey, map_size, chunk_rows, version;
                               with cubes also "cubes" (grid, planes, wave_chunk) and "moments"
        <release>.zarr/        Zarr v3 group
            maps/flux          (n_rows, map_size, map_size) float32   H-alpha flux, NaN padded
            maps/flux_err      ... float32   1-sigma errors (inf where the survey gives ivar = 0)
            maps/velocity      ... float32   gas line-of-sight velocity, km/s
            maps/velocity_err
            maps/dispersion    ... float32   gas dispersion, km/s (SAMI: LSF removed; MaNGA: not,
            maps/dispersion_err              see the ``instsigma`` column)
            maps/good          (n_rows, map_size, map_size) bool
            cubes/flux         (n_rows, n_wave, map_size, map_size) float32  LOGCUBE FLUX, 1e-17 erg/s/cm2/A/spaxel
            cubes/ivar         ... float32   LOGCUBE IVAR
            cubes/mask         ... int32     LOGCUBE MASK (MANGA_DRP3PIXMASK, bit 10 DONOTUSE)
            cubes/wave         (n_wave,) float64   the common LOGCUBE grid, vacuum A
        galaxies.parquet       one row per input galaxy file, joined to the arrays by ``row``

Each galaxy's maps sit centred in the ``map_size`` square: its own (ny, nx) spaxels start at
``((map_size - ny) // 2, (map_size - nx) // 2)`` and everything around them is NaN / False.
Arrays are chunked by whole galaxies (``chunk_rows`` per chunk); one ingest task reads one
block of files and writes exactly one Zarr chunk of rows, so no two tasks ever write the same
chunk. ``galaxies.parquet`` is the commit record, replaced atomically after the arrays are
written: a row exists only once it is listed there, so ingest is idempotent and an
interrupted one is simply run again (files already listed are skipped, rows written but never
committed are overwritten).

Cubes: ``cubes/*`` exist only in a release that has met a MaNGA DRP LOGCUBE. A LOGCUBE row
(``format == "manga_logcube"``) keeps its FLUX, IVAR and MASK exactly as in the file, on the
spaxels of its maps (same centring); padding and the rows of MAPS files are FLUX = IVAR = 0,
MASK = NOCOV | DONOTUSE, as a LOGCUBE marks spaxels outside its bundle. The cube arrays are 4-D
rather than (n_rows, n_wave, n_spaxels): MaNGA bundles are 32-74 spaxels square, so either
form pads to the largest, and this one shares the maps' spaxel indexing. Chunks are
``(chunk_rows, wave_chunk, map_size, map_size)``: whole galaxies, all spaxels, ``wave_chunk``
(default 256) planes, so H-alpha's window and side bands (~74 planes at any z) touch at most
two wavelength chunks. The default keeps all 4563 planes of the MaNGA grid (3622-10354 A);
``cube_window`` keeps an observed-frame range instead (:func:`~survey_ml.moments.halpha_window`
gives the one the maps need for a z range). Every LOGCUBE must be on the grid
(:data:`MANGA_LOGCUBE_GRID`): another grid is an ``off_grid`` row naming the file. A full
74 x 74 cube is 300 MB (4563 x 74**2 x 12 bytes) and an ingest task holds its block's cubes,
so a new store with LOGCUBEs defaults to the ``chunk_rows`` whose padded cubes fit
:data:`CUBE_BLOCK_BYTES` (3 galaxies of 1 GiB in all, at full size).

Inputs: SAMI DR3 ``{catid}_{cube}_Halpha_{binning}_{components}.fits`` (the gas-velocity and
gas-vdisp maps are read beside it) and MaNGA DAP ``manga-*-MAPS-*.fits(.gz)`` go straight to
``maps/*``. MaNGA DRP ``manga-*-LOGCUBE.fits(.gz)`` go to ``cubes/*``; then, as a separate Dask
step with one task per row chunk that reads only the wavelength chunks around each galaxy's
H-alpha, :func:`~survey_ml.moments.moment_maps_from_cube` turns the stored planes into
``maps/*`` (:func:`moment_maps_from_store` re-runs it with other settings, kept in
release.json ``moments``), so a LOGCUBE-only release reads like any other. The survey
catalogue (SAMI input catalogue CSV, MaNGA DRPall) is joined by catid / plateifu; a galaxy
missing from it gets NaN, not an error.
"""
from __future__ import annotations

import io
import json
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
import zarr.codecs

from . import __version__
from .cluster import current_client, run_blocks
from .errors import SurveyFileError
from .io._fits import header_value, open_fits
from .io.ifu import C_KMS, IFUCube, IFUMaps, pixel_scale_arcsec
from .io.manga import DRP_DONOTUSE, log_mstar_h70, read_drpall, read_manga_maps
from .io.sami import read_sami_catalogue, read_sami_maps
from .moments import (HALPHA_VACUUM, MANGA_MAP_FLUX_UNIT, MOMENT_DEFAULTS, halpha_planes, halpha_window,
                      moment_maps_from_cube)
from .store import _INT_MISSING, IngestReport, _atomic_write_bytes, _blocks, _typed_frame, discover_files, read_release_info
from .wavelength import LogLinearGrid

__all__ = ["ingest_ifu", "open_ifu_release", "IFURelease", "moment_maps_from_cube", "moment_maps_from_store",
           "discover_ifu_files", "MAP_ARRAYS", "MAP_VALUES", "PREPARE_INPUTS", "GALAXY_COLUMNS", "MAP_SIZES",
           "HALPHA_VACUUM", "CUBE_ARRAYS", "MANGA_LOGCUBE_GRID"]

#: Default side of the stored maps (spaxels): SAMI maps are 50 x 50, MaNGA's largest bundle 74 x 74.
MAP_SIZES = {"sami": 50, "manga": 74}
#: Stored map arrays and their dtypes; the float maps are NaN outside a galaxy's own spaxels.
MAP_ARRAYS = {"flux": "float32", "flux_err": "float32", "velocity": "float32", "velocity_err": "float32",
              "dispersion": "float32", "dispersion_err": "float32", "good": "bool"}
MAP_VALUES = tuple(name for name in MAP_ARRAYS if name != "good")
#: The arrays :func:`survey_ml.preprocess.maps.prepare_galaxies` takes (with ``pixel_scale``):
#: ``prepare_galaxies(release.read_block(a, b, PREPARE_INPUTS))``.
PREPARE_INPUTS = ("flux", "flux_err", "velocity", "velocity_err", "good")
#: Flux unit of the stored ``flux`` maps, as each survey publishes it (not rescaled).
FLUX_UNITS = {"sami": "1e-16 erg/s/cm2/spaxel", "manga": MANGA_MAP_FLUX_UNIT}

#: Stored LOGCUBE arrays and their dtypes: the file's own (MASK is 32-bit in the DRP files).
CUBE_ARRAYS = {"flux": "float32", "ivar": "float32", "mask": "int32"}
#: MANGA_DRP3PIXMASK bit 0: no coverage in the cube.
DRP_NOCOV = 1
#: Cube values outside a galaxy's spaxels and in rows without a cube: what a LOGCUBE holds outside its bundle.
CUBE_FILL = {"flux": 0.0, "ivar": 0.0, "mask": DRP_NOCOV | DRP_DONOTUSE}
#: The MaNGA DRP LOGCUBE grid every stored cube must be on: 4563 pixels, log10 step 1e-4, 3621.6-10353.8 A.
MANGA_LOGCUBE_GRID = LogLinearGrid(coeff0=3.5589, coeff1=1e-4, n_pix=4563)
#: Default wavelength planes per cube chunk.
WAVE_CHUNK = 256
#: Cube bytes one ingest task may hold when ``chunk_rows`` is left to its default (1 GiB).
CUBE_BLOCK_BYTES = 1 << 30
#: Flux unit of the stored cubes (MaNGA LOGCUBE BUNIT).
CUBE_FLUX_UNIT = "1E-17 erg/s/cm^2/Ang/spaxel"

#: Columns of galaxies.parquet, with dtypes. Catalogue quantities are in h = 0.7 units.
#: ``format`` is "sami_maps", "manga_maps" or "manga_logcube" (then the row's planes are in ``cubes/*``).
GALAXY_COLUMNS: dict[str, str] = {
    "row": "int64", "id": "string", "catid": "int64", "plateifu": "string", "mangaid": "string",
    "ra": "float64", "dec": "float64", "z": "float64", "log_mstar": "float64", "r_e_arcsec": "float64",
    "ellip": "float64", "pa_phot": "float64", "abs_mag_r": "float64", "ny": "int32", "nx": "int32",
    "pixel_scale": "float64", "n_good": "int32", "instsigma": "float64", "format": "string",
    "file": "string", "file_bytes": "int64", "status": "string", "message": "string",
}
#: Catalogue columns joined onto the rows (the catalogue wins over a file's own value).
CATALOGUE_FIELDS = ("ra", "dec", "z", "log_mstar", "r_e_arcsec", "ellip", "pa_phot", "abs_mag_r")
_SAMI_NAME = re.compile(r"^(?P<catid>\d+)_(?P<cube>[A-Z])_(?P<quantity>[A-Za-z0-9-]+)_"
                        r"(?P<binning>default|adaptive|sectors)_(?P<components>1-comp|recom-comp)\.fits(\.gz)?$")
_MANGA_NAME = re.compile(r"^manga-(?P<plate>\d+)-(?P<ifu>\d+)-(?P<kind>MAPS|LOGCUBE)(-[A-Za-z0-9-]+)?\.fits(\.gz)?$")
#: SAMI DR3 map products in order of preference when a folder holds several of one cube.
_SAMI_PREFERENCE = [(b, c) for c in ("1-comp", "recom-comp") for b in ("default", "adaptive", "sectors")]
_FITS_SUFFIXES = (".fits", ".fits.gz")


# --------------------------------------------------------------------------- LOGCUBE planes
def _cube_planes(grid: LogLinearGrid, cube_window: tuple[float, float] | None) -> tuple[int, int]:
    """Pixels ``[i0, i1)`` of ``grid`` a store keeps: those inside ``cube_window`` (A), or all.

    Examples
    --------
    >>> _cube_planes(MANGA_LOGCUBE_GRID, None)
    (0, 4563)
    >>> _cube_planes(MANGA_LOGCUBE_GRID, (6500.0, 7600.0))
    (2541, 3220)
    """
    if cube_window is None:
        return 0, grid.n_pix
    lo, hi = (float(w) for w in cube_window)
    wave = grid.wavelength()
    i0, i1 = int(np.searchsorted(wave, lo, side="left")), int(np.searchsorted(wave, hi, side="right"))
    if i1 - i0 < 2:
        raise ValueError(f"cube_window {lo:g}-{hi:g} A keeps {max(i1 - i0, 0)} of the LOGCUBE grid's "
                         f"pixels ({wave[0]:.1f}-{wave[-1]:.1f} A); give an observed-frame range inside it")
    return i0, i1


def _cube_chunk_rows(n_planes: int, map_size: int) -> int:
    """Default galaxies per chunk of a store holding cubes: one ingest task's cube block within
    :data:`CUBE_BLOCK_BYTES` (at most 64, the maps-only default).

    Examples
    --------
    >>> _cube_chunk_rows(4563, 74), _cube_chunk_rows(700, 74), _cube_chunk_rows(4563, 24)
    (3, 23, 34)
    """
    per_galaxy = n_planes * map_size * map_size * sum(np.dtype(t).itemsize for t in CUBE_ARRAYS.values())
    return int(min(64, max(1, CUBE_BLOCK_BYTES // per_galaxy)))


def _logcube_extensions(hdul, path: str) -> tuple[dict[str, Any], np.ndarray]:
    """FLUX, IVAR and MASK HDUs of an open LOGCUBE, checked against each other, and its WAVE."""
    hdus = {}
    for extname in ("FLUX", "IVAR", "MASK", "WAVE"):
        if extname not in hdul or hdul[extname].header.get("NAXIS", 0) == 0:
            raise SurveyFileError(path, f"extension {extname} is missing or empty", code="wrong_format")
        hdus[extname] = hdul[extname]
    shape = hdus["FLUX"].shape
    if len(shape) != 3:
        raise SurveyFileError(path, f"FLUX must be (nwave, ny, nx), found shape {shape}", code="wrong_format")
    for extname in ("IVAR", "MASK"):
        if hdus[extname].shape != shape:
            raise SurveyFileError(path, f"{extname} has shape {hdus[extname].shape} but FLUX {shape}",
                                  code="wrong_format")
    if int(hdus["MASK"].header.get("BITPIX", 0)) < 0:
        raise SurveyFileError(path, "MASK must hold integer bitmasks", code="wrong_format")
    wave = np.asarray(hdus.pop("WAVE").data, dtype=np.float64).ravel()
    if wave.shape[0] != shape[0]:
        raise SurveyFileError(path, f"WAVE has {wave.shape[0]} values but FLUX {shape[0]} wavelengths",
                              code="wrong_format")
    return hdus, wave


def _check_grid(path: str, wave: np.ndarray, grid: LogLinearGrid) -> None:
    """``off_grid`` unless ``wave`` is ``grid`` to 1% of a pixel (in log wavelength)."""
    ref = grid.wavelength()
    with np.errstate(divide="ignore", invalid="ignore"):
        on_grid = wave.shape == ref.shape and bool(np.all(np.abs(np.log10(wave) - np.log10(ref)) <= 0.01 * grid.coeff1))
    if not on_grid:
        raise SurveyFileError(path, f"WAVE is not the release's LOGCUBE grid ({grid.n_pix} pixels, "
                              f"{ref[0]:.2f}-{ref[-1]:.2f} A, log10 step {grid.coeff1:g}): it has "
                              f"{wave.size} pixels, {wave[0]:.2f}-{wave[-1]:.2f} A", code="off_grid")


def _read_logcube(path: str, z_hint: float, layout: Mapping[str, Any]) -> tuple[IFUCube, dict[str, Any]]:
    """The stored planes of a MaNGA LOGCUBE (FLUX, IVAR, MASK as in the file) and its table fields.

    The file's WAVE must be the store's LOGCUBE grid (``off_grid`` otherwise); only the
    planes ``layout["planes"]`` are sliced out (``section``). ``z`` is ``z_hint`` when finite,
    else the primary header's Z or NSA_Z, else NaN (the caller flags the row); ``instsigma``
    (km/s) is SPECRES at H-alpha's observed wavelength.
    """
    grid = LogLinearGrid(**layout["grid"])
    planes = slice(*layout["planes"])
    with open_fits(path) as hdul:
        primary = hdul[0].header
        plateifu = header_value(primary, "PLATEIFU", path, str)
        fields: dict[str, Any] = {
            "id": plateifu, "plateifu": plateifu,
            "mangaid": header_value(primary, "MANGAID", path, str, required=False, default="") or None,
            "ra": header_value(primary, "OBJRA", path, float), "dec": header_value(primary, "OBJDEC", path, float)}
        z = float(z_hint) if z_hint is not None and np.isfinite(z_hint) else np.nan
        for key in ("Z", "NSA_Z"):
            if not np.isfinite(z):
                z = header_value(primary, key, path, float, required=False, default=np.nan)
        fields["z"] = z if np.isfinite(z) and z > -0.01 else np.nan
        hdus, wave = _logcube_extensions(hdul, path)
        _check_grid(path, wave, grid)
        ny, nx = hdus["FLUX"].shape[1:]
        fields.update(ny=ny, nx=nx, pixel_scale=pixel_scale_arcsec(hdus["FLUX"].header), instsigma=np.nan)
        flux = np.asarray(hdus["FLUX"].section[planes], dtype=np.float32)
        ivar = np.asarray(hdus["IVAR"].section[planes], dtype=np.float32)
        mask = np.asarray(hdus["MASK"].section[planes]).astype(np.int32)
        if np.isfinite(fields["z"]) and "SPECRES" in hdul and hdul["SPECRES"].data is not None:
            specres = np.asarray(hdul["SPECRES"].data, dtype=np.float64).ravel()
            if specres.shape == wave.shape:
                resolution = float(np.interp(HALPHA_VACUUM * (1.0 + fields["z"]), wave, specres))
                if np.isfinite(resolution) and resolution > 0:   # FWHM resolution -> sigma in km/s
                    fields["instsigma"] = C_KMS / (2.0 * np.sqrt(2.0 * np.log(2.0)) * resolution)
        unit = str(hdus["FLUX"].header.get("BUNIT", layout.get("flux_unit", ""))).strip()
    cube = IFUCube(flux=flux, ivar=ivar, mask=mask, wave=grid.wavelength()[planes], pixel_scale=fields["pixel_scale"],
                   meta={"survey": "manga", "file": path, "flux_unit": unit, **fields}, path=path)
    return cube, fields


# --------------------------------------------------------------------------- inputs
def _sami_key(name: str) -> tuple | None:
    match = _SAMI_NAME.match(name)
    return None if match is None else (match["catid"], match["cube"])


def discover_ifu_files(source: str | os.PathLike | Iterable[str | os.PathLike], survey: str) -> list[str]:
    """Resolve an ingest source to the sorted list of absolute per-galaxy files.

    Parameters
    ----------
    source : path or iterable of paths
        A folder, searched recursively: SAMI ``*_Halpha_*.fits(.gz)`` (one per galaxy cube;
        of several binnings/components of one cube, default 1-comp is preferred), MaNGA
        ``manga-*-MAPS-*.fits(.gz)`` and ``manga-*-LOGCUBE.fits(.gz)`` (a LOGCUBE is skipped
        when a MAPS file of the same plate-ifu is found). Or a file list (``.txt``/``.lst``)
        or an iterable of paths, taken as given - except SAMI companion maps (gas-velocity,
        gas-vdisp, other lines), dropped since they are read with their Halpha file.
    survey : {"sami", "manga"}

    Returns
    -------
    list of str
        Unique absolute paths, sorted; paths that do not exist are kept (ingest flags them).
    """
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        found = [p for p in Path(source).rglob("*") if p.name.lower().endswith(_FITS_SUFFIXES) and p.is_file()]
        if survey == "sami":
            best: dict[tuple, tuple[int, Path]] = {}
            for p in found:
                match = _SAMI_NAME.match(p.name)
                if "_Halpha_" not in p.name:
                    continue
                key = (str(p.parent), p.name) if match is None else (str(p.parent), match["catid"], match["cube"])
                rank = 0 if match is None else _SAMI_PREFERENCE.index((match["binning"], match["components"]))
                if key not in best or rank < best[key][0]:
                    best[key] = (rank, p)
            files = [p for _, p in best.values()]
        else:
            named = [(p, _MANGA_NAME.match(p.name)) for p in found]
            with_maps = {(m["plate"], m["ifu"]) for _, m in named if m and m["kind"] == "MAPS"}
            files = [p for p, m in named if m and (m["kind"] == "MAPS" or (m["plate"], m["ifu"]) not in with_maps)]
        return sorted({os.path.abspath(p) for p in files})
    files = discover_files(source)
    if survey == "sami":
        files = [f for f in files
                 if not ((m := _SAMI_NAME.match(Path(f).name)) and m["quantity"] != "Halpha")]
    return files


def _id_from_name(path: str, survey: str) -> str | None:
    """The galaxy id a file name gives (for rows of files that cannot be read).

    Examples
    --------
    >>> _id_from_name("/d/209807_A_Halpha_default_1-comp.fits", "sami")
    '209807'
    >>> _id_from_name("manga-8485-1901-LOGCUBE.fits.gz", "manga"), _id_from_name("x.fits", "manga")
    ('8485-1901', None)
    """
    name = Path(path).name
    if survey == "sami":
        match = _SAMI_NAME.match(name)
        return match["catid"] if match else None
    match = _MANGA_NAME.match(name)
    return f"{match['plate']}-{match['ifu']}" if match else None


def _catalogue_table(catalogue, survey: str) -> pd.DataFrame:
    """The survey catalogue as one row per id (string index) with :data:`CATALOGUE_FIELDS` (+ mangaid)."""
    if isinstance(catalogue, pd.DataFrame):
        cat = catalogue.rename(columns=lambda c: str(c).lower())
    elif survey == "sami":
        cat = read_sami_catalogue(catalogue)
    else:
        cat = read_drpall(catalogue)
    if survey == "sami":
        out = pd.DataFrame({"id": cat["catid"].astype("int64").astype(str), "ra": cat["ra_obj"],
                            "dec": cat["dec_obj"], "z": cat["z_spec"], "log_mstar": cat["mstar"],
                            "r_e_arcsec": cat["r_e"], "ellip": cat["ellip"], "pa_phot": cat["pa"],
                            "abs_mag_r": cat["m_r"]})
    else:
        def positive(col: str) -> np.ndarray:
            values = pd.to_numeric(cat[col], errors="coerce").to_numpy(np.float64) if col in cat else np.nan
            return np.where(np.asarray(values) > 0, values, np.nan) * np.ones(len(cat))

        z = positive("z")
        z = np.where(np.isfinite(z), z, positive("nsa_z"))
        if "nsa_elpetro_absmag_r" in cat:
            absmag = pd.to_numeric(cat["nsa_elpetro_absmag_r"], errors="coerce").to_numpy(np.float64)
        else:
            absmag = np.full(len(cat), np.nan)
        # NSA magnitudes are M - 5 log10 h (h = 1); to h = 0.7 like the masses. -9999 = no fit.
        absmag = np.where((absmag > -50) & (absmag < 0), absmag + 5 * np.log10(0.7), np.nan)
        ba = positive("nsa_elpetro_ba")
        phi = pd.to_numeric(cat["nsa_elpetro_phi"], errors="coerce").to_numpy(np.float64)
        out = pd.DataFrame({"id": cat["plateifu"].astype(str).str.strip(),
                            "mangaid": cat["mangaid"].astype(str).str.strip() if "mangaid" in cat else None,
                            "ra": pd.to_numeric(cat["objra"], errors="coerce"),
                            "dec": pd.to_numeric(cat["objdec"], errors="coerce"), "z": z,
                            "log_mstar": log_mstar_h70(cat["nsa_elpetro_mass"].to_numpy(np.float64)),
                            "r_e_arcsec": positive("nsa_elpetro_th50_r"), "ellip": 1.0 - ba,
                            "pa_phot": np.where(phi >= -360, phi, np.nan), "abs_mag_r": absmag})
    return out.drop_duplicates("id", keep="first").set_index("id")


# --------------------------------------------------------------------------- one block
def _record(path: str, row: int, survey: str) -> dict[str, Any]:
    record: dict[str, Any] = {c: None for c in GALAXY_COLUMNS}
    record.update(row=row, file=path, id=_id_from_name(path, survey), ny=0, nx=0, n_good=0,
                  file_bytes=os.path.getsize(path) if os.path.exists(path) else _INT_MISSING)
    return record


def _is_logcube(path: str) -> bool:
    match = _MANGA_NAME.match(Path(path).name)
    return bool(match) and match["kind"] == "LOGCUBE"


def _read_galaxy(path: str, survey: str) -> tuple[IFUMaps, str]:
    """One galaxy's maps from its map file, and the format it was read as."""
    if survey == "sami":
        return read_sami_maps(path), "sami_maps"
    return read_manga_maps(path), "manga_maps"


def _fields_from(maps: IFUMaps, fmt: str) -> dict[str, Any]:
    meta = maps.meta
    ny, nx = maps.shape
    fields = {"id": str(meta["id"]), "ra": meta.get("ra"), "dec": meta.get("dec"), "z": meta.get("z"),
              "ny": ny, "nx": nx, "pixel_scale": float(maps.pixel_scale), "format": fmt,
              "instsigma": meta.get("instsigma", np.nan)}
    if meta.get("survey") == "sami":
        fields["catid"] = int(meta["catid"])
    else:
        fields.update(plateifu=meta.get("plateifu"), mangaid=meta.get("mangaid") or None,
                      # the MAPS header's NSA photometry, until the catalogue overrides it
                      r_e_arcsec=meta.get("reff"), ellip=meta.get("ecooell"), pa_phot=meta.get("ecoopa"))
    return fields


def _check_size(path: str, what: str, ny: int, nx: int, size: int) -> tuple[int, int]:
    """Where (ny, nx) spaxels start in the ``size`` square; ``too_large`` when they do not fit."""
    if ny > size or nx > size:
        raise SurveyFileError(path, f"{what} {ny} x {nx} spaxels, larger than the store's {size} x {size} "
                              "(map_size)", code="too_large")
    return (size - ny) // 2, (size - nx) // 2


def _write_cube_block(zarr_path: str, first_row: int, n: int, size: int, cubes: Sequence[tuple[int, IFUCube]]
                      ) -> None:
    """Rows ``first_row ... + n`` of ``cubes/*``: the given cubes centred, fill elsewhere.

    Written one wavelength chunk at a time, so the task holds the galaxies' own planes plus
    one padded slab, and every Zarr chunk is encoded once (all-fill chunks are not stored).
    """
    group = zarr.open_group(zarr_path, mode="r+")
    rows = slice(first_row, first_row + n)
    for name, dtype in CUBE_ARRAYS.items():
        array = group[f"cubes/{name}"]
        n_planes, wave_chunk = array.shape[1], array.chunks[1]
        slab = np.empty((n, min(wave_chunk, n_planes), size, size), dtype=dtype)
        for k0 in range(0, n_planes, wave_chunk):
            k1 = min(k0 + wave_chunk, n_planes)
            part = slab[:, : k1 - k0]
            part[...] = CUBE_FILL[name]
            for i, cube in cubes:
                ny, nx = cube.flux.shape[1:]
                y0, x0 = (size - ny) // 2, (size - nx) // 2
                part[i, :, y0:y0 + ny, x0:x0 + nx] = getattr(cube, name)[k0:k1]
            array[rows, k0:k1] = part


def _ingest_ifu_block(paths: Sequence[str], first_row: int, zarr_path: str, survey: str, map_size: int,
                      z_by_id: Mapping[str, float], cube_layout: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Read ``paths`` into rows ``first_row ...`` of the store; return their table rows.

    Runs on a worker. Map files fill ``maps/*``; LOGCUBEs fill ``cubes/*`` (with
    ``cube_layout``, the store's release.json ``cubes``; the block's other rows get the fill,
    and a block without a LOGCUBE writes no cube) and leave ``maps/*`` empty for the moment
    step, with status "ok" until it measures them (``no_redshift`` without a z).
    Never raises for a bad file: the row records status and message, and the message always
    starts with the path of the row's own file.
    """
    n, size = len(paths), map_size
    block = {name: np.full((n, size, size), np.nan, dtype=np.float32) for name in MAP_VALUES}
    block["good"] = np.zeros((n, size, size), dtype=bool)
    records, cubes = [], []
    for i, path in enumerate(paths):
        record = _record(path, first_row + i, survey)
        try:
            if survey == "manga" and _is_logcube(path):
                if cube_layout is None:
                    raise SurveyFileError(path, "a LOGCUBE, but the store has no cube arrays", code="wrong_format")
                cube, fields = _read_logcube(path, z_by_id.get(str(_id_from_name(path, survey)), np.nan),
                                             cube_layout)
                record.update(fields)
                _check_size(path, "cube is", fields["ny"], fields["nx"], size)
                cubes.append((i, cube))
                record["format"] = "manga_logcube"
                if not np.isfinite(fields["z"]):
                    raise SurveyFileError(path, f"no redshift for {fields['plateifu']}: not in the DRPall "
                                          "catalogue given and no Z in the primary header", code="no_redshift")
                record.update(status="ok", message="")
                continue
            maps, fmt = _read_galaxy(path, survey)
            record.update(_fields_from(maps, fmt))
            y0, x0 = _check_size(path, "maps are", *maps.shape, size)
            ny, nx = maps.shape
            for name in MAP_ARRAYS:
                block[name][i, y0:y0 + ny, x0:x0 + nx] = getattr(maps, name)
            n_good = int(np.count_nonzero(maps.good))
            record.update(n_good=n_good, status="ok" if n_good else "no_coverage",
                          message="" if n_good else f"{path}: no good spaxel")
        except SurveyFileError as exc:
            text = str(exc)
            record.update(status=exc.code, message=text if exc.path == path else f"{path}: {text}")
        except Exception as exc:  # a reader bug must not stop the run either; say so plainly
            record.update(status="error", message=f"{path}: unexpected {type(exc).__name__}: {exc}")
        finally:
            records.append(record)
    rows = slice(first_row, first_row + n)
    for name in MAP_ARRAYS:
        zarr.open_array(f"{zarr_path}/maps/{name}", mode="r+")[rows] = block[name]
    if cubes:
        _write_cube_block(zarr_path, first_row, n, size, cubes)
    return _typed_frame(pd.DataFrame.from_records(records, columns=list(GALAXY_COLUMNS)), GALAXY_COLUMNS)


# --------------------------------------------------------------------------- moment step
def _measure_galaxy(rec: Any, planes: Mapping[str, np.ndarray], wave: np.ndarray, map_size: int,
                    options: Mapping[str, Any], maps_row: Mapping[str, np.ndarray]) -> tuple[int, str, str]:
    """One galaxy's moment maps from its stored planes (padded, ``wave`` long) into ``maps_row``.

    Returns its ``n_good``, ``status`` and ``message`` (which starts with its file).
    """
    path, ny, nx = str(rec.file), int(rec.ny), int(rec.nx)
    y0, x0 = (map_size - ny) // 2, (map_size - nx) // 2
    cube = IFUCube(**{name: planes[name][:, y0:y0 + ny, x0:x0 + nx] for name in CUBE_ARRAYS}, wave=wave,
                   pixel_scale=float(rec.pixel_scale), path=path,     # no instsigma: dispersion as observed
                   meta={"survey": "manga", "id": rec.id, "plateifu": rec.id, "file": path,
                         "flux_unit": CUBE_FLUX_UNIT})
    try:
        maps = moment_maps_from_cube(cube, float(rec.z), **options)
    except SurveyFileError as exc:
        text = str(exc)
        return 0, exc.code, text if exc.path == path else f"{path}: {text}"
    except Exception as exc:  # as in ingest: a bug on one galaxy must not stop the run
        return 0, "error", f"{path}: unexpected {type(exc).__name__}: {exc}"
    for name in MAP_ARRAYS:
        maps_row[name][y0:y0 + ny, x0:x0 + nx] = getattr(maps, name)
    n_good = int(np.count_nonzero(maps.good))
    return n_good, "ok" if n_good else "no_coverage", "" if n_good else f"{path}: no good spaxel"


def _measure_cube_block(zarr_path: str, start: int, stop: int, rows: pd.DataFrame, map_size: int,
                        moments: Mapping[str, Any]) -> pd.DataFrame:
    """H-alpha moment maps of the cube rows ``rows`` (all in ``[start, stop)``) into ``maps/*``.

    Runs on a worker, one task per row chunk. Each galaxy needs the planes of
    :func:`~survey_ml.moments.halpha_planes` at its z; galaxies needing the same wavelength
    chunks are read together, so only those chunks are decoded. ``maps/*`` of the other
    rows in ``[start, stop)`` are written back unchanged.

    Returns
    -------
    pandas.DataFrame
        ``row``, ``n_good``, ``status`` ("ok", "no_coverage" or the SurveyFileError code) and
        ``message`` (starting with the row's file) of each of ``rows``.
    """
    group = zarr.open_group(zarr_path, mode="r+")
    wave = np.asarray(group["cubes/wave"][:], dtype=np.float64)
    wave_chunk = group["cubes/flux"].chunks[1]
    options = {**MOMENT_DEFAULTS, **moments}
    options["continuum_kms"] = tuple(float(c) for c in options["continuum_kms"])
    block = {name: group[f"maps/{name}"][start:stop] for name in MAP_ARRAYS}
    results: dict[int, tuple[int, str, str]] = {}
    by_chunks: dict[tuple[int, int], list] = {}          # (first, last + 1) wavelength chunk -> galaxies
    for rec in rows.itertuples(index=False):
        row, z = int(rec.row), float(rec.z)
        block["good"][row - start] = False              # a re-measured galaxy starts from nothing
        for name in MAP_VALUES:
            block[name][row - start] = np.nan
        lo, hi = halpha_window(z, z, options["continuum_kms"][1])
        if wave[0] <= lo and hi <= wave[-1]:
            planes = halpha_planes(wave, z, options["continuum_kms"][1])
            by_chunks.setdefault((planes.start // wave_chunk, -(-planes.stop // wave_chunk)), []).append((rec, planes))
        else:
            results[row] = (0, "no_coverage", f"{rec.file}: the stored cube planes ({wave[0]:.1f}-{wave[-1]:.1f} A) "
                            f"do not cover the H-alpha window and side bands at z = {z:.5f} ({lo:.1f}-{hi:.1f} A)")
    for (c0, c1), members in by_chunks.items():
        span = slice(c0 * wave_chunk, min(c1 * wave_chunk, wave.size))
        r0, r1 = min(int(rec.row) for rec, _ in members), max(int(rec.row) for rec, _ in members) + 1
        data = {name: group[f"cubes/{name}"][r0:r1, span] for name in CUBE_ARRAYS}
        for rec, planes in members:
            row, own = int(rec.row), slice(planes.start - span.start, planes.stop - span.start)
            results[row] = _measure_galaxy(rec, {name: data[name][row - r0, own] for name in CUBE_ARRAYS},
                                           wave[planes], map_size, options,
                                           {name: block[name][row - start] for name in MAP_ARRAYS})
    for name in MAP_ARRAYS:
        group[f"maps/{name}"][start:stop] = block[name]
    out = pd.DataFrame([(row, *value) for row, value in results.items()],
                       columns=["row", "n_good", "status", "message"])
    return out.astype({"row": "int64", "n_good": "int32", "status": "string", "message": "string"})


def _cube_rows(galaxies: pd.DataFrame) -> np.ndarray:
    """Rows the moment step measures: a stored cube (``format`` "manga_logcube") and a finite z."""
    stored = galaxies["format"].eq("manga_logcube").fillna(False).to_numpy(bool)
    return stored & np.isfinite(galaxies["z"].to_numpy(np.float64))


def _measure_cubes(zarr_path: str, galaxies: pd.DataFrame, todo: np.ndarray, chunk_rows: int, map_size: int,
                   moments: Mapping[str, Any], client=None, progress: bool = False) -> pd.DataFrame:
    """The moment step over rows ``galaxies[todo]`` (LOGCUBE rows with a finite z): one Dask task per row chunk
    on ``client`` (resolved: None runs here).

    Returns ``galaxies`` with ``n_good``, ``status`` and ``message`` of those rows replaced.
    """
    rows = galaxies.loc[todo, ["row", "id", "file", "z", "ny", "nx", "pixel_scale"]]
    blocks = []
    for chunk, part in rows.groupby(rows["row"].to_numpy() // chunk_rows, sort=True):
        start = int(chunk) * chunk_rows
        blocks.append((zarr_path, start, min(start + chunk_rows, len(galaxies)), part.reset_index(drop=True),
                       map_size, dict(moments)))
    if not blocks:
        return galaxies
    parts = run_blocks(_measure_cube_block, blocks, client, desc="moments", progress=progress)
    measured = pd.concat(parts).set_index("row")
    index = galaxies.index[galaxies["row"].isin(measured.index)]
    for col in ("n_good", "status", "message"):
        galaxies.loc[index, col] = measured.loc[galaxies.loc[index, "row"], col].to_numpy()
    return galaxies


def _join_catalogue(rows: pd.DataFrame, cat: pd.DataFrame | None) -> pd.DataFrame:
    """Catalogue values over the files' own (kept where the catalogue has none)."""
    if cat is None or not len(rows):
        return rows
    joined = cat.reindex(rows["id"].astype(object).where(rows["id"].notna(), "").to_numpy())
    for col in CATALOGUE_FIELDS:
        new = pd.to_numeric(joined[col], errors="coerce").to_numpy(np.float64)
        rows[col] = np.where(np.isfinite(new), new, rows[col].to_numpy(np.float64))
    if "mangaid" in joined:
        new = joined["mangaid"].to_numpy(object)
        rows["mangaid"] = pd.array([m if isinstance(m, str) and m else old for m, old in
                                    zip(new, rows["mangaid"].astype(object))], dtype="string")
    return rows


def _mark_duplicates(galaxies: pd.DataFrame) -> pd.DataFrame:
    """Flag every 'ok' row whose id already appears in an earlier 'ok' row."""
    usable = galaxies["status"] == "ok"
    first = galaxies[usable].drop_duplicates("id", keep="first").set_index("id")["file"]
    dup = usable & galaxies["id"].where(usable).duplicated(keep="first") & galaxies["id"].notna()
    if dup.any():
        galaxies.loc[dup, "message"] = [f"{f}: duplicate id {i}, already ingested from {first[i]}"
                                        for f, i in zip(galaxies.loc[dup, "file"], galaxies.loc[dup, "id"])]
        galaxies.loc[dup, "status"] = "duplicate"
    return galaxies


# --------------------------------------------------------------------------- layout
@dataclass
class IFURelease:
    """An ingested IFU release opened for reading.

    Attributes
    ----------
    path : Path
        The store directory.
    name : str
        Release name (``sami-dr3``).
    survey : str
        "sami" or "manga".
    map_size : int
        Side of the stored maps (spaxels).
    chunk_rows : int
        Galaxies per Zarr chunk (= one unit of downstream work).
    galaxies : pandas.DataFrame
        The committed row table (``galaxies.parquet``), columns :data:`GALAXY_COLUMNS`.
    info : dict
        ``release.json``.

    Notes
    -----
    A release that holds LOGCUBEs (:attr:`has_cubes`) also gives their planes:
    :meth:`cube` (lazy, all rows) and :meth:`galaxy_cube` (one galaxy), on :attr:`wave`.
    """

    path: Path
    name: str
    survey: str
    map_size: int
    chunk_rows: int
    galaxies: pd.DataFrame
    info: dict = field(default_factory=dict)

    @property
    def zarr_path(self) -> Path:
        return self.path / f"{self.name}.zarr"

    @property
    def n_rows(self) -> int:
        return len(self.galaxies)

    def _array(self, name: str) -> zarr.Array:
        if name not in MAP_ARRAYS:
            raise KeyError(f"no map {name!r}; the store holds {', '.join(MAP_ARRAYS)}")
        return zarr.open_array(str(self.zarr_path / "maps" / name), mode="r")

    def maps(self, name: str):
        """A committed map array (n_rows, map_size, map_size) as a lazy ``dask.array``, chunks = Zarr chunks."""
        import dask.array as da

        return da.from_zarr(self._array(name))[: self.n_rows]

    def read_block(self, start: int, stop: int, names: Sequence[str] = tuple(MAP_ARRAYS)) -> dict[str, np.ndarray]:
        """Rows ``[start, stop)`` (clipped to the committed rows) as numpy arrays: what a Dask task reads.

        Returns ``{name: (n, map_size, map_size)}`` for each of ``names`` and ``pixel_scale`` (n,),
        so that ``prepare_galaxies(release.read_block(a, b, PREPARE_INPUTS))`` works as is.
        """
        stop = min(int(stop), self.n_rows)
        start = min(max(int(start), 0), stop)
        out = {name: self._array(name)[start:stop] for name in names}
        out["pixel_scale"] = self.galaxies["pixel_scale"].to_numpy(np.float64)[start:stop]
        return out

    def galaxy(self, row: int) -> IFUMaps:
        """One galaxy's maps cut back to its own (ny, nx), with its table row as ``meta``."""
        record = self.galaxies.iloc[int(row)]
        ny, nx = int(record["ny"]), int(record["nx"])
        y0, x0 = (self.map_size - ny) // 2, (self.map_size - nx) // 2
        arrays = {name: self._array(name)[int(row), y0:y0 + ny, x0:x0 + nx] for name in MAP_ARRAYS}
        meta = {k: (None if pd.isna(v) else v) for k, v in record.items()}
        meta.update(survey=self.survey, flux_unit=self.info.get("flux_unit", FLUX_UNITS[self.survey]))
        return IFUMaps(**arrays, pixel_scale=float(record["pixel_scale"]), meta=meta, path=str(record["file"]))

    @property
    def has_cubes(self) -> bool:
        """Whether the store has ``cubes/*`` (it has met a LOGCUBE)."""
        return "cubes" in self.info

    def _cube_array(self, name: str) -> zarr.Array:
        if not self.has_cubes:
            raise KeyError(f"{self.path} holds no cubes (no LOGCUBE was ingested)")
        if name not in CUBE_ARRAYS:
            raise KeyError(f"no cube array {name!r}; the store holds {', '.join(CUBE_ARRAYS)}")
        return zarr.open_array(str(self.zarr_path / "cubes" / name), mode="r")

    @property
    def wave(self) -> np.ndarray:
        """Vacuum wavelengths (A) of the stored cube planes, ``cubes/wave`` (n_wave,)."""
        if not self.has_cubes:
            raise KeyError(f"{self.path} holds no cubes (no LOGCUBE was ingested)")
        return zarr.open_array(str(self.zarr_path / "cubes" / "wave"), mode="r")[:]

    def cube(self, name: str):
        """A committed cube array (n_rows, n_wave, map_size, map_size) as a lazy ``dask.array``, chunks = Zarr chunks.

        ``name`` is one of :data:`CUBE_ARRAYS`; rows whose ``format`` is not "manga_logcube"
        hold the fill (FLUX = IVAR = 0, MASK = NOCOV | DONOTUSE).
        """
        import dask.array as da

        return da.from_zarr(self._cube_array(name))[: self.n_rows]

    def galaxy_cube(self, row: int, wave_range: tuple[float, float] | None = None) -> IFUCube:
        """One galaxy's stored planes cut back to its own (ny, nx), as in its LOGCUBE.

        Parameters
        ----------
        row : int
            A row with ``format == "manga_logcube"``.
        wave_range : (float, float), optional
            Observed wavelengths (A) to read; only the chunks holding them are decoded.
        """
        record = self.galaxies.iloc[int(row)]
        if record["format"] != "manga_logcube":
            raise ValueError(f"row {row} ({record['file']}) has no stored cube (format {record['format']})")
        wave = self.wave
        planes = slice(None)
        if wave_range is not None:
            planes = slice(int(np.searchsorted(wave, wave_range[0], side="left")),
                           int(np.searchsorted(wave, wave_range[1], side="right")))
        ny, nx = int(record["ny"]), int(record["nx"])
        y0, x0 = (self.map_size - ny) // 2, (self.map_size - nx) // 2
        arrays = {name: self._cube_array(name)[int(row), planes, y0:y0 + ny, x0:x0 + nx] for name in CUBE_ARRAYS}
        meta = {k: (None if pd.isna(v) else v) for k, v in record.items()}
        meta.update(survey=self.survey, flux_unit=self.info["cubes"].get("flux_unit", CUBE_FLUX_UNIT))
        return IFUCube(**arrays, wave=wave[planes], pixel_scale=float(record["pixel_scale"]), meta=meta,
                       path=str(record["file"]))


def open_ifu_release(store: str | os.PathLike) -> IFURelease:
    """Open an ingested IFU release store read-only.

    Parameters
    ----------
    store : str or os.PathLike
        Directory written by :func:`ingest_ifu`.
    """
    path, info = read_release_info(store)
    if info.get("kind") != "ifu":
        raise ValueError(f"{path} is not an IFU release store (kind={info.get('kind', 'spectra')!r}); "
                         "open spectra stores with survey_ml.store.open_release")
    galaxies_file = path / "galaxies.parquet"
    galaxies = pd.read_parquet(galaxies_file) if galaxies_file.exists() else _empty_galaxies()
    return IFURelease(path=path, name=info["release"], survey=info["survey"], map_size=int(info["map_size"]),
                      chunk_rows=int(info["chunk_rows"]), galaxies=galaxies, info=info)


def _empty_galaxies() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in GALAXY_COLUMNS.items()})


def _compressor() -> zarr.codecs.BloscCodec:
    """The spectra store's codec (zstd level 1 + bitshuffle, see store.py), for maps and cubes alike."""
    return zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")


def _create_ifu_store(path: Path, release: str, survey: str, map_size: int, chunk_rows: int,
                      extra: Mapping[str, Any] | None = None) -> None:
    """Create the group, ``maps/*`` and release.json (``extra``: its "cubes" / "moments"); a no-op when all exist."""
    path.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(path / f"{release}.zarr"), mode="a")
    for name, dtype in MAP_ARRAYS.items():
        if f"maps/{name}" not in group:
            group.create_array(f"maps/{name}", shape=(0, map_size, map_size),
                               chunks=(chunk_rows, map_size, map_size), dtype=dtype, compressors=_compressor(),
                               fill_value=False if dtype == "bool" else np.nan)
    info = {"kind": "ifu", "release": release, "survey": survey, "map_size": map_size, "chunk_rows": chunk_rows,
            "flux_unit": FLUX_UNITS[survey], "dispersion_corrected": survey == "sami",
            "survey_ml_version": __version__, **(extra or {})}
    _write_info(path, info)


def _write_info(path: Path, info: Mapping[str, Any]) -> None:
    """release.json (and the group attributes) = ``info``, rewritten only when it changed."""
    info_file = path / "release.json"
    if not info_file.exists() or json.loads(info_file.read_text()) != info:
        zarr.open_group(str(path / f"{info['release']}.zarr"), mode="a").attrs.update(info)
        _atomic_write_bytes(info_file, json.dumps(info, indent=2).encode())


def _create_cube_arrays(zarr_path: str, layout: Mapping[str, Any], n_rows: int, map_size: int,
                        chunk_rows: int) -> None:
    """``cubes/*`` for ``layout`` (release.json "cubes"): empty rows (all fill, no chunk stored) and the grid."""
    group = zarr.open_group(zarr_path, mode="a")
    i0, i1 = layout["planes"]
    n_planes = i1 - i0
    for name, dtype in CUBE_ARRAYS.items():
        if f"cubes/{name}" not in group:
            group.create_array(f"cubes/{name}", shape=(n_rows, n_planes, map_size, map_size),
                               chunks=(chunk_rows, min(int(layout["wave_chunk"]), n_planes), map_size, map_size),
                               dtype=dtype, compressors=_compressor(), fill_value=CUBE_FILL[name])
    if "cubes/wave" not in group:
        wave = group.create_array("cubes/wave", shape=(n_planes,), chunks=(n_planes,), dtype="float64",
                                  compressors=_compressor(), fill_value=np.nan)
        wave[:] = LogLinearGrid(**layout["grid"]).wavelength()[i0:i1]


def _write_galaxies(path: Path, galaxies: pd.DataFrame, release: str, survey: str) -> None:
    table = pa.Table.from_pandas(galaxies, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"survey_ml"] = json.dumps({"release": release, "survey": survey, "version": __version__}).encode()
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buffer)
    _atomic_write_bytes(path / "galaxies.parquet", buffer.getvalue())


# --------------------------------------------------------------------------- ingest
def ingest_ifu(source, store: str | os.PathLike, release: str, survey: str, *, catalogue=None, client=None,
               chunk_rows: int | None = None, map_size: int | None = None,
               cube_window: tuple[float, float] | None = None, wave_chunk: int = WAVE_CHUNK,
               progress: bool = False) -> IngestReport:
    """Ingest IFU galaxy files (SAMI maps, MaNGA MAPS or LOGCUBEs) into a release store, on Dask.

    Parameters
    ----------
    source : path or iterable of paths
        A folder, a file list or paths; see :func:`discover_ifu_files`.
    store : str or os.PathLike
        Store directory (created if needed; appended to if it exists).
    release : str
        Release name; names the Zarr group ``<release>.zarr`` (an existing store keeps its own).
    survey : {"sami", "manga"}
        Must match an existing store's.
    catalogue : path or pandas.DataFrame, optional
        SAMI input catalogue CSV (joined by catid) or MaNGA DRPall FITS (by plateifu), giving
        ra, dec, z, log_mstar (h = 0.7: SAMI ``mstar``; MaNGA ``nsa_elpetro_mass`` through
        :func:`~survey_ml.io.manga.log_mstar_h70`), r_e_arcsec, ellip, pa_phot and abs_mag_r
        (MaNGA: NSA r band, converted to h = 0.7) of the new rows; galaxies it lacks get the
        file's own values or NaN. LOGCUBEs take their redshift from it (else the cube header).
    client : distributed.Client or False, optional
        Cluster to run on; default the current client if any, else (and with False) this process.
    chunk_rows : int, optional
        Galaxies per Zarr chunk = per ingest task (ignored when appending). Default 64, or for
        a new store with LOGCUBEs as many as keep a task's cubes within :data:`CUBE_BLOCK_BYTES`
        (3 for full 74 x 74 cubes); an ingest task holds about ``chunk_rows`` x n_wave x
        map_size**2 x 12 bytes of cube.
    map_size : int, optional
        Side of the stored maps (and cubes); default :data:`MAP_SIZES` (ignored when
        appending). Smaller maps are centred and padded; larger ones get status ``too_large``.
    cube_window : (float, float), optional
        Observed-frame vacuum wavelengths (A) of the LOGCUBE planes to keep, fixed when the
        store first meets a LOGCUBE (ignored afterwards); default all 4563. E.g.
        ``halpha_window(0.0, 0.15)`` keeps the 680 planes the H-alpha maps of z <= 0.15 need.
    wave_chunk : int
        Wavelength planes per cube chunk (fixed with the cubes, like ``cube_window``).
    progress : bool
        Show a progress bar over blocks.

    Returns
    -------
    survey_ml.store.IngestReport

    Notes
    -----
    A bad file never stops the run: its row's ``status`` is the reader's SurveyFileError code
    (``missing``, ``unreadable``, ``truncated``, ``wrong_format``, ``bad_header``,
    ``no_redshift``, ``no_coverage``, ``too_large``, ``off_grid``) and its ``message`` starts
    with the file's path. A second 'ok' row of an id already ingested gets ``duplicate``,
    naming the first file. LOGCUBEs are measured after all blocks are written, by the moment
    step (settings: release.json ``moments``, see :func:`moment_maps_from_store`), before the
    rows are committed.
    """
    start = time.perf_counter()
    if survey not in MAP_SIZES:
        raise ValueError(f"survey must be one of {sorted(MAP_SIZES)}, not {survey!r}")
    path = Path(store)
    files = discover_ifu_files(source, survey)
    info: dict[str, Any] = {}
    if (path / "release.json").exists():
        existing = open_ifu_release(path)
        if existing.survey != survey:
            raise ValueError(f"{path} holds a {existing.survey} release; cannot add {survey} files")
        release, map_size, chunk_rows = existing.name, existing.map_size, existing.chunk_rows
        galaxies, info = existing.galaxies, existing.info
    else:
        galaxies = _empty_galaxies()
        map_size = int(map_size or MAP_SIZES[survey])
    known = set(galaxies["file"].astype(str))
    new_files = [f for f in files if f not in known]
    n0, n_new = len(galaxies), len(new_files)
    layout, moments = info.get("cubes"), info.get("moments", dict(MOMENT_DEFAULTS))
    if layout is None and survey == "manga" and any(_is_logcube(f) for f in new_files):
        layout = {"grid": MANGA_LOGCUBE_GRID.to_dict(), "planes": list(_cube_planes(MANGA_LOGCUBE_GRID, cube_window)),
                  "wave_chunk": int(wave_chunk), "flux_unit": CUBE_FLUX_UNIT}
    n_planes = 0 if layout is None else layout["planes"][1] - layout["planes"][0]
    if chunk_rows is None:
        chunk_rows = 64 if layout is None else _cube_chunk_rows(n_planes, map_size)
    elif layout is not None and "cubes" not in info and chunk_rows > _cube_chunk_rows(n_planes, map_size):
        n_bytes = chunk_rows * n_planes * map_size**2 * sum(np.dtype(t).itemsize for t in CUBE_ARRAYS.values())
        warnings.warn(f"chunk_rows={chunk_rows} makes each ingest task hold {n_bytes / 2**30:.1f} GiB of LOGCUBE "
                      "planes; leave chunk_rows to its default or keep fewer planes (cube_window)", stacklevel=2)
    _create_ifu_store(path, release, survey, map_size, chunk_rows,
                      None if layout is None else {"cubes": layout, "moments": moments})
    zarr_path = str(path / f"{release}.zarr")
    if layout is not None:
        _create_cube_arrays(zarr_path, layout, n0, map_size, chunk_rows)
    if n_new == 0:
        return IngestReport(path, len(files), 0, n0, {}, time.perf_counter() - start)

    cat = _catalogue_table(catalogue, survey) if catalogue is not None else None
    z_by_name: dict[str, float] = {}
    if cat is not None and survey == "manga":  # LOGCUBEs need z inside the task
        for f in new_files:
            key = _id_from_name(f, survey)
            if _is_logcube(f) and key in cat.index:
                z_by_name[key] = float(cat.at[key, "z"])
    for name in MAP_ARRAYS:  # grow (or shrink away uncommitted rows) before any task writes
        array = zarr.open_array(f"{zarr_path}/maps/{name}", mode="r+")
        array.resize((n0 + n_new, *array.shape[1:]))
    for name in CUBE_ARRAYS if layout is not None else ():
        array = zarr.open_array(f"{zarr_path}/cubes/{name}", mode="r+")
        written = array.shape[0]
        array.resize((n0 + n_new, *array.shape[1:]))
        if written > n0:  # an interrupted run's rows: blocks without a LOGCUBE write no cube, so clear them
            array[n0:min(written, n0 + n_new)] = CUBE_FILL[name]
    blocks = []
    for a, b in _blocks(n0, n_new, chunk_rows):
        block_files = new_files[a - n0: b - n0]
        ids = {_id_from_name(f, survey) for f in block_files}
        blocks.append((block_files, a, zarr_path, survey, map_size,
                       {k: v for k, v in z_by_name.items() if k in ids}, layout))
    client = current_client(client)
    parts = run_blocks(_ingest_ifu_block, blocks, client, desc="ingest", progress=progress)
    new_rows = _join_catalogue(pd.concat(parts).sort_values("row").reset_index(drop=True), cat)
    combined = pd.concat([galaxies, new_rows], ignore_index=True) if len(galaxies) else new_rows
    combined = _typed_frame(combined.reset_index(drop=True), GALAXY_COLUMNS)
    if layout is not None:
        todo = _cube_rows(combined) & (combined["row"] >= n0).to_numpy() & (combined["status"] == "ok").to_numpy(bool)
        combined = _measure_cubes(zarr_path, combined, todo, chunk_rows, map_size, moments, client, progress)
    combined = _mark_duplicates(combined)
    _write_galaxies(path, combined, release, survey)
    counts = combined.iloc[n0:]["status"].value_counts().to_dict()
    return IngestReport(path, len(files), n_new, len(combined), {str(k): int(v) for k, v in counts.items()},
                        time.perf_counter() - start)


def moment_maps_from_store(store: str | os.PathLike, client=None, *, window_kms: float = 600.0,
                           continuum_kms: tuple[float, float] = (1000.0, 2500.0), min_snr: float = 3.0,
                           min_coverage: float = 0.9, exclude_kms: float = 500.0,
                           progress: bool = False) -> IFURelease:
    """(Re)compute the H-alpha maps of every LOGCUBE row from the stored cubes, as Dask work.

    One task per row chunk reads only the wavelength chunks around its galaxies' H-alpha
    (at the ``z`` of galaxies.parquet), runs :func:`~survey_ml.moments.moment_maps_from_cube`
    with these settings and writes that chunk of ``maps/*``; then ``n_good``, ``status`` and
    ``message`` of those rows are committed, and the settings kept in release.json
    ``moments`` (later ingests measure new LOGCUBEs with them). Rows without a z and rows
    from MAPS files are left as they are. Interrupted, it is simply run again.

    Parameters
    ----------
    store : str or os.PathLike
        An IFU release store holding cubes.
    client : distributed.Client or False, optional
        As for :func:`ingest_ifu`.
    window_kms, continuum_kms, min_snr, min_coverage, exclude_kms
        As for :func:`~survey_ml.moments.moment_maps_from_cube`.
    progress : bool
        Show a progress bar over row chunks.

    Returns
    -------
    IFURelease
        The store reopened.
    """
    release = open_ifu_release(store)
    if not release.has_cubes:
        raise ValueError(f"{release.path} holds no cubes: its maps came from map files, not LOGCUBEs")
    moments = {"window_kms": float(window_kms), "continuum_kms": [float(c) for c in continuum_kms],
               "min_snr": float(min_snr), "min_coverage": float(min_coverage), "exclude_kms": float(exclude_kms)}
    galaxies = release.galaxies.copy()
    todo = _cube_rows(galaxies)
    galaxies = _measure_cubes(str(release.zarr_path), galaxies, todo, release.chunk_rows, release.map_size,
                              moments, current_client(client), progress)
    _write_galaxies(release.path, _mark_duplicates(galaxies), release.name, release.survey)
    _write_info(release.path, {**release.info, "moments": moments})
    return open_ifu_release(release.path)
