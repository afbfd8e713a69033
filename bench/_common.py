"""Helpers shared by the benchmarks: machine description and JSON output."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

#: Where ``emit`` keeps results: bench/results/, or ``$SURVEY_ML_BENCH_RESULTS`` (the suite
#: runner points each benchmark at a scratch folder and moves what it wrote into place).
RESULTS_ENV = "SURVEY_ML_BENCH_RESULTS"
RESULTS = Path(os.environ.get(RESULTS_ENV) or Path(__file__).resolve().parent / "results")
REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path = REPO) -> dict:
    """HEAD of the repository the benchmarks ran from, and whether the tree had local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def gpus() -> list[dict]:
    """Visible CUDA GPUs (name, memory), as torch sees them; empty without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [{"name": torch.cuda.get_device_name(k),
                 "memory_gib": round(torch.cuda.get_device_properties(k).total_memory / 2**30, 1)}
                for k in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA install must not stop a CPU benchmark
        return []


def machine() -> dict:
    """What the figures were measured on: CPU, cores, memory, library versions, GPUs, git commit.

    Returns
    -------
    dict
        JSON-ready; ``load_average`` is the 1/5/15-minute load when the block was made (other
        work on the machine contaminates timings).
    """
    import dask
    import distributed
    import numpy

    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "numpy": numpy.__version__, "dask": dask.__version__,
            "distributed": distributed.__version__}
    try:
        import psutil

        info["cpu_count_physical"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    info["gpus"] = gpus()
    info["git"] = git_commit()
    return info


def matmul_peak_flops(device: str = "cpu", dtype=None, size: int = 2048, repeats: int = 10,
                      threads: int | None = None) -> float:
    """Best-of dense matmul FLOP/s of ``size``-square matrices on ``device`` (float32 by default).

    The hardware's own peak, measured in the benchmark's run, that throughput figures are
    quoted against; ``threads`` sets torch's CPU threads first. GPU timings synchronise.
    """
    import time

    import torch

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    a = torch.randn(size, size, device=device, dtype=dtype or torch.float32)
    b = torch.randn(size, size, device=device, dtype=dtype or torch.float32)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - t))
    return best


def emit(name: str, result: dict, folder: Path | None = None) -> Path:
    """Print ``result`` as JSON and keep it as ``<folder>/<name>.json`` (default :data:`RESULTS`)."""
    result = {"benchmark": name, "machine": machine(), **result}
    text = json.dumps(result, indent=2, default=float)
    print(text)
    folder = Path(folder) if folder is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.json"
    out.write_text(text + "\n")
    return out


def held_out_release(work: Path, library_size: int, n: int, cache: str | None, client):
    """The seed-0 library, a mock dr10 release of ``n`` spectra re-observed from it (seed 11), ingested.

    The shipped networks were trained on the seed-1 library, so these are galaxies they never saw.
    Returns ``(library, mock, release)``.
    """
    from survey_ml.simulate.library import LibraryConfig, build_library
    from survey_ml.simulate.release import ObservationPlan, simulate_release
    from survey_ml.config import load_release_spec
    from survey_ml.store import ingest, open_release

    library = build_library(LibraryConfig(n=library_size, seed=0), cache_dir=cache, client=client)
    mock = simulate_release(library, work / "mock", n, seed=11, plan=ObservationPlan.from_spec(load_release_spec("dr10")),
                            client=client)
    ingest(mock.catalogue, work / "store", "dr10", client=client, chunk_rows=512)
    return library, mock, open_release(work / "store")


def strong_line_metallicities(release, library) -> tuple[dict, dict, object]:
    """N2 and O3N2 metallicities of every row, PP04 and calibrated on the library's star-forming galaxies.

    Runs ``survey_ml.core.strong_lines.strong_line_metallicity`` over the store's chunks with Dask (the
    current client). Returns ``({calibration: (n, 2) array [n2, o3n2]}, {calibration: seconds},
    library_calibration)``.
    """
    import time

    import dask.array as da
    import numpy as np

    from survey_ml.core.calibrations import PP04, calibrate_strong_lines
    from survey_ml.core.strong_lines import strong_line_metallicity

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
