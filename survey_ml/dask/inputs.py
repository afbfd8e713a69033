"""What a run reads: an ingested store, survey files ingested first, or the embedded mock release.

:func:`prepare_store` is the first stage of ``run-catalog`` for every input kind: a store as
given; else ``input`` (a folder, a catalogue or a file list) ingested into ``<out>/store``
(idempotent: only new files); else a mock release of the spec's ``[simulate]`` size written
in the survey's own file formats (with a truth table) and ingested.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["prepare_store", "release_kind"]


def release_kind(spec: dict[str, Any]) -> str:
    """The store kind a release spec reads: ``maps`` for IFU releases, else ``spectra``.

    Examples
    --------
    >>> release_kind({"release": {"kind": "ifu"}}), release_kind({"release": {}})
    ('maps', 'spectra')
    """
    kind = spec.get("release", {}).get("kind", "spectra")
    return {"ifu": "maps"}.get(kind, kind)


def prepare_store(spec: dict[str, Any], out: Path, input: str | os.PathLike | None, store: str | os.PathLike | None,
                  client, n_mock: int | None = None, catalogue: str | os.PathLike | None = None,
                  progress: bool = True) -> tuple[Path, Path | None]:
    """The store to run on, and the truth table of a mock release (else None)."""
    if store is not None and input is None:
        if not (Path(store) / "release.json").exists():
            raise FileNotFoundError(f"{store} is not a release store (no release.json); "
                                    f"give --input to ingest survey files into it")
        return Path(store), None
    target = Path(store) if store is not None else Path(out) / "store"
    if release_kind(spec) == "maps":
        return _prepare_ifu(spec, Path(out), input, target, client, n_mock, catalogue, progress)
    if release_kind(spec) == "echelle":
        return _prepare_echelle(spec, input, target, client, progress)
    return _prepare_spectra(spec, Path(out), input, target, client, n_mock, progress)


def _prepare_spectra(spec, out: Path, input, store: Path, client, n_mock, progress) -> tuple[Path, Path | None]:
    from ..store import ingest

    truth = None
    if input is None:
        input, truth = _mock_spectra(spec, out / "mock", client, n_mock, progress)
    source, data_root = _source_of(spec, Path(input))
    truth = truth or mock_truth(input)
    ingest(source, store, spec["release"]["name"], client=client, reader=spec["release"].get("reader", "lamost"),
           chunk_rows=int(spec.get("ingest", {}).get("chunk_rows", 1024)), data_root=data_root, progress=progress,
           max_decompressed_mb=spec.get("ingest", {}).get("max_decompressed_mb"))
    return store, truth


def _prepare_echelle(spec, input, store: Path, client, progress) -> tuple[Path, Path | None]:
    """Ingest a folder (or list) of high-resolution spectra into an echelle store."""
    from ..store import ingest

    if input is None:
        raise ValueError(f"{spec['release']['name']}: give --input, a folder of HARPS / HARPS-N / ESPRESSO / ESO "
                         "1-D spectra (calibration frames beside them); this release has no embedded mock")
    table = spec.get("ingest", {})
    options = {key: table[key] for key in ("window", "segment_pixels") if key in table}
    ingest(input, store, spec["release"]["name"], kind="echelle", client=client,
           reader=spec["release"].get("reader", "auto"), chunk_rows=table.get("chunk_rows"), progress=progress,
           max_decompressed_mb=table.get("max_decompressed_mb"), **options)
    return store, mock_truth(input)


def mock_truth(input: str | os.PathLike) -> Path | None:
    """The truth table beside a mock release (``truth.parquet`` in the ``--input`` folder, or beside its catalogue).

    ``survey-ml simulate``, the crosscheck generator and the IFU mocks write one; a real release has none.
    """
    path = Path(input)
    truth = (path if path.is_dir() else path.parent) / "truth.parquet"
    return truth if truth.is_file() else None


def find_catalogue(folder: str | os.PathLike, pattern: str | None) -> Path | None:
    """The survey catalogue in ``folder`` (or one folder down) whose name matches the spec's ``pattern``.

    ``pattern`` is a glob (``[release] catalogue`` of a spec: ``"*InputCatGAMADR3*.csv"``,
    ``"drpall-v3_1_1.fits*"``); None when nothing matches. Two matches are an error naming both:
    the user says which with ``--catalogue``.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "sami_InputCatGAMADR3.csv").write_text("catid\\n")
    >>> find_catalogue(folder, "*InputCatGAMADR3*.csv").name
    'sami_InputCatGAMADR3.csv'
    >>> find_catalogue(folder, "drpall-*.fits*") is None
    True
    """
    folder = Path(folder)
    if not pattern or not folder.is_dir():
        return None
    found = sorted(p for p in [*folder.glob(pattern), *folder.glob(f"*/{pattern}")] if p.is_file())
    if len(found) > 1:
        raise ValueError(f"{folder}: {len(found)} files match the release's catalogue {pattern!r} "
                         f"({', '.join(str(p.relative_to(folder)) for p in found[:4])}); give one with --catalogue")
    return found[0] if found else None


def _source_of(spec: dict[str, Any], path: Path) -> tuple[Path, Path | None]:
    """What to ingest from ``--input``: the spec's catalogue if it is there, else the files."""
    if path.is_file():
        return path, None
    found = find_catalogue(path, spec["release"].get("catalogue"))
    if found is not None:
        spectra = path / spec["release"].get("spectra", "spectra")
        return found, (spectra if spectra.is_dir() else None)
    if (path / "catalogue.csv").is_file():  # what survey-ml simulate and the mock generators write
        return path / "catalogue.csv", None
    return path, None


