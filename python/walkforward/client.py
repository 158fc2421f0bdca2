"""A client of a walkforward coordinator: submit sweeps, follow them, read their reports.

    import walkforward
    client = walkforward.Client("127.0.0.1:50051", token="…", tls=walkforward.Tls(ca="ca.pem"))
    sweep = client.submit("configs/quickstart.toml")
    sweep.wait()                          # a progress bar on stderr
    tables = sweep.report()               # {"schedules": DataFrame, "decay": DataFrame, …}

The tables are those `wf run --out` writes as CSV (verdict, schedules, decay, series,
exposures, horizons, importance; backtest and equity with a backtest), read from the
coordinator as Parquet, so they are the same rows and columns.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import grpc
import polars as pl

from .v1 import sweep_pb2, sweep_pb2_grpc

#: Reports of large sweeps are big: allow up to this many bytes per response.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024

_STATUS = {
    sweep_pb2.SWEEP_STATUS_RUNNING: "running",
    sweep_pb2.SWEEP_STATUS_FINISHED: "finished",
    sweep_pb2.SWEEP_STATUS_CANCELLED: "cancelled",
}


class WalkforwardError(RuntimeError):
    """A call the coordinator refused: ``code`` (a gRPC status name) and its message,
    which names the field for a bad spec."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Tls:
    """TLS to the coordinator: the CA that signed its certificate (default: the system's
    roots), and a client certificate and key for mTLS."""

    ca: str | os.PathLike | None = None
    cert: str | os.PathLike | None = None
    key: str | os.PathLike | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        read = lambda path: Path(path).read_bytes() if path is not None else None  # noqa: E731
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca), private_key=read(self.key), certificate_chain=read(self.cert)
        )


@dataclass(frozen=True)
class Progress:
    """Where a sweep stands."""

    sweep_id: str
    name: str
    status: str
    total: int
    succeeded: int
    running: int
    queued: int
    dead_lettered: int
    cancelled: int
    failures: int

    @classmethod
    def of(cls, message: Any) -> "Progress":
        return cls(
            sweep_id=message.sweep_id,
            name=message.name,
            status=_STATUS.get(message.status, "unknown"),
            total=message.total,
            succeeded=message.succeeded,
            running=message.running,
            queued=message.queued,
            dead_lettered=message.dead_lettered,
            cancelled=message.cancelled,
            failures=message.failures,
        )

    @property
    def done(self) -> bool:
        return self.status != "running"


def _spec_text(spec: str | os.PathLike | Mapping[str, Any]) -> str:
    """A spec given as a path, as TOML text, or as a dict (written as TOML)."""
    if isinstance(spec, Mapping):
        return _toml(spec)
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and "\n" not in spec and Path(spec).is_file()):
        return Path(spec).read_text()
    if isinstance(spec, str):
        return spec
    raise TypeError(f"a spec is a path, TOML text or a dict, not {type(spec).__name__}")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml(spec: Mapping[str, Any]) -> str:
    """A spec dict as TOML: scalars first, then tables, then arrays of tables (`models`)."""
    lines: list[str] = []

    def table(prefix: str, values: Mapping[str, Any]) -> None:
        nested = []
        for key, value in values.items():
            if isinstance(value, Mapping):
                nested.append((key, value))
            elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
                nested.append((key, value))
            else:
                lines.append(f"{json.dumps(str(key))} = {_toml_value(value)}")
        for key, value in nested:
            name = f"{prefix}.{json.dumps(str(key))}" if prefix else json.dumps(str(key))
            if isinstance(value, Mapping):
                lines.append(f"\n[{name}]")
                table(name, value)
            else:
                for item in value:
                    lines.append(f"\n[[{name}]]")
                    table(name, item)

    table("", spec)
    return "\n".join(lines) + "\n"


class Client:
    """A coordinator at ``address`` (``host:port``, or ``http://`` / ``https://host:port``),
    with a bearer ``token`` (default: ``WF_TOKEN``) and ``tls`` (implied by ``https://``)."""

    def __init__(self, address: str, token: str | None = None, tls: Tls | None = None, timeout: float = 60.0):
        secure = tls is not None or address.startswith("https://")
        target = address.removeprefix("https://").removeprefix("http://").rstrip("/")
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
        if secure:
            self._channel = grpc.secure_channel(target, (tls or Tls()).credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        token = token if token is not None else os.environ.get("WF_TOKEN")
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self._timeout = timeout
        self._sweeps = sweep_pb2_grpc.SweepServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._sweeps, method)(request, metadata=self._metadata, timeout=timeout or self._timeout)
        except grpc.RpcError as error:
            raise WalkforwardError(error.code().name, error.details() or "") from None

    def submit(self, spec: str | os.PathLike | Mapping[str, Any]) -> "Sweep":
        """Submits a sweep spec (a path, TOML text or a dict) and returns its :class:`Sweep`.
        A bad spec raises :class:`WalkforwardError` (``INVALID_ARGUMENT``) naming the field;
        nothing is queued then."""
        response = self._call("SubmitSweep", sweep_pb2.SubmitSweepRequest(spec_toml=_spec_text(spec)))
        return Sweep(self, response.sweep_id, jobs=response.jobs, reused=response.reused)

    def sweep(self, sweep_id: str) -> "Sweep":
        """An existing sweep, by id."""
        self._call("GetSweep", sweep_pb2.GetSweepRequest(sweep_id=sweep_id))
        return Sweep(self, sweep_id)

    def sweeps(self) -> list[Progress]:
        """The sweeps this caller may see."""
        return [Progress.of(p) for p in self._call("ListSweeps", sweep_pb2.ListSweepsRequest()).sweeps]


