"""Catalogs on disk: Parquet parts, resume and provenance (:mod:`.parts`); FITS and VOTable export; HATS collections for LSDB (:mod:`.hats`).

The functions a user reads a finished catalog with are importable from here::

    from survey_ml.catalog import read_catalog, export_fits, export_hats, open_lsdb
"""
from .hats import HatsExport, export_hats, open_lsdb
from .parts import PROVENANCE_KEY, export_fits, export_votable, finished_parts, read_catalog, read_provenance

__all__ = ["export_hats", "open_lsdb", "HatsExport", "read_catalog", "export_fits", "export_votable", "read_provenance", "finished_parts", "PROVENANCE_KEY"]
