"""The reverse leg of cross-simulation validation: train on the independent generator, test on ours.

``bench/cross_sim.py`` runs the shipped networks (trained on survey_ml's own simulator) on a
release from :mod:`survey_ml.simulate.crosscheck`. This script does the other direction:
it trains the metallicity CNN and the star-forming classifier on a (large) crosscheck
release, with the architecture and training settings of the shipped recipes, and writes
``metallicity.pt`` / ``sfclass.pt`` into a folder that ``cross_sim.py --weights NAME=DIR``
then runs on both mocks - survey_ml's own generator being, for these networks, the unseen one.

The training inputs are what run-catalog feeds the networks: the release is ingested into
a Zarr store (the same readers and store) and each block goes through
:func:`survey_ml.core.spectra.model_inputs`. Rows:

* metallicity: star-forming hosts of the crosscheck truth with EW(H-alpha) >= 3 A (the
  analogue of the shipped recipe's ``young`` rows), true 12+log(O/H) as the target;
* sfclass: balanced halves of the crosscheck ``starforming`` label (BPT star-forming and
  EW(H-alpha) >= 3 A) and its complement.

The networks follow the shipped recipes, line features included when they ask for them
(fitted at each spectrum's catalogue redshift). The weights carry no uncertainty model (that needs a third, shifted set): their
``oh12_err`` is the network's own heteroscedastic sigma.

Usage::

    for k in 0 1 2 3 4; do      # parts of 4,000: one process each keeps the bagpipes workers small
        python -m survey_ml.simulate.crosscheck /data/xc-train/part$k --n 4000 --seed $((101 + k)) \
            --first-obsid $((6000000 + 100000 * k))
    done
    python bench/cross_train.py /data/xc-train/part* --out /data/weights-crosscheck
    python bench/cross_sim.py --crosscheck /data/crosscheck-2000 --weights shipped= \
        --weights crosscheck_trained=/data/weights-crosscheck

Prints JSON (the training figures) and keeps ``bench/results/cross_train.json``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from bench._common import emit
except ImportError:  # run as a script: bench/ is on sys.path, the repository root is not
    from _common import emit


def release_inputs(store: Path, lines: bool = False) -> tuple[np.ndarray, pd.DataFrame, np.ndarray | None]:
    """Network inputs (n, 2, 4201) of every ``ok`` row of an ingested store, those rows, and (with
    ``lines``) their emission-line features fitted at the catalogue redshift, as run-catalog does."""
    from survey_ml.core.lines import line_features
    from survey_ml.core.spectra import model_inputs
    from survey_ml.store import open_release

    release = open_release(store)
    wavelength = release.wavelength()
    rows = release.rows
    parts, keep, features = [], [], []
    for start, stop in release.block_bounds():
        good = (rows["status"].iloc[start:stop] == "ok").to_numpy()
        if not good.any():
            continue
        block = release.read_block(start, stop, ["flux", "ivar", "mask"])
        parts.append(model_inputs(block["flux"][good], block["ivar"][good], block["mask"][good], wavelength,
                                  in_channels=2))
        if lines:
            features.append(line_features(block["flux"][good], block["ivar"][good], block["mask"][good], wavelength,
                                          rows["z"].to_numpy(float)[start:stop][good]))
        keep.append(np.arange(start, stop)[good])
    return (np.concatenate(parts), rows.iloc[np.concatenate(keep)].reset_index(drop=True),
            np.concatenate(features) if lines else None)


def train_one(task: str, x: np.ndarray, y: np.ndarray, out: Path, epochs: int | None,
              lines: np.ndarray | None = None) -> dict:
    """Train ``task`` with its shipped recipe's settings on (x, y[, lines]); write the weights; test figures."""
    from survey_ml.core.inference import forward_batches, save_weights, weights_sha256
    from survey_ml.train.spectral import evaluate, load_recipe, recipe_config, train_model

    config = recipe_config(load_recipe(task))
    if epochs:
        config = replace(config, epochs=epochs)
    result = train_model(x, y, config, progress=True, lines=lines)
    test = result.test_index
    pred = forward_batches(result.model, x[test], lines=None if lines is None else lines[test])
    truth = pd.DataFrame({"starforming" if task == "sfclass" else "oh12": y[test]})
    figures = evaluate(task, pred, truth)
    targets = ["starforming", "not_starforming"] if task == "sfclass" else ["oh12"]
    path = out / f"{task}.pt"
    report = {"n_spectra": int(len(x)), "n_train": int(len(result.train_index)), "best_epoch": result.best_epoch,
              "epochs_run": len(result.history), "seconds": round(result.seconds, 1),
              "test_on_crosscheck": figures}
    save_weights(result.model, path, task, targets, extra={"training": report | {"generator": "crosscheck"}})
    return report | {"weights_sha256": weights_sha256(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", nargs="+",
                        help="releases written by survey_ml.simulate.crosscheck (the training set; parts of one "
                             "large set need distinct --first-obsid ranges)")
    parser.add_argument("--out", required=True, help="folder for metallicity.pt and sfclass.pt")
    parser.add_argument("--store", default=None, help="Zarr store to ingest into (default OUT/store)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the balanced sfclass draw")
    args = parser.parse_args()

    from survey_ml.cluster.client import connect
    from survey_ml.store import ingest

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    releases = [Path(r) for r in args.release]
    t0 = time.perf_counter()
    client = connect(dashboard_address="127.0.0.1:0", quiet=True)
    try:
        ingest([f for r in releases for f in sorted((r / "spectra").glob("spec-*.fits*"))],
               args.store or out / "store", "crosscheck", client=client)
    finally:
        client.close()
    from survey_ml.train.spectral import load_recipe, wants_lines

    use_lines = wants_lines(load_recipe("metallicity"))
    if use_lines != wants_lines(load_recipe("sfclass")):
        raise ValueError("the shipped metallicity and sfclass recipes disagree on [model] line_features")
    x, rows, lines = release_inputs(Path(args.store or out / "store"), lines=use_lines)
    truth = pd.concat([pd.read_parquet(r / "truth.parquet") for r in releases], ignore_index=True)
    if truth["obsid"].duplicated().any():
        raise ValueError(f"obsids repeat across {', '.join(map(str, releases))}: write the parts with distinct "
                         "--first-obsid")
    truth = truth.set_index("obsid").loc[rows["obsid"].to_numpy()].reset_index()
    t_inputs = time.perf_counter() - t0

    young = (truth["starforming_host"].to_numpy(bool) & (truth["ha_ew"].to_numpy(float) >= 3.0)
             & np.isfinite(truth["oh12"].to_numpy(float)))
    figures = {"releases": [str(r) for r in releases], "n_rows": int(len(x)), "seconds_inputs": round(t_inputs, 1)}
    def pick(rows_):
        return None if lines is None else lines[rows_]

    figures["metallicity"] = train_one("metallicity", x[young], truth["oh12"].to_numpy(float)[young], out, args.epochs,
                                       pick(young))

    label = truth["starforming"].to_numpy(bool)
    rng = np.random.default_rng(args.seed)
    half = min(label.sum(), (~label).sum())
    rows_sf = np.concatenate([rng.choice(np.flatnonzero(label), half, replace=False),
                              rng.choice(np.flatnonzero(~label), half, replace=False)])
    figures["sfclass"] = train_one("sfclass", x[rows_sf], label[rows_sf], out, args.epochs, pick(rows_sf))
    emit("cross_train", figures)


if __name__ == "__main__":
    main()
