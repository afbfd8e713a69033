"""The ``survey-ml`` command line."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["main", "UsageError"]

#: What a folder of survey inputs holds at least one of (spectra, IFU products, catalogues).
INPUT_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".csv", ".csv.gz", ".txt", ".lst")


class UsageError(Exception):
    """A command line that cannot work as typed: one line on stderr, exit status 2, nothing started."""


def check_input(path: str | os.PathLike, option: str) -> Path:
    """``path`` exists and, if a folder, holds survey inputs (checked before any cluster starts)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{option} {path} does not exist")
    if path.is_dir() and not any(name.lower().endswith(INPUT_SUFFIXES)
                                 for _, _, names in os.walk(path, followlinks=True) for name in names):
        raise UsageError(f"{option} {path} holds no survey files (looked for {', '.join(INPUT_SUFFIXES[:2])}, "
                         "catalogues .csv and file lists .txt)")
    return path


def check_writable(path: str | os.PathLike, option: str) -> Path:
    """``path`` is a folder this user may create or write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: permission denied (cannot write in {parent})")
    return path


@contextmanager
def writer_lock(folder: Path, purpose: str) -> Iterator[None]:
    """Hold ``folder``'s writer lock (:class:`survey_ml.store.lock.FolderLock`); another live writer is a UsageError."""
    from ..store.lock import FolderInUseError, FolderLock

    lock = FolderLock(folder, purpose)
    try:
        lock.acquire()
    except FolderInUseError as err:
        raise UsageError(str(err)) from err
    try:
        yield
    finally:
        lock.release()


def check_release(name: str) -> dict:
    """The release spec ``name`` (or a clear error: a folder given as the release, a typo)."""
    from ..config import SpecError, load_release_spec

    if Path(name).is_dir():
        raise UsageError(f"{name} is a folder: give the release (dr10, manga-dr17, sami-dr3, or a spec .toml) and "
                         f"the data with --input {name}")
    try:
        return load_release_spec(name)
    except (FileNotFoundError, SpecError) as err:
        raise UsageError(str(err).strip('"')) from err


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    from ..cluster.client import CLUSTER_KINDS

    g = p.add_argument_group("cluster")
    g.add_argument("--cluster", choices=CLUSTER_KINDS, default="local",
                   help="local: worker processes here (default); cuda: one dask-cuda worker per GPU (CPU workers, "
                        "with a message, when there is no GPU or dask-cuda); slurm/pbs: dask-jobqueue batch jobs "
                        "from the release spec and jobqueue.yaml; mpi: inside `mpirun ... python -m survey_ml.cli.mpi_launch`")
    g.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler (default: $SURVEY_ML_SCHEDULER, "
                        "else a cluster of --cluster kind)")
    g.add_argument("--workers", type=int, default=None,
                   help="local: worker processes (default: one per core); cuda: GPUs to use (default: all)")
    g.add_argument("--jobs", type=int, default=None,
                   help="slurm/pbs: batch jobs to scale to (default: the spec's [cluster.<kind>] / jobqueue.yaml, else 1)")
    g.add_argument("--gpus", type=int, default=None,
                   help="slurm/pbs: GPUs per job, dask-cuda workers when > 0 (default: spec / jobqueue.yaml, else 0)")
    g.add_argument("--dashboard", default="127.0.0.1:8787",
                   help="dashboard address (default 127.0.0.1:8787: this machine only; 0.0.0.0:8787 exposes it "
                        "to the network - or keep it local and use `ssh -L 8787:localhost:8787`)")


