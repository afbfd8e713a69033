"""The stellar synthesis route: broadening, abundances, MOOG's input files (fast, no MOOG), and
one MOOG synthesis of Mg b (slow; skipped, saying why, where MOOGSILENT has not been built)."""
from __future__ import annotations

import numpy as np
import pytest

from survey_ml.simulate import stellar_synthesis as ss


def _lines(wave: np.ndarray, centres, depths, sigma: float) -> np.ndarray:
    flux = np.ones_like(wave)
    for c, d in zip(centres, depths):
        flux *= 1.0 - d * np.exp(-0.5 * ((wave - c) / sigma) ** 2)
    return flux


def _ew(wave: np.ndarray, flux: np.ndarray) -> float:
    return float(np.trapezoid(1.0 - flux, wave))


WAVE = np.arange(5100.0, 5200.0, 0.01)
FLUX = _lines(WAVE, [5120.0, 5150.0, 5151.0, 5180.0], [0.8, 0.5, 0.3, 0.95], 0.03)


@pytest.mark.parametrize("vsini,resolution", [(0.0, 20000.0), (5.0, None), (30.0, None), (60.0, 50000.0),
                                              (2.0, 115000.0)])
def test_broaden_conserves_equivalent_width(vsini, resolution):
    out = ss.broaden(WAVE, FLUX, vsini, resolution)
    assert out.shape == FLUX.shape
    assert _ew(WAVE, out) == pytest.approx(_ew(WAVE, FLUX), rel=2e-3)
    core = np.abs(WAVE - 5180.0) < 0.05
    assert out[core].min() > FLUX[core].min()   # a line only gets shallower
    assert out.max() <= 1.0 + 1e-9 and out.min() >= FLUX.min() - 1e-9


def test_broaden_leaves_continuum_and_unbroadened_spectra_alone():
    assert np.array_equal(ss.broaden(WAVE, FLUX, 0.0, None), FLUX)
    flat = np.ones_like(WAVE)
    assert np.allclose(ss.broaden(WAVE, flat, 40.0, 10000.0), 1.0, atol=1e-12)
    # a line far from its neighbours keeps its centre
    out = ss.broaden(WAVE, FLUX, 25.0, 30000.0)
    near = np.abs(WAVE - 5120.0) < 2.0
    centroid = np.sum(WAVE[near] * (1 - out[near])) / np.sum(1 - out[near])
    assert centroid == pytest.approx(5120.0, abs=2e-3)


def test_instrumental_profile_has_the_right_width():
    sigma_line = 0.03
    out = ss.broaden(WAVE, FLUX, 0.0, 20000.0)
    near = np.abs(WAVE - 5120.0) < 1.5
    d = 1 - out[near]
    sigma = np.sqrt(np.sum(d * (WAVE[near] - 5120.0) ** 2) / np.sum(d))
    sigma_ins = 5120.0 / 20000.0 / 2.3548
    # the input line is not Gaussian in depth at 0.8 (flux = 1 - 0.8 G), so its second moment is sigma_line
    assert sigma == pytest.approx(np.hypot(sigma_line, sigma_ins), rel=0.02)


def test_rotation_spreads_a_line_to_vsini_and_no_further():
    wave = np.arange(5150.0, 5250.0, 0.005)
    flux = _lines(wave, [5200.0], [0.5], 0.015)
    out = ss.broaden(wave, flux, 50.0, None)
    edge = 5200.0 * 50.0 / ss.C_KMS                                   # 0.867 A
    assert np.all(out[np.abs(wave - 5200.0) > edge + 0.1] > 1 - 1e-5)
    assert np.all(out[np.abs(wave - 5200.0) < edge - 0.1] < 1 - 1e-3)
    # Gray's profile: flat-ish core, fitted by its limb darkening (epsilon 0 is an ellipse)
    ellipse = ss.broaden(wave, flux, 50.0, None, limb_darkening=0.0)
    assert ellipse[np.argmin(np.abs(wave - 5200.0))] < out[np.argmin(np.abs(wave - 5200.0))] + 0.01
    assert _ew(wave, ellipse) == pytest.approx(_ew(wave, flux), rel=2e-3)


