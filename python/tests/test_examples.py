"""The LightGBM example (python/examples/lightgbm_ranker.py) through a real `wf run`, in the
persistent mode, on a small synthetic sweep."""

import subprocess
import sys
from pathlib import Path

import pytest

import walkforward

REPO = Path(__file__).resolve().parents[2]

SPEC = """
name = "pytest-lightgbm"
[dataset]
panel = "synth:stocks=60,days=400,seed=3"
[evaluation]
start = 2021-08-02
end = 2022-01-31
[plan]
train_windows = [126]
cadences = ["monthly"]
horizons = [5]
primary_horizon = 5
max_age = 42
[metrics]
k = 10
bootstrap_samples = 100
bootstrap_seed = 1
[[models]]
name = "lightgbm"
kind = "external"
params = { trainer = "lightgbm", options = { n_estimators = 50, min_child_samples = 20 } }
[baselines]
factors = ["-vol_60"]
"""


def test_the_lightgbm_example_runs_a_sweep(wf, tmp_path):
    pytest.importorskip("lightgbm", reason="pip install lightgbm (.ci/run does)")
    wrapper = tmp_path / "lightgbm.sh"
    wrapper.write_text(
        f"#!/bin/sh\nexport PYTHONPATH={REPO / 'python'}\n"
        f"exec {sys.executable} {REPO / 'python/examples/lightgbm_ranker.py'} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    (tmp_path / "spec.toml").write_text(SPEC)
    run = subprocess.run(
        [str(wf), "run", "spec.toml", "--workers", "2", "--out", "out", "--trainer", f"lightgbm={wrapper}",
         "--persistent", "--trainer-dir", "work"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    tables = walkforward.open_report(tmp_path / "out")
    lines = tables["schedules"].filter(tables["schedules"]["model"] == "lightgbm")
    assert lines.height > 0, tables["schedules"]
    # Each job's model was kept by the worker.
    kept = list((tmp_path / "work" / "models").iterdir())
    assert kept and all((folder / "model.txt").is_file() for folder in kept)
