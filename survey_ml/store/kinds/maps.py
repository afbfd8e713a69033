"""The maps kind: IFU galaxies (SAMI, MaNGA) as emission-line maps, and MaNGA LOGCUBEs beside them.

Layout::

    release.json           kind="ifu" (the maps kind's name on disk), survey, map_size, flux_unit,
                           dispersion_corrected; with cubes also "cubes" and "moments" (kinds/cubes.py)
    <release>.zarr/maps/flux          (n_rows, map_size, map_size) float32   H-alpha flux, NaN padded
    <release>.zarr/maps/flux_err      ... float32   1-sigma errors (inf where the survey gives ivar = 0)
    <release>.zarr/maps/velocity      ... float32   gas line-of-sight velocity, km/s
    <release>.zarr/maps/velocity_err
    <release>.zarr/maps/dispersion    ... float32   gas dispersion, km/s (SAMI: LSF removed; MaNGA: not,
    <release>.zarr/maps/dispersion_err              see the ``instsigma`` column)
    <release>.zarr/maps/good          (n_rows, map_size, map_size) bool
    <release>.zarr/cubes/...          LOGCUBE planes, see :mod:`survey_ml.store.kinds.cubes`
    galaxies.parquet                  one row per input galaxy file (:data:`GALAXY_COLUMNS`)

Each galaxy's maps sit centred in the ``map_size`` square: its own (ny, nx) spaxels start at
``((map_size - ny) // 2, (map_size - nx) // 2)`` and everything around them is NaN / False.

Inputs: SAMI DR3 ``{catid}_{cube}_Halpha_{binning}_{components}.fits`` (the gas-velocity and
gas-vdisp maps are read beside it) and MaNGA DAP ``manga-*-MAPS-*.fits(.gz)`` go straight to
``maps/*``; MaNGA DRP ``manga-*-LOGCUBE.fits(.gz)`` go to ``cubes/*`` and are measured into
``maps/*`` by the moment step. The survey catalogue (SAMI input catalogue CSV, MaNGA DRPall) is
joined by catid / plateifu; a galaxy missing from it gets NaN, not an error. A second 'ok' row
of an id already ingested is a duplicate.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from ..._version import __version__
from ...io.errors import SurveyFileError
from ...io.ifu import IFUMaps
from ...io.manga import log_mstar_h70, read_drpall, read_manga_maps
from ...io.sami import read_sami_catalogue, read_sami_maps
from ...core.moments import MANGA_MAP_FLUX_UNIT, MOMENT_DEFAULTS
from ..layout import IngestPlan, RowArrays, list_files, read_info, read_rows, release_kind
from ..release import Release
from .cubes import (CubeAccessors, cube_arrays, cube_bytes, cube_chunk_rows, cube_layout, cube_rows,
                    create_wave, measure_cubes, read_logcube, spaxel_origin, write_cube_block, WAVE_CHUNK)

__all__ = ["MapsRelease", "open_ifu_release", "discover_ifu_files", "plan", "MAP_ARRAYS", "MAP_VALUES",
           "PREPARE_INPUTS", "GALAXY_COLUMNS", "MAP_SIZES", "FLUX_UNITS", "DEFAULT_CHUNK_ROWS"]

#: Default side of the stored maps (spaxels): SAMI maps are 50 x 50, MaNGA's largest bundle 74 x 74.
MAP_SIZES = {"sami": 50, "manga": 74}
#: Stored map arrays and their dtypes; the float maps are NaN outside a galaxy's own spaxels.
MAP_ARRAYS = {"flux": "float32", "flux_err": "float32", "velocity": "float32", "velocity_err": "float32",
              "dispersion": "float32", "dispersion_err": "float32", "good": "bool"}
MAP_VALUES = tuple(name for name in MAP_ARRAYS if name != "good")
#: The arrays :func:`survey_ml.core.maps.prepare_galaxies` takes (with ``pixel_scale``):
#: ``prepare_galaxies(release.read_block(a, b, PREPARE_INPUTS))``.
PREPARE_INPUTS = ("flux", "flux_err", "velocity", "velocity_err", "good")
#: Flux unit of the stored ``flux`` maps, as each survey publishes it (not rescaled).
FLUX_UNITS = {"sami": "1e-16 erg/s/cm2/spaxel", "manga": MANGA_MAP_FLUX_UNIT}
#: Galaxies per Zarr chunk of a maps-only store (a store with LOGCUBEs: :func:`~.cubes.cube_chunk_rows`).
DEFAULT_CHUNK_ROWS = 64

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


# --------------------------------------------------------------------------- reading
class MapsRelease(CubeAccessors, Release):
    """An ingested maps release (SAMI, MaNGA): :class:`~survey_ml.store.release.Release` plus its maps.

    ``read_block(a, b, names=MAP_ARRAYS)`` gives ``{name: (n, map_size, map_size)}`` and
    ``pixel_scale`` (n,), so that ``prepare_galaxies(release.read_block(a, b, PREPARE_INPUTS))``
    works as is; ``galaxies`` is the row table (``galaxies.parquet``). A release holding
    LOGCUBEs also gives their planes (:class:`~survey_ml.store.kinds.cubes.CubeAccessors`).
    """

    kind = "maps"
    ROWS_FILE = "galaxies.parquet"
    ROW_COLUMNS = GALAXY_COLUMNS
    GROUP = "maps"
    ARRAYS = MAP_ARRAYS
    BLOCK_ARRAYS = tuple(MAP_ARRAYS)
    DUPLICATE_KEY = "id"
    ROWS_META = ("release", "survey")

    @property
    def galaxies(self) -> pd.DataFrame:
        """The row table (``galaxies.parquet``), :data:`GALAXY_COLUMNS`."""
        return self.rows

    @property
    def survey(self) -> str:
        """"sami" or "manga"."""
        return str(self.info["survey"])

    @property
    def map_size(self) -> int:
        """Side of the stored maps (spaxels)."""
        return int(self.info["map_size"])

    def maps(self, name: str):
        """A committed map array (n_rows, map_size, map_size) as a lazy ``dask.array``, chunks = Zarr chunks."""
        return self.array(name)

    def _block_extras(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        return {"pixel_scale": rows["pixel_scale"].to_numpy(np.float64)}

    def galaxy(self, row: int) -> IFUMaps:
        """One galaxy's maps cut back to its own (ny, nx), with its table row as ``meta``."""
        record = self.rows.iloc[int(row)]
        spaxels, meta = self._own_spaxels(record, self.info.get("flux_unit", FLUX_UNITS[self.survey]))
        arrays = {name: self._array(name)[(int(row), *spaxels)] for name in MAP_ARRAYS}
        return IFUMaps(**arrays, pixel_scale=float(record["pixel_scale"]), meta=meta, path=str(record["file"]))


