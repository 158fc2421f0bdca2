"""The trainer's side of walkforward's external-trainer protocol (docs/TRAINERS.md).

A walkforward worker writes each job into a fresh directory (``train.parquet``,
``score.parquet``, ``job.json``) and runs the registered program on it; the program writes
``scores.parquet``. This module reads a job (:func:`load`), writes its scores
(:meth:`Job.write_scores`), and runs a trainer function in either mode (:func:`main`): one
job per process, or one process for many jobs (:func:`serve`, the persistent mode).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

FORMAT = "walkforward-trainer/1"
#: The exit code that asks the worker to retry the job (EX_TEMPFAIL).
EXIT_RETRY = 75


class Retry(Exception):
    """Raise from a trainer function to ask for another try (a busy GPU, a lost file)."""


class ProtocolError(ValueError):
    """A job directory or a score table that does not follow the protocol."""


@dataclass
class Span:
    """Trading days from ``first`` to ``last``, ``days`` of them."""

    first: _dt.date
    last: _dt.date
    days: int

    @classmethod
    def of(cls, value: dict | None) -> "Span | None":
        if value is None:
            return None
        return cls(_dt.date.fromisoformat(value["first"]), _dt.date.fromisoformat(value["last"]), int(value["days"]))


@dataclass
class Job:
    """One job: the fields of ``job.json``, and its tables as polars DataFrames."""

    dir: Path
    key: str
    model: str
    trainer: str
    options: dict[str, Any]
    seed: int
    horizons: list[int]
    primary_horizon: int
    #: ``{"count": N}`` or ``{"fraction": F}``.
    k: dict[str, Any]
    features: list[str]
    targets: list[str]
    retrain_date: _dt.date
    embargo: int
    fit: Span | None
    validation: Span | None
    score_days: Span | None
    device: str
    time_limit_seconds: float | None
    fields: dict[str, Any] = field(repr=False)
    _train: pl.DataFrame | None = field(default=None, repr=False)
    _score: pl.DataFrame | None = field(default=None, repr=False)

    @property
    def train(self) -> pl.DataFrame:
        """The training rows: date, code, the features, ``fwd_ret_{h}`` for every horizon,
        and ``validation`` (true on the validation days, after a purge gap)."""
        if self._train is None:
            self._train = pl.read_parquet(self.dir / self.fields["train_file"])
        return self._train

    @property
    def score(self) -> pl.DataFrame:
        """The rows to score: date, code and the features; no target."""
        if self._score is None:
            self._score = pl.read_parquet(self.dir / self.fields["score_file"])
        return self._score

    @property
    def model_dir(self) -> Path:
        """Where to save the model, if it is to be kept (the worker keeps this folder)."""
        path = self.dir / self.fields["model_dir"]
        path.mkdir(exist_ok=True)
        return path

    @property
    def k_for(self) -> Callable[[int], int]:
        """K for a day of ``n`` scored stocks."""
        if "count" in self.k:
            return lambda n: int(self.k["count"])
        # Halves round away from zero, as the worker's K does.
        return lambda n: max(1, int(float(self.k["fraction"]) * n + 0.5))

    def write_scores(self, scores: pl.DataFrame) -> Path:
        """Writes ``scores.parquet``: ``date``, ``code`` and either ``score`` (every horizon)
        or ``score_{h}`` for each horizon; one row per row of :attr:`score`. Checked here
        first, with the reason, so a mistake shows in the trainer's own error."""
        names = scores.columns
        for required in ("date", "code"):
            if required not in names:
                raise ProtocolError(f"scores: missing column {required!r} (found {names})")
        if "score" in names:
            wanted = ["score"]
        else:
            wanted = [f"score_{h}" for h in self.horizons]
            missing = [name for name in wanted if name not in names]
            if missing:
                raise ProtocolError(f"scores: missing column {missing[0]!r}: give 'score' or one score_{{h}} per horizon")
        extra = [name for name in names if name not in ("date", "code", *wanted)]
        if extra:
            raise ProtocolError(f"scores: column {extra[0]!r} is not part of a score file")
        expected = self.fields["score_rows"]
        if scores.height != expected:
            raise ProtocolError(f"scores: {scores.height} rows, but the score file has {expected}")
        table = scores.select(
            pl.col("date").cast(pl.Date),
            pl.col("code").cast(pl.String),
            *[pl.col(name).cast(pl.Float64) for name in wanted],
        )
        path = self.dir / self.fields["scores_file"]
        table.write_parquet(path)
        return path