def _add_release(p: argparse.ArgumentParser, default: str | None = "dr10") -> None:
    """RELEASE: a positional or ``--release``, the same on every subcommand that reads a release spec."""
    p.add_argument("release", nargs="?", default=None, metavar="RELEASE",
                   help=f"release spec name (dr10, sami-dr3, manga-dr17) or a spec .toml (default {default})")
    p.add_argument("--release", dest="release_option", default=None, metavar="RELEASE", help="the same as RELEASE")
    p.set_defaults(release_default=default)


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """One grammar: RELEASE from the positional or --release; old spellings mapped, with a note on stderr."""
    if hasattr(args, "release_option"):
        release = args.release or args.release_option
        old_ingest = args.command == "ingest" and args.release is not None and not _is_release(args.release)
        if args.release and args.release_option and args.release != args.release_option and not old_ingest:
            raise UsageError(f"two releases given: {args.release} and --release {args.release_option}")
        if old_ingest:
            # the old spelling `survey-ml ingest SOURCE --store S [--release R]` (kept until 0.3)
            if args.input:
                raise UsageError(f"two inputs given: {release} and --input {args.input}")
            print(f"survey-ml ingest: `ingest SOURCE` is the old spelling; use `survey-ml ingest [RELEASE] --input "
                  f"{release}` (the old one is kept until survey_ml 0.3)", file=sys.stderr)
            args.input, release = release, args.release_option
        args.release = release or args.release_default
    for old, new in (("source", "input"), ("store_positional", "store"), ("run", "out")):
        value = getattr(args, old, None)
        if value is not None:
            if getattr(args, new, None) not in (None, value):
                raise UsageError(f"two values for --{new}: {value} and {getattr(args, new)}")
            setattr(args, new, value)
    return args


def _is_release(name: str) -> bool:
    """Whether ``name`` reads as a release spec (a shipped name or a .toml), not a data path."""
    from ..config import SPEC_DIR

    return name.endswith(".toml") or (SPEC_DIR / f"{name}.toml").is_file()


def _connect(args: argparse.Namespace):
    from ..cluster.client import connect

    spec = None
    if getattr(args, "cluster", "local") in ("slurm", "pbs") and getattr(args, "release", None):
        from ..config import load_release_spec

        spec = load_release_spec(args.release)
    try:
        return connect(args.scheduler, cluster=getattr(args, "cluster", "local"), n_workers=args.workers,
                       dashboard_address=args.dashboard, jobs=getattr(args, "jobs", None),
                       gpus=getattr(args, "gpus", None), spec=spec)
    except (RuntimeError, ImportError) as err:  # no sbatch here, not under mpirun, dask-jobqueue missing...
        raise SystemExit(f"survey-ml: cannot start the {getattr(args, 'cluster', 'local')} cluster: {err}") from err


def store_summary(store: str | os.PathLike) -> str:
    """A short human summary of a release store: rows, statuses, S/N, size on disk."""
    from ..store import open_release

    release = open_release(store)
    obj = release.objects
    lines = [f"release {release.name} at {release.path}: {len(obj)} rows, grid "
             f"{release.grid.n_pix} px from {release.wavelength()[0]:.1f} A, chunks of {release.chunk_rows} rows"]
    for status, count in obj["status"].value_counts().sort_index().items():
        lines.append(f"  {status:<14s} {count:8d}")
    ok = obj[obj["status"] == "ok"]
    if len(ok):
        q = ok["snrr"].quantile([0.1, 0.5, 0.9]).round(1).tolist()
        lines.append(f"  S/N_r of ok rows: 10% {q[0]}, median {q[1]}, 90% {q[2]}")
    size = sum(f.stat().st_size for f in Path(store).rglob("*") if f.is_file())
    raw = len(obj) * release.grid.n_pix * 16
    lines.append(f"  on disk {size / 2**20:.1f} MiB (arrays {raw / 2**20:.1f} MiB uncompressed)")
    bad = obj[~obj["status"].isin(["ok", "masked_values"])]
    for msg in bad["message"].head(5):
        lines.append(f"  flagged: {msg}")
    if len(bad) > 5:
        lines.append(f"  ... {len(bad) - 5} more flagged rows in objects.parquet (status != ok)")
    return "\n".join(lines)


def cmd_ingest(args: argparse.Namespace) -> int:
    from ..store import ingest

    if args.input is None:
        raise UsageError("give the survey files with --input (a folder, a catalogue or a file list)")
    if args.store is None:
        raise UsageError("give the store to write with --store")
    check_input(args.input, "--input")
    spec = check_release(args.release)
    args.release = spec["release"]["name"]
    args.chunk_rows = args.chunk_rows or spec.get("ingest", {}).get("chunk_rows")
    with writer_lock(check_writable(args.store, "--store"), "ingest"):  # refused before a cluster starts
        return _ingest(args, ingest)