#: This kind's Release type and the ingest options it takes besides ``survey`` and ``catalogue``.
RELEASE = MapsRelease
OPTIONS = ("map_size", "cube_window", "wave_chunk")
#: The default cap on one file's decompressed size, MB: room for a full MaNGA LOGCUBE (~1-2 GB).
MAX_DECOMPRESSED_MB = 8192


def open_ifu_release(store: str | os.PathLike) -> MapsRelease:
    """Open an ingested maps (IFU) release store read-only: :func:`~survey_ml.store.open_release`
    that refuses, naming the folder, any other kind."""
    path, info = read_info(store)
    if release_kind(info) != "maps":
        raise ValueError(f"{path} is not an IFU release store (kind={info.get('kind', 'spectra')!r}); "
                         "open spectra stores with survey_ml.store.open_release")
    return MapsRelease(path, info)


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
    if survey not in MAP_SIZES:
        raise ValueError(f"survey must be one of {sorted(MAP_SIZES)}, not {survey!r}")
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
    files = list_files(source)
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


def discover(source, *, survey: str | None = None, **_: Any) -> list[str]:
    """The kind's discovery for :func:`survey_ml.store.ingest`: :func:`discover_ifu_files`."""
    return discover_ifu_files(source, survey)


def _is_logcube(path: str) -> bool:
    match = _MANGA_NAME.match(Path(path).name)
    return bool(match) and match["kind"] == "LOGCUBE"


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




