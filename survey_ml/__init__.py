"""survey_ml: survey releases in, calibrated ML catalogs and scaling relations out.

The public API is small; everything else is reached through its modules::

    import survey_ml
    client = survey_ml.connect()                                  # a LocalCluster, or --scheduler / HPC
    release = survey_ml.open_release("survey_ml_dr10/store")      # lazy: nothing is read yet
    catalog = release.catalog(tasks=["metallicity", "sfclass"])   # a dask.dataframe.DataFrame
    report = survey_ml.run_catalog("dr10")                        # a whole release spec, to Parquet + relations

A task of one's own subclasses :class:`survey_ml.Task` and is registered with
:func:`survey_ml.register` or through the ``survey_ml.tasks`` entry-point group.
"""
from ._version import __version__
from .io.errors import SurveyFileError

__all__ = ["__version__", "SurveyFileError", "open_release", "run_catalog", "connect", "Task", "Column", "register"]

#: Public names imported on first use, so ``import survey_ml`` loads neither torch nor dask.
_LAZY = {"open_release": "survey_ml.dask.catalog", "run_catalog": "survey_ml.dask.runner", "connect": "survey_ml.cluster.client",
         "Task": "survey_ml.tasks.base", "Column": "survey_ml.tasks.base", "register": "survey_ml.tasks.registry"}


def __getattr__(name: str):
    """The lazy public names of :data:`_LAZY`."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'survey_ml' has no attribute {name!r}")