def test_broaden_rejects_bad_input():
    with pytest.raises(ValueError):
        ss.broaden(WAVE[::-1], FLUX, 5.0, None)
    with pytest.raises(ValueError):
        ss.broaden(WAVE, FLUX, -1.0, None)


def test_abundance_table_shifts_the_alpha_elements_only():
    solar = ss.solar_abundances()
    ab = ss.abundance_table(-1.0, 0.4)
    assert ab[1] == 12.0 and ab[2] == pytest.approx(solar[1])          # H, He not scaled
    for z in range(3, 96):
        expected = solar[z - 1] - 1.0 + (0.4 if z in ss.ALPHA_ELEMENTS else 0.0)
        assert ab[z] == pytest.approx(expected), z
    assert set(ss.ALPHA_ELEMENTS) == {8, 10, 12, 14, 16, 18, 20, 22}
    assert ab[12] == pytest.approx(7.0) and ab[26] == pytest.approx(6.5) and ab[11] == pytest.approx(5.24)


def test_microturbulence_relation():
    assert 1.0 < ss.vmicro_relation(5772, 4.44) < 1.3
    assert ss.vmicro_relation(4500, 1.5) > ss.vmicro_relation(4500, 4.6)
    assert ss.vmicro_relation(6500, 4.0) > ss.vmicro_relation(5772, 4.44)
    assert ss.vmicro_relation(3000, 5.0) >= 0.5


def _layers(n: int = 72) -> np.ndarray:
    rhox = np.logspace(-3.3, 1.1, n)
    return np.column_stack([rhox, np.linspace(3700, 11000, n), 1e4 * rhox * 2.7, np.logspace(9.4, 16.3, n),
                            np.logspace(-3.6, 2.5, n)])


def test_moog_atmosphere_file_format():
    layers = _layers()
    text = ss.format_moog_atmosphere(layers, 1.3, -1.0, 0.4, title="test model")
    lines = text.splitlines()
    assert lines[0] == "KURUCZ" and lines[1] == "test model"
    assert lines[2].startswith("NTAU") and int(lines[2][10:]) == len(layers)   # MOOG reads columns 11+
    table = np.array([[float(v) for v in line.split()] for line in lines[3:3 + len(layers)]])
    assert np.allclose(table, layers, rtol=5e-4)
    assert float(lines[3 + len(layers)][:13]) == pytest.approx(1.3)              # format (6d13.0)
    natoms = lines.index(next(line for line in lines if line.startswith("NATOMS")))
    n, scale = lines[natoms][10:].split()
    assert int(n) == len(ss.ALPHA_ELEMENTS) and float(scale) == -1.0
    listed = {int(float(line.split()[0])): float(line.split()[1]) for line in lines[natoms + 1:natoms + 1 + int(n)]}
    assert listed[12] == pytest.approx(7.60 - 1.0 + 0.4) and listed[20] == pytest.approx(6.34 - 0.6)
    nmol = int(lines[natoms + 1 + int(n)][10:])
    molecules = [float(v) for line in lines[natoms + 2 + int(n):] for v in line.split()]
    assert len(molecules) == nmol and 114.0 in molecules and 607.0 in molecules
    with pytest.raises(ValueError):
        ss.format_moog_atmosphere(_layers(101), 1.0, 0.0)


def test_atmosnet_atmospheres_are_physical():
    pytest.importorskip("atmosnet")
    sun = ss.atmosphere_layers(5772, 4.44, 0.0)
    hot = ss.atmosphere_layers(6500, 4.2, 0.0)
    giant = ss.atmosphere_layers(4500, 2.0, 0.0)
    assert sun.shape[1] == 5 and sun.shape[0] <= 100
    assert 3000 < sun[0, 1] < 5000 and 8000 < sun[-1, 1] < 15000       # 10**, not exp, of the emulator
    assert np.all(np.diff(sun[:, 0]) > 0) and np.all(np.diff(sun[:, 2]) > 0)
    i = np.searchsorted(sun[:, 0], 1.0)
    assert hot[np.searchsorted(hot[:, 0], 1.0), 1] > sun[i, 1] > giant[np.searchsorted(giant[:, 0], 1.0), 1]
    assert giant[-1, 2] < sun[-1, 2]
    text = ss.model_atmosphere(5772, 4.44, 0.0, 0.0)
    assert text.startswith("KURUCZ\n") and "vt=1.16" in text
    with pytest.raises(ValueError, match="outside atmosnet"):
        ss.atmosphere_layers(5772, 4.44, 2.5)


