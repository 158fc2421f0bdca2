//! Running a trainer's process: its own process group, a memory limit, its output in the
//! worker's log, killed on a stop or past its deadline. Spawned once per job ([`run`]), or
//! once per worker and handed one job after another ([`Server`], the persistent mode).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{info, warn};

/// The exit code that asks for a retry (EX_TEMPFAIL of `sysexits.h`).
pub const EXIT_RETRY: i32 = 75;
/// Lines of a trainer's standard error an error quotes.
const TAIL_LINES: usize = 20;
/// The longest line kept of a trainer's output.
const MAX_LINE: usize = 2_000;
/// The longest answer line of a persistent trainer (its error message included).
const MAX_ANSWER: usize = 64 * 1024;
/// Answer lines a persistent trainer may have written ahead of the worker reading them.
const ANSWERS_BUFFERED: usize = 64;
/// How long the worker waits for a trainer's output to end once its group is killed (a
/// process that left the group may hold the pipes).
const DRAIN: Duration = Duration::from_secs(2);
/// How often a wait looks at the stop flag and the deadline.
const POLL: Duration = Duration::from_millis(10);

/// How a trainer's run ended, when not with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Stopped from outside (a cancellation, a lost lease, the worker shutting down).
    Stopped,
    /// Still running at its deadline.
    TimedOut(Duration),
    /// Exited with `EX_TEMPFAIL`, or a persistent trainer died mid-job: worth another try.
    Retry(String),
    /// Any other end: the same every time.
    Failed(String),
}

/// What bounds a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits<'a> {
    pub stop: Option<&'a AtomicBool>,
    pub deadline: Option<Instant>,
    /// `RLIMIT_AS`, bytes.
    pub memory: Option<u64>,
}

impl Limits<'_> {
    /// Why waiting must end now, if it must.
    fn reached(&self, started: Instant) -> Option<Failure> {
        if self.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            return Some(Failure::Stopped);
        }
        self.deadline.filter(|deadline| Instant::now() >= *deadline).map(|_| Failure::TimedOut(started.elapsed()))
    }
}

/// A trainer's process group, killed on drop, so no path out leaves a trainer running.
struct Group(Child);

