//! TLS end to end, with certificates made by the test (rcgen): a coordinator serving
//! `https://` with tokens and client-certificate verification (mTLS for workers), a
//! user's `wf` with the CA only, and workers with and without a client certificate.

use std::time::Duration;

use wf_tests::{Process, free_port, wait_until, wf, wf_env, wf_in};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_sweep_completes_over_mtls_and_plaintext_unknown_ca_and_certificateless_workers_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    wf_tests::write_test_pki(dir.path());
    let new_token = |tenant: &str, role: &str| {
        let run = wf(dir.path(), &["auth", "new-token", "--tenant", tenant, "--role", role, "--file", "tokens"]);
        assert!(run.succeeded(), "{}", run.stderr);
        run.stdout.trim().to_string()
    };
    let (user, worker) = (new_token("team-a", "user"), new_token("pool", "worker"));

    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let coordinator = Process::start(
        dir.path(),
        &[
            "coordinator",
            "--listen",
            &listen,
            "--artifacts",
            "a",
            "--auth",
            "tokens",
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--tls-client-ca",
            "ca.pem",
        ],
        &[],
    );
    wait_until("the coordinator listens", LIMIT, || coordinator.stdout().contains("listening on"));
    assert!(!coordinator.stderr().contains("plaintext"), "{}", coordinator.stderr());
    std::fs::write(dir.path().join("spec.toml"), super::cluster::spec("\"quarterly\"", 3)).expect("spec");
    let https = format!("https://localhost:{port}");
    let as_user = [("WF_TOKEN", user.as_str())];

    // Plaintext to a TLS port: refused, nothing submitted.
    let plaintext =
        wf_env(dir.path(), &["submit", "spec.toml", "--coordinator", &format!("http://127.0.0.1:{port}")], &as_user);
    assert!(!plaintext.succeeded(), "{plaintext:?}");
    // TLS without our CA: the system's roots do not know it.
    let unknown_ca = wf_env(dir.path(), &["submit", "spec.toml", "--coordinator", &https], &as_user);
    assert!(!unknown_ca.succeeded(), "{unknown_ca:?}");
    // TLS options on a plaintext address are a usage error, named.
    let mixed = wf_env(
        dir.path(),
        &["submit", "spec.toml", "--coordinator", &format!("http://localhost:{port}"), "--tls-ca", "ca.pem"],
        &as_user,
    );
    assert!(!mixed.succeeded() && mixed.stderr.contains("https://"), "{mixed:?}");
    // A client certificate from a CA the coordinator does not trust fails the handshake.
    let rogue = wf_env(
        dir.path(),
        &[
            "list",
            "--coordinator",
            &https,
            "--tls-ca",
            "ca.pem",
            "--tls-client-cert",
            "rogue.pem",
            "--tls-client-key",
            "rogue.key",
        ],
        &as_user,
    );
    assert!(!rogue.succeeded(), "{rogue:?}");
    let listed = wf_env(dir.path(), &["list", "--coordinator", &https, "--tls-ca", "ca.pem"], &as_user);
    assert!(listed.succeeded() && !listed.stdout.contains("sw-"), "nothing was submitted: {listed:?}");

    // A user's client needs only the CA (by IP too, naming the certificate's host).
    let submitted = wf_env(
        dir.path(),
        &[
            "submit",
            "spec.toml",
            "--coordinator",
            &format!("https://127.0.0.1:{port}"),
            "--tls-ca",
            "ca.pem",
            "--tls-domain",
            "localhost",
        ],
        &as_user,
    );
    assert!(submitted.succeeded(), "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();

    // A worker with a valid token but no client certificate is refused at registration.
    let mut bare = Process::start(
        dir.path(),
        &["worker", "--coordinator", &https, "--device", "cpu", "--tls-ca", "ca.pem"],
        &[("WF_TOKEN", worker.as_str())],
    );
    assert_eq!(bare.wait(LIMIT), Some(2), "{}", bare.stderr());
    assert!(bare.stderr().contains("client certificate"), "{}", bare.stderr());

    let _pool = Process::start(
        dir.path(),
        &[
            "worker",
            "--coordinator",
            &https,
            "--device",
            "cpu",
            "--tls-ca",
            "ca.pem",
            "--tls-client-cert",
            "worker.pem",
            "--tls-client-key",
            "worker.key",
        ],
        &[("WF_TOKEN", worker.as_str())],
    );
    let status =
        |id: &str| wf_env(dir.path(), &["status", id, "--coordinator", &https, "--tls-ca", "ca.pem"], &as_user);
    wait_until("the sweep finishes over TLS", LIMIT, || status(&id).stdout.contains(" finished"));
    let report = wf_env(dir.path(), &["report", &id, "--coordinator", &https, "--tls-ca", "ca.pem"], &as_user);
    assert!(report.succeeded() && report.stdout.contains("P@K"), "{report:?}");
    let last = status(&id).stdout;
    assert!(!last.contains("with failures"), "{last}");
}

