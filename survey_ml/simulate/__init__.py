"""Mock survey releases written in each survey's own file format, with known truth."""
from .defects import DEFECTS, inject_defect
from .parametric import MockRelease, make_lamost_spectrum, write_mock_release

__all__ = ["make_lamost_spectrum", "write_mock_release", "MockRelease", "inject_defect", "DEFECTS"]
