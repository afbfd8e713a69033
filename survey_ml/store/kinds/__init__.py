"""The input kinds a release store holds, one small module each, by the name ``ingest(kind=...)`` takes.

A kind module gives its :class:`~survey_ml.store.release.Release` subclass (``RELEASE``), the
ingest options it takes (``OPTIONS``), ``discover(source, **options)`` (the input files) and
``plan(existing, release, new_files, **options)`` (an :class:`~survey_ml.store.layout.IngestPlan`:
release.json, row arrays, the block function run on the workers, and any Dask step after).
"""
from __future__ import annotations

from types import ModuleType

from . import echelle, maps, spectra

__all__ = ["KINDS"]

#: Kind name -> its module.
KINDS: dict[str, ModuleType] = {"spectra": spectra, "maps": maps, "echelle": echelle}
