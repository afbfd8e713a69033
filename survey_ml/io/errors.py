"""Exceptions raised by survey_ml.

Every reader raises :class:`SurveyFileError` for a file it cannot use, whatever the
cause (missing, not FITS, truncated, wrong data model, unusable values), so callers -
ingest above all - catch one type and turn it into a flagged row.
"""
from __future__ import annotations

import os

__all__ = ["SurveyFileError"]


class SurveyFileError(Exception):
    """A survey file that cannot be read as the data model it claims to be.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file.
    problem : str
        What is wrong with it, in words a user can act on.
    code : str, optional
        A short machine-readable reason (``"unreadable"``, ``"wrong_format"``,
        ``"truncated"``, ``"bad_header"``, ``"no_coverage"``, ...), stored as the row
        status by ingest.

    Examples
    --------
    >>> err = SurveyFileError("spec-1.fits", "not a FITS file", code="unreadable")
    >>> str(err)
    'spec-1.fits: not a FITS file'
    >>> err.code
    'unreadable'
    """

    def __init__(self, path: str | os.PathLike, problem: str, code: str = "unreadable"):
        self.path = os.fspath(path)
        self.problem = problem
        self.code = code
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep path/problem/code when pickled between Dask workers
        return (type(self), (self.path, self.problem, self.code))
