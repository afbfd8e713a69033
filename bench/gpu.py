"""Forward-pass throughput of the dr10 networks on one device: the GPU input of bench/projection.py.

Loads the release spec's networks (metallicity, sfclass, redshift) with
:func:`survey_ml.core.inference.load_model` on ``--device`` and times
:func:`survey_ml.core.inference.forward_batches` - host-to-device copy, forward pass, copy back, as
run-catalog runs them - on ``--n`` inputs of each network's shape, at the spec's GPU batch
size. Inputs are random: the time of a convolutional network does not depend on the values.
The best of ``--repeats`` passes counts, after one untimed pass (cuDNN picks its kernels).

``dr10_network_spectra_per_s`` is the rate of all three networks on one spectrum,
``1 / sum(1 / rate)``: what the projection takes instead of its FLOP-based assumption.

Measured in the same run, so the figures are ratios on this machine's own hardware:

* the device's dense matmul peak (fp32 - TF32 tensor cores allowed - and bf16 on a GPU),
  converted with each network's FLOPs per spectrum into "spectra/s at peak";
* the metallicity CNN alone under bf16 autocast (the issue's goal: >= 50,000 spectra/s on one
  H100) and its ratio to the published ~6,000 spectra/s on a T4;
* with ``--store``, ``run_catalog`` dr10 end to end on a ``--cluster cuda`` LocalCUDACluster
  (Zarr read, preprocessing on the worker's CPU, networks on its GPU).

Prints JSON; keeps bench/results/gpu.json (bench/results/gpu_cpu.json on a machine without GPU).

Usage: python bench/gpu.py [--device cuda] [--n 65536] [--batch-size 8192] [--repeats 3] [--store S]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import emit, matmul_peak_flops


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


PUBLISHED_T4_SPECTRA_PER_S = 6000.0
GOAL_H100_SPECTRA_PER_S = 50_000.0


def bf16_rate(model, x: np.ndarray, batch_size: int, repeats: int, lines: np.ndarray | None = None) -> float:
    """As :func:`network_rate`, the forward passes under bf16 autocast (GPU only)."""
    import torch

    with torch.autocast("cuda", dtype=torch.bfloat16):
        return network_rate(model, x, batch_size, repeats, lines)


def cuda_run_catalog(store: str, out: str) -> dict:
    """run_catalog dr10 on a ``cuda`` cluster over an ingested store (end to end, all three tasks)."""
    from survey_ml.cluster.client import connect
    from survey_ml.dask.runner import run_catalog

    client = connect(cluster="cuda", dashboard_address="127.0.0.1:0", quiet=True)
    try:
        kind = client.survey_ml_kind
        t0 = time.perf_counter()
        report = run_catalog("dr10", store=store, out=out, client=client, progress=False)
        seconds = time.perf_counter() - t0
    finally:
        client.close()
    return {"cluster": kind, "n_rows": report.n_rows, "seconds": round(seconds, 2),
            "inference_rows_per_s": round(report.timings.get("inference_rows_per_s", 0.0), 1)}


def network_rate(model, x: np.ndarray, batch_size: int, repeats: int, lines: np.ndarray | None = None) -> float:
    """Best-of spectra/s of ``forward_batches(model, x, batch_size)``, after one untimed pass.

    ``lines``: the emission-line features of a network that reads them (their fit is CPU work
    outside the network, timed by the run-catalog benchmarks, not here)."""
    from survey_ml.core.inference import forward_batches

    device = next(model.parameters()).device
    first = min(len(x), batch_size)
    forward_batches(model, x[:first], batch_size, lines=None if lines is None else lines[:first])
    best = 0.0
    for _ in range(repeats):
        _synchronize(device)
        t = time.perf_counter()
        forward_batches(model, x, batch_size, lines=lines)
        _synchronize(device)
        best = max(best, len(x) / (time.perf_counter() - t))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="torch device (default: cuda if visible, else cpu)")
    parser.add_argument("--n", type=int, default=65_536, help="spectra per timed pass")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the spec's gpu_batch_size on a GPU, "
                                                                     "its batch_size on the CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--store", default=None, help="an ingested dr10 store: also run run-catalog on --cluster cuda")
    parser.add_argument("--run-out", default="/tmp/survey_ml_gpu_run", help="output folder of that run")
    args = parser.parse_args()

    import torch

    from survey_ml.core.inference import WEIGHTS_DIR, default_device, load_model
    from survey_ml.config import load_release_spec

    device = torch.device(args.device) if args.device else default_device()
    spec = load_release_spec("dr10")
    tasks = spec["tasks"]
    if args.batch_size:
        batch = args.batch_size
    elif device.type == "cuda":
        batch = int(tasks["metallicity"].get("gpu_batch_size", 8192))
    else:
        batch = int(tasks["metallicity"].get("batch_size", 512))
    rng = np.random.default_rng(0)
    from survey_ml.models.redshift_cnn import forward_flops  # counts any network from a probe pass

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rates, shapes, flops, inputs, line_inputs = {}, {}, {}, {}, {}
    for task in ("metallicity", "sfclass", "redshift"):
        model, info = load_model(WEIGHTS_DIR / tasks[task]["weights"], device)
        shape = (int(info["config"].get("in_channels", 2)), int(model.n_pix))
        inputs[task] = x = rng.random((args.n, *shape), dtype=np.float32)
        n_lines = int(info["config"].get("n_lines", 0))
        line_inputs[task] = rng.random((args.n, n_lines), dtype=np.float32) if n_lines else None
        rates[task] = network_rate(model, x, batch, args.repeats, line_inputs[task])
        shapes[task] = list(shape)
        flops[task] = int(forward_flops(model, n_pix=shape[1], in_channels=shape[0]))
    size = 8192 if device.type == "cuda" else 1024
    peaks = {"fp32": matmul_peak_flops(device, torch.float32, size, repeats=20)}
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "device_type": device.type, "cpu_threads": torch.get_num_threads() if device.type == "cpu" else None,
              "n": args.n, "batch_size": batch, "input_shapes": shapes, "network_flops_per_spectrum": flops,
              "network_spectra_per_s": {k: round(v, 1) for k, v in rates.items()},
              "dr10_network_spectra_per_s": round(1.0 / sum(1.0 / v for v in rates.values()), 1)}
    if device.type == "cuda":
        peaks["bf16"] = matmul_peak_flops(device, torch.bfloat16, size, repeats=20)
        model, _ = load_model(WEIGHTS_DIR / tasks["metallicity"]["weights"], device)
        result["metallicity_bf16_spectra_per_s"] = round(bf16_rate(model, inputs["metallicity"], batch, args.repeats,
                                                                       line_inputs["metallicity"]), 1)
    best = max(rates["metallicity"], result.get("metallicity_bf16_spectra_per_s", 0.0))
    result |= {"matmul_peak_tflops": {k: round(v / 1e12, 3) for k, v in peaks.items()},
               "fraction_of_fp32_matmul_peak": {k: round(rates[k] * flops[k] / peaks["fp32"], 4) for k in rates},
               "metallicity_vs_published_t4": round(best / PUBLISHED_T4_SPECTRA_PER_S, 2),
               "metallicity_vs_goal_50k": round(best / GOAL_H100_SPECTRA_PER_S, 3)}
    if args.store:
        result["run_catalog_cuda"] = cuda_run_catalog(args.store, args.run_out)
    emit("gpu" if device.type == "cuda" else "gpu_cpu", result)


if __name__ == "__main__":
    main()
