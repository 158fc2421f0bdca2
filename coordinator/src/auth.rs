//! Authentication and roles: who may call what.
//!
//! The coordinator reads a tokens file (`--auth FILE`): one line per token,
//!
//! ```text
//! # comments and blank lines are skipped
//! blake3:<64 hex digits> <tenant> <role>
//! ```
//!
//! holding the token's hash ([`wf_proto::auth::token_hash`]), never the token. Roles:
//! `user` (the sweep RPCs, for its tenant's sweeps), `worker` (the worker RPCs only),
//! `admin` (everything, every tenant). `wf auth new-token` appends an entry and prints the
//! token once. The file is read again on SIGHUP and when it changes; an unreadable new
//! version is logged and the previous one kept.
//!
//! Every RPC but health and reflection passes a [`Gate`]: a missing, malformed or unknown
//! token is UNAUTHENTICATED, a known token of a role the service does not admit is
//! PERMISSION_DENIED, and neither reaches the scheduler. Without `--auth` (loopback
//! only, see `wf coordinator`) every caller is the local admin.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::service::Interceptor;
use tracing::{info, warn};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Worker,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Worker => "worker",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "user" => Ok(Self::User),
            "worker" => Ok(Self::Worker),
            "admin" => Ok(Self::Admin),
            other => Err(format!("role {other:?} is not user, worker or admin")),
        }
    }
}

/// Who is calling: the tenant and role of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    pub role: Role,
}

impl Caller {
    /// The caller of a coordinator without authentication (loopback only): an admin.
    pub fn local() -> Self {
        Self { tenant: LOCAL_TENANT.to_string(), role: Role::Admin }
    }

    /// Whether this caller may see a sweep of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.role == Role::Admin || self.tenant == tenant
    }
}

pub use wf_shared::LOCAL_TENANT;

/// Checks a tenant name: 1 to 64 of `a-z`, `0-9`, `-`, `_`.
pub fn check_tenant(tenant: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&tenant.len())
        && tenant.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid { Ok(()) } else { Err(format!("tenant {tenant:?} must be 1 to 64 of a-z, 0-9, - and _")) }
}

#[derive(Debug, Clone)]
struct Entry {
    hash: blake3::Hash,
    caller: Caller,
}

/// The entries of a tokens file.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl Tokens {
    /// Parses a tokens file; an error names the line and the reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |reason: String| format!("line {}: {reason}", number + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [hash, tenant, role] = fields.as_slice() else {
                return Err(at("expected \"blake3:<hex> <tenant> <role>\"".into()));
            };
            let hex = hash.strip_prefix("blake3:").ok_or_else(|| at("the hash must start with \"blake3:\"".into()))?;
            let hash = blake3::Hash::from_hex(hex).map_err(|e| at(format!("the hash is not 64 hex digits: {e}")))?;
            check_tenant(tenant).map_err(at)?;
            let role = role.parse().map_err(at)?;
            entries.push(Entry { hash, caller: Caller { tenant: tenant.to_string(), role } });
        }
        Ok(Self { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller `token` stands for. Every entry is compared, each in constant time
    /// (`blake3::Hash` equality), so the time taken says nothing about the token.
    pub fn find(&self, token: &str) -> Option<Caller> {
        let presented = blake3::hash(token.trim().as_bytes());
        let mut found = None;
        for entry in &self.entries {
            if entry.hash == presented && found.is_none() {
                found = Some(entry.caller.clone());
            }
        }
        found
    }
}

/// The coordinator's tokens, from a file that is read again when it changes.
#[derive(Debug, Clone)]
pub struct Auth {
    path: PathBuf,
    tokens: Arc<RwLock<Arc<Tokens>>>,
    modified: Arc<RwLock<Option<SystemTime>>>,
}

impl Auth {
    /// Reads the tokens file at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let auth = Self { path: path.to_path_buf(), tokens: Arc::default(), modified: Arc::default() };
        auth.reload()?;
        Ok(auth)
    }

    /// Reads the file again; returns how many tokens it holds. On an error the previous
    /// tokens stay in force.
    pub fn reload(&self) -> Result<usize, String> {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read the tokens file {}: {e}", self.path.display()))?;
        let tokens = Tokens::parse(&text).map_err(|e| format!("tokens file {}: {e}", self.path.display()))?;
        let count = tokens.len();
        *self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tokens);
        *self.modified.write().unwrap_or_else(std::sync::PoisonError::into_inner) = modified;
        Ok(count)
    }

    fn current(&self) -> Arc<Tokens> {
        self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The caller a request's token stands for: UNAUTHENTICATED when there is none, it
    /// is malformed, or it is not (or no longer) in the file.
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        let token = wf_proto::auth::bearer(metadata)
            .map_err(Status::unauthenticated)?
            .ok_or_else(|| Status::unauthenticated("this coordinator needs a token (WF_TOKEN or --token-file)"))?;
        self.current().find(token).ok_or_else(|| Status::unauthenticated("the token is not valid here"))
    }

    /// Reads the file again on SIGHUP, and when its modification time changes (checked
    /// every second), until `shutdown`.
    pub async fn watch_until(self, shutdown: CancellationToken) {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let hangup = async {
                match hangups.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let forced = tokio::select! {
                () = shutdown.cancelled() => return,
                () = hangup => true,
                () = tokio::time::sleep(Duration::from_secs(1)) => false,
            };
            let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            let changed = modified != *self.modified.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if forced || changed {
                match self.reload() {
                    Ok(count) => info!(tokens = count, path = %self.path.display(), "tokens file read again"),
                    Err(error) => warn!(%error, "the tokens file could not be read again; the previous tokens stay"),
                }
            }
        }
    }
}

