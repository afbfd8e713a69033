"""A fuzz corpus: good LAMOST spectra beside copies damaged in ~40 ways, with what ingest must say.

:func:`write_fuzz_corpus` copies good files (real ones, or a mock release's) into a folder and,
for each kind of damage in :data:`DAMAGE`, makes damaged copies. The manifest it returns gives,
per file, the status ingest must give it and a fragment its message must contain; the
accounting (:func:`account`) compares an ingested store's row table with it: every damaged
file flagged for the right reason, every good file present, its row ``ok`` and its arrays
identical to a clean ingest of the good files alone (``tests/test_fuzz.py`` on a small
corpus; ``bench/fuzz.py`` at scale, with the workers' peak memory).

Damage works on the bytes (gzip stream, FITS records) or on the header and arrays (through
astropy, keeping the file's layout), never on survey_ml's own writer, so that the corpus
tests the readers and not the writer's idea of a file.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

__all__ = ["DAMAGE", "Damage", "write_fuzz_corpus", "account", "FIRST_FUZZ_OBSID"]

#: OBSIDs of the damaged copies start here (far from LAMOST's and the mocks').
FIRST_FUZZ_OBSID = 900_000_000


@dataclass(frozen=True)
class Damage:
    """One kind of damage: how to make it from a good file's bytes, and what ingest must say."""

    name: str
    make: Callable[[Path, Path, np.random.Generator], None]   # (good file, damaged file, rng)
    status: str
    says: str  # a fragment of the row's message


# --------------------------------------------------------------------------- helpers
def _fits_bytes(good: Path) -> bytes:
    raw = good.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _write_gz(target: Path, fits_bytes: bytes) -> None:
    target.write_bytes(gzip.compress(fits_bytes, compresslevel=1))


def _bytes(change: Callable[[bytes, np.random.Generator], bytes]) -> Callable[[Path, Path, np.random.Generator], None]:
    """Damage of the file as stored (compressed bytes)."""
    def make(good: Path, target: Path, rng: np.random.Generator) -> None:
        target.write_bytes(change(good.read_bytes(), rng))
    return make


def _inner(change: Callable[[bytes, np.random.Generator], bytes]) -> Callable[[Path, Path, np.random.Generator], None]:
    """Damage of the FITS bytes inside the gzip stream (recompressed)."""
    def make(good: Path, target: Path, rng: np.random.Generator) -> None:
        _write_gz(target, change(_fits_bytes(good), rng))
    return make


def _hdus(change: Callable[[fits.HDUList], None]) -> Callable[[Path, Path, np.random.Generator], None]:
    """Damage of the header or arrays through astropy, the file's layout kept."""
    def make(good: Path, target: Path, rng: np.random.Generator) -> None:
        with fits.open(good) as hdul:
            hdul = fits.HDUList([hdu.copy() for hdu in hdul])
        change(hdul)
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the damage is the point: no verification warnings
            warnings.simplefilter("ignore")
            hdul.writeto(buffer, output_verify="ignore")
        _write_gz(target, buffer.getvalue())
    return make


def _arrays(hdul: fits.HDUList) -> tuple[str, np.ndarray | fits.FITS_rec]:
    """("old", the (5, n) image) or ("new", the COADD table data)."""
    if hdul[0].header.get("NAXIS", 0) == 2:
        return "old", hdul[0].data
    return "new", hdul["COADD"].data


def _set_array(name: str, values: Callable[[np.ndarray], np.ndarray]) -> Callable[[fits.HDUList], None]:
    row = {"FLUX": 0, "IVAR": 1, "WAVELENGTH": 2, "ANDMASK": 3, "ORMASK": 4}[name]

    def change(hdul: fits.HDUList) -> None:
        layout, data = _arrays(hdul)
        if layout == "old":
            data[row] = values(np.array(data[row], dtype=np.float32))
        else:
            data[name][0] = values(np.array(data[name][0], dtype=np.float32))
    return change


def _set_card(key: str, value) -> Callable[[fits.HDUList], None]:
    def change(hdul: fits.HDUList) -> None:
        if value is None:
            del hdul[0].header[key]
        else:
            hdul[0].header[key] = value
    return change


