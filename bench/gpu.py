"""Forward-pass throughput of the dr10 networks on one device: the GPU input of bench/projection.py.

Loads the release spec's networks (metallicity, sfclass, redshift) with
:func:`survey_ml.infer.load_model` on ``--device`` and times
:func:`survey_ml.infer.forward_batches` - host-to-device copy, forward pass, copy back, as
run-catalog runs them - on ``--n`` inputs of each network's shape, at the spec's GPU batch
size. Inputs are random: the time of a convolutional network does not depend on the values.
The best of ``--repeats`` passes counts, after one untimed pass (cuDNN picks its kernels).

``dr10_network_spectra_per_s`` is the rate of all three networks on one spectrum,
``1 / sum(1 / rate)``: what the projection takes instead of its FLOP-based assumption.
Prints JSON; keeps bench/results/gpu.json.

Usage: python bench/gpu.py [--device cuda] [--n 65536] [--batch-size 8192] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import emit


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_rate(model, x: np.ndarray, batch_size: int, repeats: int) -> float:
    """Best-of spectra/s of ``forward_batches(model, x, batch_size)``, after one untimed pass."""
    from survey_ml.infer import forward_batches

    device = next(model.parameters()).device
    forward_batches(model, x[: min(len(x), batch_size)], batch_size)
    best = 0.0
    for _ in range(repeats):
        _synchronize(device)
        t = time.perf_counter()
        forward_batches(model, x, batch_size)
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
    args = parser.parse_args()

    import torch

    from survey_ml.infer import WEIGHTS_DIR, default_device, load_model
    from survey_ml.spec import load_release_spec

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
    rates, shapes = {}, {}
    for task in ("metallicity", "sfclass", "redshift"):
        model, info = load_model(WEIGHTS_DIR / tasks[task]["weights"], device)
        shape = (int(info["config"].get("in_channels", 2)), int(model.n_pix))
        x = rng.random((args.n, *shape), dtype=np.float32)
        rates[task] = network_rate(model, x, batch, args.repeats)
        shapes[task] = list(shape)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    threads = torch.get_num_threads() if device.type == "cpu" else None
    emit("gpu", {"device": name, "device_type": device.type, "cpu_threads": threads, "n": args.n,
                 "batch_size": batch, "input_shapes": shapes,
                 "network_spectra_per_s": {k: round(v, 1) for k, v in rates.items()},
                 "dr10_network_spectra_per_s": round(1.0 / sum(1.0 / v for v in rates.values()), 1)})


if __name__ == "__main__":
    main()
