//! The trainers registered on a worker (or a coordinator): each a name, a program and the
//! files its identity covers, hashed once at registration.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::process::{Failure, Server};
use wf_shared::spec::{MAX_TRAINER_VERSION, SweepConfig, TrainerPin, is_trainer_name};

/// How long `PROGRAM --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// One registered trainer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub program: PathBuf,
    /// Files the identity covers beyond the program (a helper module, weights).
    pub files: Vec<PathBuf>,
    /// Started once (`PROGRAM --serve`) and handed one job after another
    /// (`docs/TRAINERS.md`, "Persistent mode").
    pub persistent: bool,
    pub pin: TrainerPin,
}

/// The trainers of a worker or coordinator, by name, and how their processes run.
#[derive(Debug, Clone, Default)]
pub struct Trainers {
    registered: BTreeMap<String, Registration>,
    /// The address-space limit of each trainer process, in bytes (`RLIMIT_AS`).
    pub memory: Option<u64>,
    /// Where job directories are made, and models kept (`models/<job key>/`); `None`:
    /// the system's temporary directory.
    pub work: Option<PathBuf>,
    /// The idle processes of persistent trainers, by name.
    idle: Arc<Mutex<BTreeMap<String, Vec<Server>>>>,
}

/// A trainers file (`--trainers FILE`): `[trainers.NAME]` tables of `program` and
/// `files`, relative paths read from the file's folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainersFile {
    trainers: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    program: PathBuf,
    #[serde(default)]
    files: Vec<PathBuf>,
    #[serde(default)]
    persistent: bool,
}

impl Registration {
    /// Refuses a registration whose files changed since they were hashed: a job must run
    /// the program its key names.
    pub fn unchanged(&self) -> Result<(), String> {
        let now = content_hash(&self.program, &self.files)?;
        if now == self.pin.program {
            return Ok(());
        }
        Err(format!(
            "its files changed since the worker registered it (they hashed {}, now {now}): restart the worker (and the \
             coordinator) to register the new program, whose jobs get new keys",
            self.pin.program
        ))
    }
}

