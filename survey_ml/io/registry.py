"""Which reader a spectrum file needs, told from its first bytes (as astropy's io registry does).

:func:`identify_spectrum` reads the first 32 kB of a file (more only if its headers are longer) (inflating a gzip stream only
that far) and applies each format's identifier in :data:`SPECTRUM_FORMATS` to its primary
header and the header of its first extension: the LAMOST LRS DR7 layout (a 5 x n_pix primary
image), the LAMOST LRS DR8+ layout (a one-row ``COADD`` table), an SDSS/BOSS spec or spec-lite
file (a ``COADD`` table of one row per pixel). :func:`read_spectrum` then calls that reader, so
a folder mixing surveys ingests with ``--reader auto``; a file no identifier claims is a
``wrong_format`` naming the formats tried and what the file holds.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _cards
from .errors import SurveyFileError
from ._fits import load_fits_bytes, require_file
from .lamost import read_lamost_bytes, read_lamost_spectrum
from .sdss import read_sdss_spectrum
from .spectrum import Spectrum

__all__ = ["SpectrumFormat", "SPECTRUM_FORMATS", "identify_spectrum", "read_spectrum", "HEAD_BYTES", "MAX_HEAD_BYTES"]

#: How much of a file (decompressed) identification reads first, and at most.
HEAD_BYTES, MAX_HEAD_BYTES = 32 * 1024, 2 * 1024 * 1024


@dataclass(frozen=True)
class SpectrumFormat:
    """A file format: its reader's name (a ``READERS`` key), a description, and its identifier."""

    reader: str
    description: str
    identify: Callable[[dict[str, Any], dict[str, Any] | None], bool]  # (primary, first extension or None)


def _extname(header: dict[str, Any] | None) -> str:
    return str((header or {}).get("EXTNAME", "")).strip().upper()


def _columns(header: dict[str, Any] | None) -> set[str]:
    """Upper-case names of a table's first columns (TTYPE1 ... TTYPE8)."""
    return {str(v).strip().upper() for k, v in (header or {}).items() if k.startswith("TTYPE")}


#: The spectrum formats survey_ml reads, in the order they are tried.
SPECTRUM_FORMATS: tuple[SpectrumFormat, ...] = (
    SpectrumFormat("lamost", "LAMOST LRS DR7 layout (5 x n_pix primary image)",
                   lambda primary, ext: primary.get("NAXIS") == 2 and primary.get("NAXIS2") == 5),
    SpectrumFormat("lamost", "LAMOST LRS DR8+ layout (one-row COADD table)",
                   lambda primary, ext: primary.get("NAXIS") == 0 and _extname(ext) == "COADD"
                   and (ext or {}).get("NAXIS2") == 1),
    SpectrumFormat("sdss", "SDSS/BOSS spec or spec-lite (COADD table of one row per pixel, with LOGLAM)",
                   lambda primary, ext: _extname(ext) == "COADD" and ((ext or {}).get("NAXIS2") or 0) > 1
                   and "LOGLAM" in _columns(ext)),
)


def _head(path: str, n: int = HEAD_BYTES) -> bytes:
    """The first ``n`` bytes of the file's content (inflated from gzip only that far)."""
    require_file(path)
    with open(path, "rb") as fh:
        raw = fh.read(n)
        if raw[:2] != b"\x1f\x8b":
            return raw
        inflate, out = zlib.decompressobj(wbits=31), b""
        while raw and len(out) < n:
            try:
                out += inflate.decompress(raw, n - len(out))
            except zlib.error:
                return out  # the reader says what is wrong with the stream
            raw = inflate.unconsumed_tail or (b"" if inflate.eof else fh.read(n))
        return out


_UNPARSED = (_cards.Unsupported, UnicodeDecodeError, ValueError)


#: The keywords the identifiers (and the message for an unknown file) read.
_KEYS = ("NAXIS", "NAXIS1", "NAXIS2", "BITPIX", "GCOUNT", "PCOUNT", "EXTNAME", "TELESCOP",
         *(f"TTYPE{i}" for i in range(1, 9)))


def _headers(head: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The primary header and, unless the primary holds the data (an image), the first extension's."""
    primary, data_start = _cards.header_cards(head, 0, _KEYS)
    if primary.get("NAXIS") == 2:
        return primary, None
    return primary, _cards.header_cards(head, _cards.hdu_after(primary, data_start), _KEYS)[0]


def _primary_only(head: bytes) -> tuple[dict[str, Any], None] | None:
    """The primary header alone, when the first extension's cannot be read (None: not even the primary)."""
    try:
        return _cards.header_cards(head, 0, _KEYS)[0], None
    except _UNPARSED:
        return None


def identify_spectrum(path: str | os.PathLike) -> str:
    """The ``READERS`` key of the reader ``path`` needs.

    Raises
    ------
    SurveyFileError
        ``wrong_format`` when no format claims it (the message lists the formats tried and
        what the file holds); what the reader would say for a file that is not FITS at all.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from astropy.io import fits
    >>> path = tempfile.mkdtemp() + "/spec-55859-F5902_sp01-001.fits"
    >>> fits.HDUList([fits.PrimaryHDU(np.zeros((5, 3909), np.float32))]).writeto(path)
    >>> identify_spectrum(path)   # a 5 x n_pix primary image: the DR7 layout
    'lamost'
    """
    path = os.fspath(path)
    return _identify(path, _headers_of(path))


def _headers_of(path: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The primary and first-extension headers from the file's first bytes (None: no readable header)."""
    size = HEAD_BYTES
    while True:
        head = _head(path, size)
        try:
            return _headers(head)
        except _UNPARSED:
            if len(head) == size and size < MAX_HEAD_BYTES:  # headers longer than what was read: read more
                size *= 4
                continue
            return _primary_only(head)


def _identify(path: str, headers: tuple[dict[str, Any], dict[str, Any] | None] | None) -> str:
    """The reader of a file with these headers (None: unreadable ones - the LAMOST reader names the problem)."""
    if headers is None:
        return "lamost"
    primary, extension = headers
    for fmt in SPECTRUM_FORMATS:
        if fmt.identify(primary, extension):
            return fmt.reader
    seen = (f"primary NAXIS={primary.get('NAXIS')}"
            + (f" ({primary.get('NAXIS1')} x {primary.get('NAXIS2')})" if primary.get("NAXIS") == 2 else "")
            + (f", TELESCOP={str(primary['TELESCOP']).strip()!r}" if "TELESCOP" in primary else "")
            + (f", first extension {_extname(extension) or 'unnamed'} with {extension.get('NAXIS2')} rows"
               if extension else ", no extension"))
    tried = "; ".join(f.description for f in SPECTRUM_FORMATS)
    raise SurveyFileError(path, f"not a spectrum format survey_ml reads ({seen}); tried: {tried}",
                          code="wrong_format")


#: Readers by the names :func:`identify_spectrum` returns.
_READERS: dict[str, Callable[[str], Spectrum]] = {"lamost": read_lamost_spectrum, "sdss": read_sdss_spectrum}


def read_spectrum(path: str | os.PathLike) -> Spectrum:
    """Read a survey spectrum of any format :data:`SPECTRUM_FORMATS` knows (ingest's ``reader = "auto"``).

    The file is read once: its bytes are identified, then decoded by the LAMOST reader, or
    handed to the SDSS one.
    """
    path = os.fspath(path)
    raw = load_fits_bytes(path)
    try:
        headers = _headers(raw)
    except _UNPARSED:
        headers = _primary_only(raw)
    reader = _identify(path, headers)
    return read_lamost_bytes(raw, path) if reader == "lamost" else _READERS[reader](path)
