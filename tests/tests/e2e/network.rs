//! Network faults on real sockets, held to the chaos suite's standard: the report equals
//! a fault-free `wf run` of the same spec, every job committed exactly once (counted from
//! the job states and the artifact store), and no failed attempt charged to a job for a
//! fault that was not its own.
//!
//! Between a worker and the coordinator: latency with jitter (a proxy the test owns), 20%
//! packet loss, a partition longer than a lease, and a half-open link (nftables rules in
//! the worker's own network namespace, joined to the host by a veth pair). Between the
//! coordinator and Redis, through a proxy the test owns: a partition shorter than a lease,
//! one longer, and 500 ms on every command. Why two tools: `wf_tests::net`.
//!
//! Each scenario proves its fault landed (on an unfinished sweep, on a worker holding a
//! lease, or as an outage the coordinator counted) and prints one line (`network
//! <scenario>: ...`). They run one at a time, in the `chaos` group.

use std::time::{Duration, Instant};

use wf_coordinator::testing::RedisServer;
use wf_tests::net::{Fault, FaultProxy, Namespace, Upstream, network_faults_possible};
use wf_tests::wait_until;

use super::chaos::Chaos;
use super::cluster::{LIMIT, Placement};

/// Leases long enough for 2 s of latency each way.
const SLOW_LEASE_MS: u32 = 10_000;
/// Leases short enough that a partition outlasts one within seconds.
const SHORT_LEASE_MS: u32 = 3_000;

/// A namespace for a process cut off by nftables; `None` (the test prints why and stops)
/// where they cannot be made here, and never in CI (`WF_REQUIRE_TOOLS`).
fn namespace() -> Option<Namespace> {
    network_faults_possible().then(|| Namespace::new().expect("a network namespace"))
}

/// With `WF_DEBUG_LOGS` set, prints the processes' warnings and store events (what a
/// failing scenario needs to be understood).
fn print_warnings(chaos: &Chaos) {
    if std::env::var_os("WF_DEBUG_LOGS").is_some() {
        for line in chaos.logs().lines().filter(|l| l.contains("WARN") || l.contains("job store is back")) {
            println!("LOG {line}");
        }
    }
}

/// A namespace and a chaos cluster whose coordinator listens on the host's end of its
/// link, leasing for `lease_ms`; `None` where namespaces cannot be made ([`namespace`]).
fn cut_off_cluster(lease_ms: u32) -> Option<(Namespace, Chaos)> {
    let net = namespace()?;
    let placement = Placement { host: net.host_ip().to_string(), ..Placement::default() };
    let chaos = Chaos::start_networked(RedisServer::start().expect("redis"), lease_ms, &[], placement);
    Some((net, chaos))
}

/// The jobs committed by the worker named `name`.
fn committed_by(chaos: &Chaos, name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    chaos
        .states()
        .into_iter()
        .filter(|(_, s)| {
            s["phase"]["phase"] == "succeeded" && s["phase"]["worker"].as_str().is_some_and(|w| w.starts_with(&prefix))
        })
        .map(|(key, _)| key)
        .collect()
}

/// Waits until the worker `name` holds a lease, then applies `fault`; returns the job it
/// still holds a second later (so no report of it can have passed), retrying with its
/// next lease if it finished first.
fn strike_while_leased(chaos: &Chaos, name: &str, fault: impl Fn(), heal: impl Fn()) -> String {
    for _ in 0..20 {
        wait_until("the worker holds a lease", LIMIT, || !chaos.leased_by(name).is_empty());
        fault();
        std::thread::sleep(Duration::from_secs(1));
        if let Some(job) = chaos.leased_by(name).into_iter().next() {
            return job;
        }
        heal();
    }
    panic!("{name} never held a lease at the moment of the fault");
}

