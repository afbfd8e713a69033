"""``python -m survey_ml``: the same as the ``survey-ml`` command."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