def load(path: str | os.PathLike | None = None) -> Job:
    """The job in directory ``path`` (default: the first argument, else ``WF_JOB_DIR``)."""
    if path is None:
        args = [a for a in sys.argv[1:] if not a.startswith("--")]
        path = args[0] if args else os.environ.get("WF_JOB_DIR")
    if path is None:
        raise ProtocolError("no job directory: give it as the first argument (or WF_JOB_DIR)")
    folder = Path(path)
    try:
        fields = json.loads((folder / "job.json").read_text())
    except FileNotFoundError as error:
        raise ProtocolError(f"{folder}: no job.json (is it a walkforward job directory?)") from error
    if fields.get("format") != FORMAT:
        raise ProtocolError(f"{folder}/job.json: format {fields.get('format')!r}, this package reads {FORMAT!r}")
    return Job(
        dir=folder,
        key=fields["job"],
        model=fields["model"],
        trainer=fields["trainer"],
        options=fields.get("options") or {},
        seed=int(fields["seed"]),
        horizons=[int(h) for h in fields["horizons"]],
        primary_horizon=int(fields["primary_horizon"]),
        k=fields["k"],
        features=list(fields["features"]),
        targets=list(fields["targets"]),
        retrain_date=_dt.date.fromisoformat(fields["retrain_date"]),
        embargo=int(fields["embargo"]),
        fit=Span.of(fields.get("fit")),
        validation=Span.of(fields.get("validation")),
        score_days=Span.of(fields.get("score")),
        device=fields["device"],
        time_limit_seconds=fields.get("time_limit_seconds"),
        fields=fields,
    )


#: The longest error message an answer carries (the whole traceback goes to stderr).
MAX_ERROR = 1500


def serve(fn: Callable[[Job], None], stdin=None, stdout=None) -> None:
    """The persistent mode: reads one JSON line per job (``{"job": KEY, "job_dir": …}``),
    runs ``fn`` on it, and answers one JSON line (``{"job": KEY, "ok": true}``, or
    ``{"job": KEY, "ok": false, "error": …, "retry": …}``) until stdin closes.

    Serving the process's own stdout, the answers get a descriptor of their own and
    descriptor 1 becomes stderr: nothing ``fn`` prints, nor a subprocess or a native
    library it calls, can be taken for an answer."""
    stdin = stdin or sys.stdin
    if stdout is None:
        sys.stdout.flush()
        answers = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    else:
        answers = stdout
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        key = None
        try:
            request = json.loads(line)
            key = request.get("job")
            fn(load(request["job_dir"]))
            answer: dict[str, Any] = {"ok": True}
        except Retry as error:
            answer = {"ok": False, "retry": True, "error": (str(error) or "retry")[:MAX_ERROR]}
        except Exception:  # noqa: BLE001 - every failure is the job's, answered with its traceback
            text = traceback.format_exc()
            print(text, file=sys.stderr, flush=True)
            answer = {"ok": False, "retry": False, "error": text[-MAX_ERROR:]}
        answers.write(json.dumps({"job": key, **answer}) + "\n")
        answers.flush()


def main(fn: Callable[[Job], None], version: str, argv: list[str] | None = None) -> None:
    """A trainer program's entry point: ``--version`` prints ``version``; ``--serve`` runs
    the persistent mode; otherwise runs ``fn`` on the job directory given (exit 75 on
    :class:`Retry`, 1 on any other error)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        print(version)
        return
    if args == ["--serve"]:
        serve(fn)
        return
    try:
        fn(load(args[0] if args else None))
    except Retry as error:
        print(f"retry: {error}", file=sys.stderr)
        sys.exit(EXIT_RETRY)
