"""Per-block numpy functions (line fits, calibrations, ...): device-agnostic, no Dask."""