def _mock_spectra(spec: dict[str, Any], root: Path, client, n_mock: int | None, progress: bool) -> tuple[Path, Path]:
    """The default input: a mock release of the spec's ``[simulate]`` size (reused if already written)."""
    from ..simulate import DEFECTS, inject_defect
    from ..simulate.library import LibraryConfig, build_library
    from ..simulate.release import ObservationPlan, simulate_release, simulate_settings

    sim = simulate_settings(spec)
    n = int(n_mock or sim.get("n_spectra", 5000))
    done = root / "done.json"
    if done.exists() and json.loads(done.read_text()).get("n") == n:
        return root, root / "truth.parquet"
    library = build_library(LibraryConfig(n=int(sim.get("library_size", 2000)), seed=0), client=client,
                            progress=progress)
    mock = simulate_release(library, root, n, seed=1, plan=ObservationPlan.from_spec(spec), client=client,
                            progress=progress)
    damaged = {}
    for k, defect in enumerate(DEFECTS):  # a real release has bad files: show they are flagged, not fatal
        if 97 * k < len(mock.files):
            damaged[mock.files[97 * k]] = inject_defect(mock.files[97 * k], defect)
    done.write_text(json.dumps({"n": n, "damaged": damaged}))
    return root, mock.truth


def _prepare_ifu(spec, out: Path, input, store: Path, client, n_mock, catalogue, progress) -> tuple[Path, Path | None]:
    from ..store import ingest_ifu

    survey = spec["release"]["survey"]
    truth = None
    if input is None:  # the embedded default: a mock release of the spec's size
        from ..simulate.ifu import simulate_ifu_release

        mock_root = out / "mock"
        if not (mock_root / "truth.parquet").exists():
            simulate_ifu_release(mock_root, int(n_mock or spec.get("simulate", {}).get("n_galaxies", 300)),
                                 survey=survey, seed=0, client=client, progress=progress)
        input, truth = mock_root, mock_root / "truth.parquet"
    if catalogue is None:
        catalogue = find_catalogue(input, spec["release"].get("catalogue"))
    truth = truth or mock_truth(input)
    ingest_table = spec.get("ingest", {})
    ingest_ifu(input, store, spec["release"]["name"], survey, catalogue=catalogue, client=client,
               chunk_rows=ingest_table.get("chunk_rows"), progress=progress,
               max_decompressed_mb=ingest_table.get("max_decompressed_mb"),
               **{k: ingest_table[k] for k in ("cube_window", "wave_chunk") if k in ingest_table})
    return store, truth
