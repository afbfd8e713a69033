"""Networks, one module per task; they work on one batch and know nothing of Dask."""
