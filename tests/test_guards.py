"""Guards against what users and damaged files do (issue 17): one writer per folder, bounded
decompression, bytes after the data, symbolic links, and command lines that cannot work."""
from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from survey_ml.io._fits import decompression_limit, load_fits_bytes, open_fits
from survey_ml.io.errors import SurveyFileError
from survey_ml.store import ingest
from survey_ml.store.layout import list_files
from survey_ml.store.lock import LOCK_NAME, FolderInUseError, FolderLock


# --------------------------------------------------------------------------- one writer per folder
def _hold_lock(folder: Path, purpose: str = "run-catalog") -> subprocess.Popen:
    """A separate process that takes ``folder``'s lock and keeps it until killed."""
    code = ("import sys, time; from survey_ml.store.lock import FolderLock; "
            f"FolderLock({str(folder)!r}, {purpose!r}).acquire(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_first_and_a_killed_ones_lock_is_taken_over(tmp_path):
    holder = _hold_lock(tmp_path / "run")
    try:
        record = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
        with pytest.raises(FolderInUseError, match=rf"in use by run-catalog \(pid {holder.pid} on "):
            FolderLock(tmp_path / "run", "ingest").acquire()
        # the API refuses too, before any cluster starts
        from survey_ml.dask.runner import run_catalog

        t0 = time.perf_counter()
        with pytest.raises(FolderInUseError, match=str(holder.pid)):
            run_catalog("dr10", out=tmp_path / "run", n_mock=8, progress=False)
        assert time.perf_counter() - t0 < 5
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock stays on disk, and does not block the next writer
    assert (tmp_path / "run" / LOCK_NAME).exists()
    with pytest.warns(UserWarning, match=rf"taking over the lock of run-catalog \(pid {holder.pid}.*is gone"):
        lock = FolderLock(tmp_path / "run", "run-catalog").acquire()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_an_old_lock_from_another_host_is_stale(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    record = {"pid": 1, "host": "other-node", "started": time.time() - 7200, "purpose": "ingest", "command": "x"}
    (folder / LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(FolderInUseError, match="other-node"):  # another host's pid cannot be asked: it waits
        FolderLock(folder, "ingest", stale_after=3 * 3600).acquire()
    with pytest.warns(UserWarning, match=r"2\.0 h old"):
        FolderLock(folder, "ingest", stale_after=3600).acquire().release()


def test_the_cli_refuses_a_second_run_on_one_out_before_starting_a_cluster(tmp_path):
    holder = _hold_lock(tmp_path / "out")
    try:
        t0 = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "survey_ml", "run-catalog", "dr10", "--out",
                                 str(tmp_path / "out"), "--n-mock", "8"], capture_output=True, text=True)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "in use by run-catalog" in lines[0]
        assert time.perf_counter() - t0 < 20
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- bounded decompression
@pytest.fixture(scope="module")
def lamost_raw(real_fixtures) -> tuple[Path, bytes]:
    path = sorted((real_fixtures / "lamost").glob("*.fits.gz"))[0]
    return path, gzip.decompress(path.read_bytes())


def test_a_decompression_bomb_is_flagged_at_the_cap_without_inflating_it(tmp_path, lamost_raw):
    _, raw = lamost_raw
    bomb = tmp_path / "spec-bomb.fits.gz"
    bomb.write_bytes(gzip.compress(raw + b"\0" * (200 << 20), compresslevel=9))
    assert bomb.stat().st_size < 1 << 20  # < 1 MB on disk, 200 MB inflated
    tracemalloc.start()
    try:
        with decompression_limit(16), pytest.raises(SurveyFileError) as err:
            load_fits_bytes(str(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.code == "too_large" and "decompressed size over 16 MB" in str(err.value)
    assert str(err.value).startswith(str(bomb))
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MB while reading a bomb capped at 16 MB"


def test_ingest_flags_the_bomb_and_keeps_every_good_row(tmp_path, lamost_raw, real_fixtures):
    _, raw = lamost_raw
    bomb = tmp_path / "spec-bomb.fits.gz"
    bomb.write_bytes(gzip.compress(raw + b"\0" * (100 << 20), compresslevel=9))
    good = sorted(str(p) for p in (real_fixtures / "lamost").glob("*.fits.gz"))
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join([good[0], str(bomb), *good[1:]]) + "\n")
    report = ingest(listing, tmp_path / "store", "dr10", client=False, max_decompressed_mb=32)
    from survey_ml.store import open_release

    rows = open_release(tmp_path / "store").rows.set_index("file")
    assert rows.loc[str(bomb), "status"] == "too_large"
    assert rows.loc[str(bomb), "message"].startswith(f"{bomb}: decompressed size over 32 MB")
    assert (rows.loc[good, "status"] == "ok").all() and report.n_rows == len(good) + 1


def test_bytes_after_the_data_are_named(tmp_path, lamost_raw):
    _, raw = lamost_raw
    cases = {"garbage.fits.gz": gzip.compress(raw) + b"not a gzip member",
             "garbage.fits": raw + os.urandom(2880 * 2),
             "padded.fits.gz": gzip.compress(raw) + b"\0" * 4096,
             "members.fits.gz": gzip.compress(raw[:2880]) + gzip.compress(raw[2880:])}
    found = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        try:
            with open_fits(tmp_path / name) as hdul:
                found[name] = ("ok", len(hdul))
        except SurveyFileError as err:
            found[name] = (err.code, err.problem)
    assert found["garbage.fits.gz"][0] == "trailing_data"
    assert found["garbage.fits"][0] in ("trailing_data", "truncated")
    assert found["padded.fits.gz"][0] == "ok" and found["members.fits.gz"][0] == "ok"


@pytest.mark.parametrize("tail", [b"x" * 100, os.urandom(2880 * 3), b"\0" * 2880 + b"junk"],
                         ids=["text", "random_records", "zeros_then_junk"])
def test_the_lamost_reader_names_bytes_after_the_spectrum(tmp_path, lamost_raw, tail):
    from survey_ml.io.lamost import read_lamost_spectrum

    path, raw = lamost_raw
    read_lamost_spectrum(path)  # the file itself is fine
    (tmp_path / "tail.fits.gz").write_bytes(gzip.compress(raw + tail))
    with pytest.raises(SurveyFileError, match="bytes after the end of the last HDU") as err:
        read_lamost_spectrum(tmp_path / "tail.fits.gz")
    assert err.value.code == "trailing_data"
    (tmp_path / "padded.fits.gz").write_bytes(gzip.compress(raw + b"\0" * 5000))
    assert read_lamost_spectrum(tmp_path / "padded.fits.gz").n_pix == read_lamost_spectrum(path).n_pix


def test_non_ascii_header_bytes_are_a_bad_header_not_question_marks(tmp_path, lamost_raw):
    _, raw = lamost_raw
    raw = bytearray(raw)
    at = raw.find(b"OBJNAME = '") + len(b"OBJNAME = '")
    raw[at:at + 2] = "\u00e9".encode("latin-1") * 2
    (tmp_path / "accent.fits").write_bytes(bytes(raw))
    with pytest.raises(SurveyFileError, match="non-ASCII bytes in a header") as err:
        with open_fits(tmp_path / "accent.fits"):
            pass
    assert err.value.code == "bad_header"


def test_a_big_plain_file_is_refused_by_its_size_unread(tmp_path):
    path = tmp_path / "huge.fits"
    with open(path, "wb") as fh:
        fh.truncate(40 << 20)  # sparse: 40 MB on paper
    with decompression_limit(8), pytest.raises(SurveyFileError, match="file size over 8 MB") as err:
        load_fits_bytes(str(path))
    assert err.value.code == "too_large"


def test_the_cap_is_a_release_spec_key():
    from survey_ml.config import validate_spec

    validate_spec({"release": {"name": "x"}, "ingest": {"max_decompressed_mb": 16}})


# --------------------------------------------------------------------------- symbolic links
def test_symbolic_links_are_followed_once_and_broken_ones_flagged(tmp_path, real_fixtures):
    real = sorted((real_fixtures / "lamost").glob("*.fits.gz"))
    top = tmp_path / "input"
    (top / "a").mkdir(parents=True)
    (top / "a" / real[0].name).symlink_to(real[0])                  # a linked file
    (top / "linked_folder").symlink_to(real_fixtures / "lamost")     # a linked folder
    (top / "a" / "loop").symlink_to(top)                             # a loop
    (top / "spec-gone.fits.gz").symlink_to(tmp_path / "nowhere.fits.gz")  # a broken link
    with pytest.warns(UserWarning, match="read already"):
        files = list_files(top, (".fits.gz",))
    names = sorted(Path(f).relative_to(top).as_posix() for f in files)
    assert names == sorted([f"a/{real[0].name}", *(f"linked_folder/{p.name}" for p in real), "spec-gone.fits.gz"])
    with pytest.raises(SurveyFileError, match="broken symbolic link") as err:
        load_fits_bytes(str(top / "spec-gone.fits.gz"))
    assert err.value.code == "missing"


# --------------------------------------------------------------------------- command lines that cannot work
@pytest.mark.parametrize("argv, says", [
    (["run-catalog", "dr11"], "no release spec 'dr11' (shipped: dr10, harps, manga-dr17, sami-dr3)"),
    (["run-catalog", "{tmp}"], "is a folder: give the release"),
    (["run-catalog", "dr10", "--input", "/no/such/path"], "--input /no/such/path does not exist"),
    (["run-catalog", "dr10", "--input", "{tmp}"], "holds no survey files"),
    (["run-catalog", "dr10", "--store", "{tmp}"], "is not a release store"),
    (["ingest", "--input", "/no/such/path", "--store", "{tmp}/store"], "--input /no/such/path does not exist"),
    (["ingest", "--input", "{tmp}", "--store", "{tmp}/store"], "holds no survey files"),
    (["run-catalog", "dr10", "--out", "{file}/out"], "is a file, not a folder"),
])
def test_a_wrong_command_line_is_one_line_and_nothing_starts(tmp_path, argv, says):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "a_file").write_text("x")
    argv = [a.format(tmp=empty, file=tmp_path / "a_file") for a in argv]
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "survey_ml", *argv], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says.format(tmp=empty) in lines[0], result.stderr
    assert time.perf_counter() - t0 < 15  # no cluster was started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty"] and not any(empty.iterdir())