/// A tonic interceptor in front of a service: it authenticates the caller (or, without
/// authentication, takes the local admin), admits only `roles`, and leaves the
/// [`Caller`] in the request's extensions for the handlers.
#[derive(Debug, Clone)]
pub struct Gate {
    auth: Option<Auth>,
    roles: &'static [Role],
    service: &'static str,
    client_certificate: bool,
}

impl Gate {
    pub fn new(auth: Option<Auth>, roles: &'static [Role], service: &'static str) -> Self {
        Self { auth, roles, service, client_certificate: false }
    }

    /// Also requires a client certificate the TLS handshake verified (mTLS).
    pub fn with_client_certificate(mut self, required: bool) -> Self {
        self.client_certificate = required;
        self
    }
}

impl Interceptor for Gate {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        // rustls verified any certificate it kept against the client CA.
        if self.client_certificate && request.peer_certs().is_none_or(|certs| certs.is_empty()) {
            return Err(Status::unauthenticated(format!(
                "{} calls need a client certificate signed by the coordinator's --tls-client-ca (mTLS)",
                self.service
            )));
        }
        let caller = match &self.auth {
            None => Caller::local(),
            Some(auth) => auth.authenticate(request.metadata())?,
        };
        if !self.roles.contains(&caller.role) {
            return Err(Status::permission_denied(format!(
                "the {} role may not call {}",
                caller.role.name(),
                self.service
            )));
        }
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller a gate admitted (the local admin for a request that met no gate, as in
/// unit tests of the handlers).
pub fn caller<T>(request: &tonic::Request<T>) -> Caller {
    request.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::local)
}

/// Generates a token: `wf_` and 64 hex digits of 256 random bits.
pub fn new_token() -> String {
    use rand::Rng as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("wf_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Appends an entry for a new token of `tenant` and `role` to the tokens file at `path`
/// (created, readable by its owner only, if missing); returns the token.
pub fn add_token(path: &Path, tenant: &str, role: Role) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    check_tenant(tenant)?;
    let token = new_token();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot open the tokens file {}: {e}", path.display()))?;
    writeln!(file, "{} {tenant} {}", wf_proto::auth::token_hash(&token), role.name())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write the tokens file {}: {e}", path.display()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_hash_with_their_tenant_and_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        let alice = add_token(&path, "team-a", Role::User).expect("add");
        let worker = add_token(&path, "pool", Role::Worker).expect("add");
        assert!(alice.starts_with("wf_") && alice.len() == 3 + 64 && alice != worker);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&alice[3..]), "the file holds hashes, never tokens");
        let tokens = Tokens::parse(&text).expect("parse");
        assert_eq!(tokens.find(&alice), Some(Caller { tenant: "team-a".into(), role: Role::User }));
        assert_eq!(tokens.find(&worker).map(|c| c.role), Some(Role::Worker));
        assert_eq!(tokens.find("wf_0000"), None);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_bad_line_is_refused_naming_it() {
        let hash = wf_proto::auth::token_hash("x");
        for (text, needle) in [
            (format!("{hash} a"), "line 1: expected"),
            (format!("# c\n\n{hash} a root"), "line 3: role \"root\""),
            (format!("{hash} A user"), "line 1: tenant \"A\""),
            ("sha256:00 a user".to_string(), "blake3:"),
            ("blake3:zz a user".to_string(), "64 hex digits"),
        ] {
            let error = Tokens::parse(&text).expect_err(&text);
            assert!(error.contains(needle), "{error} lacks {needle}");
        }
    }

    #[test]
    fn the_gate_admits_only_its_roles_and_leaves_the_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        let user = add_token(&path, "a", Role::User).expect("add");
        let auth = Auth::open(&path).expect("open");
        let request = |token: Option<&str>| {
            let mut client = wf_proto::auth::BearerToken::new(token).expect("token");
            client.call(tonic::Request::new(())).expect("intercepted")
        };
        let mut sweeps = Gate::new(Some(auth.clone()), &[Role::User, Role::Admin], "SweepService");
        let mut workers = Gate::new(Some(auth.clone()), &[Role::Worker, Role::Admin], "WorkerService");
        let admitted = sweeps.call(request(Some(&user))).expect("a user may call sweeps");
        assert_eq!(caller(&admitted).tenant, "a");
        assert_eq!(workers.call(request(Some(&user))).expect_err("not a worker").code(), tonic::Code::PermissionDenied);
        assert_eq!(sweeps.call(request(None)).expect_err("no token").code(), tonic::Code::Unauthenticated);
        assert_eq!(sweeps.call(request(Some("wf_nope"))).expect_err("wrong").code(), tonic::Code::Unauthenticated);
        // Revoked: the entry is gone from the file, read again.
        std::fs::write(&path, "").expect("revoke");
        auth.reload().expect("reload");
        assert_eq!(sweeps.call(request(Some(&user))).expect_err("revoked").code(), tonic::Code::Unauthenticated);
        // Without authentication, everyone is the local admin.
        let mut open = Gate::new(None, &[Role::Worker, Role::Admin], "WorkerService");
        assert_eq!(caller(&open.call(request(None)).expect("open")), Caller::local());
    }
}
