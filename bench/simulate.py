"""Simulator benchmark: library build time, release throughput, and a look at the mock spectra.

Builds a bagpipes rest-frame library of ``--library-size`` spectra (cached: the second call
is free), writes a mock dr10 release of ``--n`` spectra re-observed from it on a LocalCluster,
and plots mock spectra at S/N_r 5 and 30 beside the real LAMOST fixture spectra.
Prints JSON; keeps bench/results/simulate.json and bench/results/mock_spectra.png.

Usage: python bench/simulate.py [--library-size 2000] [--n 5000] [--cache DIR]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import RESULTS, emit

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "lamost"


def plot_mock_spectra(library, out: Path) -> None:
    """Mock spectra of a star-forming and a passive galaxy at S/N_r 5 and 30, and the real files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from survey_ml.io.lamost import read_lamost_spectrum
    from survey_ml.simulate.observe import observe_lamost

    truth = library.truth
    picks = {"star-forming": truth.index[truth["bpt_class"] == "sf"][0],
             "passive": truth.index[truth["bpt_class"] == "passive"][0]}
    real = sorted(FIXTURES.glob("spec-*.fits.gz"))
    fig, axes = plt.subplots(2 + len(picks), 1, figsize=(11, 2.6 * (2 + len(picks))), sharex=True)
    for ax, path in zip(axes, real):
        spec = read_lamost_spectrum(path)
        good = spec.good
        ax.plot(spec.wavelength, np.where(good, spec.flux, np.nan), lw=0.5, color="k")
        ax.set_title(f"real LAMOST {spec.format} file {path.name}: {spec.meta['class']} {spec.meta['subclass']}, "
                     f"S/N_r {spec.meta['snrr']}", fontsize=9)
    for ax, (label, row) in zip(axes[len(real):], picks.items()):
        rest_flux = library.flux(int(row))
        t = truth.loc[row]
        for snr, colour in ((5.0, "tab:orange"), (30.0, "tab:blue")):
            spec, rec = observe_lamost(library.wave, rest_flux, 0.08, snr, np.random.default_rng(int(snr)), 1_000_000)
            ax.plot(spec.wavelength, np.where(spec.ivar > 0, spec.flux, np.nan), lw=0.5, color=colour,
                    alpha=0.7 if snr == 5 else 1.0, label=f"S/N_r requested {snr:g}, measured {rec['snrr_measured']:.1f}")
        ax.set_title(f"mock {label} galaxy at z = 0.08: log M* {t['log_mstar']:.2f}, 12+log(O/H) {t['oh12']:.2f}, "
                     f"BPT {t['bpt_class']}, H-alpha EW {t['ha_ew']:.1f} A", fontsize=9)
        ax.legend(fontsize=8, loc="upper right")
    for ax in axes:
        ax.set_ylabel("flux")
    axes[-1].set_xlabel("observed vacuum wavelength (A)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library-size", type=int, default=2000)
    parser.add_argument("--n", type=int, default=5000, help="mock spectra in the release")
    parser.add_argument("--cache", default=None, help="library cache (default: a temp dir, so the build is timed)")
    args = parser.parse_args()

    from survey_ml.cluster.client import connect
    from survey_ml.simulate.library import LibraryConfig, build_library
    from survey_ml.simulate.release import simulate_release
    from survey_ml.store import ingest

    work = Path(tempfile.mkdtemp(prefix="survey_ml_sim_"))
    cache = Path(args.cache) if args.cache else work / "cache"
    client = connect(dashboard_address="127.0.0.1:0", quiet=True)
    try:
        n_workers = len(client.scheduler_info()["workers"])
        t = time.perf_counter()
        library = build_library(LibraryConfig(n=args.library_size, seed=0), cache_dir=cache, client=client)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        build_library(LibraryConfig(n=args.library_size, seed=0), cache_dir=cache, client=client)
        cached_s = time.perf_counter() - t
        t = time.perf_counter()
        release = simulate_release(library, work / "mock_dr10", args.n, seed=1, client=client)
        release_s = time.perf_counter() - t
        report = ingest(release.catalogue, work / "store", "dr10", client=client)
    finally:
        client.close()
    truth = pd.read_parquet(release.truth)
    ratio = truth["snrr"] / truth["snr_r_requested"]
    plot_mock_spectra(library, RESULTS / "mock_spectra.png")
    lib_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    emit("simulate", {
        "n_workers": n_workers,
        "library": {"n_spectra": library.n, "n_wave": int(library.wave.size),
                    "rest_wave_A": [float(library.wave[0]), float(library.wave[-1])],
                    "build_s": round(build_s, 1), "ms_per_spectrum_wall": round(1e3 * build_s / library.n, 1),
                    "ms_per_spectrum_per_worker": round(1e3 * build_s * n_workers / library.n, 1),
                    "cached_call_s": round(cached_s, 3), "disk_mib": round(lib_bytes / 2**20, 1),
                    "populations": library.truth["population"].value_counts().to_dict(),
                    "bpt_classes": library.truth["bpt_class"].value_counts().to_dict(),
                    "failed_rows": int((~library.truth["ok"]).sum())},
        "release": {"n_spectra": args.n, "seconds": round(release_s, 1),
                    "spectra_per_s": round(args.n / release_s, 1),
                    "snr_measured_over_requested": {"median": round(float(ratio.median()), 4),
                                                    "p05": round(float(ratio.quantile(0.05)), 4),
                                                    "p95": round(float(ratio.quantile(0.95)), 4)},
                    "snr_r_share_3_to_30": round(float(truth["snr_r_requested"].between(3, 30).mean()), 3),
                    "ingest_statuses": report.status_counts},
        "plot": str((RESULTS / "mock_spectra.png").relative_to(RESULTS.parent.parent)),
    })
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
