"""Readers and writers, one module per survey file format. Pure functions, no Dask."""
from .ifu import IFUCube, IFUMaps
from .lamost import (read_lamost_catalogue, read_lamost_spectrum, write_lamost_catalogue,
                     write_lamost_spectrum)
from .manga import (log_mstar_h70, read_drpall, read_manga_logcube, read_manga_maps, write_drpall,
                    write_manga_logcube, write_manga_maps)
from .sami import (read_sami_catalogue, read_sami_gaskin_pa, read_sami_maps, write_sami_catalogue,
                   write_sami_maps)
from .sdss import read_galspec, read_sdss_spectrum, write_galspec, write_sdss_spectrum
from .spectrum import Spectrum

__all__ = ["Spectrum", "read_lamost_spectrum", "write_lamost_spectrum",
           "read_lamost_catalogue", "write_lamost_catalogue", "read_sdss_spectrum",
           "write_sdss_spectrum", "read_galspec", "write_galspec",
           "IFUMaps", "IFUCube", "read_manga_maps", "write_manga_maps", "read_manga_logcube",
           "write_manga_logcube", "read_drpall", "write_drpall", "log_mstar_h70",
           "read_sami_maps", "write_sami_maps", "read_sami_catalogue", "write_sami_catalogue",
           "read_sami_gaskin_pa"]
