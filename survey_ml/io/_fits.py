"""Safe FITS opening shared by the readers: every failure becomes a SurveyFileError."""
from __future__ import annotations

import contextvars
import io
import os
import re
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from . import _cards
from .errors import SurveyFileError

__all__ = ["open_fits", "load_fits_bytes", "require_file", "header_value", "max_decompressed_bytes", "decompression_limit",
           "DEFAULT_MAX_DECOMPRESSED_MB"]

_GZIP_MAGIC = b"\x1f\x8b"
#: What astropy's warnings about a file that ends too early say.
_TRUNCATION = "[Tt]runcated|[Uu]nexpected end of file"
_FITS_MAGIC = b"SIMPLE  ="
_CHUNK = 1 << 20

#: The most a FITS file may hold once decompressed (and a plain one on disk), in MB, unless
#: :func:`decompression_limit` says otherwise: room for the largest product survey_ml reads
#: whole (a MaNGA LOGCUBE, ~1-2 GB); ingest of spectra caps far lower (a LAMOST spectrum is
#: ~0.1 MB, an SDSS one ~1 MB: ``store.kinds.spectra.MAX_DECOMPRESSED_MB``).
DEFAULT_MAX_DECOMPRESSED_MB = 8192
_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar("max_decompressed_bytes",
                                                              default=DEFAULT_MAX_DECOMPRESSED_MB << 20)


def max_decompressed_bytes() -> int:
    """The cap in force here on a file's (decompressed) size, in bytes."""
    return _LIMIT.get()


@contextmanager
def decompression_limit(megabytes: float | None) -> Iterator[int]:
    """Cap the (decompressed) size of the FITS files read inside the block, in MB (None: the default).

    Ingest sets it per input kind and from the release spec's ``[ingest] max_decompressed_mb``;
    the cap is local to this thread (a :mod:`contextvars` variable).

    Examples
    --------
    >>> with decompression_limit(2):
    ...     max_decompressed_bytes()
    2097152
    >>> max_decompressed_bytes() == DEFAULT_MAX_DECOMPRESSED_MB << 20
    True
    """
    if megabytes is None:
        yield _LIMIT.get()
        return
    if not megabytes > 0:
        raise ValueError(f"max_decompressed_mb must be > 0, not {megabytes!r}")
    token = _LIMIT.set(int(megabytes * (1 << 20)))
    try:
        yield _LIMIT.get()
    finally:
        _LIMIT.reset(token)


def _too_large(path: str, limit: int, what: str) -> SurveyFileError:
    return SurveyFileError(path, f"{what} over {limit / (1 << 20):g} MB: not a survey file of this kind (a "
                           "decompression bomb?); the cap is [ingest] max_decompressed_mb", code="too_large")


def _only_zeros(data: bytes, fh) -> bool:
    """``data`` and the rest of ``fh`` are zero bytes (the padding of tape-block writers)."""
    while data:
        if data.strip(b"\0"):
            return False
        data = fh.read(_CHUNK)
    return True


def _gunzip(path: str, fh, limit: int) -> bytes:
    """Every gzip member of ``fh``, streamed, given up as soon as the output passes ``limit``."""
    out = bytearray()
    decompressor = zlib.decompressobj(wbits=31)
    data = fh.read(_CHUNK)
    while True:
        if not data:
            data = fh.read(_CHUNK)
            if not data:
                raise SurveyFileError(path, "truncated or corrupt gzip stream (it ends before its end marker)",
                                      code="truncated")
        try:
            out += decompressor.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise SurveyFileError(path, f"truncated or corrupt gzip stream ({exc})", code="truncated") from exc
        if len(out) > limit:
            raise _too_large(path, limit, "decompressed size")
        data = decompressor.unconsumed_tail
        if decompressor.eof:
            rest = decompressor.unused_data + data or fh.read(_CHUNK)
            if not rest or _only_zeros(rest, fh):
                return bytes(out)
            if rest[:2] != _GZIP_MAGIC:
                raise SurveyFileError(path, "data after the end of the gzip stream that is not another gzip "
                                      "member", code="trailing_data")
            decompressor, data = zlib.decompressobj(wbits=31), rest  # the next member


def require_file(path: str) -> None:
    """A SurveyFileError (``missing``) unless ``path`` exists; a broken symbolic link says so."""
    if not os.path.exists(path):
        if os.path.islink(path):
            raise SurveyFileError(path, f"broken symbolic link (to {os.readlink(path)}, which does not exist)",
                                  code="missing")
        raise SurveyFileError(path, "file does not exist", code="missing")


