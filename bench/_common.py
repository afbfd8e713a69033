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


def held_out_release(work: Path, library_size: int, n: int, cache: str | None, client):
    """The seed-0 library, a mock dr10 release of ``n`` spectra re-observed from it (seed 11), ingested.

    The shipped networks were trained on the seed-1 library, so these are galaxies they never saw.
    Returns ``(library, mock, release)``.
    """
    from survey_ml.simulate.library import LibraryConfig, build_library
    from survey_ml.simulate.release import ObservationPlan, simulate_release
    from survey_ml.spec import load_release_spec
    from survey_ml.store import ingest, open_release

    library = build_library(LibraryConfig(n=library_size, seed=0), cache_dir=cache, client=client)
    mock = simulate_release(library, work / "mock", n, seed=11, plan=ObservationPlan.from_spec(load_release_spec("dr10")),
                            client=client)
    ingest(mock.catalogue, work / "store", "dr10", client=client, chunk_rows=512)
    return library, mock, open_release(work / "store")


def strong_line_metallicities(release, library) -> tuple[dict, dict, object]:
    """N2 and O3N2 metallicities of every row, PP04 and calibrated on the library's star-forming galaxies.

    Runs ``survey_ml.baseline.strong_line_metallicity`` over the store's chunks with Dask (the
    current client). Returns ``({calibration: (n, 2) array [n2, o3n2]}, {calibration: seconds},
    library_calibration)``.
    """
    import time

    import dask.array as da
    import numpy as np

    from survey_ml.baseline import PP04, calibrate_strong_lines, strong_line_metallicity

    sf_lib = library.truth[library.truth["starforming"]]
    library_cal = calibrate_strong_lines(sf_lib["nii6584"], sf_lib["ha"], sf_lib["oiii5007"], sf_lib["hb"],
                                         sf_lib["oh12"])
    wave = release.wavelength()
    arrays = [release.array(a) for a in ("flux", "ivar", "mask")]
    z = da.from_array(release.objects["z"].to_numpy(), chunks=(arrays[0].chunks[0],))
    values, seconds = {}, {}
    for cal in (PP04, library_cal):
        def block(f, i, m, zz, cal=cal):
            frame = strong_line_metallicity(wave, f, i, m, zz[:, 0], calibration=cal)
            return frame[["oh12_n2", "oh12_o3n2"]].to_numpy(dtype=np.float64)

        lazy = da.map_blocks(block, *arrays, z[:, None], dtype=np.float64, chunks=(arrays[0].chunks[0], (2,)),
                             meta=np.empty((0, 2)))
        t = time.perf_counter()
        values[cal.name] = lazy.compute()
        seconds[cal.name] = time.perf_counter() - t
    return values, seconds, library_cal
