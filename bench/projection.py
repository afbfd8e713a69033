"""Projected wall time of full releases - LAMOST DR10 LRS and MaNGA DR17 - on M cores and N GPUs.

Arithmetic on the rates measured by the other benchmarks, every input labelled as measured
(with the file and key it came from) or assumed (with the reason), so that a reader can
redo a figure by hand:

LAMOST DR10 v2.0 LRS (``run-catalog dr10``: ingest, then metallicity + sfclass + redshift)

- ingest on M cores: ``N / (M r_ingest)``, ``r_ingest`` = survey_ml's Dask ingest files/s per
  worker (ingest.json); inference on M cores: ``N / (M r_infer)``, ``r_infer`` = run-catalog
  spectra/s per worker at the largest worker count of scaling.json (its measured parallel
  efficiency included; assumed to hold at M: the chunks are independent, no worker-to-worker
  traffic);
- each stage is also bounded by the shared filesystem: bytes read + written / ``fs_gbps``;
  the stage takes the larger of its CPU and I/O times;
- on N GPUs with C cores each: the networks run on the GPU at ``gpu_rate`` spectra/s -
  measured (gpu.json) or assumed (``gpu_tflops`` / network FLOPs per spectrum, scaling.json);
  the rest (reading, inputs, the redshift template fit: the CPU share ``f`` of scaling.json's
  stage profile) stays on the C cores at ``r_infer / f`` spectra/s per core; a GPU goes at
  the slower of the two. Ingest runs on the N x C cores.

MaNGA DR17 (``run-catalog manga-dr17`` with the shipped kinematic weights)

- per galaxy and core: the preparation (kinematics.json, SAMI-format mock files), reading a
  real DAP MAPS file (its size / an assumed gzip inflate rate: the mock files hold only the
  maps used) and T = 100 Monte Carlo dropout passes (kinematics.json, per torch thread);
  on N GPUs the passes move to the GPU (negligible: assumed free), the rest stays on the cores.

Writes projection.json and projection.md to ``--out`` (default ``$SURVEY_ML_BENCH_RESULTS``, else beside its inputs).

Usage: python bench/projection.py [--results bench/results] [--cores 32 128 1024] [--gpus 1 4 8]
       [--cores-per-gpu 16] [--gpu-tflops 20] [--fs-gbps 5]
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import RESULTS, RESULTS_ENV, emit

REAL_LAMOST = Path(os.environ.get("SURVEY_ML_REAL_FIXTURES", Path(__file__).resolve().parents[2] / "shared"
                                  / "fixtures" / "real")) / "lamost"


@dataclass
class Assumptions:
    """Everything the projection does not measure, with its default."""

    cores: tuple[int, ...] = (32, 128, 1024)
    gpus: tuple[int, ...] = (1, 4, 8)
    #: CPU cores beside each GPU (reading, inputs, template fit, ingest), all used by the GPU's Dask worker
    cores_per_gpu: int = 16
    #: sustained FLOP/s of one GPU on these small 1-D CNNs, in TFLOP/s (~30% of an H100's 67 TFLOP/s FP32 peak)
    gpu_tflops: float = 20.0
    #: aggregate read + write bandwidth of the shared filesystem, GB/s
    fs_gbps: float = 5.0
    #: LAMOST DR10 v2.0 LRS spectra (catalogs/dr10.toml) and its galaxies
    lamost_n: int = 11_441_011
    lamost_galaxies: int = 261_381
    #: MaNGA DR17 galaxies (10,010 unique; 11,273 cubes with repeats)
    manga_n: int = 10_010
    #: mean size of a DR17 DAP MAPS file (HYB10), MiB, gzip-compressed
    manga_maps_mib: float = 15.0
    #: gzip inflate of a MAPS file per core, MiB of compressed input per second
    gunzip_mib_per_s: float = 50.0
    #: bytes of one LAMOST LRS .fits.gz when no real file is at hand to measure
    lamost_file_bytes: float = 46_000.0

    def notes(self) -> dict[str, str]:
        return {
            "cores": "core counts projected (one Dask worker per core, one thread each)",
            "gpus": "GPU counts projected",
            "cores_per_gpu": "CPU cores beside each GPU: they ingest, and - as threads of the GPU's Dask worker, "
                             "chunks in flight - read, make the inputs and run the template fit",
            "gpu_tflops": "sustained TFLOP/s of one GPU on these 1-D CNNs (~30% of an H100's FP32 peak) - used only "
                          "without a measured gpu.json",
            "fs_gbps": "aggregate bandwidth of the shared filesystem (read + write), GB/s",
            "lamost_n": "LAMOST DR10 v2.0 LRS spectra (catalogs/dr10.toml)",
            "lamost_galaxies": "of which galaxies (catalogs/dr10.toml)",
            "manga_n": "MaNGA DR17 unique galaxies (11,273 cubes with repeats: --manga-n 11273)",
            "manga_maps_mib": "mean gzip-compressed size of a DAP MAPS file, MiB (not measured here: no real file)",
            "gunzip_mib_per_s": "gzip inflate per core, MiB of compressed input per second",
            "lamost_file_bytes": "size of one LRS .fits.gz when no real file is at hand "
                                 "(the two real fixtures: ~46 kB)",
        }


def _read(results: Path, name: str) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def measured_rates(results: Path, real_lamost: Path = REAL_LAMOST) -> dict:
    """The measured inputs, each ``{"value": ..., "source": "file: key"}``.

    Raises
    ------
    FileNotFoundError
        Without scaling.json (the per-worker inference rate has no stand-in).
    """
    scaling = _read(results, "scaling")
    if scaling is None:
        raise FileNotFoundError(f"{results / 'scaling.json'} is missing: run python bench/scaling.py first")
    rates: dict[str, dict] = {}

    def put(key, value, source):
        if value is not None:
            rates[key] = {"value": value, "source": source}

    largest = scaling["configurations"][max(scaling["configurations"], key=int)]
    put("dr10_spectra_per_s_per_core", float(scaling["per_worker_spectra_per_s"]),
        f"scaling.json: per_worker_spectra_per_s ({scaling.get('per_worker_spectra_per_s_from', '')})")
    eff = scaling.get("efficiency", {})
    if eff:
        k = max(eff, key=int)
        put("dr10_efficiency", float(eff[k]["wall_best"]), f"scaling.json: efficiency.{k}.wall_best (1 -> {k} workers)")
    profile = scaling["stage_profile"]
    put("dr10_cpu_share_not_networks",
        float(profile["cpu_ms_per_spectrum_not_networks"]) / float(profile["cpu_ms_per_spectrum_total"]),
        "scaling.json: stage_profile cpu_ms_per_spectrum_not_networks / _total")
    put("dr10_network_flops_per_spectrum", int(scaling["network_flops_per_spectrum_total"]),
        "scaling.json: network_flops_per_spectrum_total")
    put("catalog_bytes_per_spectrum", float(largest["catalog_bytes_per_spectrum"]),
        "scaling.json: configurations.*.catalog_bytes_per_spectrum")
    put("dr10_chunk_rows", int(scaling["chunk_rows"]), "scaling.json: chunk_rows (spectra per inference task)")

    ingest = _read(results, "ingest")
    if ingest is not None:
        dask = ingest["survey_ml_dask_ingest"]
        put("ingest_files_per_s_per_core", float(dask["files_per_s"]) / int(ingest["n_workers"]),
            f"ingest.json: survey_ml_dask_ingest.files_per_s / n_workers ({ingest['n_workers']})")
        put("store_bytes_per_spectrum", float(dask["store_mib"]) * 2**20 / int(ingest["n_files"]),
            "ingest.json: survey_ml_dask_ingest.store_mib / n_files")
        put("ingest_chunk_rows", int(ingest["chunk_rows"]), "ingest.json: chunk_rows (files per ingest task)")
    files = sorted(real_lamost.glob("spec-*.fits*")) if real_lamost.is_dir() else []
    if files:
        put("lamost_file_bytes", sum(f.stat().st_size for f in files) / len(files),
            f"mean size of the {len(files)} real LAMOST files in {real_lamost}")

    kin = _read(results, "kinematics")
    if kin is not None:
        workers = 2  # prepare_galaxies_per_s_2_workers: the benchmark's LocalCluster of 2 workers
        put("ifu_prepare_galaxies_per_s_per_core", float(kin["prepare_galaxies_per_s_2_workers"]) / workers,
            "kinematics.json: prepare_galaxies_per_s_2_workers / 2")
        threads = int(kin.get("torch_threads") or kin["machine"]["cpu_count"])
        model = kin["results"].get("psf_aware") or kin["results"]["published"]
        put("ifu_mc_galaxies_per_s_per_core", int(kin["n"]) / (float(model["mc_seconds_100_passes"]) * threads),
            f"kinematics.json: n / (results.psf_aware.mc_seconds_100_passes x {threads} torch threads)")

    gpu = _read(results, "gpu")
    if gpu is not None and gpu.get("device_type", "cuda") == "cuda" and gpu.get("dr10_network_spectra_per_s"):
        put("gpu_dr10_network_spectra_per_s", float(gpu["dr10_network_spectra_per_s"]),
            f"gpu.json: dr10_network_spectra_per_s ({gpu.get('device', 'GPU')})")
    return rates


def compute_seconds(n: int, chunk: int, workers: int, rate_per_worker: float) -> float:
    """Wall time of ``n`` items in tasks of ``chunk`` on ``workers`` workers at ``rate_per_worker`` items/s.

    Tasks run in waves: ``ceil(n_tasks / workers)`` of them one after the other on the busiest
    worker - with more workers than tasks, one task's time however many workers there are.

    Examples
    --------
    >>> compute_seconds(10_000, 1000, 4, 100.0)  # 10 tasks on 4 workers: 3 waves of 10 s
    30.0
    """
    tasks = math.ceil(n / chunk)
    return math.ceil(tasks / workers) * min(chunk, n) / rate_per_worker


def _stage(cpu_s: float, io_bytes: float, fs_gbps: float) -> dict:
    io_s = io_bytes / (fs_gbps * 1e9)
    return {"cpu_s": cpu_s, "io_s": io_s, "seconds": max(cpu_s, io_s), "bound": "cpu" if cpu_s >= io_s else "io"}


def lamost_projection(n: int, rates: dict, a: Assumptions) -> dict:
    """Ingest + inference wall time of ``n`` LRS spectra on ``a.cores`` cores and ``a.gpus`` GPUs."""
    v = {k: r["value"] for k, r in rates.items()}
    b_in = v.get("lamost_file_bytes", a.lamost_file_bytes)
    b_store, b_cat = v.get("store_bytes_per_spectrum"), v["catalog_bytes_per_spectrum"]
    r_infer, r_ingest = v["dr10_spectra_per_s_per_core"], v.get("ingest_files_per_s_per_core")
    volume = {"input_gb": n * b_in / 1e9, "store_gb": None if b_store is None else n * b_store / 1e9,
              "catalog_gb": n * b_cat / 1e9}
    ingest_io = n * (b_in + (b_store or 0.0))
    infer_io = n * ((b_store or 0.0) + b_cat)

    chunk, ingest_chunk = int(v.get("dr10_chunk_rows", 2048)), int(v.get("ingest_chunk_rows", 1024))

    def run(cores: int, workers: int, rate_per_worker: float) -> dict:
        ingest = None if r_ingest is None else _stage(compute_seconds(n, ingest_chunk, cores, r_ingest), ingest_io,
                                                      a.fs_gbps)
        infer = _stage(compute_seconds(n, chunk, workers, rate_per_worker), infer_io, a.fs_gbps)
        total = infer["seconds"] + (ingest["seconds"] if ingest else 0.0)
        return {"ingest": ingest, "inference": infer, "total_s": total, "total_h": total / 3600}

    cpu = {str(m): run(m, m, r_infer) for m in a.cores}
    if "gpu_dr10_network_spectra_per_s" in v:
        gpu_rate, gpu_source = v["gpu_dr10_network_spectra_per_s"], "measured (gpu.json)"
    else:
        gpu_rate = a.gpu_tflops * 1e12 / v["dr10_network_flops_per_spectrum"]
        gpu_source = "assumed: gpu_tflops / network FLOPs per spectrum"
    host_rate = a.cores_per_gpu * r_infer / v["dr10_cpu_share_not_networks"]
    per_gpu = min(gpu_rate, host_rate)
    gpu = {}
    for g in a.gpus:
        gpu[str(g)] = run(g * a.cores_per_gpu, g, per_gpu) | {
            "cores": g * a.cores_per_gpu, "spectra_per_s_per_gpu": per_gpu,
            "bound_by": "gpu networks" if gpu_rate <= host_rate else "cpu cores beside the gpu"}
    return {"n_spectra": n, "io_volume": volume, "cpu": cpu, "gpu": gpu,
            "gpu_network_spectra_per_s": gpu_rate, "gpu_network_rate_source": gpu_source,
            "host_cores_spectra_per_s_per_gpu": host_rate,
            "host_spectra_per_s_per_core": r_infer / v["dr10_cpu_share_not_networks"]}


def manga_projection(n: int, rates: dict, a: Assumptions, chunk: int = 64) -> dict | None:
    """Preparation + MC inference wall time of ``n`` MaNGA galaxies (None without kinematics.json).

    ``chunk``: galaxies per task (catalogs/manga-dr17.toml ``chunk_rows``).
    """
    v = {k: r["value"] for k, r in rates.items()}
    if "ifu_prepare_galaxies_per_s_per_core" not in v:
        return None
    read_s = a.manga_maps_mib / a.gunzip_mib_per_s
    prep_s = 1.0 / v["ifu_prepare_galaxies_per_s_per_core"]
    mc_s = 1.0 / v["ifu_mc_galaxies_per_s_per_core"]
    io_bytes = n * a.manga_maps_mib * 2**20

    def run(cores: int, core_s_per_galaxy: float) -> dict:
        stage = _stage(compute_seconds(n, chunk, cores, 1.0 / core_s_per_galaxy), io_bytes, a.fs_gbps)
        return {"inference": stage, "total_s": stage["seconds"], "total_h": stage["seconds"] / 3600}

    cpu = {str(m): run(m, read_s + prep_s + mc_s) for m in a.cores}
    gpu = {str(g): run(g * a.cores_per_gpu, read_s + prep_s) | {"cores": g * a.cores_per_gpu} for g in a.gpus}
    return {"n_galaxies": n, "io_volume": {"input_gb": io_bytes / 1e9},
            "core_s_per_galaxy": {"read_maps": read_s, "prepare": prep_s, "mc_dropout_100": mc_s},
            "cpu": cpu, "gpu": gpu}


def project(rates: dict, a: Assumptions) -> dict:
    """The whole projection: both LAMOST figures (all LRS spectra, galaxies only) and MaNGA."""
    return {"lamost_dr10_lrs": lamost_projection(a.lamost_n, rates, a),
            "lamost_dr10_lrs_galaxies": lamost_projection(a.lamost_galaxies, rates, a),
            "manga_dr17": manga_projection(a.manga_n, rates, a, _manga_chunk_rows())}


def _manga_chunk_rows() -> int:
    """Galaxies per task of the MaNGA spec (64 if the spec cannot be read)."""
    try:
        from survey_ml.config import load_release_spec

        return int(load_release_spec("manga-dr17")["ingest"]["chunk_rows"])
    except (ImportError, FileNotFoundError, KeyError, ValueError):
        return 64


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def markdown(projection: dict, rates: dict, a: Assumptions, machine: dict | None = None) -> str:
    """projection.md: one table per release, then every measured and assumed input."""
    lines = ["# Projected wall time of full releases", "",
             "Computed by `bench/projection.py` from the rates the benchmarks measured on one machine "
             f"({(machine or {}).get('cpu_model', '?')}, {(machine or {}).get('cpu_count', '?')} cores). "
             "Each stage takes the larger of its CPU time and its filesystem time (`cpu`/`io` says which); "
             "totals are ingest + inference.", ""]
    titles = {"lamost_dr10_lrs": "LAMOST DR10 v2.0 LRS, every spectrum",
              "lamost_dr10_lrs_galaxies": "LAMOST DR10 v2.0 LRS, galaxies only",
              "manga_dr17": "MaNGA DR17 (DAP MAPS, shipped kinematic weights)"}
    for key, p in projection.items():
        if p is None:
            lines += [f"## {titles[key]}", "", "Not projected: no kinematics.json.", ""]
            continue
        n = p.get("n_spectra") or p.get("n_galaxies")
        vol = ", ".join(f"{k.removesuffix('_gb')} {x:.1f} GB" for k, x in p["io_volume"].items() if x is not None)
        lines += [f"## {titles[key]}: {n:,}", "", f"I/O volume: {vol}.", "",
                  "| hardware | ingest | inference | total |", "|---|---|---|---|"]
        for kind, label in (("cpu", "{} cores"), ("gpu", "{} GPU + {} cores")):
            for count, r in p[kind].items():
                name = label.format(count, r.get("cores", ""))
                ing = r.get("ingest")
                ing_text = "-" if ing is None else f"{_duration(ing['seconds'])} ({ing['bound']})"
                inf = r["inference"]
                lines.append(f"| {name} | {ing_text} | {_duration(inf['seconds'])} ({inf['bound']}) | "
                             f"{_duration(r['total_s'])} |")
        if "gpu_network_spectra_per_s" in p:
            lines += ["", f"GPU: networks {p['gpu_network_spectra_per_s']:,.0f} spectra/s per GPU "
                          f"({p['gpu_network_rate_source']}); the {a.cores_per_gpu} cores beside it feed "
                          f"{p['host_cores_spectra_per_s_per_gpu']:,.0f} spectra/s: the GPU's Dask worker runs "
                          f"one thread per core beside it, chunks in flight (survey_ml's `--cluster cuda` default; "
                          f"dask-cuda's own default of one thread would let one core feed it: "
                          f"{p['host_spectra_per_s_per_core']:,.0f} spectra/s per GPU). The host CPU, not the GPU, "
                          f"bounds a GPU node: ~70% of the CPU work per spectrum is outside the networks."]
        if "core_s_per_galaxy" in p:
            c = p["core_s_per_galaxy"]
            lines += ["", "Core seconds per galaxy: " + ", ".join(f"{k} {x:.4f}" for k, x in c.items())
                      + " (on GPUs the MC passes are taken as free)."]
        lines.append("")
    lines += ["## Measured inputs", "", "| input | value | from |", "|---|---|---|"]
    for key, r in rates.items():
        value = r["value"]
        lines.append(f"| {key} | {value:,.4g} | {r['source']} |")
    lines += ["", "## Assumed inputs", "", "| assumption | value | meaning |", "|---|---|---|"]
    notes = a.notes()
    for key, value in asdict(a).items():
        lines.append(f"| {key} | {value} | {notes[key]} |")
    lines += ["", "Tasks run in waves: a stage takes ceil(tasks / workers) task times (a task is one chunk of the "
                  "store: 2,048 spectra or 64 galaxies), so beyond one task per worker more cores do not help. "
                  "Not included: cluster start-up and job queueing.", "",
              "Also assumed: the per-worker rate measured at 2 workers holds at M workers (chunks are "
                  "independent; Dask's scheduler handles the ~5,600 tasks of 2,048 rows easily); ingest reads each "
                  "file once and the inference reads the store once; the filesystem serves every node at the "
                  "aggregate bandwidth above; the MaNGA preparation rate of SAMI-format mock files holds for DAP "
                  "MAPS besides the inflate time; self-supervised training (`train = \"solo\"`) is not included.", ""]
    return "\n".join(lines)


def main() -> None:
    d = Assumptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder with scaling.json, ingest.json, "
                                                                "kinematics.json (and gpu.json)")
    parser.add_argument("--out", default=None, help="where projection.json/.md go (default: "
                                                    "$SURVEY_ML_BENCH_RESULTS, else --results)")
    parser.add_argument("--cores", type=int, nargs="+", default=list(d.cores))
    parser.add_argument("--gpus", type=int, nargs="+", default=list(d.gpus))
    for name in ("cores_per_gpu", "gpu_tflops", "fs_gbps", "lamost_n", "lamost_galaxies", "manga_n",
                 "manga_maps_mib", "gunzip_mib_per_s", "lamost_file_bytes"):
        default = getattr(d, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                            help=f"{d.notes()[name]} (default {default})".replace("%", "%%"))
    args = parser.parse_args()
    a = Assumptions(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()
                       if k not in ("results", "out")})
    results = Path(args.results)
    rates = measured_rates(results)
    projection = project(rates, a)
    machine = json.loads((results / "scaling.json").read_text()).get("machine")
    out = Path(args.out or os.environ.get(RESULTS_ENV) or results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "projection.md").write_text(markdown(projection, rates, a, machine))
    emit("projection", {"results_read_from": str(results), "measured": rates, "assumed": asdict(a),
                        "assumption_notes": a.notes(), "projection": projection,
                        "efficiency_1_to_2_workers": {"goal": 0.9,
                                                      "measured": rates.get("dr10_efficiency", {}).get("value")},
                        "markdown": "projection.md"}, folder=out)


if __name__ == "__main__":
    main()
