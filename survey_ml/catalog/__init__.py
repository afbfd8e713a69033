"""Catalogs on disk: Parquet parts, resume and provenance (:mod:`.parts`); FITS export.

The functions a user reads a finished catalog with are importable from here::

    from survey_ml.catalog import read_catalog, export_fits
"""
from .parts import PROVENANCE_KEY, export_fits, export_votable, finished_parts, read_catalog, read_provenance

__all__ = ["read_catalog", "export_fits", "export_votable", "read_provenance", "finished_parts", "PROVENANCE_KEY"]