impl Trainers {
    /// None registered yet, with job directories and models under `work`.
    pub fn in_folder(work: PathBuf) -> Self {
        Self { work: Some(work), ..Self::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.registered.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.registered.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&Registration> {
        self.registered.get(name)
    }

    /// Registers `program` (and `files`) as `name`: hashes them and asks the program its
    /// version. Refused, with the reason: a bad name, a name given twice, a file that
    /// cannot be read, a program that is not executable or whose `--version` fails.
    pub fn register(&mut self, name: &str, program: &Path, files: &[PathBuf], persistent: bool) -> Result<(), String> {
        if !is_trainer_name(name) {
            return Err(format!("trainer {name:?}: a name is 1 to 64 of letters, digits, _ and -"));
        }
        if self.registered.contains_key(name) {
            return Err(format!("trainer {name:?} is registered twice"));
        }
        // Absolute: a trainer runs in its job's directory.
        let program =
            std::fs::canonicalize(program).map_err(|e| format!("trainer {name:?}: {}: {e}", program.display()))?;
        let pin = identity(&program, files).map_err(|reason| format!("trainer {name:?}: {reason}"))?;
        let registration = Registration { name: name.to_string(), program, files: files.to_vec(), persistent, pin };
        self.registered.insert(name.to_string(), registration);
        Ok(())
    }

    /// Registers `NAME=PATH` (the `--trainer` flag), persistent or not.
    pub fn register_flag(&mut self, flag: &str, persistent: bool) -> Result<(), String> {
        let (name, path) = flag
            .split_once('=')
            .ok_or_else(|| format!("--trainer {flag:?}: expected NAME=PATH, e.g. lightgbm=./trainers/lgbm.py"))?;
        self.register(name.trim(), Path::new(path.trim()), &[], persistent)
    }

    /// The work folder (job directories, kept models).
    pub fn work_folder(&self) -> PathBuf {
        self.work.clone().unwrap_or_else(|| std::env::temp_dir().join("walkforward-trainers"))
    }

    /// An idle process of persistent trainer `registration`, or a new one.
    pub fn server(&self, registration: &Registration) -> Result<Server, Failure> {
        let found = self.idle.lock().ok().and_then(|mut idle| {
            let servers = idle.get_mut(&registration.name)?;
            while let Some(mut server) = servers.pop() {
                if server.usable() {
                    return Some(server);
                }
            }
            None
        });
        match found {
            Some(server) => Ok(server),
            None => {
                let work = self.work_folder();
                std::fs::create_dir_all(&work).map_err(|e| Failure::Failed(format!("{}: {e}", work.display())))?;
                Server::start(&registration.program, &work, &registration.name, self.memory)
            }
        }
    }

    /// Keeps `server` for the next job of its trainer, if it may take one (else it is
    /// dropped: killed).
    pub fn idle(&self, name: &str, mut server: Server) {
        if server.usable()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.entry(name.to_string()).or_default().push(server);
        }
    }

    /// Registers every trainer of a trainers file.
    pub fn register_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("trainers file {}: {e}", path.display()))?;
        let file: TrainersFile =
            toml::from_str(&text).map_err(|e| format!("trainers file {}: {}", path.display(), e.message()))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        for (name, entry) in file.trainers {
            let files: Vec<PathBuf> = entry.files.iter().map(|f| folder.join(f)).collect();
            self.register(&name, &folder.join(&entry.program), &files, entry.persistent)
                .map_err(|e| format!("trainers file {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// The identity of trainer `name`, or why there is none: what a coordinator pins at
    /// submission ([`wf_shared::model::pin_trainers`]).
    pub fn pin(&self, name: &str) -> Result<TrainerPin, String> {
        match self.registered.get(name) {
            Some(registration) => Ok(registration.pin.clone()),
            None => Err(format!("trainer {name:?} is not registered here ({})", self.listed())),
        }
    }

    fn listed(&self) -> String {
        if self.registered.is_empty() {
            "no trainer is: register one with --trainer NAME=PATH".to_string()
        } else {
            format!("registered: {}", self.names().collect::<Vec<_>>().join(", "))
        }
    }

    /// Checks that every trainer `config`'s models name is registered here with the
    /// identity the sweep pinned; otherwise the reason, with both identities.
    pub fn check(&self, config: &SweepConfig) -> Result<(), String> {
        for (index, name) in wf_shared::model::named_trainers(config) {
            let pinned = config.trainers.get(name).ok_or_else(|| {
                format!("models[{index}]: trainer {name:?} is not pinned in the sweep's spec ([trainers.{name}])")
            })?;
            let ours = self.registered.get(name).ok_or_else(|| {
                format!("models[{index}]: trainer {name:?} is not registered on this worker ({})", self.listed())
            })?;
            if ours.pin != *pinned {
                return Err(format!(
                    "trainer {name:?} differs on this worker: its program {} hashes {} (version {:?}), but the sweep \
                     pinned {} (version {:?})",
                    ours.program.display(),
                    ours.pin.program,
                    ours.pin.version,
                    pinned.program,
                    pinned.version
                ));
            }
        }
        Ok(())
    }
}

/// The identity of `program` with `files`: the BLAKE3 hash of their contents (each
/// prefixed by its length, in order; not their paths, so every worker computes the same
/// one wherever it installs them) and the first line `program --version` prints.
pub fn identity(program: &Path, files: &[PathBuf]) -> Result<TrainerPin, String> {
    let program_hash = content_hash(program, files)?;
    let version = version(program)?;
    Ok(TrainerPin { program: program_hash, version })
}

/// The BLAKE3 hash of [`identity`]: of `program` and `files`, each prefixed by its length.
pub fn content_hash(program: &Path, files: &[PathBuf]) -> Result<String, String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"walkforward-trainer/1\0");
    for path in std::iter::once(program).chain(files.iter().map(PathBuf::as_path)) {
        let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let length = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
        hasher.update(&length.to_le_bytes());
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = file.read(&mut buffer).map_err(|e| format!("{}: {e}", path.display()))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The first non-empty line `program --version` prints, trimmed.
fn version(program: &Path) -> Result<String, String> {
    let mut child = std::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {} --version: {e} (is it executable, with a #! line?)", program.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > VERSION_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} --version took more than {} s", program.display(), VERSION_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(format!("{} --version failed ({status}): {}", program.display(), err.trim()));
    }
    let line = out.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or_default();
    if line.is_empty() || line.len() > MAX_TRAINER_VERSION || line.chars().any(char::is_control) {
        return Err(format!(
            "{} --version must print its version on one line of 1 to {MAX_TRAINER_VERSION} bytes",
            program.display()
        ));
    }
    Ok(line.to_string())
}
