"""survey_ml: survey releases in, calibrated ML catalogs and scaling relations out."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("survey_ml")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from .errors import SurveyFileError

__all__ = ["__version__", "SurveyFileError", "run_catalog"]


def __getattr__(name: str):
    """``survey_ml.run_catalog`` without importing torch and dask at ``import survey_ml``."""
    if name == "run_catalog":
        from .pipeline import run_catalog

        return run_catalog
    raise AttributeError(f"module 'survey_ml' has no attribute {name!r}")