#[test]
fn network_two_seconds_of_latency_with_jitter_between_a_worker_and_the_coordinator() {
    let mut chaos =
        Chaos::start_networked(RedisServer::start().expect("redis"), SLOW_LEASE_MS, &[], Placement::default());
    let coordinator = chaos.cluster.url().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start("127.0.0.1:0", Upstream::Tcp(coordinator));
    proxy.set(Fault::Delay { base: Duration::from_secs(2), jitter: Duration::from_millis(500) });
    let far = format!("http://{}", proxy.address());
    chaos.worker_at("far", &far, None);
    chaos.submit();
    // The far worker alone first, so that jobs cross the slow link; then the rest of the pool.
    wait_until("the far worker commits jobs", LIMIT, || committed_by(&chaos, "far").len() >= 2);
    chaos.unfinished("latency");
    let near = chaos.cluster.url();
    chaos.worker_at("near", &near, None);
    let counts = chaos.finish();
    chaos.assert_clean("2 s ± 0.5 s latency, worker to coordinator", &counts);
    let far_jobs = committed_by(&chaos, "far");
    assert!(!far_jobs.is_empty(), "the worker behind the latency committed nothing: the fault never mattered");
    assert!(proxy.delivered() > 0);
    assert_eq!((counts.failures, counts.expiries), (0, 0), "latency burnt attempts: {counts:?}");
    println!("network latency: the far worker committed {} jobs through 2 s ± 0.5 s each way", far_jobs.len());
}

#[test]
fn network_twenty_percent_packet_loss_between_a_worker_and_the_coordinator() {
    let Some((net, mut chaos)) = cut_off_cluster(SLOW_LEASE_MS) else { return };
    net.lose(20);
    let url = chaos.cluster.url();
    chaos.worker_at("lossy", &url, Some(&net));
    chaos.submit();
    // The lossy worker alone first, so that jobs cross the lossy link; then the rest of the pool.
    wait_until("the lossy worker commits jobs", LIMIT, || committed_by(&chaos, "lossy").len() >= 3);
    chaos.unfinished("packet loss");
    let dropped = net.dropped();
    assert!(dropped.0 > 0 && dropped.1 > 0, "packets dropped (in, out): {dropped:?}: the loss did not land both ways");
    chaos.worker_at("near", &url, None);
    let counts = chaos.finish();
    chaos.assert_clean("20% packet loss each way, worker to coordinator", &counts);
    let lossy_jobs = committed_by(&chaos, "lossy");
    assert!(!lossy_jobs.is_empty(), "the worker on the lossy link committed nothing: the fault never mattered");
    assert_eq!((counts.failures, counts.expiries), (0, 0), "packet loss burnt attempts: {counts:?}");
    println!(
        "network loss: the lossy worker committed {} jobs; {} in and {} out dropped by then",
        lossy_jobs.len(),
        dropped.0,
        dropped.1
    );
}

#[test]
fn network_a_worker_partitioned_past_its_lease_has_its_late_report_refused_and_counted() {
    let Some((net, mut chaos)) = cut_off_cluster(SHORT_LEASE_MS) else { return };
    let url = chaos.cluster.url();
    chaos.worker_at("cut", &url, Some(&net));
    chaos.submit();
    let job = strike_while_leased(&chaos, "cut", || net.partition(), || net.heal());
    let partitioned = Instant::now();
    chaos.unfinished("a partition past a lease");
    // The rest of the pool carries on; the job's lease expires and another worker takes it.
    chaos.worker_at("near", &url, None);
    let result = chaos.cluster.dir.path().join(format!("artifacts/results/{job}.pb"));
    wait_until("the cut-off worker's job is committed by another", LIMIT, || result.exists());
    let committed = std::fs::read(&result).expect("result");
    let held = partitioned.elapsed();
    assert!(held > Duration::from_millis(u64::from(SHORT_LEASE_MS)), "healed after {held:?}, within the lease");
    let owner = chaos.states().into_iter().find(|(key, _)| *key == job).expect("the job").1;
    assert!(owner["phase"]["worker"].as_str().is_some_and(|w| w.starts_with("near-")), "{owner}");
    net.heal();
    // The cut-off worker finished its training during the partition: its report, sent
    // once the link is back, is refused and counted.
    wait_until("the late report is refused", LIMIT, || {
        chaos.counter("wf_results_rejected_total").unwrap_or(0.0) >= 1.0
    });
    let counts = chaos.finish();
    assert_eq!(std::fs::read(&result).expect("result"), committed, "a late report changed a committed result");
    chaos.assert_clean("a partition longer than a lease, healed", &counts);
    assert!(counts.refused >= 1 && counts.expiries >= 1, "{counts:?}");
    assert_eq!(counts.failures, 0, "the partition burnt attempts: {counts:?}");
    let cut = chaos.workers.iter().find(|(name, _)| name == "cut").expect("cut").1.stderr();
    assert!(cut.contains("result refused"), "the cut-off worker was not told its report was refused:\n{cut}");
    println!(
        "network partition: held {:.1} s (lease {} s); late reports refused {}, expiries {}",
        held.as_secs_f64(),
        SHORT_LEASE_MS / 1000,
        counts.refused,
        counts.expiries
    );
}

