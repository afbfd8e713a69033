"""Deliberate damage to survey files: the bad input a real release contains.

Each defect rewrites one file in place and returns the row status ingest must give it.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ..io.lamost import read_lamost_spectrum, write_lamost_spectrum

__all__ = ["DEFECTS", "inject_defect"]


def _truncate(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)


def _not_fits(path: str) -> None:
    with open(path, "wb") as fh:
        fh.write(b"<html><body>404 Not Found</body></html>\n")


def _rewrite(path: str, change: Callable) -> None:
    spec = read_lamost_spectrum(path)
    change(spec)
    layout = "old" if spec.format == "lamost-old" else "new"
    write_lamost_spectrum(path, spec, layout=layout, overwrite=True, compresslevel=1)


def _nan_flux(path: str) -> None:
    def change(spec):
        spec.flux[:] = np.nan
    _rewrite(path, change)


def _zero_ivar(path: str) -> None:
    def change(spec):
        spec.ivar[:] = 0.0
    _rewrite(path, change)


def _some_inf(path: str) -> None:
    def change(spec):
        spec.flux[100:140] = np.inf
    _rewrite(path, change)


#: defect name -> (function damaging the file, status ingest must report)
DEFECTS: dict[str, tuple[Callable[[str], None], str]] = {
    "truncated": (_truncate, "truncated"),
    "not_fits": (_not_fits, "unreadable"),
    "nan_flux": (_nan_flux, "no_coverage"),
    "zero_ivar": (_zero_ivar, "no_coverage"),
    "some_inf": (_some_inf, "masked_values"),
}


def inject_defect(path: str | os.PathLike, defect: str) -> str:
    """Damage ``path`` in place with ``defect``; return the status ingest must give it.

    Parameters
    ----------
    path : path
        A LAMOST spectrum file.
    defect : str
        A key of :data:`DEFECTS`.
    """
    damage, status = DEFECTS[defect]
    damage(os.fspath(path))
    return status
