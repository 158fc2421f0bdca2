//! Running a trainer's process: its own process group, a memory limit, its output in the
//! worker's log, killed on a stop or past its deadline.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// The exit code that asks for a retry (EX_TEMPFAIL of `sysexits.h`).
pub const EXIT_RETRY: i32 = 75;
/// Lines of a trainer's standard error an error quotes.
const TAIL_LINES: usize = 20;
/// The longest line kept of a trainer's output.
const MAX_LINE: usize = 2_000;

/// How a trainer's run ended, when not with success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Stopped from outside (a cancellation, a lost lease, the worker shutting down).
    Stopped,
    /// Still running at its deadline.
    TimedOut(Duration),
    /// Exited with `EX_TEMPFAIL`: worth another try.
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

/// Kills the process group on drop, so no path out of [`run`] leaves a trainer running.
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

/// Runs `program` with `args` in `dir` until it exits, is stopped or passes its deadline;
/// `label` names it in the log (`trainer=… job=…`).
#[allow(unsafe_code)]
pub fn run(program: &Path, args: &[&Path], dir: &Path, label: (&str, &str), limits: Limits<'_>) -> Result<(), Failure> {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env("WF_JOB_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let memory = limits.memory;
    // SAFETY: only async-signal-safe calls (prctl, setrlimit) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Dies with the worker, should the worker die without killing it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
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
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let (trainer, job) = (label.0.to_string(), label.1.to_string());
    let readers = [
        child.stdout.take().map(|out| forward(out, trainer.clone(), job.clone(), None)),
        child.stderr.take().map(|err| forward(err, trainer, job, Some(tail.clone()))),
    ];
    let mut group = Group(child);
    let started = Instant::now();
    let status = loop {
        match group.0.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Failure::Failed(format!("waiting for the trainer: {e}"))),
        }
        if limits.stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            drop(group);
            return Err(Failure::Stopped);
        }
        if limits.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            drop(group);
            return Err(Failure::TimedOut(started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Its output is read to the end, once any process it left holding the pipes is
    // killed with the group.
    drop(group);
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    if status.success() {
        return Ok(());
    }
    let lines: Vec<String> = tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
    let said = if lines.is_empty() { "nothing on stderr".to_string() } else { lines.join("\n") };
    match (status.code(), status.signal()) {
        (Some(EXIT_RETRY), _) => Err(Failure::Retry(format!("exited with {EXIT_RETRY} (retry); stderr:\n{said}"))),
        (Some(code), _) => Err(Failure::Failed(format!("exited with {code}; stderr:\n{said}"))),
        (None, Some(signal)) => Err(Failure::Failed(format!(
            "killed by signal {signal}{}; stderr:\n{said}",
            if signal == libc::SIGKILL || signal == libc::SIGSEGV { " (out of memory?)" } else { "" }
        ))),
        (None, None) => Err(Failure::Failed(format!("ended with {status}; stderr:\n{said}"))),
    }
}

/// Logs each line of `stream`, keeping the last ones in `tail`.
fn forward(
    stream: impl std::io::Read + Send + 'static,
    trainer: String,
    job: String,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            match reader.read_until(b'\n', &mut bytes) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut line = String::from_utf8_lossy(&bytes).trim_end().to_string();
            if line.len() > MAX_LINE {
                let mut cut = MAX_LINE;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
                line.push('…');
            }
            match &tail {
                None => info!(%trainer, %job, "{line}"),
                Some(tail) => {
                    warn!(%trainer, %job, "{line}");
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                }
            }
        }
    })
}
