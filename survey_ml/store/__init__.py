"""The release store: one on-disk layout, one ``ingest()`` and one ``open_release()`` for every input kind.

A store is a folder with ``release.json``, a Zarr v3 group of row arrays chunked by whole rows
and a Parquet row table joined to them by ``row`` (:mod:`~survey_ml.store.layout`). What an
input kind adds - its arrays, readers and row table columns - is one module under
:mod:`survey_ml.store.kinds`: ``spectra`` (LAMOST, SDSS), ``maps`` (SAMI, MaNGA) and
``cubes`` (MaNGA LOGCUBEs inside a maps store).

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from survey_ml.simulate import write_mock_release
>>> tmp = Path(tempfile.mkdtemp())
>>> mock = write_mock_release(tmp / "mock", 5, seed=1)
>>> ingest(mock.spectra_dir, tmp / "store", "dr10", client=False, chunk_rows=2).status_counts
{'ok': 5}
>>> release = open_release(tmp / "store")
>>> release.kind, release.n_rows, release.block_bounds()
('spectra', 5, [(0, 2), (2, 4), (4, 5)])
>>> {name: a.shape for name, a in release.read_block(2, 4).items()}
{'flux': (2, 3950), 'ivar': (2, 3950), 'mask': (2, 3950)}
"""
from __future__ import annotations

from .ingest import ingest, ingest_ifu
from .kinds.cubes import (CUBE_ARRAYS, CUBE_FILL, CUBE_FLUX_UNIT, MANGA_LOGCUBE_GRID, WAVE_CHUNK,
                          moment_maps_from_store)
from .kinds.maps import (FLUX_UNITS, GALAXY_COLUMNS, MAP_ARRAYS, MAP_SIZES, MAP_VALUES, PREPARE_INPUTS, MapsRelease,
                         discover_ifu_files, open_ifu_release)
from .kinds.spectra import ARRAYS, GRIDS, OBJECT_COLUMNS, READERS, SPECTRUM_SUFFIXES, SpectraRelease, discover_files
from .layout import IngestReport
from .layout import read_info as read_release_info
from .release import Release, open_release
from ..core.moments import HALPHA_VACUUM, moment_maps_from_cube

#: The maps Release under the name the IFU code has used.
IFURelease = MapsRelease

__all__ = ["open_release", "ingest", "Release", "SpectraRelease", "MapsRelease", "IngestReport", "discover_files",
           "discover_ifu_files", "read_release_info", "moment_maps_from_store", "moment_maps_from_cube",
           # the names the spectra and IFU stores had
           "ingest_ifu", "open_ifu_release", "IFURelease", "READERS", "GRIDS", "ARRAYS", "OBJECT_COLUMNS",
           "SPECTRUM_SUFFIXES", "MAP_ARRAYS", "MAP_VALUES", "MAP_SIZES", "PREPARE_INPUTS", "GALAXY_COLUMNS",
           "FLUX_UNITS", "CUBE_ARRAYS", "CUBE_FILL", "CUBE_FLUX_UNIT", "MANGA_LOGCUBE_GRID", "WAVE_CHUNK",
           "HALPHA_VACUUM"]
