//! Network faults on real sockets, for the network chaos scenarios.
//!
//! Two tools, because this machine's kernel has no `netem` queueing discipline (`tc qdisc
//! add ... netem` answers "Specified qdisc kind is unknown"), while `nftables` works:
//!
//! - [`Namespace`]: a network namespace joined to the host by a veth pair, with
//!   `nftables` rules inside it that drop packets: a share of them at random
//!   ([`Namespace::lose`]), all of them ([`Namespace::partition`]), or only those coming
//!   from one peer ([`Namespace::silence`], a half-open connection: no RST, nothing
//!   answers). Processes run inside it through `ip netns exec`. Needs root, `ip`
//!   (iproute2) and `nft` (nftables).
//! - [`FaultProxy`]: a TCP proxy owned by the test, in front of a TCP address or a Unix
//!   socket, that delays every chunk it relays (a base delay with uniform jitter, the
//!   stream's order kept) or holds everything while partitioned, delivering it late once
//!   healed, as TCP retransmission would.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Whether network namespaces and nftables can be used here: as root, with `ip`
/// (iproute2) and `nft` (nftables). Where not, prints why and returns false, or panics
/// when `WF_REQUIRE_TOOLS` is set (as `.ci/run` sets it): CI never skips them.
pub fn network_faults_possible() -> bool {
    let probe = |program: &str, args: &[&str]| {
        Command::new(program).args(args).stderr(Stdio::null()).output().ok().filter(|o| o.status.success())
    };
    let root = probe("id", &["-u"]).is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing = if !root {
        Some("root (network namespaces and nftables rules need it)")
    } else if probe("ip", &["netns", "list"]).is_none() {
        Some("`ip netns` (Debian package iproute2)")
    } else if probe("nft", &["--version"]).is_none() {
        Some("`nft` (Debian package nftables)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(what) => {
            assert!(
                std::env::var_os("WF_REQUIRE_TOOLS").is_none(),
                "network faults need {what}, required here (WF_REQUIRE_TOOLS)"
            );
            println!("skipped: network faults need {what}");
            false
        }
    }
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(text) = input {
        child.stdin.take().expect("piped stdin").write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A network namespace with a veth link to the host: the host's end is
/// [`Namespace::host_ip`], the namespace's [`Namespace::ip`]. Deleted when dropped
/// (with both ends of the link).
#[derive(Debug)]
pub struct Namespace {
    name: String,
    host_if: String,
    host_ip: String,
    ip: String,
}

/// Namespaces made by this process so far (each gets its own name, link and subnet).
static MADE: AtomicU64 = AtomicU64::new(0);

impl Namespace {
    /// A new namespace, named and addressed after this process and a count (at most 16 a
    /// process), so that test processes running side by side never collide. Namespaces
    /// left by test processes that died (a test killed on a timeout skips its `Drop`) are
    /// removed first.
    pub fn new() -> Result<Self, String> {
        sweep_dead();
        let index = MADE.fetch_add(1, Ordering::SeqCst);
        assert!(index < 16, "at most 16 namespaces per test process");
        let n = (u64::from(std::process::id()) % 1024) * 16 + index;
        let (third, fourth) = (n >> 6 & 255, (n & 63) * 4);
        let name = format!("wf-{}-{index}", std::process::id());
        let (host_if, inner_if) = (format!("wfh{n}"), format!("wfn{n}"));
        let host_ip = format!("10.213.{third}.{}", fourth + 1);
        let ip = format!("10.213.{third}.{}", fourth + 2);
        // A link of the same number left by a dead process with the same pid modulo 1024.
        let _ = run("ip", &["link", "del", &host_if], None);
        run("ip", &["netns", "add", &name], None)?;
        // From here on, dropping it removes what was made, whatever fails next.
        let namespace = Self { name: name.clone(), host_if: host_if.clone(), host_ip: host_ip.clone(), ip: ip.clone() };
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend(args);
            run("ip", &all, None)
        };
        run("ip", &["link", "add", &host_if, "type", "veth", "peer", "name", &inner_if], None)?;
        run("ip", &["link", "set", &inner_if, "netns", &name], None)?;
        run("ip", &["addr", "add", &format!("{host_ip}/30"), "dev", &host_if], None)?;
        run("ip", &["link", "set", &host_if, "up"], None)?;
        inside(&["addr", "add", &format!("{ip}/30"), "dev", &inner_if])?;
        inside(&["link", "set", &inner_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        namespace.nft(
            "add table inet wf\n\
             add chain inet wf input { type filter hook input priority 0; }\n\
             add chain inet wf output { type filter hook output priority 0; }\n",
        )?;
        Ok(namespace)
    }

    /// The host's end of the link (reachable from inside).
    pub fn host_ip(&self) -> &str {
        &self.host_ip
    }

    /// The namespace's end of the link.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// The arguments of `ip` that run a program inside: `netns exec NAME`.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.name.clone()]
    }

    /// The local ports of this namespace's established TCP connections to `peer`
    /// (`host:port`), from `ss`.
    pub fn connections_to(&self, peer: &str) -> Vec<u16> {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.name, "ss", "-tnH", "state", "established"])
            .output()
            .expect("ss runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.split_whitespace().any(|field| field == peer))
            .filter_map(|line| {
                let local = line.split_whitespace().find(|f| f.contains(':'))?;
                local.rsplit(':').next()?.parse().ok()
            })
            .collect()
    }

    /// Drops every packet of the connections whose local ports are `ports`, both ways,
    /// for good: their path died without a word; new connections pass.
    pub fn kill_connections(&self, ports: &[u16]) {
        let set = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        self.nft(&format!(
            "add rule inet wf output tcp sport {{ {set} }} counter drop\nadd rule inet wf input tcp dport {{ {set} }} counter drop\n"
        ))
        .expect("nft drop connections");
    }

    fn nft(&self, script: &str) -> Result<(), String> {
        run("ip", &["netns", "exec", &self.name, "nft", "-f", "-"], Some(script))
    }

    /// Drops the rules: traffic flows again.
    pub fn heal(&self) {
        self.nft("flush chain inet wf input\nflush chain inet wf output\n").expect("nft flush");
    }

    /// Drops `percent` % of the packets on the link, each way, at random.
    pub fn lose(&self, percent: u32) {
        self.heal();
        let rule = |chain: &str| {
            format!(
                "add rule inet wf {chain} iifname != \"lo\" oifname != \"lo\" numgen random mod 100 < {percent} counter drop\n"
            )
        };
        self.nft(&(rule("input") + &rule("output"))).expect("nft loss");
    }

    /// Packets dropped on purpose since the last change of rules, coming in and going
    /// out (the rules that count: [`Namespace::lose`], [`Namespace::kill_connections`]).
    pub fn dropped(&self) -> (u64, u64) {
        let count = |chain: &str| {
            let output = Command::new("ip")
                .args(["netns", "exec", &self.name, "nft", "list", "chain", "inet", "wf", chain])
                .output()
                .expect("nft list");
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|pair| pair[0] == "packets")
                .filter_map(|pair| pair[1].parse::<u64>().ok())
                .sum::<u64>()
        };
        (count("input"), count("output"))
    }

    /// Drops every packet on the link, both ways: a partition.
    pub fn partition(&self) {
        self.heal();
        self.nft(&format!(
            "add rule inet wf input ip saddr {host} drop\nadd rule inet wf output ip daddr {host} drop\n",
            host = self.host_ip
        ))
        .expect("nft partition");
    }

    /// Drops only what comes from the host: the far side of every connection goes
    /// silent while what is sent to it still arrives (half-open; no RST).
    pub fn silence(&self) {
        self.heal();
        self.nft(&format!("add rule inet wf input ip saddr {} drop\n", self.host_ip)).expect("nft silence");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name], None);
        // Gone with its peer once that was moved inside; not if setting up failed before.
        let _ = run("ip", &["link", "del", &self.host_if], None);
    }
}

