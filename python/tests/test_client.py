"""walkforward.Client against a real cluster: `redis-server`, a `wf coordinator` with tokens
and TLS, and a `wf worker` process; its report tables equal the CSV files `wf run` writes
for the same sweep (`open_report`)."""

import datetime as dt
import shutil
import socket
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import walkforward

SPEC = {
    "name": "pytest-client",
    "dataset": {"panel": "synth:stocks=50,days=400,seed=11"},
    "evaluation": {"start": dt.date(2021, 8, 2), "end": dt.date(2022, 1, 31)},
    "plan": {
        "train_windows": [126],
        "cadences": ["monthly", "quarterly"],
        "horizons": [1, 5],
        "primary_horizon": 5,
        "max_age": 42,
    },
    "metrics": {"k": 10, "bootstrap_samples": 100, "bootstrap_seed": 1},
    "models": [{"name": "ridge", "kind": "linear", "seeds": [0], "params": {"epochs": 3}}],
    "baselines": {"factors": ["-vol_60", "mom_60_5"]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pki(folder: Path) -> None:
    """A CA and a server certificate for localhost and 127.0.0.1 (PEM)."""
    now = dt.datetime.now(dt.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write(path: str, data: bytes) -> None:
        (folder / path).write_bytes(data)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("walkforward test CA"))
        .issuer_name(name("walkforward test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    server = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    write("server.pem", server.public_bytes(serialization.Encoding.PEM))
    write(
        "server.key",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def wait_for(what: str, condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(wf, tmp_path_factory):
    """(address, user token, CA path, folder) of a running cluster; torn down after."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is required (apt-get install redis-server)")
    folder = tmp_path_factory.mktemp("cluster")
    write_pki(folder)

    def token(tenant: str, role: str) -> str:
        made = subprocess.run(
            [str(wf), "auth", "new-token", "--tenant", tenant, "--role", role, "--file", "tokens"],
            cwd=folder, capture_output=True, text=True, check=True,
        )
        return made.stdout.strip()

    user, worker = token("team-a", "user"), token("pool", "worker")
    redis_port, port = free_port(), free_port()
    processes = []
    logs = []

    def start(args, env=None):
        log = open(folder / f"process-{len(processes)}.log", "w")
        logs.append(log)
        process = subprocess.Popen(args, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)
        processes.append(process)
        return process

    start(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
    wait_for("redis", lambda: socket.socket().connect_ex(("127.0.0.1", redis_port)) == 0)
    start([
        str(wf), "coordinator", "--listen", f"127.0.0.1:{port}", "--redis", f"redis://127.0.0.1:{redis_port}",
        "--artifacts", "artifacts", "--auth", "tokens", "--tls-cert", "server.pem", "--tls-key", "server.key",
    ])
    wait_for("the coordinator", lambda: "listening on" in (folder / "process-1.log").read_text())
    import os

    env = dict(os.environ, WF_TOKEN=worker)
    address = f"https://localhost:{port}"
    start([str(wf), "worker", "--coordinator", address, "--device", "cpu", "--tls-ca", "ca.pem"], env=env)
    yield address, user, folder / "ca.pem", folder
    for process in reversed(processes):
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    for log in logs:
        log.close()


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """A table without its timing columns (seconds spent differ between runs)."""
    return frame.drop([name for name in frame.columns if "seconds" in name])


def test_submit_wait_report_equal_the_csv_files_of_the_same_sweep(cluster, wf, tmp_path):
    address, user, ca, _ = cluster
    with walkforward.Client(address, token=user, tls=walkforward.Tls(ca=ca)) as client:
        sweep = client.submit(SPEC)
        assert sweep.id.startswith("sw-") and sweep.jobs > 0
        ended = sweep.wait()
        assert ended.status == "finished" and ended.succeeded == ended.total, ended
        tables = sweep.report()
        assert any(p.sweep_id == sweep.id for p in client.sweeps())
        assert sweep.report_json()["name"] == "pytest-client"
    for name in ("verdict", "schedules", "decay", "series", "exposures", "horizons", "importance"):
        assert name in tables and tables[name].height > 0, name
    # The same sweep run locally: its CSV files, read back, are the same tables.
    (tmp_path / "spec.toml").write_text(walkforward.client._toml(SPEC))
    run = subprocess.run(
        [str(wf), "run", "spec.toml", "--workers", "1", "--out", "local"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    local = walkforward.open_report(tmp_path / "local")
    assert sorted(local) == sorted(tables)
    for name, table in tables.items():
        left, right = comparable(table), comparable(local[name])
        assert left.columns == right.columns, name
        assert left.equals(right), f"{name}:\n{left}\n{right}"


def test_a_bad_spec_or_token_is_refused_with_its_reason(cluster):
    address, user, ca, _ = cluster
    bad = dict(SPEC, metrics={"k": 0, "bootstrap_samples": 100, "bootstrap_seed": 1})
    with walkforward.Client(address, token=user, tls=walkforward.Tls(ca=ca)) as client:
        with pytest.raises(walkforward.WalkforwardError) as refused:
            client.submit(bad)
        assert refused.value.code == "INVALID_ARGUMENT" and "metrics.k" in refused.value.message
    with walkforward.Client(address, token="wf_not-a-token", tls=walkforward.Tls(ca=ca)) as client:
        with pytest.raises(walkforward.WalkforwardError) as refused:
            client.sweeps()
        assert refused.value.code == "UNAUTHENTICATED"


def test_cancel_stops_a_sweep(cluster):
    address, user, ca, _ = cluster
    big = dict(SPEC, name="pytest-cancel")
    big["plan"] = dict(SPEC["plan"], cadences=["weekly"], train_windows=[126, 252])
    big["evaluation"] = {"start": dt.date(2022, 2, 1), "end": dt.date(2022, 9, 30)}
    big["dataset"] = {"panel": "synth:stocks=50,days=560,seed=11"}
    big["models"] = [{"name": "mlp", "kind": "mlp", "seeds": [0], "params": {"epochs": 20}}]
    with walkforward.Client(address, token=user, tls=walkforward.Tls(ca=ca)) as client:
        sweep = client.submit(big)
        cancelled = sweep.cancel()
        assert cancelled.status == "cancelled", cancelled
        assert sweep.wait(progress_bar=False, timeout=60).status == "cancelled"
        assert sweep.progress().succeeded < sweep.progress().total


def test_open_report_reads_a_report_folder_and_refuses_an_empty_one(tmp_path):
    with pytest.raises(FileNotFoundError):
        walkforward.open_report(tmp_path)
    (tmp_path / "decay.csv").write_text("date,age,value\n2024-01-02,1,0.5\n2024-01-03,2,\n")
    table = walkforward.open_report(tmp_path)["decay"]
    assert table.schema["date"] == pl.Date and table["value"].null_count() == 1
