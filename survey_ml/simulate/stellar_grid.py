"""A regular grid of synthetic stellar spectra, built on a Dask cluster and interpolated between nodes.

The grid spans (Teff, log g, [Fe/H]) on regular axes; [alpha/Fe] follows the Galactic
trend (+0.4 below [Fe/H] = -1, falling linearly to 0 at solar and above) and the
microturbulence a standard Teff / log g relation, unless a node says otherwise. Each node
is one synthetic spectrum (continuum-normalised, rest-frame air wavelengths, no rotation,
no instrument) on one wavelength array shared by the grid; nodes the synthesis could not
make (outside the atmosphere emulator's range, or failed) are NaN and no sample is drawn
from a cell that touches one.

On disk a grid is a Zarr group: ``flux (n_teff, n_logg, n_feh, n_wave)`` float32,
``wavelength (n_wave,)`` float64, and the axes in its attributes. :func:`build_grid` fills
it node by node on the cluster (a node already written is not made again, so a killed build
resumes); :meth:`StellarGrid.interpolate` gives spectra at any labels inside it
(multi-linear in the three axes, as the published training set did).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = ["StellarGrid", "GridAxes", "build_grid", "alpha_for", "open_grid", "grid_summary", "physical", "DEFAULT_AXES"]


def alpha_for(feh: np.ndarray | float) -> np.ndarray:
    """[alpha/Fe] of the Galactic trend: +0.4 for [Fe/H] <= -1, 0 at >= 0, linear between.

    >>> alpha_for(np.array([-2.0, -0.5, 0.3])).tolist()
    [0.4, 0.2, 0.0]
    """
    return np.clip(-0.4 * np.asarray(feh, np.float64), 0.0, 0.4)


@dataclass(frozen=True)
class GridAxes:
    """The regular axes of a grid."""

    teff: tuple[float, ...]
    logg: tuple[float, ...]
    feh: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.teff), len(self.logg), len(self.feh))

    def nodes(self) -> np.ndarray:
        """``(n_nodes, 3)`` labels of every node, C order of the flux array."""
        mesh = np.meshgrid(self.teff, self.logg, self.feh, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=1)

    def to_dict(self) -> dict[str, list[float]]:
        return {"teff": list(self.teff), "logg": list(self.logg), "feh": list(self.feh)}


#: The training grid: FGK(M) dwarfs and giants, 3500-7500 K by 250 K (17), log g 0-5 by 0.5
#: (11), [Fe/H] -2.5..+0.5 by 0.5 (7) as published (1,309 nodes, minus those outside the Kiel
#: diagram that :func:`build_grid` skips with ``physical_only``).
DEFAULT_AXES = GridAxes(tuple(np.arange(3500.0, 7501.0, 250.0)), tuple(np.arange(0.0, 5.01, 0.5)),
                        tuple(np.arange(-2.5, 0.51, 0.5)))


def physical(teff: float, logg: float) -> bool:
    """Whether a (Teff, log g) node lies where stars are (main sequence, subgiants, giants), with margin.

    >>> physical(5750, 4.5), physical(4500, 2.0), physical(7500, 0.5)
    (True, True, False)
    """
    # giants and supergiants are cool; hot stars are on or near the main sequence
    return logg >= 3.0 or teff <= 5500.0 + 1000.0 * (logg - 1.0) + 500.0


class StellarGrid:
    """A grid opened from its Zarr group (read into memory: a few hundred MB at most)."""

    def __init__(self, path: str | os.PathLike) -> None:
        group = zarr.open_group(str(path), mode="r")
        self.path = Path(path)
        self.axes = GridAxes(**{k: tuple(v) for k, v in group.attrs["axes"].items()})
        self.wavelength = np.asarray(group["wavelength"][:], np.float64)
        self.flux = np.asarray(group["flux"][:], np.float32)
        self.attrs = dict(group.attrs)

    def coarsened(self) -> StellarGrid:
        """Every other node along each axis (what a build has made first): a grid of twice the step."""
        coarse = object.__new__(StellarGrid)
        coarse.path, coarse.wavelength, coarse.attrs = self.path, self.wavelength, dict(self.attrs)
        coarse.axes = GridAxes(self.axes.teff[::2], self.axes.logg[::2], self.axes.feh[::2])
        coarse.flux = self.flux[::2, ::2, ::2]
        return coarse

    @property
    def label_min(self) -> np.ndarray:
        return np.array([self.axes.teff[0], self.axes.logg[0], self.axes.feh[0]])

    @property
    def label_max(self) -> np.ndarray:
        return np.array([self.axes.teff[-1], self.axes.logg[-1], self.axes.feh[-1]])

    def done(self) -> np.ndarray:
        """Boolean ``(n_teff, n_logg, n_feh)``: nodes that hold a spectrum."""
        return np.isfinite(self.flux[..., 0])

    def usable_cells(self) -> np.ndarray:
        """``(n_cells, 3)`` lower-corner indices of cells whose 8 corners all hold a spectrum."""
        ok = self.done()
        corners = ok[:-1, :-1, :-1] & ok[1:, :-1, :-1] & ok[:-1, 1:, :-1] & ok[:-1, :-1, 1:] \
            & ok[1:, 1:, :-1] & ok[1:, :-1, 1:] & ok[:-1, 1:, 1:] & ok[1:, 1:, 1:]
        return np.argwhere(corners)

    def sample_labels(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 3)`` labels drawn uniformly inside usable cells (each cell as likely)."""
        cells = self.usable_cells()
        if not len(cells):
            raise ValueError(f"{self.path}: no grid cell has all 8 corners synthesised")
        pick = cells[rng.integers(len(cells), size=n)]
        frac = rng.random((n, 3))
        axes = [np.asarray(a) for a in (self.axes.teff, self.axes.logg, self.axes.feh)]
        return np.stack([axes[d][pick[:, d]] + frac[:, d] * (axes[d][pick[:, d] + 1] - axes[d][pick[:, d]])
                         for d in range(3)], axis=1)

    def covers(self, labels: np.ndarray) -> np.ndarray:
        """``(n,)`` whether each (Teff, log g, [Fe/H]) of ``labels`` ``(n, 3)`` lies in a usable cell."""
        labels = np.atleast_2d(np.asarray(labels, np.float64))
        axes = [np.asarray(a) for a in (self.axes.teff, self.axes.logg, self.axes.feh)]
        inside = np.ones(len(labels), bool)
        idx = []
        for d in range(3):
            inside &= (labels[:, d] >= axes[d][0]) & (labels[:, d] <= axes[d][-1])
            idx.append(np.clip(np.searchsorted(axes[d], labels[:, d], side="right") - 1, 0, len(axes[d]) - 2))
        usable = np.zeros(tuple(len(a) - 1 for a in axes), bool)
        cells = self.usable_cells()
        usable[cells[:, 0], cells[:, 1], cells[:, 2]] = True
        return inside & usable[idx[0], idx[1], idx[2]]

    def interpolate(self, labels: np.ndarray) -> np.ndarray:
        """Spectra ``(n, n_wave)`` at ``labels`` ``(n, 3)`` by tri-linear interpolation (NaN outside usable cells).

        Examples
        --------
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/grid.zarr"
        >>> axes = GridAxes((5000.0, 6000.0), (4.0, 5.0), (-1.0, 0.0))
        >>> grid = build_grid(path, axes, lambda t, g, f, a, v: (np.arange(3.0), np.full(3, t / 1e4)),
        ...                   client=False)
        >>> [round(float(v), 3) for v in StellarGrid(path).interpolate(np.array([[5250.0, 4.5, -0.5]]))[0]]
        [0.525, 0.525, 0.525]
        """
        labels = np.atleast_2d(np.asarray(labels, np.float64))
        axes = [np.asarray(a) for a in (self.axes.teff, self.axes.logg, self.axes.feh)]
        idx, frac = [], []
        for d in range(3):
            i = np.clip(np.searchsorted(axes[d], labels[:, d], side="right") - 1, 0, len(axes[d]) - 2)
            idx.append(i)
            frac.append((labels[:, d] - axes[d][i]) / (axes[d][i + 1] - axes[d][i]))
        out = np.zeros((len(labels), self.wavelength.size), np.float64)
        for corner in range(8):
            bits = [(corner >> d) & 1 for d in range(3)]
            weight = np.ones(len(labels))
            for d in range(3):
                weight = weight * (frac[d] if bits[d] else 1 - frac[d])
            out += weight[:, None] * self.flux[idx[0] + bits[0], idx[1] + bits[1], idx[2] + bits[2]]
        outside = np.zeros(len(labels), bool)
        for d in range(3):
            outside |= (frac[d] < -1e-9) | (frac[d] > 1 + 1e-9)
        out[outside] = np.nan
        return out.astype(np.float32)