/// How long the half-open link stays silent: longer than the clients' HTTP/2 keepalive
/// finds a dead connection in (`wf_proto::tls`: a ping every 10 s, 10 s to answer).
const SILENCE: Duration = Duration::from_secs(25);

#[test]
fn network_a_half_open_link_the_coordinator_side_silent_then_healed() {
    let Some((net, mut chaos)) = cut_off_cluster(SHORT_LEASE_MS) else { return };
    let url = chaos.cluster.url();
    // One worker: the sweep goes on only once it finds its way back.
    chaos.worker_at("mute", &url, Some(&net));
    chaos.submit();
    let job = strike_while_leased(&chaos, "mute", || net.silence(), || net.heal());
    chaos.unfinished("a half-open link");
    std::thread::sleep(SILENCE);
    let before_heal = chaos.workers[0].1.stderr();
    let committed_then = committed_by(&chaos, "mute").len();
    net.heal();
    let healed = Instant::now();
    let counts = chaos.finish();
    let recovered = healed.elapsed();
    chaos.assert_clean("a half-open link (coordinator side silent 25 s, no RST), healed", &counts);
    assert_eq!(counts.failures, 0, "the silent link burnt attempts: {counts:?}");
    // While silent, the worker found the link dead (its HTTP/2 pings went unanswered, or
    // a heartbeat ran past its deadline) instead of waiting on it until the heal.
    let dropped = before_heal.lines().filter(|l| l.contains("call failed") || l.contains("heartbeat failed")).count();
    assert!(dropped > 0, "no call failed while the link was silent:\n{before_heal}");
    // Once healed, the one worker finished the sweep.
    assert!(committed_by(&chaos, "mute").len() > committed_then);
    let state = chaos.states().into_iter().find(|(key, _)| *key == job).expect("the job").1;
    assert_eq!(state["phase"]["phase"], "succeeded", "{state}");
    println!(
        "network half-open: silent {} s; the worker's calls failed {dropped} times meanwhile; it finished the sweep {:.1} s after the heal; expiries {}, refused {}",
        SILENCE.as_secs(),
        recovered.as_secs_f64(),
        counts.expiries,
        counts.refused
    );
}

/// A chaos cluster whose coordinator reaches Redis through a proxy the test owns, which
/// applies `fault` from before the coordinator starts.
fn behind_a_proxy(lease_ms: u32, fault: Fault) -> (Chaos, FaultProxy) {
    let redis = RedisServer::start().expect("redis");
    let socket = redis.url().trim_start_matches("redis+unix://").to_string();
    let proxy = FaultProxy::start("127.0.0.1:0", Upstream::Unix(socket.into()));
    proxy.set(fault);
    let url = format!("redis://{}", proxy.address());
    let mut chaos =
        Chaos::start_networked(redis, lease_ms, &[], Placement { redis_url: Some(url), ..Placement::default() });
    chaos.store_answers_lost = true;
    let coordinator = chaos.cluster.url();
    chaos.worker_at("a", &coordinator, None);
    chaos.worker_at("b", &coordinator, None);
    chaos.submit();
    (chaos, proxy)
}

/// The coordinator's lease in the Redis partitions: longer than a command's timeout
/// (`wf_coordinator::store::DEFAULT_RESPONSE_TIMEOUT`, 3 s), so that a partition can
/// outlast the one and not the other.
const REDIS_LEASE_MS: u32 = 8_000;

/// Partitions the coordinator from Redis for `outage` in the middle of the sweep.
fn redis_partition(outage: Duration, scenario: &str) {
    let lease_ms = REDIS_LEASE_MS;
    assert!(outage > wf_coordinator::store::DEFAULT_RESPONSE_TIMEOUT, "a shorter outage is only a slow command");
    let (chaos, proxy) = behind_a_proxy(lease_ms, Fault::None);
    wait_until("some jobs are done", LIMIT, || chaos.succeeded() >= 4);
    chaos.unfinished(scenario);
    let epoch = chaos.epoch().expect("an epoch");
    let outages = chaos.counter("wf_store_outages_total").expect("wf_store_outages_total is served");
    proxy.set(Fault::Partition);
    std::thread::sleep(outage);
    proxy.set(Fault::None);
    let counts = chaos.finish();
    print_warnings(&chaos);
    chaos.assert_clean(scenario, &counts);
    // From the coordinator's state: it saw the store unreachable, once; a partition is no
    // restart, so the lease epoch stays.
    let seen = chaos.counter("wf_store_outages_total").expect("wf_store_outages_total is served") - outages;
    assert_eq!(seen, 1.0, "{scenario}: the coordinator counted {seen} store outages");
    assert_eq!(chaos.epoch(), Some(epoch), "{scenario}: a partition started a new lease epoch");
    // No attempt burnt: a lease command that timed out at the coordinator and reached
    // Redis when the link healed is handed to its worker again, not left to expire.
    assert_eq!((counts.failures, counts.expiries), (0, 0), "{scenario}: the outage burnt attempts: {counts:?}");
}

