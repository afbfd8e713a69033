"""survey_ml: survey releases in, calibrated ML catalogs and scaling relations out."""
from ._version import __version__
from .errors import SurveyFileError

__all__ = ["__version__", "SurveyFileError", "run_catalog"]


def __getattr__(name: str):
    """``survey_ml.run_catalog`` without importing torch and dask at ``import survey_ml``."""
    if name == "run_catalog":
        from .pipeline import run_catalog

        return run_catalog
    raise AttributeError(f"module 'survey_ml' has no attribute {name!r}")