impl Group {
    /// Kills what is left of the group (the trainer, or processes it started).
    #[allow(unsafe_code)]
    fn kill(&self) {
        // SAFETY: signals a process group this worker created; no memory is touched. A
        // group is not reused while any of its processes lives.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
        let _ = self.0.wait();
    }
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// A started trainer: its group, its stdin (persistent mode), the lines of its stdout
/// (persistent mode: the protocol's answers; else logged as they come), and the last
/// lines of its stderr.
struct Started {
    group: Group,
    stdin: Option<ChildStdin>,
    answers: Option<Receiver<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    tail: Tail,
    /// The job its output is logged under (a persistent trainer's changes job by job).
    job: Arc<Mutex<String>>,
}

/// Starts `program` with `args` in `dir`, in a process group of its own, with
/// `memory` as its address-space limit; with `persistent`, its stdin and stdout are the
/// protocol's channel.
#[allow(unsafe_code)]
fn start(
    program: &Path,
    args: &[&Path],
    dir: &Path,
    label: (&str, &str),
    memory: Option<u64>,
    persistent: bool,
) -> Result<Started, Failure> {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env("WF_JOB_DIR", dir)
        .stdin(if persistent { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // A job's trainer dies with the thread that waits for it, should the worker
            // die without killing it. Not a persistent one: the thread that started it
            // may end while it serves others; it ends when its stdin closes instead.
            if !persistent {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            if let Some(bytes) = memory {
                let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| Failure::Failed(format!("cannot start {}: {e}", program.display())))?;
    let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let trainer = label.0.to_string();
    let job = Arc::new(Mutex::new(label.1.to_string()));
    let current = |job: &Arc<Mutex<String>>| job.lock().map(|j| j.clone()).unwrap_or_default();
    let stdin = child.stdin.take();
    let mut readers = Vec::new();
    let mut answers = None;
    if let Some(out) = child.stdout.take() {
        if persistent {
            // Bounded: a trainer that writes faster than answers are read blocks.
            let (send, receive) = std::sync::mpsc::sync_channel(ANSWERS_BUFFERED);
            answers = Some(receive);
            readers.push(std::thread::spawn(move || {
                lines(out, MAX_ANSWER, |line| {
                    let _ = send.send(line);
                });
            }));
        } else {
            let (trainer, job) = (trainer.clone(), job.clone());
            readers.push(std::thread::spawn(move || {
                lines(out, MAX_LINE, |line| info!(%trainer, job = %current(&job), "{line}"));
            }));
        }
    }
    if let Some(err) = child.stderr.take() {
        let (tail, job) = (tail.clone(), job.clone());
        readers.push(std::thread::spawn(move || {
            lines(err, MAX_LINE, |line| {
                warn!(%trainer, job = %current(&job), "{line}");
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }));
    }
    Ok(Started { group: Group(child), stdin, answers, readers, tail, job })
}

/// Each line of `stream` (lossy UTF-8, trimmed, cut at `cap` bytes: the rest of a longer
/// line is read and dropped, so no line grows without bound), until its end.
fn lines(stream: impl std::io::Read, cap: usize, mut each: impl FnMut(String)) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut cut = false;
    loop {
        let (used, ended) = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(buffer) => match buffer.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    let room = cap.saturating_sub(line.len());
                    line.extend_from_slice(&buffer[..at.min(room)]);
                    cut |= at > room;
                    (at + 1, true)
                }
                None => {
                    let room = cap.saturating_sub(line.len());
                    line.extend_from_slice(&buffer[..buffer.len().min(room)]);
                    cut |= buffer.len() > room;
                    (buffer.len(), false)
                }
            },
        };
        reader.consume(used);
        if ended {
            each(text(&line, cut));
            line.clear();
            cut = false;
        }
    }
    if !line.is_empty() {
        each(text(&line, cut));
    }
}

fn text(bytes: &[u8], cut: bool) -> String {
    let mut line = String::from_utf8_lossy(bytes).trim_end().to_string();
    if cut {
        line.push('…');
    }
    line
}

fn said(tail: &Tail) -> String {
    let lines: Vec<String> = tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
    if lines.is_empty() { "nothing on stderr".to_string() } else { lines.join("\n") }
}

/// The failure an exit status means.
fn exited(status: ExitStatus, tail: &Tail) -> Failure {
    let said = said(tail);
    match (status.code(), status.signal()) {
        (Some(EXIT_RETRY), _) => Failure::Retry(format!("exited with {EXIT_RETRY} (retry); stderr:\n{said}")),
        (Some(code), _) => Failure::Failed(format!("exited with {code}; stderr:\n{said}")),
        (None, Some(signal)) => Failure::Failed(format!(
            "killed by signal {signal}{}; stderr:\n{said}",
            if signal == libc::SIGKILL || signal == libc::SIGSEGV { " (out of memory?)" } else { "" }
        )),
        (None, None) => Failure::Failed(format!("ended with {status}; stderr:\n{said}")),
    }
}

/// Runs `program DIR` (`args`) in `dir` until it exits, is stopped or passes its
/// deadline; `label` names it in the log (`trainer=… job=…`).
pub fn run(program: &Path, args: &[&Path], dir: &Path, label: (&str, &str), limits: Limits<'_>) -> Result<(), Failure> {
    let mut started = start(program, args, dir, label, limits.memory, false)?;
    let since = Instant::now();
    let status = loop {
        match started.group.0.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Failure::Failed(format!("waiting for the trainer: {e}"))),
        }
        if let Some(failure) = limits.reached(since) {
            return Err(failure);
        }
        std::thread::sleep(POLL);
    };
    // Its output is read to the end, once any process it left holding the pipes is
    // killed with the group.
    let tail = started.tail.clone();
    let readers = std::mem::take(&mut started.readers);
    drop(started);
    let drained = Instant::now() + DRAIN;
    while readers.iter().any(|reader| !reader.is_finished()) && Instant::now() < drained {
        std::thread::sleep(POLL);
    }
    // A reader still blocked (a process outside the group holds the pipe) is left to
    // end with it.
    for reader in readers.into_iter().filter(std::thread::JoinHandle::is_finished) {
        let _ = reader.join();
    }
    if status.success() { Ok(()) } else { Err(exited(status, &tail)) }
}

/// A persistent trainer's answer to a job (one JSON line on its stdout).
#[derive(Debug, Deserialize)]
struct Answer {
    /// The job's key, as the request gave it: an answer to another job is not this one's.
    job: String,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    /// With `ok: false`: whether another try may succeed.
    #[serde(default)]
    retry: bool,
}

