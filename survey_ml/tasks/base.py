"""The Task contract: what a catalog task declares and the three steps it runs on one block.

A task is one module under :mod:`survey_ml.tasks` (or in a user's own package, registered
through the ``survey_ml.tasks`` entry-point group). It declares

* ``name`` - the ``[tasks.<name>]`` table of a release spec and the key of its weights;
* ``input_kind`` - the store kind it reads: ``"spectra"``, ``"maps"`` (later ``"cubes"``,
  ``"cutouts"``, ``"echelle"``);
* ``columns`` - its catalog columns (:class:`Column`: dtype, unit, one-line description),
  which are the ``meta`` of the lazy Dask catalog and the column documentation of the
  Parquet and FITS catalogs;
* ``Options`` - a frozen dataclass read from its ``[tasks.<name>]`` table; an unknown key
  is an error naming the key and the spec file (:meth:`Task.from_spec`);

and runs, per block of a release (one Zarr chunk of rows, :class:`Block`):

``select(block)``
    the block rows it works on (default: usable rows inside the release's ``[cuts]``);
``prepare(block, rows)``
    batched arrays for those rows (:class:`Batch`), no per-row Python loop; rows it cannot
    use are *rejected* with a status and a message, never dropped;
``predict(model, batch)``
    ``{column: values for batch.rows}`` on whatever device the worker has;
``finish(block, values)``
    columns derived from the others for every row (flags, thresholds), in place.

The model is built by :meth:`Task.load_model` on the worker, from the weights file, once per
worker and device (:func:`survey_ml.core.inference.load_model`): it never travels through the graph.
The engine (:mod:`survey_ml.engine`) knows nothing of any task beyond this contract.
"""
from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pandas as pd

from ..core.quality import USABLE_STATUSES
from ..config import SpecError

__all__ = ["Column", "Block", "Batch", "Task", "NoOptions", "SpecError", "USABLE_STATUSES", "column_meta",
           "options_from_table"]

@dataclass(frozen=True)
class Column:
    """One catalog column a task writes.

    Parameters
    ----------
    name : str
        Column name, after what it is in astronomy (``oh12``, ``vmax_kms``).
    dtype : str
        pandas dtype (``"float32"``, ``"int32"``, ``"bool"``, ``"string"``).
    unit : str
        Unit as astropy writes it (``"km / s"``, ``"dex"``, ``"deg"``), ``""`` if dimensionless.
    description : str
        One line: what the value is (FITS ``TCOMM``, the report, the README table).
    fill : object, optional
        Value of rows the task did not predict; default NaN for floats, ``False`` for bool,
        ``""`` for strings, 0 for integers.
    ucd : str, optional
        IVOA Unified Content Descriptor (``"phys.abund.Z"``): the VOTable ``ucd`` and FITS
        ``TUCDn`` that tell TOPCAT and the VO what the column is.

    Examples
    --------
    >>> Column("oh12", "float32", "dex", "12 + log(O/H)").missing()
    nan
    >>> Column("z_cnn_flag", "int32", fill=16).missing()
    16
    """

    name: str
    dtype: str
    unit: str = ""
    description: str = ""
    fill: Any = None
    ucd: str = ""

    def missing(self) -> Any:
        """The value of a row this column has no prediction for."""
        if self.fill is not None:
            return self.fill
        if self.dtype == "string":
            return ""
        return {"f": float("nan"), "b": False}.get(np.dtype(self.dtype).kind, 0)

    def empty(self, n: int) -> np.ndarray:
        """``n`` rows of :meth:`missing` in this column's dtype (object for strings)."""
        if self.dtype == "string":
            return np.full(n, self.missing(), dtype=object)
        return np.full(n, self.missing(), dtype=self.dtype)


def column_meta(columns: tuple[Column, ...] | list[Column]) -> pd.DataFrame:
    """An empty frame with these columns and dtypes: the ``meta`` of a lazy Dask catalog.

    Examples
    --------
    >>> column_meta([Column("oh12", "float32"), Column("status", "string")]).dtypes.astype(str).tolist()
    ['float32', 'string']
    """
    return pd.DataFrame({c.name: pd.Series([], dtype=c.dtype) for c in columns})


@dataclass(frozen=True)
class NoOptions:
    """A task without options of its own (only ``weights``)."""