#[test]
fn coordinator_tls_options_are_checked_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    wf_tests::write_test_pki(dir.path());
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let missing_key = wf_in(dir.path(), &["coordinator", "--listen", &listen, "--tls-cert", "server.pem"], LIMIT);
    assert_eq!(missing_key.code, Some(2), "{missing_key:?}");
    assert!(missing_key.stderr.contains("--tls-key"), "{}", missing_key.stderr);
    std::fs::write(dir.path().join("junk.pem"), "junk").expect("junk");
    let junk = wf_in(
        dir.path(),
        &["coordinator", "--listen", &listen, "--tls-cert", "junk.pem", "--tls-key", "server.key"],
        LIMIT,
    );
    assert!(!junk.succeeded() && junk.stderr.contains("--tls-cert") && junk.stderr.contains("PEM"), "{junk:?}");
}

#[test]
fn the_job_store_runs_on_redis_over_tls_with_a_password_that_never_appears_in_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    wf_tests::write_test_pki(dir.path());
    let redis_port = free_port().to_string();
    let redis = Process::start_program(
        std::path::Path::new("redis-server"),
        dir.path(),
        &[
            "--port",
            "0",
            "--tls-port",
            &redis_port,
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret-pass",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
    );
    wait_until("redis listens on TLS", LIMIT, || redis.stdout().contains("Ready to accept connections"));
    let rediss = format!("rediss://localhost:{redis_port}");
    let start = |redis_url: &str, extra: &[&str], env: &[(&str, &str)]| {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["coordinator", "--listen", &listen, "--artifacts", "a", "--redis", redis_url];
        args.extend_from_slice(extra);
        (Process::start(dir.path(), &args, env), format!("http://127.0.0.1:{port}"))
    };
    let password = [("WF_REDIS_PASSWORD", "s3cret-pass")];

    // Wrong password (in the URL), no password, plaintext to the TLS port, and no CA:
    // each exits with a message, and no message shows a password.
    for (url, extra, env) in [
        (format!("rediss://:wr0ng-pass@localhost:{redis_port}"), vec!["--redis-ca", "ca.pem"], vec![]),
        (rediss.clone(), vec!["--redis-ca", "ca.pem"], vec![]),
        (format!("redis://localhost:{redis_port}"), vec![], password.to_vec()),
        (rediss.clone(), vec![], password.to_vec()),
    ] {
        let (mut refused, _) = start(&url, &extra, &env);
        assert_eq!(refused.wait(LIMIT), Some(2), "{url} {extra:?}: {}", refused.stderr());
        let stderr = refused.stderr();
        assert!(stderr.contains("cannot use redis"), "{stderr}");
        assert!(!stderr.contains("wr0ng-pass") && !stderr.contains("s3cret-pass"), "{stderr}");
    }
    let (mut mixed, _) = start(&format!("redis://localhost:{redis_port}"), &["--redis-ca", "ca.pem"], &password);
    assert_eq!(mixed.wait(LIMIT), Some(2));
    assert!(mixed.stderr().contains("not rediss://"), "{}", mixed.stderr());

    let (coordinator, url) = start(&rediss, &["--redis-ca", "ca.pem"], &password);
    wait_until("the coordinator listens", LIMIT, || coordinator.stdout().contains("listening on"));
    std::fs::write(dir.path().join("spec.toml"), super::cluster::spec("\"quarterly\"", 3)).expect("spec");
    let submitted = wf(dir.path(), &["submit", "spec.toml", "--coordinator", &url]);
    assert!(submitted.succeeded(), "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();
    let _pool = Process::start(dir.path(), &["worker", "--coordinator", &url, "--device", "cpu"], &[]);
    wait_until("the sweep finishes", LIMIT, || {
        wf(dir.path(), &["status", &id, "--coordinator", &url]).stdout.contains(" finished")
    });
    // The job states are in that Redis, behind its password.
    let keys = std::process::Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            "ca.pem",
            "-p",
            &redis_port,
            "-h",
            "localhost",
            "--no-auth-warning",
            "-a",
            "s3cret-pass",
            "HLEN",
            "wf:{default}:jobs",
        ])
        .current_dir(dir.path())
        .output()
        .expect("redis-cli runs");
    let count: usize = String::from_utf8_lossy(&keys.stdout).trim().parse().unwrap_or(0);
    assert!(count >= 3, "jobs hash: {:?} {:?}", keys.stdout, String::from_utf8_lossy(&keys.stderr));
}
