"""MaNGA DRP LOGCUBE planes in a maps store, and the Dask step that turns them into H-alpha maps.

Layout (only in a maps store that has met a LOGCUBE; release.json ``cubes`` and ``moments``)::

    <release>.zarr/cubes/flux  (n_rows, n_wave, map_size, map_size) float32  LOGCUBE FLUX, 1e-17 erg/s/cm2/A/spaxel
    <release>.zarr/cubes/ivar  ... float32   LOGCUBE IVAR
    <release>.zarr/cubes/mask  ... int32     LOGCUBE MASK (MANGA_DRP3PIXMASK, bit 10 DONOTUSE)
    <release>.zarr/cubes/wave  (n_wave,) float64   the common LOGCUBE grid, vacuum A

A LOGCUBE row (``format == "manga_logcube"``) keeps its FLUX, IVAR and MASK exactly as in the
file, on the spaxels of its maps (same centring); padding and the rows of MAPS files are
FLUX = IVAR = 0, MASK = NOCOV | DONOTUSE, as a LOGCUBE marks spaxels outside its bundle. The
cube arrays are 4-D rather than (n_rows, n_wave, n_spaxels): MaNGA bundles are 32-74 spaxels
square, so either form pads to the largest, and this one shares the maps' spaxel indexing.
Chunks are ``(chunk_rows, wave_chunk, map_size, map_size)``: whole galaxies, all spaxels,
``wave_chunk`` (default 256) planes, so H-alpha's window and side bands (~74 planes at any z)
touch at most two wavelength chunks. The default keeps all 4563 planes of the MaNGA grid
(3622-10354 A); ``cube_window`` keeps an observed-frame range instead
(:func:`~survey_ml.core.moments.halpha_window` gives the one the maps need for a z range). Every
LOGCUBE must be on the grid (:data:`MANGA_LOGCUBE_GRID`): another grid is an ``off_grid`` row
naming the file. A full 74 x 74 cube is 300 MB (4563 x 74**2 x 12 bytes) and an ingest task
holds its block's cubes, so a new store with LOGCUBEs defaults to the ``chunk_rows`` whose
padded cubes fit :data:`CUBE_BLOCK_BYTES` (3 galaxies of 1 GiB in all, at full size).

After the blocks are written, a separate Dask step with one task per row chunk reads only the
wavelength chunks around each galaxy's H-alpha and runs
:func:`~survey_ml.core.moments.moment_maps_from_cube` on them into the store's ``maps/*``
(:func:`moment_maps_from_store` re-runs it with other settings, kept in release.json
``moments``), so a LOGCUBE-only release reads like any other.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import zarr

from ...cluster.client import current_client, run_blocks
from ...io.errors import SurveyFileError
from ...io._fits import header_value, open_fits
from ...io.ifu import C_KMS, IFUCube, pixel_scale_arcsec
from ...io.manga import DRP_DONOTUSE
from ...core.moments import HALPHA_VACUUM, MOMENT_DEFAULTS, halpha_planes, halpha_window, moment_maps_from_cube
from ...core.wavelength import LogLinearGrid
from ..layout import RowArrays, compressor, write_info
from ..release import Release, open_release

__all__ = ["CubeAccessors", "moment_maps_from_store", "CUBE_ARRAYS", "CUBE_FILL", "MANGA_LOGCUBE_GRID", "WAVE_CHUNK",
           "CUBE_BLOCK_BYTES", "CUBE_FLUX_UNIT", "DRP_NOCOV"]

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


def spaxel_origin(size: int, ny: int, nx: int) -> tuple[int, int]:
    """Where a galaxy's own (ny, nx) spaxels start in the stored ``size`` square (centred).

    Examples
    --------
    >>> spaxel_origin(74, 32, 33)
    (21, 20)
    """
    return (size - ny) // 2, (size - nx) // 2


# --------------------------------------------------------------------------- the layout
def cube_layout(cube_window: tuple[float, float] | None = None, wave_chunk: int = WAVE_CHUNK) -> dict[str, Any]:
    """release.json ``cubes`` of a store meeting its first LOGCUBE: grid, planes kept, wave_chunk, unit."""
    return {"grid": MANGA_LOGCUBE_GRID.to_dict(), "planes": list(cube_planes(MANGA_LOGCUBE_GRID, cube_window)),
            "wave_chunk": int(wave_chunk), "flux_unit": CUBE_FLUX_UNIT}


def cube_planes(grid: LogLinearGrid, cube_window: tuple[float, float] | None) -> tuple[int, int]:
    """Pixels ``[i0, i1)`` of ``grid`` a store keeps: those inside ``cube_window`` (A), or all.

    Examples
    --------
    >>> cube_planes(MANGA_LOGCUBE_GRID, None)
    (0, 4563)
    >>> cube_planes(MANGA_LOGCUBE_GRID, (6500.0, 7600.0))
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


def cube_bytes(n_planes: int, map_size: int) -> int:
    """Bytes of one galaxy's padded cube planes (flux, ivar, mask)."""
    return n_planes * map_size * map_size * sum(np.dtype(t).itemsize for t in CUBE_ARRAYS.values())