def _flip_bits(raw: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    lo, hi = 20, max(21, len(data) - 20)  # inside the deflate stream, not its header or trailer
    for at in rng.integers(lo, hi, size=16):
        data[at] ^= 0xFF
    return bytes(data)


def _bad_crc(raw: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    data[-8] ^= 0xFF  # the CRC32 of the gzip trailer
    return bytes(data)


def _bomb(raw: bytes, rng: np.random.Generator) -> bytes:
    stream = zlib.compressobj(1, zlib.DEFLATED, 31)
    out = [stream.compress(raw)]
    zeros = b"\0" * (1 << 20)
    out += [stream.compress(zeros) for _ in range(96)]  # 96 MB of zeros after the spectrum
    return b"".join(out) + stream.flush()


def _accent(raw: bytes, rng: np.random.Generator) -> bytes:
    """Two Latin-1 bytes inside the first string value of the primary header."""
    at = raw.find(b"= '", 0, 2880 * 8) + 3
    if at < 3:
        raise ValueError("no string card in the primary header to put non-ASCII bytes in")
    return raw[:at] + b"\xe9\xe9" + raw[at + 2:]


def _cut_header(raw: bytes, rng: np.random.Generator) -> bytes:
    return raw[:2880 // 2]


def _table_rows(n: int) -> Callable[[fits.HDUList], None]:
    def change(hdul: fits.HDUList) -> None:
        layout, data = _arrays(hdul)
        if layout == "old":
            hdul[0] = fits.PrimaryHDU(np.asarray(data)[:3], header=hdul[0].header)
        else:
            hdul["COADD"] = fits.BinTableHDU(np.concatenate([data] * n), header=hdul["COADD"].header, name="COADD")
    return change


def _drop_column(hdul: fits.HDUList) -> None:
    layout, data = _arrays(hdul)
    if layout == "old":
        hdul[0] = fits.PrimaryHDU(np.asarray(data)[:3], header=hdul[0].header)
    else:
        cols = [c for c in hdul["COADD"].columns if c.name.upper() != "IVAR"]
        hdul["COADD"] = fits.BinTableHDU.from_columns(cols, header=hdul["COADD"].header, name="COADD")


def _shift_wavelength(hdul: fits.HDUList) -> None:
    _set_array("WAVELENGTH", lambda w: w * 1.01)(hdul)


#: Every kind of damage the corpus makes: name, maker, status, message fragment.
DAMAGE: tuple[Damage, ...] = (
    # the file as stored
    Damage("empty", _bytes(lambda raw, rng: b""), "truncated", "file is empty"),
    Damage("half", _bytes(lambda raw, rng: raw[: len(raw) // 2]), "truncated", "gzip stream"),
    Damage("one_byte", _bytes(lambda raw, rng: raw[:1]), "unreadable", "not a FITS file"),
    Damage("html", _bytes(lambda raw, rng: b"<html><body>404 Not Found</body></html>\n"), "unreadable",
           "not a FITS file"),
    Damage("gzip_header_only", _bytes(lambda raw, rng: raw[:10]), "truncated", "gzip stream"),
    Damage("bit_flips", _bytes(_flip_bits), "truncated", "gzip stream"),
    Damage("bad_crc", _bytes(_bad_crc), "truncated", "gzip stream"),
    Damage("garbage_after_gzip", _bytes(lambda raw, rng: raw + b"\x00\x01garbage" * 10), "trailing_data",
           "after the end of the gzip stream"),
    Damage("gzip_of_nothing", _bytes(lambda raw, rng: gzip.compress(b"")), "truncated", "empty once decompressed"),
    Damage("bomb", lambda good, target, rng: target.write_bytes(_bomb(_fits_bytes(good), rng)), "too_large",
           "decompressed size over"),
    Damage("random_bytes", _bytes(lambda raw, rng: rng.bytes(len(raw))), "unreadable", "not a FITS file"),
    # the FITS records
    Damage("cut_records", _inner(lambda raw, rng: raw[: len(raw) - 1000]), "truncated", "truncated"),
    Damage("cut_header", _inner(_cut_header), "truncated", "truncated"),
    Damage("garbage_after_hdu", _inner(lambda raw, rng: raw + rng.bytes(2880 * 2)), "trailing_data",
           "after the end of the last HDU"),
    Damage("text_after_hdu", _inner(lambda raw, rng: raw + b"END OF FILE\n" * 30), "trailing_data",
           "after the end of the last HDU"),
    Damage("zero_padding", _inner(lambda raw, rng: raw + b"\0" * 5000), "ok", ""),  # harmless: must stay ok
    Damage("card_format", _inner(lambda raw, rng: b"SIMPLE  = F" + raw[11:]), "bad_header", "FITS standard"),
    # the header
    Damage("no_obsid", _hdus(_set_card("OBSID", None)), "bad_header", "OBSID"),
    Damage("no_ra", _hdus(_set_card("RA", None)), "bad_header", "RA"),
    Damage("no_coeff0", _hdus(_set_card("COEFF0", None)), "bad_header", "COEFF0"),
    Damage("ra_999", _hdus(_set_card("RA", 999.0)), "bad_header", "header RA = 999.0"),
    Damage("dec_minus_95", _hdus(_set_card("DEC", -95.0)), "bad_header", "header DEC = -95.0"),
    Damage("obsid_negative", _hdus(_set_card("OBSID", -5)), "bad_header", "header OBSID = -5"),
    Damage("z_42", _hdus(_set_card("Z", 42.0)), "bad_header", "header Z = 42.0"),
    Damage("snr_negative", _hdus(_set_card("SNRR", -3.0)), "bad_header", "header SNRR = -3.0"),
    Damage("ra_text", _hdus(_set_card("RA", "north")), "bad_header", "RA"),
    Damage("mjd_1900", _hdus(_set_card("MJD", 15000)), "bad_header", "header MJD = 15000"),
    Damage("non_ascii", _inner(_accent), "bad_header", "non-ASCII"),
    # the arrays
    Damage("nan_flux", _hdus(_set_array("FLUX", lambda f: np.full_like(f, np.nan))), "no_coverage", "usable"),
    Damage("zero_ivar", _hdus(_set_array("IVAR", np.zeros_like)), "no_coverage", "ivar = 0"),
    Damage("negative_ivar", _hdus(_set_array("IVAR", lambda v: -np.abs(v) - 1)), "no_coverage", "usable"),
    Damage("some_inf", _hdus(_set_array("FLUX", lambda f: np.where(np.arange(f.size) % 97 == 0, np.inf, f))),
           "masked_values", "NaN/inf"),
    Damage("mask_fraction", _hdus(_set_array("ANDMASK", lambda m: m + 0.5)), "bad_values", "bit patterns"),
    Damage("mask_negative", _hdus(_set_array("ORMASK", lambda m: m - 7)), "bad_values", "bit patterns"),
    Damage("wavelength_shift", _hdus(_shift_wavelength), "off_grid", "WAVELENGTH"),
    Damage("wavelength_nan", _hdus(_set_array("WAVELENGTH", lambda w: np.full_like(w, np.nan))), "off_grid",
           "non-finite"),
    Damage("off_grid", _hdus(_set_card("COEFF0", 2.0)), "off_grid", "do not fit the release grid"),
    Damage("three_rows", _hdus(_table_rows(2)), "wrong_format", ""),
    Damage("no_ivar_column", _hdus(_drop_column), "wrong_format", ""),
)


def write_fuzz_corpus(folder: str | os.PathLike, good_files: Iterable[str | os.PathLike], copies: int = 1,
                      seed: int = 0) -> pd.DataFrame:
    """Good files and damaged copies of them in ``folder``; the manifest of what ingest must say.

    Parameters
    ----------
    folder : path
        Created; ``good/`` holds the good files (copied), ``damaged/`` the damaged ones,
        plus ``links/``: a broken symbolic link and a second name of a good file.
    good_files : iterable of path
        LAMOST LRS spectra that ingest reads ``ok`` (each a distinct OBSID).
    copies : int
        Damaged files per kind of damage (each from another good file, round robin).
    seed : int
        For the random damage (bit flips, garbage).

    Returns
    -------
    pandas.DataFrame
        ``file``, ``damage`` (``"none"`` for good files), ``status``, ``says``.
    """
    folder = Path(folder)
    good_files = [Path(p) for p in good_files]
    if not good_files:
        raise ValueError("write_fuzz_corpus needs at least one good file")
    rng = np.random.default_rng(seed)
    for sub in ("good", "damaged", "links"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, path in enumerate(good_files):
        target = folder / "good" / f"{i:05d}_{path.name}"
        shutil.copyfile(path, target)
        rows.append((str(target), "none", "ok", ""))
    k = 0
    fresh = folder / "damaged" / ".source.fits.gz"
    for damage in DAMAGE:
        for c in range(copies):
            # a copy of a good file under an OBSID of its own: a damaged file that stays usable must
            # not make its good original a duplicate
            _hdus(_set_card("OBSID", FIRST_FUZZ_OBSID + k))(good_files[k % len(good_files)], fresh, rng)
            k += 1
            target = folder / "damaged" / f"{damage.name}_{c:03d}.fits.gz"
            damage.make(fresh, target, rng)
            rows.append((str(target), damage.name, damage.status, damage.says))
    fresh.unlink()
    broken = folder / "links" / "broken_link.fits.gz"
    broken.symlink_to(folder / "links" / "nowhere.fits.gz")
    rows.append((str(broken), "broken_link", "missing", "broken symbolic link"))
    second = folder / "links" / "second_name.fits.gz"
    second.symlink_to(folder / "good" / f"00000_{good_files[0].name}")
    rows.append((str(second), "second_name", "duplicate", ""))
    return pd.DataFrame(rows, columns=["file", "damage", "status", "says"])


def account(manifest: pd.DataFrame, rows: pd.DataFrame) -> dict:
    """Compare an ingested store's row table with the manifest.

    Returns
    -------
    dict
        ``files``, ``damaged``, ``flagged_right`` (status and message fragment as promised),
        ``share_right`` (of the damaged files), ``good_rows_lost`` (good files missing or not
        ``ok``), ``wrong`` (per damage: what the row said instead).
    """
    table = rows.set_index("file")
    wrong: dict[str, list[str]] = {}
    right = lost = 0
    for row in manifest.itertuples(index=False):
        got = table.loc[row.file] if row.file in table.index else None
        if row.damage == "none":
            lost += int(got is None or got["status"] != "ok")
            continue
        ok = got is not None and got["status"] == row.status and row.says in str(got["message"])
        right += int(ok)
        if not ok:
            wrong.setdefault(row.damage, []).append("absent" if got is None else f"{got['status']}: {got['message']}")
    damaged = int((manifest["damage"] != "none").sum())
    return {"files": len(manifest), "damaged": damaged, "flagged_right": right,
            "share_right": right / damaged if damaged else 1.0, "good_rows_lost": lost, "wrong": wrong}