# --------------------------------------------------------------------------- ingest
def plan(existing: MapsRelease | None, release: str, files: Sequence[str], *, survey: str | None = None,
         catalogue=None, chunk_rows: int | None = None, map_size: int | None = None,
         cube_window: tuple[float, float] | None = None, wave_chunk: int = WAVE_CHUNK, **_: Any) -> IngestPlan:
    """How :func:`survey_ml.store.ingest` writes IFU galaxy files (SAMI maps, MaNGA MAPS or LOGCUBEs).

    Parameters
    ----------
    existing : MapsRelease or None
        The store appended to (it keeps its own chunk_rows and map_size; ``survey`` must match).
    release : str
        Release name.
    files : sequence of str
        The new files.
    survey : {"sami", "manga"}
    catalogue : path or pandas.DataFrame, optional
        SAMI input catalogue CSV (joined by catid) or MaNGA DRPall FITS (by plateifu), giving
        ra, dec, z, log_mstar (h = 0.7: SAMI ``mstar``; MaNGA ``nsa_elpetro_mass`` through
        :func:`~survey_ml.io.manga.log_mstar_h70`), r_e_arcsec, ellip, pa_phot and abs_mag_r
        (MaNGA: NSA r band, converted to h = 0.7) of the new rows; galaxies it lacks keep the
        file's own values or NaN. LOGCUBEs take their redshift from it (else the cube header).
    chunk_rows : int, optional
        Default :data:`DEFAULT_CHUNK_ROWS`, or for a new store with LOGCUBEs as many as keep a
        task's cubes (about chunk_rows x n_wave x map_size**2 x 12 bytes) within
        :data:`~survey_ml.store.kinds.cubes.CUBE_BLOCK_BYTES`: 3 for full 74 x 74 cubes.
    map_size : int, optional
        Side of the stored maps and cubes; default :data:`MAP_SIZES`. Smaller galaxies are
        centred and padded; larger ones get status ``too_large``.
    cube_window : (float, float), optional
        Observed-frame vacuum wavelengths (A) of the LOGCUBE planes to keep, default all 4563;
        e.g. ``halpha_window(0.0, 0.15)`` keeps the 680 planes the H-alpha maps of z <= 0.15 need.
    wave_chunk : int
        Wavelength planes per cube chunk. It and ``cube_window`` are fixed when the store
        first meets a LOGCUBE.
    """
    info: dict[str, Any] = {}
    if existing is not None:
        if existing.survey != survey:
            raise ValueError(f"{existing.path} holds a {existing.survey} release; cannot add {survey} files")
        map_size, chunk_rows, info = existing.map_size, existing.chunk_rows, existing.info
    map_size = int(map_size or MAP_SIZES[survey])
    layout, moments = info.get("cubes"), info.get("moments", dict(MOMENT_DEFAULTS))
    if layout is None and survey == "manga" and any(_is_logcube(f) for f in files):
        layout = cube_layout(cube_window, wave_chunk)
    n_planes = 0 if layout is None else layout["planes"][1] - layout["planes"][0]
    if chunk_rows is None:
        chunk_rows = DEFAULT_CHUNK_ROWS if layout is None else cube_chunk_rows(n_planes, map_size)
    elif layout is not None and "cubes" not in info and chunk_rows > cube_chunk_rows(n_planes, map_size):
        n_bytes = chunk_rows * cube_bytes(n_planes, map_size)
        warnings.warn(f"chunk_rows={chunk_rows} makes each ingest task hold {n_bytes / 2**30:.1f} GiB of LOGCUBE "
                      "planes; leave chunk_rows to its default or keep fewer planes (cube_window)", stacklevel=4)
    new_info = {"kind": "ifu", "release": release, "survey": survey, "map_size": map_size, "chunk_rows": chunk_rows,
                "flux_unit": FLUX_UNITS[survey], "dispersion_corrected": survey == "sami",
                "survey_ml_version": __version__}
    fill = {name: False if dtype == "bool" else np.nan for name, dtype in MAP_ARRAYS.items()}
    arrays = [RowArrays("maps", MAP_ARRAYS, (map_size, map_size), (map_size, map_size), fill)]
    cat = _catalogue_table(catalogue, survey) if catalogue is not None and files else None
    z_by_id: dict[str, float] = {}
    if cat is not None and survey == "manga":  # LOGCUBEs need z inside the task
        for f in files:
            key = _id_from_name(f, survey)
            if _is_logcube(f) and key in cat.index:
                z_by_id[key] = float(cat.at[key, "z"])

    def block_args(paths: list[str]) -> tuple:
        ids = {_id_from_name(f, survey) for f in paths}
        return ({k: v for k, v in z_by_id.items() if k in ids},)

    if layout is None:
        return IngestPlan(info=new_info, arrays=arrays, block=ingest_block, block_args=block_args,
                          new_rows=lambda rows: _join_catalogue(rows, cat))
    n0 = 0 if existing is None else existing.n_rows

    def finish(rows: pd.DataFrame, zarr_path: str, client, progress: bool) -> pd.DataFrame:
        todo = cube_rows(rows) & (rows["row"] >= n0).to_numpy() & (rows["status"] == "ok").to_numpy(bool)
        return measure_cubes(zarr_path, rows, todo, chunk_rows, map_size, moments, client, progress)

    return IngestPlan(info={**new_info, "cubes": layout, "moments": moments},
                      arrays=[*arrays, cube_arrays(layout, map_size)], block=ingest_block, block_args=block_args,
                      new_rows=lambda rows: _join_catalogue(rows, cat), finish=finish,
                      create=lambda zarr_path, n_committed: create_wave(zarr_path, layout))


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
    return spaxel_origin(size, ny, nx)