def _ingest(args: argparse.Namespace, ingest) -> int:
    client = _connect(args)
    try:
        report = ingest(args.input, args.store, args.release, client=client, reader=args.reader,
                        chunk_rows=args.chunk_rows, data_root=args.data_root, progress=True,
                        max_decompressed_mb=args.max_decompressed_mb)
    finally:
        client.close()
    print(report.summary())
    print(store_summary(args.store))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Summarise a release store: rows, statuses, S/N, size on disk."""
    if args.store is None:
        raise UsageError("give the store with --store (or as STORE)")
    if not (Path(args.store) / "release.json").is_file():
        raise UsageError(f"--store {args.store} is not a release store (no release.json)")
    print(store_summary(args.store))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Write a small mock LAMOST release, ingest it on a local Dask cluster, summarise."""
    from ..simulate import DEFECTS, inject_defect, write_mock_release
    from ..store import ingest

    out = Path(args.out)
    for previous in (out / "mock_dr10", out / "dr10"):  # a demo starts from scratch
        shutil.rmtree(previous, ignore_errors=True)
    client = _connect(args)
    try:
        t0 = time.perf_counter()
        mock = write_mock_release(out / "mock_dr10", args.n, seed=args.seed, client=client)
        # A real release has bad files; show that they are flagged, not fatal.
        for path, defect in zip(mock.files[:: max(1, args.n // len(DEFECTS))], DEFECTS):
            inject_defect(path, defect)
        print(f"wrote {args.n} mock LAMOST LRS spectra to {mock.spectra_dir} in {time.perf_counter() - t0:.1f} s "
              f"(with {len(DEFECTS)} deliberately damaged files)")
        report = ingest(mock.catalogue, out / "dr10", "dr10", client=client, progress=True)
    finally:
        client.close()
    print(report.summary())
    print(store_summary(out / "dr10"))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Build (or reuse) the cached bagpipes library, then write a mock release with truth."""
    from ..simulate.library import LibraryConfig, build_library
    from ..simulate.release import ObservationPlan, simulate_release, simulate_settings
    from ..config import load_release_spec

    spec = load_release_spec(args.release)
    sim = simulate_settings(spec, args.variant)
    n = args.n or int(sim.get("n_spectra", 5000))
    library_config = LibraryConfig(n=args.library_size or int(sim.get("library_size", 2000)), seed=args.seed,
                                   wave_min=float(sim.get("library_wave_min", 2800.0)))
    out = Path(args.out or f"mock_{spec['release']['name']}")
    client = _connect(args)
    try:
        t0 = time.perf_counter()
        library = build_library(library_config, cache_dir=args.cache, client=client, progress=True)
        t_library = time.perf_counter() - t0
        t0 = time.perf_counter()
        release = simulate_release(library, out, n, seed=args.seed + 1, plan=ObservationPlan.from_spec(spec, args.variant),
                                   client=client, progress=True)
        t_release = time.perf_counter() - t0
    finally:
        client.close()
    counts = library.truth["population"].value_counts().to_dict()
    print(f"library {library.path}: {library.n} rest-frame spectra "
          f"({'cached' if library.cached else f'built in {t_library:.0f} s'}); populations {counts}")
    print(f"mock {spec['release']['name']} release: {n} spectra in {release.spectra_dir} "
          f"({t_release:.0f} s, {n / t_release:.0f} spectra/s)")
    print(f"  catalogue {release.catalogue}\n  truth     {release.truth}")
    print(f"next: survey-ml ingest {release.catalogue} --store {out / 'store'} --release {spec['release']['name']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a task's network from its recipe (the shipped one by default) and save the weights."""
    from ..tasks import get_task
    from ..train.spectral import load_recipe

    recipe = load_recipe(args.recipe)
    redshift = "network" in recipe   # redshift recipes name their network and setup
    task = get_task("redshift" if redshift else recipe.get("task", ""))
    client = _connect(args)
    try:
        report = task.train(args.recipe, out=args.out, client=client, cache_dir=args.cache, progress=True)
    finally:
        client.close()
    if task.name == "kinematics":
        print(f"kinematics ({report['mock']['survey']}): best epoch {report['best_epoch']} of "
              f"{report['epochs_run']}; on its training release {report['training_release_figures']}")
        return 0
    if task.name == "stellar":
        best = min(report["history"], key=lambda h: h["val_loss"])
        print(f"stellar: {len(report['history'])} epochs (best {best['epoch']}), {report['seconds']:.0f} s; "
              f"grid {report['grid']} ({report['n_grid_nodes']} nodes)")
        for snr, m in report["test"].items():
            print(f"  held-out {snr}: " + ", ".join(f"{k} MAE {v['mae']:.3g} (1-sigma {100 * v['coverage_1sigma']:.0f}%)"
                                                    for k, v in m.items()))
        print(f"  weights sha256 {report['weights_sha256'][:16]}...")
        return 0
    if redshift:
        test = "; ".join(f"{k}: NMAD {v['nmad']:.5f}, eta {100 * v['eta']:.2f}%" for k, v in report["test"].items())
        print(f"redshift ({report['recipe']['network']}, {report['recipe']['setup']}): {report['n_spectra']} spectra "
              f"({report['n_train']} train / {report['n_val']} validation / {report['n_test']} test), best epoch "
              f"{report['best_epoch']} of {report['epochs_run']}, {report['seconds']['training']:.0f} s training")
        print(f"  held-out test: {test}")
        print(f"  weights sha256 {report['weights_sha256'][:16]}...")
        return 0
    test = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in report["test"].items())
    print(f"{report['task']}: {report['n_spectra']} spectra ({report['n_train']} train / {report['n_val']} validation / "
          f"{report['n_test']} test), best epoch {report['best_epoch']} of {report['epochs_run']}, "
          f"{report['seconds']['training']:.0f} s training")
    print(f"  held-out test: {test}")
    print(f"  weights sha256 {report['weights_sha256'][:16]}...")
    return 0


def cmd_run_catalog(args: argparse.Namespace) -> int:
    """Ingest if needed, infer, write the catalog, fit the MZR, summarise."""
    from ..dask.runner import run_catalog

    spec = check_release(args.release)
    if args.input is not None:
        check_input(args.input, "--input")
        if args.catalogue is None:
            from ..dask.inputs import find_catalogue

            try:
                find_catalogue(args.input, spec["release"].get("catalogue"))
            except ValueError as err:
                raise UsageError(str(err)) from err
    for option in ("masses", "catalogue", "truth"):
        value = getattr(args, option, None)
        if value is not None and not Path(value).exists():
            raise UsageError(f"--{option} {value} does not exist")
    if args.store is not None and args.input is None and not (Path(args.store) / "release.json").is_file():
        raise UsageError(f"--store {args.store} is not a release store (no release.json); give --input to ingest "
                         "into it")
    out = check_writable(args.out or f"survey_ml_{spec['release']['name']}", "--out")
    with writer_lock(out, "run-catalog"):  # a second run on this --out refuses before its cluster starts
        return _run_catalog(args, run_catalog)


def _run_catalog(args: argparse.Namespace, run_catalog) -> int:
    client = _connect(args)
    try:
        report = run_catalog(args.release, input=args.input, store=args.store, out=args.out, client=client,
                             masses=args.masses, n_mock=args.n_mock, catalogue=args.catalogue, truth=args.truth,
                             tasks=args.tasks.split(",") if args.tasks else None, progress=True)
    finally:
        client.close()
    print(report.summary())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A finished run's catalog as HATS / VOTable / FITS, with the tasks' column declarations."""
    from ..catalog import export_fits, export_hats, export_votable, read_catalog, read_provenance
    from ..dask.blocks import catalog_columns
    from ..tasks import get_task

    if args.out is None:
        raise UsageError("give the run's folder with --out (or as RUN)")
    parts = sorted((Path(args.out) / "catalog").glob("part-*.parquet"))
    if not parts:
        raise UsageError(f"--out {args.out} holds no catalog parts (catalog/part-*.parquet): is it a finished run?")
    if not (args.hats or args.votable or args.fits):
        raise UsageError("say what to write: --hats, --votable and/or --fits")
    provenance = read_provenance(parts[0])
    tasks = [get_task(name)() for name in provenance.get("tasks", [])]
    kind = tasks[0].input_kind if tasks else "spectra"
    columns = catalog_columns(kind, tasks)
    catalog = read_catalog(parts[0].parent)
    for task in tasks:  # the sample-level flags a run adds after reading every part
        catalog = task.finalize(catalog)
    out = Path(args.out)
    if args.fits:
        print(f"fits     {export_fits(parts[0].parent, out / args.fits, frame=catalog, columns=columns)}")
    if args.votable:
        print(f"votable  {export_votable(parts[0].parent, out / args.votable, frame=catalog, columns=columns)}")
    if args.hats:
        client = _connect(args)
        try:
            hats = export_hats(parts[0].parent, out / args.hats, client, name=provenance.get("release"),
                               frame=catalog, columns=columns, margin_arcsec=args.margin_arcsec)
        finally:
            client.close()
        print(hats.summary())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Where a run stands, from its output folder: parts done / total, rate, ETA, failures."""
    from ..report.progress import run_status

    if args.out is None:
        raise UsageError("give the run's folder with --out (or as RUN)")
    if not Path(args.out).is_dir():
        raise UsageError(f"{args.out} is not a folder")
    status = run_status(args.out, stall_after=args.stall_after)
    print(status.summary())
    return {"finished": 0, "running": 0}.get(status.state, 1)


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="survey-ml", description=__doc__)
    parser.add_argument("--version", action="version", version=f"survey_ml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="survey files -> <release>.zarr + objects.parquet",
                       description="Read survey files (spectra, IFU maps; each file's format told from its headers) "
                                   "into a release store on a Dask cluster; idempotent: new files only.")
    _add_release(p)
    p.add_argument("--input", default=None,
                   help="directory of spectra (searched recursively), LRS catalogue (.csv/.fits), file list (.txt) "
                        "or one file")
    p.add_argument("--store", default=None, help="release store directory (created or appended to)")
    p.add_argument("--reader", default="auto", choices=["auto", "lamost", "sdss"],
                   help="auto (default): each file's format told from its headers (LAMOST LRS DR7 or DR8+, SDSS spec)")
    p.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per Zarr chunk / task, new stores (default: the spec's [ingest] chunk_rows, 2048 for "
                        "dr10 - what run-catalog makes)")
    p.add_argument("--data-root", default=None, help="where a catalogue's spectra live (default: its folder)")
    p.add_argument("--max-decompressed-mb", type=float, default=None,
                   help="flag a file holding more than this once decompressed as too_large, reading no further "
                        "(default 64 for spectra)")
    _add_cluster_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("info", help="summarise a release store",
                       description="Rows, statuses, S/N quantiles, grid, chunking and size on disk of a release "
                                   "store, and the first flagged rows with their messages.")
    p.add_argument("store_positional", nargs="?", default=None, metavar="STORE", help="the store (as --store)")
    p.add_argument("--store", default=None, help="release store directory")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="a finished run's catalog in other formats: HATS (LSDB), VOTable, FITS",
                       description="Write a finished run's catalog (the Parquet parts under --out) again or in "
                                   "another format: a HATS collection for LSDB (on a Dask cluster), a VOTable, "
                                   "a FITS table - each column with its unit, UCD and description.")
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help="the run's output folder (as --out)")
    p.add_argument("--out", default=None, help="the run's output folder (--out of run-catalog)")
    p.add_argument("--hats", nargs="?", const="hats", default=None, metavar="FOLDER",
                   help="write a HATS collection (default <out>/hats)")
    p.add_argument("--votable", nargs="?", const="catalog.vot", default=None, metavar="FILE",
                   help="write a VOTable (default <out>/catalog.vot)")
    p.add_argument("--fits", nargs="?", const="catalog.fits", default=None, metavar="FILE",
                   help="write a FITS table (default <out>/catalog.fits)")
    p.add_argument("--margin-arcsec", type=float, default=10.0, help="HATS margin cache width (default 10 arcsec)")
    _add_cluster_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("simulate", help="mock release in the survey's own files, with a truth table",
                       description="Build (or reuse) a cached bagpipes galaxy library and write a mock release in "
                                   "the survey's own file formats, with a truth table.")
    _add_release(p)
    p.add_argument("--n", type=int, default=None, help="spectra to write (default: the spec's n_spectra)")
    p.add_argument("--library-size", type=int, default=None,
                   help="bagpipes library spectra (default: the spec's library_size); built once, cached")
    p.add_argument("--out", default=None, help="release folder (default ./mock_<release>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="library cache folder (default $SURVEY_ML_CACHE or ~/.cache/survey_ml)")
    p.add_argument("--variant", default=None,
                   help="a [simulate.<variant>] table of the spec, e.g. 'wide' (dr10: 0 < z < 0.5 for redshift work)")
    _add_cluster_args(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("run-catalog", help="release -> catalog (Parquet + FITS + HATS) -> relations: dr10 "
                                            "(metallicity, redshift, MZR), sami-dr3 / manga-dr17 (kinematics, TFR)",
                       description="Ingest if needed, run the release's tasks per chunk on a Dask cluster, write "
                                   "the catalog (Parquet parts, FITS, HATS) and fit the scaling relations; "
                                   "re-running the same command resumes.")
    _add_release(p)
    p.add_argument("--input", default=None,
                   help="survey files to ingest (folder, catalogue or file list); with neither --input nor "
                        "--store, a mock release of the spec's [simulate] size is written and used")
    p.add_argument("--store", default=None, help="ingested release store (default <out>/store)")
    p.add_argument("--out", default=None, help="output folder (default ./survey_ml_<release>)")
    p.add_argument("--masses", default=None,
                   help="stellar-mass table for the MZR (obsid or ra/dec + log_mstar or MPA-JHU lgm_fib_p50)")
    p.add_argument("--n-mock", type=int, default=None, help="size of the default mock release")
    p.add_argument("--truth", default=None,
                   help="truth table of a mock --input, for the report's predicted-vs-true and error-coverage "
                        "figures (default: truth.parquet in the --input folder, if there is one)")
    p.add_argument("--catalogue", default=None,
                   help="IFU releases: DRPall (MaNGA) or SAMI catalogue to join (default: the spec's, in --input)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks to run (e.g. metallicity,strong_lines; default: every [tasks.*] of "
                        "the spec); installed plug-in tasks count too")
    _add_cluster_args(p)
    p.set_defaults(func=cmd_run_catalog)

    p = sub.add_parser("train", help="train a network (metallicity, sfclass, redshift, ...) from its recipe",
                       description="Train a task's network from its recipe (bagpipes library, observation model, "
                                   "network, settings) and save the weights with a JSON report.")
    p.add_argument("recipe", help="recipe name in survey_ml/weights/ (metallicity, sfclass, redshift, "
                                  "redshift_published, redshift_deimos, redshift_deimos_published) or a recipe TOML")
    p.add_argument("--out", default=None, help="weights file (default: the shipped <task>.pt beside the recipe)")
    p.add_argument("--cache", default=None, help="library cache folder (default $SURVEY_ML_CACHE or ~/.cache/survey_ml)")
    _add_cluster_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="mock LAMOST release -> ingest on a local Dask cluster -> summary",
                       description="Write a small parametric mock LAMOST release (no bagpipes), damage a few files "
                                   "on purpose, ingest it on a local Dask cluster and summarise the store.")
    p.add_argument("--n", type=int, default=2000, help="number of mock spectra (default 2000)")
    p.add_argument("--out", default="survey_ml_demo", help="output directory (default ./survey_ml_demo)")
    p.add_argument("--seed", type=int, default=0)
    _add_cluster_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="progress of a run from its output folder (parts done / total, rate, "
                                       "ETA, failures); works while it runs, and after it died",
                       description="Where a run stands, read from its output folder: stage, parts done / total, "
                                   "rows/s, ETA, failures with their messages, and whether its driver is alive.",
                       epilog="exit status: 0 running or finished; 1 failed, killed, stalled or not started")
    p.add_argument("run", nargs="?", default=None, metavar="RUN",
                   help="the run's output folder (as --out), or a catalog folder of parts")
    p.add_argument("--out", default=None, help="the run's output folder (--out of run-catalog)")
    p.add_argument("--stall-after", type=float, default=None,
                   help="seconds without a heartbeat from the driver before a run on another host counts as "
                        "stalled (default 30)")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``survey-ml`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(_resolve(args))
    except UsageError as err:
        print(f"survey-ml {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
