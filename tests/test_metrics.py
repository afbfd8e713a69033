"""Metrics against values worked out by hand."""
import numpy as np

from survey_ml.core.metrics import coverage_within, nmad, outlier_fraction


def test_nmad_and_eta_by_hand_with_missing_predictions():
    z_true = np.array([0.5, 0.5, 1.0, 2.0, 3.0, 0.2])
    z_pred = np.array([0.503, 0.494, 1.0, 2.6, 3.0, np.nan])
    # |dz|/(1+z): 0.002, 0.004, 0, 0.2, 0 (the NaN pair is dropped) -> median 0.002
    assert np.isclose(nmad(z_true, z_pred), 1.48 * 0.002)
    assert np.isclose(outlier_fraction(z_true, z_pred), 1 / 5)
    assert np.isclose(outlier_fraction(z_true, z_pred, threshold=0.003), 2 / 5)


def test_coverage_ignores_missing_and_nonpositive_errors():
    assert coverage_within(np.array([0.5, 1.5, np.nan, 0.1]), np.array([1.0, 1.0, 1.0, 0.0])) == 0.5