/// A persistent trainer (`PROGRAM --serve`): started once, handed one job directory after
/// another as a JSON line on its stdin (`{"job": KEY, "job_dir": "…"}`), answering each
/// with a JSON line on its stdout (`{"job": KEY, "ok": true}`, or `{"job": KEY, "ok":
/// false, "error": "…", "retry": false}`). Other lines on its stdout are logged.
pub struct Server {
    started: Started,
    program: String,
    jobs: u64,
    /// Set by a job that ended without an answer: the server is not used again.
    broken: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("program", &self.program).field("jobs", &self.jobs).finish()
    }
}

impl Server {
    /// Starts `program --serve` in `dir` (its working folder).
    pub fn start(program: &Path, dir: &Path, trainer: &str, memory: Option<u64>) -> Result<Self, Failure> {
        let serve = Path::new("--serve");
        let started = start(program, &[serve], dir, (trainer, "-"), memory, true)?;
        info!(%trainer, pid = started.group.0.id(), "persistent trainer started");
        Ok(Self { started, program: program.display().to_string(), jobs: 0, broken: false })
    }

    /// Whether it may take another job: running, and its last job answered.
    pub fn usable(&mut self) -> bool {
        !self.broken && matches!(self.started.group.0.try_wait(), Ok(None))
    }

    /// Jobs it answered.
    pub fn jobs(&self) -> u64 {
        self.jobs
    }

    /// The process id, for logs and tests.
    pub fn pid(&self) -> u32 {
        self.started.group.0.id()
    }

    /// Hands it job directory `dir` and waits for its answer. Any failure but the
    /// trainer's own `ok: false` leaves the server unusable: the caller drops it (which
    /// kills it) and starts another for the next job.
    pub fn job(&mut self, key: &str, dir: &Path, label: (&str, &str), limits: Limits<'_>) -> Result<(), Failure> {
        // Until it answers, a way out leaves it unusable.
        self.broken = true;
        let answered = self.answer(key, dir, label, limits);
        if let Ok(result) = answered {
            self.broken = false;
            self.jobs += 1;
            return result;
        }
        answered.and_then(|result| result)
    }

    /// `Ok(answer)` when it answered, `Err` when it did not.
    fn answer(
        &mut self,
        key: &str,
        dir: &Path,
        label: (&str, &str),
        limits: Limits<'_>,
    ) -> Result<Result<(), Failure>, Failure> {
        let since = Instant::now();
        if let Ok(mut job) = self.started.job.lock() {
            *job = label.1.to_string();
        }
        // Lines written since the last answer are output, not answers to this job.
        if let Some(answers) = self.started.answers.as_ref() {
            for line in answers.try_iter() {
                info!(trainer = %label.0, job = %label.1, "{line}");
            }
        }
        let request = serde_json::json!({ "job": key, "job_dir": dir }).to_string();
        let died = |what: &str, tail: &Tail| {
            Failure::Retry(format!("the persistent trainer {what} mid-job (it is restarted); stderr:\n{}", said(tail)))
        };
        let written = match self.started.stdin.as_mut() {
            Some(stdin) => {
                stdin.write_all(request.as_bytes()).and_then(|()| stdin.write_all(b"\n")).and_then(|()| stdin.flush())
            }
            None => Err(std::io::Error::other("no stdin")),
        };
        if written.is_err() {
            return Err(died("was gone", &self.started.tail));
        }
        let Some(answers) = self.started.answers.as_ref() else {
            return Err(Failure::Failed("no stdout".into()));
        };
        loop {
            match answers.recv_timeout(POLL) {
                Ok(line) => match serde_json::from_str::<Answer>(&line).ok().filter(|answer| answer.job == key) {
                    Some(answer) => {
                        return Ok(match answer {
                            Answer { ok: true, .. } => Ok(()),
                            Answer { retry: true, error, .. } => Err(Failure::Retry(error.unwrap_or_default())),
                            Answer { error, .. } => Err(Failure::Failed(error.unwrap_or_else(|| "failed".into()))),
                        });
                    }
                    // Not an answer to this job: output of the trainer (or of a library).
                    None => info!(trainer = %label.0, job = %label.1, "{line}"),
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(died("exited", &self.started.tail)),
            }
            if let Ok(Some(_)) = self.started.group.0.try_wait() {
                // Whatever it wrote before exiting is read first.
                if let Ok(line) = answers.recv_timeout(Duration::from_millis(100))
                    && let Ok(Answer { ok: true, job, .. }) = serde_json::from_str::<Answer>(&line)
                    && job == key
                {
                    return Ok(Ok(()));
                }
                return Err(died("exited", &self.started.tail));
            }
            if let Some(failure) = limits.reached(since) {
                return Err(failure);
            }
        }
    }
}