/// Deletes the namespaces `wf-PID-N` whose process is gone.
fn sweep_dead() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix("wf-").and_then(|rest| rest.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name], None);
        }
    }
}

/// What a [`FaultProxy`] does to the bytes it relays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Relayed at once.
    None,
    /// Each chunk delivered `base` ± up to `jitter` (uniform) after it arrived, never
    /// before the chunk ahead of it.
    Delay { base: Duration, jitter: Duration },
    /// Nothing delivered (held, then delivered once healed); new connections are
    /// accepted and held too.
    Partition,
}

/// Where a [`FaultProxy`] connects.
#[derive(Debug, Clone)]
pub enum Upstream {
    Tcp(String),
    Unix(PathBuf),
}

/// A TCP proxy on a loopback port (or `bind`) that applies a [`Fault`] to both
/// directions of every connection; counts the bytes it delivered. Stops when dropped.
pub struct FaultProxy {
    address: String,
    fault: Arc<Mutex<Fault>>,
    delivered: Arc<AtomicU64>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// A proxy on `bind` (e.g. "127.0.0.1:0") in front of `upstream`.
    pub fn start(bind: &str, upstream: Upstream) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("proxy runtime");
        let listener = runtime.block_on(tokio::net::TcpListener::bind(bind)).expect("proxy binds");
        let address = listener.local_addr().expect("proxy address").to_string();
        let fault = Arc::new(Mutex::new(Fault::None));
        let delivered = Arc::new(AtomicU64::new(0));
        let (shared, counted) = (fault.clone(), delivered.clone());
        runtime.spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let (fault, delivered, upstream) = (shared.clone(), counted.clone(), upstream.clone());
                tokio::spawn(async move {
                    let (client_read, client_write) = tokio::io::split(client);
                    match upstream {
                        Upstream::Tcp(address) => {
                            let Ok(server) = tokio::net::TcpStream::connect(&address).await else { return };
                            let _ = server.set_nodelay(true);
                            let (server_read, server_write) = tokio::io::split(server);
                            relay_both(client_read, client_write, server_read, server_write, fault, delivered, seed)
                                .await;
                        }
                        Upstream::Unix(path) => {
                            let Ok(server) = tokio::net::UnixStream::connect(&path).await else { return };
                            let (server_read, server_write) = tokio::io::split(server);
                            relay_both(client_read, client_write, server_read, server_write, fault, delivered, seed)
                                .await;
                        }
                    }
                });
            }
        });
        Self { address, fault, delivered, runtime: Some(runtime) }
    }

    /// `host:port` the proxy listens on.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Applies `fault` from now on (to chunks not yet delivered, too).
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
    }

    /// Bytes delivered so far, both ways.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy").field("address", &self.address).field("fault", &self.fault).finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn relay_both<CR, CW, SR, SW>(
    client_read: CR,
    client_write: CW,
    server_read: SR,
    server_write: SW,
    fault: Arc<Mutex<Fault>>,
    delivered: Arc<AtomicU64>,
    seed: u64,
) where
    CR: AsyncRead + Unpin + Send + 'static,
    CW: AsyncWrite + Unpin + Send + 'static,
    SR: AsyncRead + Unpin + Send + 'static,
    SW: AsyncWrite + Unpin + Send + 'static,
{
    let up = tokio::spawn(relay(client_read, server_write, fault.clone(), delivered.clone(), seed));
    let down = tokio::spawn(relay(server_read, client_write, fault, delivered, seed ^ 0xdead_beef));
    let _ = tokio::join!(up, down);
}

/// Relays `from` to `to` under the shared fault: a reader stamps each chunk with its
/// arrival, a writer delivers it when due.
async fn relay<R, W>(mut from: R, mut to: W, fault: Arc<Mutex<Fault>>, delivered: Arc<AtomicU64>, mut seed: u64)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut chunks) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.send((tokio::time::Instant::now(), buffer[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut last_due = tokio::time::Instant::now();
    while let Some((arrived, chunk)) = chunks.recv().await {
        loop {
            let now = *fault.lock().expect("fault lock");
            match now {
                Fault::Partition => tokio::time::sleep(Duration::from_millis(20)).await,
                Fault::None => break,
                Fault::Delay { base, jitter } => {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let spread = jitter.as_secs_f64() * ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0);
                    let delay = Duration::from_secs_f64((base.as_secs_f64() + spread).max(0.0));
                    let due = (arrived + delay).max(last_due);
                    last_due = due;
                    tokio::time::sleep_until(due).await;
                    break;
                }
            }
        }
        if to.write_all(&chunk).await.is_err() {
            break;
        }
        delivered.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    reader.abort();
    let _ = to.shutdown().await;
}