# --------------------------------------------------------------------------- header values
def _edited_copy(source: Path, target: Path, **cards) -> Path:
    """A copy of a real LAMOST file with primary-header cards set (None: removed)."""
    from astropy.io import fits

    with fits.open(source) as hdul:
        for key, value in cards.items():
            if value is None:
                del hdul[0].header[key]
            else:
                hdul[0].header[key] = value
        hdul.writeto(target, overwrite=True, output_verify="ignore")  # keep the survey's own quirks
    return target


@pytest.mark.parametrize("cards, says", [
    ({"RA": 999.0}, "header RA = 999.0 is outside [0.0, 360.0] deg"),
    ({"DEC": -95.0}, "header DEC = -95.0 is outside [-90.0, 90.0] deg"),
    ({"OBSID": -5}, "header OBSID = -5 is outside >= 1"),
    ({"Z": 42.0}, "header Z = 42.0 is outside [-0.1, 10.0]"),
    ({"SNRR": -3.0}, "header SNRR = -3.0 is outside >= 0.0"),
])
def test_out_of_range_header_values_are_a_bad_header_naming_keyword_and_value(tmp_path, real_fixtures, cards, says):
    from survey_ml.io.lamost import read_lamost_spectrum

    for source in sorted((real_fixtures / "lamost").glob("*.fits.gz")):  # both layouts
        path = _edited_copy(source, tmp_path / source.name, **cards)
        with pytest.raises(SurveyFileError) as err:
            read_lamost_spectrum(path)
        assert err.value.code == "bad_header" and says in str(err.value) and str(err.value).startswith(str(path))


