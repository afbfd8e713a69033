"""Spectra between a survey_ml store and specutils, so users hand them to the tools they already use.

:func:`to_spectrum` gives one row of a spectra store as a :class:`specutils.Spectrum` (``Spectrum1D``
in specutils < 2): flux with its unit, inverse-variance uncertainty, the mask of pixels without
information, the vacuum wavelength in Angstrom, the catalogue redshift and the row's fields in
``meta``. :func:`from_spectrum` turns a specutils spectrum back into survey_ml's in-memory
:class:`survey_ml.io.spectrum.Spectrum`, which the file writers (``write_lamost_spectrum``,
``write_sdss_spectrum``) put into a survey's own format for ingest.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from astropy import units as u

from ..io.spectrum import Spectrum

__all__ = ["to_spectrum", "from_spectrum", "FLUX_UNITS"]

#: Flux unit of each stored format: SDSS is calibrated in 1e-17 erg/s/cm2/A; LAMOST LRS flux is relative.
FLUX_UNITS = {"sdss-spec": u.Unit("1e-17 erg / (s cm2 Angstrom)")}


def to_spectrum(release, row: int):
    """Row ``row`` of a spectra store (:func:`survey_ml.store.open_release`) as a ``specutils.Spectrum``.

    Pixels of the release grid outside the file's own range, and pixels without information,
    are masked (``mask`` True) with zero inverse variance.
    """
    from astropy.nddata import InverseVariance
    from specutils import Spectrum

    if release.kind != "spectra":
        raise ValueError(f"{release.path} holds {release.kind}, not spectra")
    if not 0 <= int(row) < release.n_rows:
        raise IndexError(f"{release.path}: row {row} is outside the store's {release.n_rows} rows")
    block = release.read_block(int(row), int(row) + 1, names=("flux", "ivar", "mask"))
    fields = release.objects.iloc[int(row)]
    meta: dict[str, Any] = {k: (None if _missing(v) else v.item() if hasattr(v, "item") else v)
                            for k, v in fields.items()}
    unit = FLUX_UNITS.get(str(fields.get("format", "")), u.dimensionless_unscaled)
    ivar = np.nan_to_num(block["ivar"][0].astype(np.float64), nan=0.0)
    bad = (ivar <= 0) | (block["mask"][0] != 0) | ~np.isfinite(block["flux"][0])
    z = meta.get("z")
    return Spectrum(flux=block["flux"][0].astype(np.float64) * unit,
                    spectral_axis=release.wavelength() * u.AA,
                    uncertainty=InverseVariance(np.where(bad, 0.0, ivar) / unit ** 2), mask=bad,
                    redshift=z if z is not None and np.isfinite(z) else None,
                    meta={"survey_ml": meta, "release": release.name, "store": str(release.path)})


def from_spectrum(spectrum, meta: dict[str, Any] | None = None, format: str = "lamost-new") -> Spectrum:
    """A ``specutils.Spectrum`` as survey_ml's :class:`~survey_ml.io.spectrum.Spectrum` (for the file writers).

    ``meta`` adds header fields (``obsid``, ``ra``, ``dec``, ``z``, ...) to those the spectrum's
    own ``meta["survey_ml"]`` carries. The wavelength must be vacuum; flux is taken in its own
    unit (for ``sdss-spec``, converted to 1e-17 erg/s/cm2/A).

    Examples
    --------
    >>> import numpy as np
    >>> from astropy import units as u
    >>> from specutils import Spectrum as SpecutilsSpectrum
    >>> s = SpecutilsSpectrum(flux=np.ones(4) * u.dimensionless_unscaled, spectral_axis=[4000., 4001, 4002, 4003] * u.AA)
    >>> back = from_spectrum(s, meta={"obsid": 7})
    >>> back.n_pix, back.meta["obsid"], float(back.ivar[0])
    (4, 7, 0.0)
    """
    from astropy.nddata import InverseVariance

    unit = FLUX_UNITS.get(format, spectrum.flux.unit)
    flux = spectrum.flux.to_value(unit, equivalencies=u.spectral_density(spectrum.spectral_axis))
    ivar = np.zeros_like(flux)
    if spectrum.uncertainty is not None:
        ivar = spectrum.uncertainty.represent_as(InverseVariance).quantity.to_value(unit ** -2)
    mask = np.zeros(flux.shape, dtype=np.uint32) if spectrum.mask is None else np.asarray(spectrum.mask).astype(np.uint32)
    wave = spectrum.spectral_axis.to_value(u.AA, equivalencies=u.spectral())
    fields = {**dict((spectrum.meta or {}).get("survey_ml", {})), **(meta or {})}
    fields = {k: v for k, v in fields.items() if v is not None}
    if wave.size > 1:  # the log-linear grid survey files describe their pixels with
        fields.setdefault("coeff0", float(np.log10(wave[0])))
        fields.setdefault("coeff1", float(np.log10(wave[-1] / wave[0]) / (wave.size - 1)))
    return Spectrum(flux=flux.astype(np.float32), ivar=np.where(mask != 0, 0, ivar).astype(np.float32),
                    wavelength=wave.astype(np.float64), andmask=mask, ormask=mask.copy(), meta=fields, format=format)


def _missing(value: Any) -> bool:
    """A missing scalar of the row table (None, NaN, pandas' NA)."""
    import pandas as pd

    return bool(pd.api.types.is_scalar(value) and pd.isna(value))
