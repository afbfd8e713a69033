"""Array functions that work on one block of a release (no Dask inside): spectra, maps."""
