"""walkforward.trainer on real job directories, written by a real `wf run`."""

import io
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import walkforward
import walkforward.trainer as wt

SPEC = """
name = "pytest-trainer"
[dataset]
panel = "synth:stocks=40,days=400,seed=5"
[evaluation]
start = 2021-08-02
end = 2021-10-29
[plan]
train_windows = [126]
cadences = ["monthly"]
horizons = [1, 5]
primary_horizon = 5
max_age = 21
embargo = 2
[metrics]
k = 8
bootstrap_samples = 50
bootstrap_seed = 1
[[models]]
name = "spy"
kind = "external"
params = { trainer = "spy", options = { feature = "vol_60" }, validation_days = 10 }
"""

# A trainer written with the package: it keeps a copy of every job directory it gets
# (before scoring), then scores by minus the feature its options name.
SPY = """
import shutil, sys
sys.path.insert(0, {package!r})
import polars as pl
import walkforward.trainer as wt

def spy(job):
    shutil.copytree(job.dir, {keep!r} + "/" + job.key)
    feature = job.options["feature"]
    job.write_scores(job.score.select("date", "code", (-pl.col(feature).fill_null(0.0)).alias("score")))

wt.main(spy, version="spy 1")
"""


@pytest.fixture(scope="module")
def job_dirs(wf, tmp_path_factory) -> list[Path]:
    """The job directories of a small sweep, as a trainer got them from `wf run`."""
    root = tmp_path_factory.mktemp("run")
    keep = root / "kept"
    keep.mkdir()
    package = str(Path(walkforward.__file__).resolve().parents[1])
    trainer = root / "spy.py"
    trainer.write_text(f"#!{sys.executable}\n" + SPY.format(package=package, keep=str(keep)))
    trainer.chmod(0o755)
    (root / "spec.toml").write_text(SPEC)
    run = subprocess.run(
        [str(wf), "run", "spec.toml", "--workers", "1", "--trainer", f"spy={trainer}", "--out", "out"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    dirs = sorted(keep.iterdir())
    assert len(dirs) >= 3, dirs
    return dirs


def test_a_job_reads_as_the_protocol_says(job_dirs):
    for folder in job_dirs:
        job = wt.load(folder)
        assert job.trainer == "spy" and job.model == "spy" and job.options == {"feature": "vol_60"}
        assert job.horizons == [1, 5] and job.primary_horizon == 5 and job.embargo == 2
        assert job.targets == ["fwd_ret_1", "fwd_ret_5"]
        train, score = job.train, job.score
        assert train.columns == ["date", "code", *job.features, *job.targets, "validation"]
        assert score.columns == ["date", "code", *job.features], "no target in the score file"
        assert train.schema["date"] == pl.Date and score.schema["code"] == pl.String
        assert train.height == job.fields["train_rows"] and score.height == job.fields["score_rows"]
        # Purged: the last training day is more than the longest horizon and the embargo
        # before the retrain date (in trading days, counted on the panel's calendar).
        validation = train.filter(pl.col("validation"))
        assert validation["date"].min() == job.validation.first and validation["date"].max() == job.validation.last
        assert train.filter(~pl.col("validation"))["date"].max() == job.fit.last
        assert job.validation.last < job.retrain_date and job.score_days.first == job.retrain_date
        assert job.device == "cpu" and job.k == {"count": 8} and job.k_for(100) == 8


def test_scores_are_checked_before_they_are_written(job_dirs, tmp_path):
    job = wt.load(job_dirs[0])
    scores = job.score.select("date", "code", pl.lit(1).alias("score"))
    with pytest.raises(wt.ProtocolError, match="rows"):
        job.write_scores(scores.head(3))
    with pytest.raises(wt.ProtocolError, match="'code'"):
        job.write_scores(scores.drop("code"))
    with pytest.raises(wt.ProtocolError, match="score_1"):
        job.write_scores(scores.rename({"score": "score_5"}))
    with pytest.raises(wt.ProtocolError, match="fwd_ret_5"):
        job.write_scores(scores.with_columns(pl.lit(0.0).alias("fwd_ret_5")))
    path = job.write_scores(scores)
    written = pl.read_parquet(path)
    assert written.schema == {"date": pl.Date, "code": pl.String, "score": pl.Float64}
    per_horizon = job.score.select("date", "code", pl.lit(1.0).alias("score_1"), pl.lit(2.0).alias("score_5"))
    assert pl.read_parquet(job.write_scores(per_horizon)).columns == ["date", "code", "score_1", "score_5"]


def test_serve_answers_one_line_per_job(job_dirs):
    seen = []

    def fn(job):
        seen.append(job.key)
        print("a print that must not reach the answers")
        if job.options.get("mode") == "retry":
            raise wt.Retry("busy")
        if job.options.get("mode") == "fail":
            raise RuntimeError("broken model")
        job.write_scores(job.score.select("date", "code", pl.lit(0.5).alias("score")))

    keys = [wt.load(folder).key for folder in job_dirs[:2]]
    requests = "\n".join(json.dumps({"job": key, "job_dir": str(folder)}) for key, folder in zip(keys, job_dirs)) + "\n"
    answers = io.StringIO()
    wt.serve(fn, stdin=io.StringIO(requests), stdout=answers)
    lines = answers.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [{"job": key, "ok": True} for key in keys]
    assert seen == [wt.load(folder).key for folder in job_dirs[:2]]
    # A job that raises is answered, and the next one still served.
    for mode, expected in [("retry", {"job": None, "ok": False, "retry": True, "error": "busy"}), ("fail", None)]:
        fields = json.loads((job_dirs[0] / "job.json").read_text())
        fields["options"]["mode"] = mode
        (job_dirs[0] / "job.json").write_text(json.dumps(fields))
        answers = io.StringIO()
        wt.serve(fn, stdin=io.StringIO(json.dumps({"job_dir": str(job_dirs[0])}) + "\n"), stdout=answers)
        answer = json.loads(answers.getvalue())
        if expected is not None:
            assert answer == expected
        else:
            assert answer["ok"] is False and answer["retry"] is False and "broken model" in answer["error"]
            assert len(answer["error"]) <= wt.MAX_ERROR


def test_load_refuses_what_is_not_a_job(tmp_path):
    with pytest.raises(wt.ProtocolError, match="no job.json"):
        wt.load(tmp_path)
    (tmp_path / "job.json").write_text(json.dumps({"format": "something-else/9"}))
    with pytest.raises(wt.ProtocolError, match="format"):
        wt.load(tmp_path)
