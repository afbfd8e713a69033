"""specutils interop (issue 18): a store row as a specutils Spectrum, and back into survey_ml's files."""
from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from specutils import Spectrum

from survey_ml.io.lamost import read_lamost_spectrum, write_lamost_spectrum
from survey_ml.store import ingest, open_release
from survey_ml.store.interop import from_spectrum, to_spectrum


@pytest.fixture(scope="module")
def release(tmp_path_factory, real_fixtures):
    store = tmp_path_factory.mktemp("interop") / "store"
    ingest(real_fixtures / "lamost", store, "dr10", client=False)
    return open_release(store)


def test_a_store_row_is_a_specutils_spectrum_with_its_errors_mask_and_redshift(release):
    row = int(np.flatnonzero(release.objects["status"] == "ok")[0])
    spectrum = to_spectrum(release, row)
    assert isinstance(spectrum, Spectrum) and spectrum.spectral_axis.unit == u.AA
    block = release.read_block(row, row + 1)
    good = ~spectrum.mask
    assert good.sum() == release.objects["n_good"].iloc[row]
    np.testing.assert_allclose(spectrum.flux.value[good], block["flux"][0][good])
    np.testing.assert_allclose(spectrum.uncertainty.array[good], block["ivar"][0][good])
    assert spectrum.redshift.value == pytest.approx(release.objects["z"].iloc[row])
    assert spectrum.meta["survey_ml"]["obsid"] == release.objects["obsid"].iloc[row]
    with pytest.raises(IndexError, match="outside the store"):
        to_spectrum(release, release.n_rows)


def test_and_back_into_a_lamost_file_that_reads_the_same(release, real_fixtures, tmp_path):
    row = int(np.flatnonzero(release.objects["status"] == "ok")[0])
    original = read_lamost_spectrum(release.objects["file"].iloc[row])
    pix0, n = int(release.objects["pix0"].iloc[row]), int(release.objects["n_pix"].iloc[row])
    spectrum = to_spectrum(release, row)[pix0:pix0 + n]          # the file's own pixels
    back = from_spectrum(spectrum)
    write_lamost_spectrum(tmp_path / "again.fits", back)
    again = read_lamost_spectrum(tmp_path / "again.fits")
    good = original.good
    np.testing.assert_allclose(again.flux[good], original.flux[good], rtol=1e-6)
    np.testing.assert_allclose(again.wavelength, original.wavelength, rtol=1e-6)  # files hold float32 (1e-7)
    assert again.meta["obsid"] == original.meta["obsid"] and again.meta["z"] == pytest.approx(original.meta["z"])