def test_a_missing_redshift_or_snr_is_said_not_what_the_cut_saw(tmp_path, real_fixtures):
    from survey_ml.dask.blocks import catalog_block
    from survey_ml.io.lamost import read_lamost_spectrum
    from survey_ml.store import open_release

    sources = sorted((real_fixtures / "lamost").glob("*.fits.gz"))
    no_z = _edited_copy(sources[0], tmp_path / "no_z.fits.gz", Z=None)
    unmeasured_snr = _edited_copy(sources[1], tmp_path / "snr_9999.fits.gz", SNRR=-9999.0)
    assert np.isnan(read_lamost_spectrum(unmeasured_snr).meta["snrr"])  # LAMOST's "not measured"
    listing = tmp_path / "files.txt"
    listing.write_text(f"{no_z}\n{unmeasured_snr}\n")
    ingest(listing, tmp_path / "store", "dr10", client=False)
    release = open_release(tmp_path / "store")
    rows = release.rows
    frame = catalog_block(release.read_block(0, len(rows), rows=rows), rows, release.info, release.kind, [],
                          cuts={"z_min": 0.002, "z_max": 0.3, "snr_r_min": 3.0}).set_index(rows["file"])
    assert frame.loc[str(no_z), "status"] == "cut_z"
    assert frame.loc[str(no_z), "message"] == "no catalogue redshift (the file's Z is missing or not measured)"
    z = read_lamost_spectrum(unmeasured_snr).meta["z"]
    expected = "cut_snr" if 0.002 <= z <= 0.3 else "cut_z"
    assert frame.loc[str(unmeasured_snr), "status"] == expected
    if expected == "cut_snr":
        assert "no catalogue S/N_r" in frame.loc[str(unmeasured_snr), "message"]


