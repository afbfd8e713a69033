"""Safe FITS opening shared by the readers: every failure becomes a SurveyFileError."""
from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from .errors import SurveyFileError

__all__ = ["open_fits", "load_fits_bytes", "header_value"]

_GZIP_MAGIC = b"\x1f\x8b"
_FITS_MAGIC = b"SIMPLE  ="


def load_fits_bytes(path: str) -> bytes:
    """The FITS bytes of ``path`` (gunzipped), after checks astropy does not make.

    astropy silently stops at the end of a truncated gzip stream and returns the HDUs it
    got, so gzip is decompressed here, where a short stream raises. Plain FITS must be a
    whole number of 2880-byte records.
    """
    if not os.path.exists(path):
        raise SurveyFileError(path, "file does not exist", code="missing")
    with open(path, "rb") as fh:
        raw = fh.read()
    if not raw:
        raise SurveyFileError(path, "file is empty (0 bytes)", code="truncated")
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise SurveyFileError(path, f"truncated or corrupt gzip stream ({exc})", code="truncated") from exc
    if raw[: len(_FITS_MAGIC)] != _FITS_MAGIC:
        raise SurveyFileError(path, "not a FITS file (no SIMPLE card at the start)", code="unreadable")
    if len(raw) % 2880:
        raise SurveyFileError(path, f"truncated FITS: {len(raw)} bytes is not a whole number of "
                              "2880-byte records", code="truncated")
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
            warnings.filterwarnings("error", message=".*[Tt]runcated.*")
            warnings.filterwarnings("error", message=".*[Uu]nexpected end of file.*")
            hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False, checksum=False)
    except SurveyFileError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, ... on bad bytes
        raise SurveyFileError(path, f"corrupt or truncated FITS ({type(exc).__name__}: {exc})",
                              code="truncated") from exc
    try:
        yield hdul
    except SurveyFileError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, zlib.error) as exc:
        raise SurveyFileError(path, f"corrupt or truncated FITS ({type(exc).__name__}: {exc})",
                              code="truncated") from exc
    finally:
        hdul.close()


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
