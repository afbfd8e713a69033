"""hats-import's Parquet reader for survey_ml parts (its own module: hats-import takes 1.5 s to import)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from hats_import.catalog.file_readers import ParquetPyarrowReader

__all__ = ["PositionedRows"]


class PositionedRows(ParquetPyarrowReader):
    """hats-import's Parquet reader that passes on only the rows with a finite ``ra`` and ``dec``."""

    def read(self, input_file: Any, read_columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        for table in super().read(input_file, read_columns):
            placed = pc.and_(pc.is_finite(table["ra"]), pc.is_finite(table["dec"]))
            yield table.filter(pc.fill_null(placed, False))
