"""Mock survey releases written in each survey's own file format, with known truth.

``library``   physical rest-frame spectra from bagpipes (BC03 + CLOUDY), cached; ``priors``
``observe``   the LAMOST LRS observation model (redshift, LSF, pixels, calibration, noise)
``release``   a whole mock release re-observed from the library, with its truth table
``parametric`` a fast parametric mock for engine and I/O tests (no bagpipes needed)
``defects``   deliberate damage: the bad files a real release contains
"""
from .defects import DEFECTS, inject_defect
from .parametric import MockRelease, make_lamost_spectrum, write_mock_release

__all__ = ["make_lamost_spectrum", "write_mock_release", "MockRelease", "inject_defect", "DEFECTS"]