def options_from_table(options_type: type, table: dict[str, Any], where: str) -> Any:
    """Build a frozen options dataclass from a spec table; an unknown key is an error.

    Examples
    --------
    >>> @dataclass(frozen=True)
    ... class O:
    ...     batch_size: int = 512
    >>> options_from_table(O, {"batch_size": 32}, "dr10.toml [tasks.x]")
    O(batch_size=32)
    >>> options_from_table(O, {"bach_size": 32}, "dr10.toml [tasks.x]")
    Traceback (most recent call last):
    ...
    survey_ml.config.SpecError: dr10.toml [tasks.x]: unknown key 'bach_size' (known: batch_size, weights)
    """
    known = {f.name: f for f in dataclasses.fields(options_type)}
    values = {}
    for key, value in table.items():
        if key == "weights":
            continue
        if key not in known:
            raise SpecError(f"{where}: unknown key {key!r} (known: {', '.join(sorted([*known, 'weights']))})")
        values[key] = value
    try:
        return options_type(**values)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{where}: {err}") from None


@dataclass
class Block:
    """One chunk of rows of a release: what a task's steps see.

    Attributes
    ----------
    chunk : int
        Chunk index (names the catalog part).
    arrays : dict
        The store's arrays of these rows (spectra: ``flux``, ``ivar``, ``mask``; maps:
        ``flux``, ``velocity``, ``dispersion``, ``good``, ... and ``pixel_scale``).
    rows : pandas.DataFrame
        The store's row table for these rows (``objects.parquet`` / ``galaxies.parquet``).
    info : dict
        The store's ``release.json`` (grid, survey, ...).
    status, message : numpy.ndarray
        Working status and message of every row (object arrays); the engine sets the ingest
        status and the release cuts, tasks add the reasons they reject rows for.
    selected : numpy.ndarray
        Row indices that were usable and inside the release ``[cuts]`` when the block opened
        (fixed: every task sees the same selection whatever ran before it).
    device : str
        ``"cpu"`` or ``"cuda"``: this worker's device.
    threads : int
        torch intra-op threads for this task.
    """

    chunk: int
    arrays: dict[str, np.ndarray]
    rows: pd.DataFrame
    info: dict[str, Any]
    status: np.ndarray
    message: np.ndarray
    selected: np.ndarray
    device: str = "cpu"
    threads: int = 1
    _shared: dict[Any, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def usable(self) -> np.ndarray:
        """Row indices whose ingest status holds data (whatever the cuts)."""
        return np.flatnonzero(np.isin(self.rows["status"].astype(str).to_numpy(), list(USABLE_STATUSES)))

    def wavelength(self) -> np.ndarray:
        """The wavelength (A, vacuum) of every pixel of a spectra block (the store's common grid)."""
        from ..core.wavelength import LogLinearGrid

        if "grid" not in self.info:
            raise ValueError(f"block {self.chunk} holds no spectra (its store has no wavelength grid)")
        return self.shared("wavelength", lambda: LogLinearGrid(**self.info["grid"]).wavelength())

    def shared(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per block under ``key``: preparation tasks share (model inputs)."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def reject(self, rows: np.ndarray, status: str, messages: str | list[str]) -> None:
        """Give ``rows`` a status and message, unless an earlier step already did."""
        rows = np.asarray(rows, dtype=np.int64)
        still = np.isin(self.status[rows].astype(str), list(USABLE_STATUSES))
        messages = np.broadcast_to(np.asarray(messages, dtype=object), rows.shape)
        self.status[rows[still]] = status
        self.message[rows[still]] = messages[still]


@dataclass
class Batch:
    """What :meth:`Task.prepare` hands to :meth:`Task.predict`.

    ``rows`` are block row indices; ``inputs`` anything the task's ``predict`` takes
    (arrays, tensors) for exactly those rows, in that order.
    """

    rows: np.ndarray
    inputs: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """A catalog task (see the module docstring). Subclasses set the class attributes."""

    name: ClassVar[str]
    input_kind: ClassVar[str]
    columns: ClassVar[tuple[Column, ...]]
    Options: ClassVar[type] = NoOptions
    #: ``False`` for tasks without a network (a fit, a calibration): no weights asked for.
    needs_weights: ClassVar[bool] = True
    #: The shipped weights file (in ``survey_ml/weights``) when the spec names none.
    default_weights: ClassVar[str | None] = None
    #: A network survey_ml does not ship (a plug-in's own ``torch.nn.Module``, with a ``config()``
    #: method giving its constructor's keyword arguments); None: the weights file names one of
    #: :data:`survey_ml.core.inference.ARCHITECTURES`.
    model_class: ClassVar[type | None] = None

    def __init__(self, options: Any = None, weights: str | os.PathLike | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.weights = str(weights) if weights is not None else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_spec(cls, table: dict[str, Any], spec_path: str = "<spec>", weights: str | None = None,
                  spec: dict[str, Any] | None = None) -> Task:
        """The task as a release spec's ``[tasks.<name>]`` table asks for.

        ``weights`` (a path) overrides the table's; a relative path is looked up as given,
        beside the spec file, then in the shipped ``survey_ml/weights``. A missing file is an
        error naming it. ``spec`` is the whole release spec, for tasks that read other tables.
        """
        where = f"{spec_path} [tasks.{cls.name}]"
        options = options_from_table(cls.Options, table, where)
        path = None
        if cls.needs_weights:
            path = cls.resolve_weights(weights or table.get("weights") or cls.default_weights, spec_path, where)
        return cls(options, path)

    @classmethod
    def resolve_weights(cls, name: str | os.PathLike | None, spec_path: str, where: str) -> str:
        from ..core.inference import WEIGHTS_DIR

        if not name:
            raise SpecError(f"{where}: no weights (set weights = \"<file>.pt\")")
        path = Path(name)
        if not path.is_absolute():
            for candidate in (path, Path(spec_path).parent / path, WEIGHTS_DIR / path):
                if candidate.is_file():
                    path = candidate
                    break
            else:
                path = WEIGHTS_DIR / path
        if not path.is_file():
            raise FileNotFoundError(f"{where}: weights for task {cls.name!r} not found: {path}")
        return str(path)

    # ------------------------------------------------------------------ the three steps
    def select(self, block: Block) -> np.ndarray:
        """Block rows this task runs on: by default usable rows inside the release cuts."""
        return block.selected

    @abstractmethod
    def prepare(self, block: Block, rows: np.ndarray) -> Batch:
        """Batched inputs for ``rows`` of ``block``; may :meth:`Block.reject` rows it cannot use."""

    @abstractmethod
    def predict(self, model: Any, batch: Batch) -> dict[str, np.ndarray]:
        """``{column: values}`` for ``batch.rows`` (columns not returned keep their fill)."""

    def finish(self, block: Block, values: dict[str, np.ndarray]) -> None:
        """Derive columns from the predicted ones for every row of the block, in place."""

    def load_model(self, device: str) -> Any:
        """The model on ``device``, built once per worker process from the weights file."""
        if not self.needs_weights:
            return None
        from ..core.inference import load_model

        return load_model(self.weights, device, self.model_class)

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, recipe: str | os.PathLike, *, out: str | os.PathLike | None = None, client=None,
              cache_dir: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
        """Train this task's network from a recipe (``survey_ml/weights/<name>.toml``); returns its report.

        Every survey_ml training runs the one epoch loop of :mod:`survey_ml.train.loop`.
        """
        raise NotImplementedError(f"task {cls.name!r} has no training (it needs no weights, or brings its own)")

    # ------------------------------------------------------------------ whole release
    def fit_to_release(self, store: Path, spec: dict[str, Any], out: Path, client, progress: bool) -> Task:
        """Before inference: a task that learns from the release itself (self-supervised) returns
        a copy with the weights it trained; others return themselves."""
        return self

    def finalize(self, catalog: pd.DataFrame) -> pd.DataFrame:
        """Sample-level steps once the whole catalog is read (e.g. a cut relative to the sample)."""
        return catalog

    def figures(self, catalog: pd.DataFrame) -> list[tuple[str, Any]]:
        """``(caption, matplotlib Figure)`` pairs the task adds to the HTML report."""
        return []

    # ------------------------------------------------------------------ description
    def provenance(self) -> dict[str, Any]:
        """What a catalog part records of this task: its options and weights digest."""
        from ..core.inference import weights_sha256

        out: dict[str, Any] = {"options": dataclasses.asdict(self.options)}
        if self.weights:
            out["weights"] = Path(self.weights).name
            out["weights_sha256"] = weights_sha256(self.weights)
        return out

    def run(self, block: Block) -> dict[str, np.ndarray]:
        """This task's columns for every row of ``block`` (the engine's per-task step)."""
        values = {c.name: c.empty(len(block)) for c in self.columns}
        rows = self.select(block)
        if len(rows):
            batch = self.prepare(block, rows)
            if len(batch.rows):
                model = self.load_model(block.device)
                for name, column in self.predict(model, batch).items():
                    values[name][batch.rows] = column
        self.finish(block, values)
        return values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r}, weights={self.weights!r})"
