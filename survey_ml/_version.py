"""The installed package's version, in a module of its own.

Submodules import ``__version__`` from here, not from the package (``from . import
__version__``): that would run ``survey_ml/__init__.py``, whose lazy attributes import the
pipeline, and put every such submodule on an import cycle.
"""
from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("survey_ml")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
