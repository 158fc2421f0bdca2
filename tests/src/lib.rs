//! `wf-tests`: the harness for end-to-end tests that run walkforward's real binaries.
//!
//! [`wf_binary`] finds `target/<profile>/wf`. A workspace test build (`cargo nextest run
//! --workspace`) builds it alongside the tests, with the same features (the app crate's
//! own integration test, `app/tests/cli.rs`, makes cargo do so); when it is missing, the harness runs
//! that same build once. [`wf`] runs the binary with a hard timeout.

pub mod net;
pub mod null;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a finished `wf` run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        self.code == Some(0)
    }
}

/// The `target/<profile>` directory of the running test executable.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("test executable lives in target/<profile>/deps").to_path_buf()
}

/// Path of the `wf` binary built with this test's profile.
pub fn wf_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = profile_dir();
        let binary = dir.join("wf");
        if !binary.exists() {
            // Same command shape as the test build, so no dependency is rebuilt with
            // other features (`-p wf` alone would rebuild polars).
            let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
            let profile = if profile == "debug" { "dev".to_string() } else { profile };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--workspace", "--tests", "--profile", &profile, "--manifest-path"])
                .arg(&manifest)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building wf failed");
        }
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    })
}

/// Path of the `wf-worker` binary (built with `wf`, by the same build).
pub fn wf_worker_binary() -> PathBuf {
    let binary = wf_binary().with_file_name("wf-worker");
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// Runs `wf` with `args` in `dir`, killing it after `timeout`. Output is drained on
/// threads while waiting, so a child writing more than a pipe holds never blocks.
pub fn wf_in(dir: &Path, args: &[&str], timeout: Duration) -> Run {
    wf_in_env(dir, args, &[], timeout)
}

/// [`wf`] with extra environment variables.
pub fn wf_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    wf_in_env(dir, args, env, Duration::from_secs(60))
}

/// [`wf_in`] with extra environment variables.
pub fn wf_in_env(dir: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Run {
    let mut child = Command::new(wf_binary())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wf starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for wf") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("wf {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs `wf` in `dir` with a one-minute limit.
pub fn wf(dir: &Path, args: &[&str]) -> Run {
    wf_in(dir, args, Duration::from_secs(60))
}

/// A long-running `wf` process (coordinator, worker), killed when dropped. Its stdout
/// and stderr are collected on threads and can be waited on.
#[derive(Debug)]
pub struct Process {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Process {
    /// Starts `wf args` in `dir` with extra environment variables.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_program(wf_binary(), dir, args, env)
    }

    /// Starts `wf args` in `dir` inside the network namespace `namespace` (through `ip
    /// netns exec`, which becomes `wf`: the pid is its own).
    pub fn start_in(namespace: &net::Namespace, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&namespace.exec_prefix(), dir, args, env)
    }

    /// Starts `ip PREFIX wf args` (`prefix` from [`net::Namespace::exec_prefix`]); with
    /// no prefix, [`Process::start`].
    pub fn start_wrapped(prefix: &[String], dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        if prefix.is_empty() {
            return Self::start(dir, args, env);
        }
        let binary = wf_binary().to_string_lossy().into_owned();
        let mut all: Vec<&str> = prefix.iter().map(String::as_str).collect();
        all.push(&binary);
        all.extend(args);
        Self::start_program(Path::new("ip"), dir, &all, env)
    }

    /// Starts `program args` in `dir` with extra environment variables.
    pub fn start_program(program: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(program);
        command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.env("WF_LOG", "info");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("wf starts");
        let collect = |mut pipe: Box<dyn Read + Send>| {
            let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().expect("output lock").push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
        Self { child, stdout, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("output lock").clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("output lock").clone()
    }

    /// Sends `signal` (e.g. "KILL", "STOP", "CONT", "TERM") with the system's `kill`.
    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `timeout`; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for wf") {
                return status.code();
            }
            assert!(started.elapsed() < timeout, "process did not exit within {timeout:?}; stderr:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// `GET http://address/path` (HTTP/1.1, no keep-alive): the status code and the body.
pub fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(address, "GET", path)
}

/// An HTTP/1.1 request without a body (`GET`, `PUT` of nothing, `DELETE`), no
/// keep-alive: the status code and the body.
pub fn http_request(address: &str, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response.as_str(), ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of the samples of Prometheus metric `name` (text format) whose labels include
/// every `labels` pair; `None` when no sample matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        if series_name != name || !labels.iter().all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\""))) {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// Test certificates written as PEM files into a directory: a CA (`ca.pem`), the
/// coordinator's certificate for `localhost` and 127.0.0.1 (`server.pem`, `server.key`),
/// a worker's client certificate (`worker.pem`, `worker.key`), and a client certificate
/// from another CA that the coordinator does not trust (`rogue.pem`, `rogue.key`).
pub fn write_test_pki(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write a PEM file");
    let ca = |name: &str| {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        (cert.pem(), Issuer::new(params, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, names: &[&str], usage: ExtendedKeyUsagePurpose, cn: &str| {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, issuer).expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (ca_pem, issuer) = ca("walkforward test CA");
    write("ca.pem", &ca_pem);
    let (cert, key) = leaf(&issuer, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, "coordinator");
    write("server.pem", &cert);
    write("server.key", &key);
    let (cert, key) = leaf(&issuer, &[], ExtendedKeyUsagePurpose::ClientAuth, "worker-pool");
    write("worker.pem", &cert);
    write("worker.key", &key);
    let (_, rogue_issuer) = ca("someone else's CA");
    let (cert, key) = leaf(&rogue_issuer, &[], ExtendedKeyUsagePurpose::ClientAuth, "rogue");
    write("rogue.pem", &cert);
    write("rogue.key", &key);
}

/// A test tool installed in the CI venv (`.ci/run`): the path in `variable`, else
/// `~/.cache/walkforward/venv/bin/NAME`, else `NAME` on the PATH; the first that runs
/// `--version` (or `--help`) successfully.
pub fn venv_tool(variable: &str, name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let candidates = [
        std::env::var_os(variable).map(PathBuf::from),
        Some(home.join(".cache/walkforward/venv/bin").join(name)),
        Some(PathBuf::from(name)),
    ];
    let runs = |path: &PathBuf, flag: &str| Command::new(path).arg(flag).output().is_ok_and(|o| o.status.success());
    candidates.into_iter().flatten().find(|path| runs(path, "--version") || runs(path, "--help"))
}

/// `None` with a printed reason where a tool is missing, unless `WF_REQUIRE_TOOLS` is
/// set (CI), where a missing tool fails the test.
pub fn required_tool(variable: &str, name: &str, installed_by: &str) -> Option<PathBuf> {
    let found = venv_tool(variable, name);
    if found.is_none() {
        assert!(
            std::env::var_os("WF_REQUIRE_TOOLS").is_none(),
            "{name} is required here (WF_REQUIRE_TOOLS) but not installed: {installed_by}"
        );
        println!("skipped: {name} is not installed ({installed_by}; or set {variable})");
    }
    found
}