# --------------------------------------------------------------------------- a file that takes its worker down
def test_a_file_that_kills_its_worker_costs_only_itself(tmp_path, lamost_raw, real_fixtures):
    """A decompression bomb under a cap set too high for the workers' memory: the nanny kills the worker
    reading it; ingest reads the block again in halves and flags exactly that file."""
    import dask
    from distributed import Client, LocalCluster

    from survey_ml.store import open_release

    _, raw = lamost_raw
    bomb = tmp_path / "spec-bomb.fits.gz"
    bomb.write_bytes(gzip.compress(raw + b"\0" * (1536 << 20), compresslevel=6))
    good = sorted(str(p) for p in (real_fixtures / "lamost").glob("*.fits.gz"))
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join([good[0], str(bomb), good[1]]) + "\n")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="600MiB", dashboard_address=":0",
                         processes=True) as cluster, Client(cluster) as client:
        report = ingest(listing, tmp_path / "store", "dr10", client=client, chunk_rows=4, max_decompressed_mb=4096)
    rows = open_release(tmp_path / "store").rows.set_index("file")
    assert rows.loc[str(bomb), "status"] == "worker_died"
    assert rows.loc[str(bomb), "message"].startswith(f"{bomb}: reading this file took its Dask worker down")
    assert (rows.loc[good, "status"] == "ok").all() and report.n_rows == 3


def test_a_non_finite_wavelength_is_named_without_a_numpy_warning(tmp_path, real_fixtures):
    import warnings

    from survey_ml.simulate.fuzz import DAMAGE

    damage = next(d for d in DAMAGE if d.name == "wavelength_nan")
    source = sorted((real_fixtures / "lamost").glob("*.fits.gz"))[0]
    damage.make(source, tmp_path / "nan_wave.fits.gz", np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # was: "All-NaN slice encountered"
        ingest(tmp_path / "nan_wave.fits.gz", tmp_path / "store", "dr10", client=False)
    from survey_ml.store import open_release

    row = open_release(tmp_path / "store").rows.iloc[0]
    n_pix = int(row["n_pix"])
    assert row["status"] == "off_grid"
    assert f"WAVELENGTH column has {n_pix} non-finite values (of {n_pix})" in row["message"]