def ingest_block(paths: Sequence[str], first_row: int, zarr_path: str, info: Mapping[str, Any],
                 z_by_id: Mapping[str, float]) -> pd.DataFrame:
    """Read ``paths`` into rows ``first_row ...`` of the store; return their table rows.

    Runs on a worker. Map files fill ``maps/*``; LOGCUBEs fill ``cubes/*`` (with
    ``info["cubes"]``, the store's LOGCUBE layout; the block's other rows get the fill,
    and a block without a LOGCUBE writes no cube) and leave ``maps/*`` empty for the moment
    step, with status "ok" until it measures them (``no_redshift`` without a z).
    Never raises for a bad file: the row records status and message, and the message always
    starts with the path of the row's own file.
    """
    survey, size, cube_layout, n = info["survey"], int(info["map_size"]), info.get("cubes"), len(paths)
    block = {name: np.full((n, size, size), np.nan, dtype=np.float32) for name in MAP_VALUES}
    block["good"] = np.zeros((n, size, size), dtype=bool)
    cubes: list[tuple[int, Any]] = []

    def read_one(i: int, path: str, record: dict[str, Any]) -> None:
        record["id"] = _id_from_name(path, survey)
        if survey == "manga" and _is_logcube(path):
            if cube_layout is None:
                raise SurveyFileError(path, "a LOGCUBE, but the store has no cube arrays", code="wrong_format")
            cube, fields = read_logcube(path, z_by_id.get(str(record["id"]), np.nan), cube_layout)
            record.update(fields)
            _check_size(path, "cube is", fields["ny"], fields["nx"], size)
            cubes.append((i, cube))
            record["format"] = "manga_logcube"
            if not np.isfinite(fields["z"]):
                raise SurveyFileError(path, f"no redshift for {fields['plateifu']}: not in the DRPall "
                                      "catalogue given and no Z in the primary header", code="no_redshift")
            record.update(status="ok", message="")
            return
        maps, fmt = _read_galaxy(path, survey)
        record.update(_fields_from(maps, fmt))
        y0, x0 = _check_size(path, "maps are", *maps.shape, size)
        ny, nx = maps.shape
        for name in MAP_ARRAYS:
            block[name][i, y0:y0 + ny, x0:x0 + nx] = getattr(maps, name)
        n_good = int(np.count_nonzero(maps.good))
        record.update(n_good=n_good, status="ok" if n_good else "no_coverage",
                      message="" if n_good else f"{path}: no good spaxel")

    rows = read_rows(paths, first_row, GALAXY_COLUMNS, read_one, ny=0, nx=0, n_good=0)
    for name in MAP_ARRAYS:
        zarr.open_array(f"{zarr_path}/maps/{name}", mode="r+")[first_row:first_row + n] = block[name]
    if cubes:
        write_cube_block(zarr_path, first_row, n, size, cubes)
    return rows