def test_isotope_ratios_and_strong_line_ranking():
    ratios = ss._isotope_ratios(np.array([607.01214, 606.01213, 112.00124, 26.0]), c12c13=89.0)
    assert ratios[607.01214] == pytest.approx(1.0 / (89 / 90 * 0.99636), rel=1e-3)
    assert ratios[606.01213] == pytest.approx(1.0 / (2 * 89 / 90 / 90), rel=1e-3)
    assert ratios[112.00124] == pytest.approx(1 / 0.7899, rel=1e-3) and 26.0 not in ratios
    lines = np.array([(5183.604, 12.0, 2.715, -0.18, 0.0), (5184.0, 26.0, 4.5, -2.5, 0.0),
                      (5169.033, 26.1, 2.889, -0.87, 0.0), (5165.0, 607.01214, 0.5, -1.0, 7.7)],
                     dtype=[("wave", "f8"), ("species", "f8"), ("ep", "f8"), ("loggf", "f8"), ("d0", "f8")])
    s = ss._strength_proxy(lines)
    assert s[0] > s[2] > s[1] and s[3] == -np.inf                     # molecules never go in the strong list


def test_reads_moog_summary(tmp_path):
    (tmp_path / "out2").write_text("ALL abundances NOT listed below differ from solar by   0.00 dex\n"
                                   "MODEL: test\n   5000.000   5000.040      0.010      2.000\n"
                                   " 0.0100 0.5000 0.9000 0.5000 0.0100\n")
    wave, flux = ss._read_summary(tmp_path / "out2")
    assert np.allclose(wave, [5000.0, 5000.01, 5000.02, 5000.03, 5000.04])
    assert np.allclose(flux, [0.99, 0.5, 0.1, 0.5, 0.99])


@pytest.mark.slow
def test_moog_solar_mg_b_and_line_strength_trends():
    moog = ss.find_moog(build=False)
    if moog is None:
        pytest.skip("MOOGSILENT not built: run deploy/build_moog.sh (needs gfortran: apt-get install gfortran)")
    pytest.importorskip("atmosnet")
    rng = (5160.0, 5190.0)
    wave, sun = ss.synthesize(5772.0, 4.44, 0.0, wave_range=rng)
    assert wave[0] == 5160.0 and wave[-1] == pytest.approx(5190.0) and np.all(np.isfinite(sun))
    assert sun.max() <= 1.0 and sun.max() > 0.98                       # continuum-normalised
    at = lambda f, lam: float(np.interp(lam, wave, f))                # noqa: E731
    for centre in (5167.32, 5172.68, 5183.60):                        # LTE cores: residual 0.05-0.12
        assert 0.03 < sun[np.abs(wave - centre) < 0.05].min() < 0.15
    # damping wings of b1 (Barklem): solar flux atlas ~0.45 at 0.5 A, ~0.9 at 2 A
    assert 0.3 < at(sun, 5183.60 + 0.5) < 0.6 and 0.8 < at(sun, 5183.60 + 2.0) < 0.95
    ew = lambda f: float(np.trapezoid(1 - f, wave))                   # noqa: E731
    _, poor = ss.synthesize(5772.0, 4.44, -1.5, 0.4, wave_range=rng)
    _, hot = ss.synthesize(6500.0, 4.2, 0.0, wave_range=rng)
    _, dwarf = ss.synthesize(4800.0, 4.6, 0.0, wave_range=rng)
    _, giant = ss.synthesize(4800.0, 2.5, 0.0, wave_range=rng)
    assert ew(poor) < 0.5 * ew(sun) and ew(hot) < ew(sun) < ew(giant)
    assert at(giant, 5183.60 + 2.0) > at(dwarf, 5183.60 + 2.0) + 0.2   # giants: narrower wings
