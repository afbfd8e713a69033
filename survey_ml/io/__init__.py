"""Readers and writers, one module per survey file format. Pure functions, no Dask."""
from .lamost import (read_lamost_catalogue, read_lamost_spectrum, write_lamost_catalogue,
                     write_lamost_spectrum)
from .sdss import read_galspec, read_sdss_spectrum, write_galspec, write_sdss_spectrum
from .spectrum import Spectrum

__all__ = ["Spectrum", "read_lamost_spectrum", "write_lamost_spectrum",
           "read_lamost_catalogue", "write_lamost_catalogue", "read_sdss_spectrum",
           "write_sdss_spectrum", "read_galspec", "write_galspec"]
