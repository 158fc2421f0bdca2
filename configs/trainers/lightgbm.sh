#!/bin/sh
# Runs the LightGBM example with the Python named by WF_TRAINER_PYTHON (default: the CI
# venv's, which .ci/run fills with lightgbm, polars and the walkforward package).
here=$(dirname "$0")
python=${WF_TRAINER_PYTHON:-$HOME/.cache/walkforward/venv/bin/python}
# The checkout's package, the one the trainer's identity hashes (configs/trainers.toml).
export PYTHONPATH="$here/../../python${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$here/../../python/examples/lightgbm_ranker.py" "$@"