class Sweep:
    """A submitted sweep."""

    def __init__(self, client: Client, sweep_id: str, jobs: int | None = None, reused: int | None = None):
        self.client = client
        self.id = sweep_id
        self.jobs = jobs
        self.reused = reused

    def __repr__(self) -> str:
        return f"Sweep({self.id!r})"

    def progress(self) -> Progress:
        return Progress.of(self.client._call("GetSweep", sweep_pb2.GetSweepRequest(sweep_id=self.id)).progress)

    def watch(self, timeout: float | None = None) -> Iterator[Progress]:
        """Progress events until the sweep ends (the coordinator's stream), or until
        ``timeout`` seconds pass."""
        try:
            stream = self.client._sweeps.WatchSweep(
                sweep_pb2.WatchSweepRequest(sweep_id=self.id), metadata=self.client._metadata, timeout=timeout
            )
            for message in stream:
                yield Progress.of(message)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise WalkforwardError(error.code().name, error.details() or "") from None

    def wait(self, progress_bar: bool = True, timeout: float | None = None) -> Progress:
        """Waits for the sweep to end, drawing a progress bar on stderr; returns how it
        ended. Raises ``TimeoutError`` after ``timeout`` seconds."""
        started = time.monotonic()
        last = self.progress()
        while not last.done:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                raise TimeoutError(f"sweep {self.id} still {last.status} after {timeout} s")
            for last in self.watch(timeout=left):
                if progress_bar:
                    _bar(last, time.monotonic() - started)
                if last.done:
                    break
            # The stream ended or timed out: ask again (a new stream if still running).
            last = self.progress()
        if progress_bar:
            _bar(last, time.monotonic() - started)
            sys.stderr.write("\n")
        return last

    def cancel(self) -> Progress:
        """Stops leasing the sweep's jobs (running ones stop at their next heartbeat)."""
        return Progress.of(self.client._call("CancelSweep", sweep_pb2.CancelSweepRequest(sweep_id=self.id)).progress)

    def report_json(self) -> dict[str, Any]:
        """The whole report, as JSON (docs/ANALYTICS.md names its fields)."""
        response = self.client._call("GetReport", sweep_pb2.GetReportRequest(sweep_id=self.id), timeout=600)
        return json.loads(response.report_json)

    def report(self) -> dict[str, pl.DataFrame]:
        """Every table of the report, by name: verdict, schedules, decay, series, exposures,
        horizons, importance, and backtest and equity when the sweep has a backtest."""
        response = self.client._call(
            "GetReport", sweep_pb2.GetReportRequest(sweep_id=self.id, tables=True), timeout=600
        )
        return {table.name: pl.read_parquet(io.BytesIO(table.parquet)) for table in response.tables}


def _bar(progress: Progress, seconds: float) -> None:
    ended = progress.succeeded + progress.dead_lettered + progress.cancelled
    total = max(progress.total, 1)
    width = 30
    filled = int(width * ended / total)
    sys.stderr.write(
        f"\r{progress.name} [{'#' * filled}{'.' * (width - filled)}] {ended}/{progress.total} "
        f"({progress.running} running, {progress.dead_lettered} dead) {seconds:5.0f} s {progress.status}"
    )
    sys.stderr.flush()


def open_report(folder: str | os.PathLike) -> dict[str, pl.DataFrame]:
    """The tables of a report written to disk (`wf run --out DIR`, or a report folder):
    the same names and rows as :meth:`Sweep.report`. Given ``--out``, its newest report."""
    root = Path(folder)
    candidates = [root] + sorted(
        (p for p in root.glob("artifacts/reports/*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for candidate in candidates:
        tables = sorted(candidate.glob("*.csv"))
        if tables:
            return {path.stem: _read_csv(path) for path in tables}
    raise FileNotFoundError(f"{root}: no report tables (*.csv) here or under artifacts/reports/")


def _read_csv(path: Path) -> pl.DataFrame:
    """A report table as written: every column's type inferred from all rows, a `date`
    column as dates (as the coordinator's Parquet tables are)."""
    header = path.read_text().split("\n", 1)[0].split(",")
    overrides = {"date": pl.Date} if "date" in header else None
    return pl.read_csv(path, infer_schema_length=None, schema_overrides=overrides)
