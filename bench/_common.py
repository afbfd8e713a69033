"""Helpers shared by the benchmarks: machine description and JSON output."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the figures were measured on."""
    import numpy
    import dask
    import distributed

    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "numpy": numpy.__version__, "dask": dask.__version__, "distributed": distributed.__version__}
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def emit(name: str, result: dict) -> Path:
    """Print ``result`` as JSON and keep it as bench/results/<name>.json."""
    result = {"benchmark": name, "machine": machine(), **result}
    text = json.dumps(result, indent=2, default=float)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(text + "\n")
    return out