def cube_chunk_rows(n_planes: int, map_size: int) -> int:
    """Default galaxies per chunk of a store holding cubes: one ingest task's cube block within
    :data:`CUBE_BLOCK_BYTES` (at most 64, the maps-only default).

    Examples
    --------
    >>> cube_chunk_rows(4563, 74), cube_chunk_rows(700, 74), cube_chunk_rows(4563, 24)
    (3, 23, 34)
    """
    return int(min(64, max(1, CUBE_BLOCK_BYTES // cube_bytes(n_planes, map_size))))


def cube_arrays(layout: Mapping[str, Any], map_size: int) -> RowArrays:
    """The ``cubes/*`` row arrays of ``layout`` (release.json "cubes")."""
    n_planes = layout["planes"][1] - layout["planes"][0]
    return RowArrays("cubes", CUBE_ARRAYS, (n_planes, map_size, map_size),
                     (min(int(layout["wave_chunk"]), n_planes), map_size, map_size), CUBE_FILL,
                     clear_uncommitted=True)   # blocks without a LOGCUBE write no cube


def create_wave(zarr_path: str, layout: Mapping[str, Any]) -> None:
    """``cubes/wave``: the stored planes' wavelengths (once)."""
    group = zarr.open_group(zarr_path, mode="a")
    if "cubes/wave" not in group:
        i0, i1 = layout["planes"]
        wave = group.create_array("cubes/wave", shape=(i1 - i0,), chunks=(i1 - i0,), dtype="float64",
                                  compressors=compressor(), fill_value=np.nan)
        wave[:] = LogLinearGrid(**layout["grid"]).wavelength()[i0:i1]


# --------------------------------------------------------------------------- reading one LOGCUBE
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


def read_logcube(path: str, z_hint: float, layout: Mapping[str, Any]) -> tuple[IFUCube, dict[str, Any]]:
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


def write_cube_block(zarr_path: str, first_row: int, n: int, size: int, cubes: Sequence[tuple[int, IFUCube]]
                     ) -> None:
    """Rows ``first_row ... + n`` of ``cubes/*``: the given (block index, cube) centred, fill elsewhere.

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
                y0, x0 = spaxel_origin(size, ny, nx)
                part[i, :, y0:y0 + ny, x0:x0 + nx] = getattr(cube, name)[k0:k1]
            array[rows, k0:k1] = part


# --------------------------------------------------------------------------- the moment step
def _measure_galaxy(rec: Any, planes: Mapping[str, np.ndarray], wave: np.ndarray, map_size: int,
                    options: Mapping[str, Any], maps_row: Mapping[str, np.ndarray]) -> tuple[int, str, str]:
    """One galaxy's moment maps from its stored planes (padded, ``wave`` long) into ``maps_row``.

    Returns its ``n_good``, ``status`` and ``message`` (which starts with its file).
    """
    path, ny, nx = str(rec.file), int(rec.ny), int(rec.nx)
    y0, x0 = spaxel_origin(map_size, ny, nx)
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
    for name, row in maps_row.items():
        row[y0:y0 + ny, x0:x0 + nx] = getattr(maps, name)
    n_good = int(np.count_nonzero(maps.good))
    return n_good, "ok" if n_good else "no_coverage", "" if n_good else f"{path}: no good spaxel"


def _measure_cube_block(zarr_path: str, start: int, stop: int, rows: pd.DataFrame, map_size: int,
                        moments: Mapping[str, Any]) -> pd.DataFrame:
    """H-alpha moment maps of the cube rows ``rows`` (all in ``[start, stop)``) into ``maps/*``.

    Runs on a worker, one task per row chunk. Each galaxy needs the planes of
    :func:`~survey_ml.core.moments.halpha_planes` at its z; galaxies needing the same wavelength
    chunks are read together, so only those chunks are decoded. Every array of ``maps/``
    (named as the :class:`~survey_ml.io.ifu.IFUMaps` fields) gets the galaxy's map; those of
    the other rows in ``[start, stop)`` are written back unchanged.

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
    maps = {name: array for name, array in group["maps"].arrays()}
    block = {name: array[start:stop] for name, array in maps.items()}
    results: dict[int, tuple[int, str, str]] = {}
    by_chunks: dict[tuple[int, int], list] = {}          # (first, last + 1) wavelength chunk -> galaxies
    for rec in rows.itertuples(index=False):
        row, z = int(rec.row), float(rec.z)
        for name, array in maps.items():                # a re-measured galaxy starts from nothing
            block[name][row - start] = array.fill_value
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
                                           {name: values[row - start] for name, values in block.items()})
    for name, values in block.items():
        maps[name][start:stop] = values
    out = pd.DataFrame([(row, *value) for row, value in results.items()],
                       columns=["row", "n_good", "status", "message"])
    return out.astype({"row": "int64", "n_good": "int32", "status": "string", "message": "string"})


def cube_rows(galaxies: pd.DataFrame) -> np.ndarray:
    """Rows the moment step measures: a stored cube (``format`` "manga_logcube") and a finite z."""
    stored = galaxies["format"].eq("manga_logcube").fillna(False).to_numpy(bool)
    return stored & np.isfinite(galaxies["z"].to_numpy(np.float64))


def measure_cubes(zarr_path: str, galaxies: pd.DataFrame, todo: np.ndarray, chunk_rows: int, map_size: int,
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


def moment_maps_from_store(store: str | os.PathLike, client=None, *, window_kms: float = 600.0,
                           continuum_kms: tuple[float, float] = (1000.0, 2500.0), min_snr: float = 3.0,
                           min_coverage: float = 0.9, exclude_kms: float = 500.0,
                           progress: bool = False) -> Release:
    """(Re)compute the H-alpha maps of every LOGCUBE row from the stored cubes, as Dask work.

    One task per row chunk reads only the wavelength chunks around its galaxies' H-alpha
    (at the ``z`` of galaxies.parquet), runs :func:`~survey_ml.core.moments.moment_maps_from_cube`
    with these settings and writes that chunk of ``maps/*``; then ``n_good``, ``status`` and
    ``message`` of those rows are committed, and the settings kept in release.json
    ``moments`` (later ingests measure new LOGCUBEs with them). Rows without a z and rows
    from MAPS files are left as they are. Interrupted, it is simply run again.

    Parameters
    ----------
    store : str or os.PathLike
        A maps release store holding cubes.
    client : distributed.Client or False, optional
        As for :func:`survey_ml.store.ingest`.
    window_kms, continuum_kms, min_snr, min_coverage, exclude_kms
        As for :func:`~survey_ml.core.moments.moment_maps_from_cube`.
    progress : bool
        Show a progress bar over row chunks.

    Returns
    -------
    survey_ml.store.MapsRelease
        The store reopened.
    """
    release = open_release(store, "maps")
    if not release.has_cubes:
        raise ValueError(f"{release.path} holds no cubes: its maps came from map files, not LOGCUBEs")
    moments = {"window_kms": float(window_kms), "continuum_kms": [float(c) for c in continuum_kms],
               "min_snr": float(min_snr), "min_coverage": float(min_coverage), "exclude_kms": float(exclude_kms)}
    galaxies = measure_cubes(str(release.zarr_path), release.rows.copy(), cube_rows(release.rows),
                             release.chunk_rows, release.map_size, moments, current_client(client), progress)
    type(release).commit(release.path, release.info, galaxies)
    write_info(release.path, {**release.info, "moments": moments})
    return open_release(release.path)


# --------------------------------------------------------------------------- reading
class CubeAccessors:
    """The cube side of a maps release (a mixin of :class:`~survey_ml.store.kinds.maps.MapsRelease`).

    A release that holds LOGCUBEs (:attr:`has_cubes`) gives their planes: :meth:`cube` (lazy,
    all rows) and :meth:`galaxy_cube` (one galaxy), on :attr:`wave`.
    """

    info: dict
    rows: pd.DataFrame

    @property
    def has_cubes(self) -> bool:
        """Whether the store has ``cubes/*`` (it has met a LOGCUBE)."""
        return "cubes" in self.info

    def _cube_array(self, name: str) -> zarr.Array:
        if not self.has_cubes:
            raise KeyError(f"{self.path} holds no cubes (no LOGCUBE was ingested)")
        if name not in CUBE_ARRAYS and name != "wave":
            raise KeyError(f"no cube array {name!r}; the store holds {', '.join(CUBE_ARRAYS)}")
        return zarr.open_array(str(self.zarr_path / "cubes" / name), mode="r")

    @property
    def wave(self) -> np.ndarray:
        """Vacuum wavelengths (A) of the stored cube planes, ``cubes/wave`` (n_wave,)."""
        return self._cube_array("wave")[:]

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
        record = self.rows.iloc[int(row)]
        if record["format"] != "manga_logcube":
            raise ValueError(f"row {row} ({record['file']}) has no stored cube (format {record['format']})")
        wave = self.wave
        planes = slice(None)
        if wave_range is not None:
            planes = slice(int(np.searchsorted(wave, wave_range[0], side="left")),
                           int(np.searchsorted(wave, wave_range[1], side="right")))
        spaxels, meta = self._own_spaxels(record, self.info["cubes"].get("flux_unit", CUBE_FLUX_UNIT))
        arrays = {name: self._cube_array(name)[(int(row), planes, *spaxels)] for name in CUBE_ARRAYS}
        return IFUCube(**arrays, wave=wave[planes], pixel_scale=float(record["pixel_scale"]), meta=meta,
                       path=str(record["file"]))

    def _own_spaxels(self, record: pd.Series, flux_unit: str) -> tuple[tuple[slice, slice], dict[str, Any]]:
        """A row's own spaxels in the stored square, and its table row as ``meta`` (+ survey, flux_unit)."""
        ny, nx = int(record["ny"]), int(record["nx"])
        y0, x0 = spaxel_origin(self.map_size, ny, nx)
        meta = {k: (None if pd.isna(v) else v) for k, v in record.items()}
        meta.update(survey=self.survey, flux_unit=flux_unit)
        return (slice(y0, y0 + ny), slice(x0, x0 + nx)), meta