#[test]
fn network_coordinator_cut_from_redis_for_less_than_a_lease() {
    redis_partition(Duration::from_secs(5), "coordinator to Redis partitioned 5 s (lease 8 s)");
}

#[test]
fn network_coordinator_cut_from_redis_for_longer_than_a_lease() {
    redis_partition(Duration::from_secs(12), "coordinator to Redis partitioned 12 s (lease 8 s)");
}

#[test]
fn network_half_a_second_on_every_redis_command() {
    let slow = Fault::Delay { base: Duration::from_millis(250), jitter: Duration::ZERO };
    let (chaos, proxy) = behind_a_proxy(SLOW_LEASE_MS, slow);
    let before = proxy.delivered();
    let counts = chaos.finish();
    chaos.assert_clean("500 ms round trip on every Redis command", &counts);
    assert!(proxy.delivered() > before, "no command crossed the slow link");
    assert_eq!((counts.failures, counts.expiries), (0, 0), "latency burnt attempts: {counts:?}");
    assert_eq!(chaos.counter("wf_store_outages_total"), Some(0.0), "a slow store was taken for a lost one");
}

#[test]
fn network_the_coordinators_redis_connection_dies_without_a_word() {
    // The coordinator in its own namespace, Redis on the host behind a plain relay; then
    // every packet of the coordinator's open connections to Redis is dropped for good (a
    // NAT entry lost, a host gone: no RST), while new connections pass. The client's
    // command timeout alone kept such a connection for as long as TCP retries (minutes).
    let Some(net) = namespace() else { return };
    let redis = RedisServer::start().expect("redis");
    let socket = redis.url().trim_start_matches("redis+unix://").to_string();
    let relay = FaultProxy::start(&format!("{}:0", net.host_ip()), Upstream::Unix(socket.into()));
    let url = format!("redis://{}", relay.address());
    let mut chaos = Chaos::start_networked(
        redis,
        REDIS_LEASE_MS,
        &[],
        Placement { host: net.ip().to_string(), redis_url: Some(url), inside: net.exec_prefix() },
    );
    chaos.store_answers_lost = true;
    let coordinator = chaos.cluster.url();
    chaos.worker_at("a", &coordinator, None);
    chaos.worker_at("b", &coordinator, None);
    chaos.submit();
    wait_until("some jobs are done", LIMIT, || chaos.succeeded() >= 4);
    chaos.unfinished("a dead Redis connection");
    let epoch = chaos.epoch().expect("an epoch");
    let ports = net.connections_to(relay.address());
    assert!(!ports.is_empty(), "the coordinator has no connection to Redis to kill");
    net.kill_connections(&ports);
    let killed = Instant::now();
    wait_until("the sweep finishes on a new connection", Duration::from_secs(60), || chaos.cluster.finished(&chaos.id));
    let recovered = killed.elapsed();
    let counts = chaos.finish();
    print_warnings(&chaos);
    chaos.assert_clean("the coordinator's Redis connection dies without a word", &counts);
    let (dropped_in, dropped_out) = net.dropped();
    assert!(dropped_out > 0, "nothing was sent on the dead connection: the fault never mattered");
    let fresh: Vec<u16> = net.connections_to(relay.address()).into_iter().filter(|p| !ports.contains(p)).collect();
    assert!(!fresh.is_empty(), "the coordinator made no new connection to Redis");
    assert_eq!(chaos.epoch(), Some(epoch), "a dead connection started a new lease epoch");
    assert_eq!((counts.failures, counts.expiries), (0, 0), "the dead connection burnt attempts: {counts:?}");
    println!(
        "network dead Redis connection: {} killed; the sweep finished {:.1} s later on a new one; packets dropped {dropped_in} in, {dropped_out} out",
        ports.len(),
        recovered.as_secs_f64()
    );
}