def load_fits_bytes(path: str) -> bytes:
    """The FITS bytes of ``path`` (gunzipped), after checks astropy does not make.

    astropy silently stops at the end of a truncated gzip stream and returns the HDUs it
    got, so gzip is decompressed here, where a short stream raises. Plain FITS must be a
    whole number of 2880-byte records. Neither may pass :func:`max_decompressed_bytes`: a
    gzip stream is inflated piece by piece and abandoned at the cap, so a decompression bomb
    costs a worker the cap, not its memory.
    """
    require_file(path)
    limit = max_decompressed_bytes()
    with open(path, "rb") as fh:
        head = fh.read(2)
        if not head:
            raise SurveyFileError(path, "file is empty (0 bytes)", code="truncated")
        fh.seek(0)
        if head == _GZIP_MAGIC:
            raw = _gunzip(path, fh, limit)
        else:
            if os.fstat(fh.fileno()).st_size > limit:
                raise _too_large(path, limit, "file size")
            raw = fh.read()
    if not raw:
        raise SurveyFileError(path, "file is empty once decompressed (a gzip stream of nothing)", code="truncated")
    if raw[: len(_FITS_MAGIC)] != _FITS_MAGIC:
        raise SurveyFileError(path, "not a FITS file (no SIMPLE card at the start)", code="unreadable")
    if len(raw) % 2880:  # whole HDUs then zero padding is fine; then other bytes, or a short HDU, is not
        n_hdus, end = _cards.walk_hdus(raw)
        if not n_hdus or end > len(raw):
            raise SurveyFileError(path, f"truncated FITS: {len(raw)} bytes is not a whole number of "
                                  "2880-byte records", code="truncated")
        _check_trailing_bytes(path, raw)
    return raw


@contextmanager
def open_fits(path: str | os.PathLike, raw: bytes | None = None) -> Iterator[fits.HDUList]:
    """Open a (possibly gzipped) FITS file, translating every failure to SurveyFileError.

    The whole file is read (and gunzipped) up front, so that a truncated file fails here
    rather than later when an array is touched, and HDUs are parsed eagerly.

    Parameters
    ----------
    path : str or os.PathLike
        The FITS file (``.fits`` or ``.fits.gz``).
    raw : bytes, optional
        Its bytes as already returned by :func:`load_fits_bytes` (not read again).

    Yields
    ------
    astropy.io.fits.HDUList
    """
    path = os.fspath(path)
    raw = load_fits_bytes(path) if raw is None else raw
    try:
        with warnings.catch_warnings():
            # astropy warns (not raises) on a truncated file; make it an error here.
            warnings.simplefilter("error", VerifyWarning)
            warnings.filterwarnings("error", message=f".*({_TRUNCATION}).*")
            warnings.filterwarnings("error", message=".*non-ASCII characters.*")
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False, checksum=False)
    except SurveyFileError:
        raise
    except Exception as exc:
        _check_trailing_bytes(path, raw)  # whole HDUs, then bytes that are not one: say so, not what parsing gave
        if not isinstance(exc, Warning):
            raise SurveyFileError(path, f"corrupt or truncated FITS ({type(exc).__name__}: {exc})",
                                  code="truncated") from exc
        if "non-ASCII" in str(exc):  # astropy would store them as "?" and carry on
            raise SurveyFileError(path, "non-ASCII bytes in a header (FITS headers are ASCII text)",
                                  code="bad_header") from exc
        if re.search(_TRUNCATION, str(exc)):
            raise SurveyFileError(path, f"corrupt or truncated FITS ({type(exc).__name__}: {exc})",
                                  code="truncated") from exc
        raise SurveyFileError(path, f"a header that does not follow the FITS standard ({exc})",
                              code="bad_header") from exc
    try:
        _check_trailing_bytes(path, raw)
        yield hdul
    except SurveyFileError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, zlib.error) as exc:
        raise SurveyFileError(path, f"corrupt or truncated FITS ({type(exc).__name__}: {exc})",
                              code="truncated") from exc
    finally:
        hdul.close()


def _check_trailing_bytes(path: str, raw: bytes) -> None:
    """Whole HDUs followed by bytes that are neither an HDU nor zero padding: a trailing_data SurveyFileError."""
    n_hdus, end = _cards.walk_hdus(raw)
    if n_hdus and end < len(raw) and raw[end:].strip(b"\0"):
        raise SurveyFileError(path, f"{len(raw) - end} bytes after the end of the last HDU (HDU {n_hdus - 1}) "
                              "that are not a FITS HDU", code="trailing_data")


def header_value(header: fits.Header, key: str, path: str, kind: type | None = None,
                 required: bool = True, default=None):
    """Read one header keyword, optionally coerced, with a clear error when it is missing.

    Parameters
    ----------
    header : astropy.io.fits.Header
    key : str
        Keyword name.
    path : str
        File the header came from (for the message).
    kind : type, optional
        ``int``, ``float`` or ``str``; the value is converted (strings are stripped).
    required : bool
        Raise ``SurveyFileError(code="bad_header")`` when absent; else return ``default``.
    default
        Value for an absent optional keyword.
    """
    if key not in header:
        if required:
            raise SurveyFileError(path, f"header keyword {key} is missing", code="bad_header")
        return default
    value = header[key]
    if kind is None:
        return value
    try:
        return value.strip() if kind is str and isinstance(value, str) else kind(value)
    except (TypeError, ValueError) as exc:
        raise SurveyFileError(path, f"header keyword {key}={value!r} is not {kind.__name__}",
                              code="bad_header") from exc