def open_grid(path: str | os.PathLike) -> StellarGrid:
    """:class:`StellarGrid` of a Zarr group written by :func:`build_grid`."""
    return StellarGrid(path)


def _synthesise_node(synthesize: Callable[..., tuple[np.ndarray, np.ndarray]], path: str,
                     index: tuple[int, int, int], labels: tuple[float, float, float],
                     vmicro: Callable[[float, float], float] | None) -> tuple[tuple[int, int, int], str]:
    """Make one node and write it into the grid (on a worker); returns its index and '' or the error."""
    teff, logg, feh = labels
    try:
        wave, flux = synthesize(teff, logg, feh, float(alpha_for(feh)), None if vmicro is None else vmicro(teff, logg))
        group = zarr.open_group(path, mode="r+")
        target = np.asarray(group["wavelength"][:])
        flux = np.interp(target, wave, flux, left=np.nan, right=np.nan)
        if not np.isfinite(flux).all():
            return index, "synthesis does not cover the grid's wavelengths"
        group["flux"][index] = flux.astype(np.float32)
        return index, ""
    except Exception as err:  # a node the code cannot make is a hole in the grid, not a failed build
        return index, f"{type(err).__name__}: {err}"


def build_grid(path: str | os.PathLike, axes: GridAxes,
               synthesize: Callable[..., tuple[np.ndarray, np.ndarray]],
               wavelength: np.ndarray | None = None, client: Any = None, physical_only: bool = True,
               vmicro: Callable[[float, float], float] | None = None, progress: bool = False,
               attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Synthesise every node of ``axes`` not yet in the grid at ``path`` (created if absent).

    Parameters
    ----------
    path : path
        The grid's Zarr group.
    axes : GridAxes
    synthesize : callable
        ``synthesize(teff, logg, feh, alpha, vmicro) -> (wavelength, flux)``: one normalised
        rest-frame spectrum (e.g. :func:`survey_ml.simulate.stellar_synthesis.synthesize`).
    wavelength : numpy.ndarray, optional
        The grid's wavelengths (default: those of the first node made).
    client : distributed.Client, False or None
        Where nodes are made (one task each); ``False``: in this process.
    physical_only : bool
        Skip nodes outside the Kiel diagram (:func:`physical`).
    attrs : dict, optional
        Provenance written into the group (synthesis code, line list, resolution ...).

    Returns
    -------
    dict
        ``made``, ``skipped`` (not physical), ``failed`` (node -> error) and ``already`` counts.
    """
    path = str(path)
    nodes = axes.nodes()
    shape = axes.shape
    if not os.path.exists(os.path.join(path, "zarr.json")):
        if wavelength is None:
            wavelength = synthesize(*nodes[len(nodes) // 2], float(alpha_for(nodes[len(nodes) // 2][2])),
                                    None if vmicro is None else vmicro(*nodes[len(nodes) // 2][:2]))[0]
        group = zarr.open_group(path, mode="w")
        group.create_array("wavelength", shape=(len(wavelength),), dtype="float64")[:] = np.asarray(wavelength)
        group.create_array("flux", shape=(*shape, len(wavelength)), chunks=(1, 1, 1, len(wavelength)),
                           dtype="float32", fill_value=np.nan)
        group.attrs.update({"axes": axes.to_dict(), "alpha": "alpha_for([Fe/H]): +0.4 below -1, 0 from 0",
                            **(attrs or {})})
    group = zarr.open_group(path, mode="r")
    done = np.isfinite(group["flux"][..., 0])
    todo, skipped = [], 0
    for flat, labels in enumerate(nodes):
        index = np.unravel_index(flat, shape)
        if done[index]:
            continue
        if physical_only and not physical(labels[0], labels[1]):
            skipped += 1
            continue
        todo.append((tuple(int(i) for i in index), tuple(float(v) for v in labels)))
    # every other node of each axis first: a killed build leaves a coarser grid that already trains
    todo.sort(key=lambda node: sum(i % 2 for i in node[0]))
    from ..cluster.client import current_client

    client = current_client(client)
    if client is None:
        results = [_synthesise_node(synthesize, path, i, lab, vmicro) for i, lab in todo]
    else:
        from distributed import as_completed

        futures = [client.submit(_synthesise_node, synthesize, path, i, lab, vmicro, pure=False) for i, lab in todo]
        results = []
        for future in as_completed(futures):
            results.append(future.result())
            if progress:
                print(f"grid {path}: {len(results)}/{len(futures)} nodes", flush=True)
    failed = {str(i): err for i, err in results if err}
    return {"made": len(results) - len(failed), "failed": failed, "skipped": skipped,
            "already": int(done.sum())}


def grid_summary(grid: StellarGrid) -> dict[str, Any]:
    """Counts of a grid: nodes made, usable cells."""
    return {"nodes": int(grid.done().sum()), "cells": int(len(grid.usable_cells())),
            "shape": list(grid.axes.shape), "n_wave": int(grid.wavelength.size)}
