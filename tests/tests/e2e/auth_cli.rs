//! Authentication from the command line: `wf auth new-token`, a coordinator with
//! `--auth`, clients and a worker with their tokens, and the secure default (no listener
//! beyond loopback without authentication unless `--insecure`).

use std::time::Duration;

use wf_tests::{Process, free_port, wait_until, wf, wf_in};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_coordinator_without_auth_refuses_to_listen_beyond_loopback_unless_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("0.0.0.0:{}", free_port());
    let refused = wf_in(dir.path(), &["coordinator", "--listen", &listen, "--artifacts", "a"], LIMIT);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("without authentication") && refused.stderr.contains("--auth"),
        "{}",
        refused.stderr
    );
    let mut insecure =
        Process::start(dir.path(), &["coordinator", "--listen", &listen, "--artifacts", "a", "--insecure"], &[]);
    wait_until("the insecure coordinator listens", LIMIT, || insecure.stdout().contains("listening on"));
    assert!(insecure.stderr().contains("WITHOUT authentication"), "{}", insecure.stderr());
    insecure.signal("TERM");
    assert_eq!(insecure.wait(LIMIT), Some(0));
}

#[test]
fn tokens_from_wf_auth_let_a_user_and_a_worker_run_a_sweep_and_nothing_else_gets_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let new_token = |tenant: &str, role: &str| {
        let run = wf(dir.path(), &["auth", "new-token", "--tenant", tenant, "--role", role, "--file", "tokens"]);
        assert!(run.succeeded(), "{}", run.stderr);
        run.stdout.trim().to_string()
    };
    let (user, worker) = (new_token("team-a", "user"), new_token("pool", "worker"));
    assert!(user.starts_with("wf_") && worker.starts_with("wf_") && user != worker);
    let tokens = std::fs::read_to_string(dir.path().join("tokens")).expect("tokens file");
    assert!(!tokens.contains(&user) && !tokens.contains(&worker), "the file holds hashes only");
    std::fs::write(dir.path().join("worker.token"), format!("{worker}\n")).expect("worker token");

    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let url = format!("http://127.0.0.1:{port}");
    let coordinator =
        Process::start(dir.path(), &["coordinator", "--listen", &listen, "--artifacts", "a", "--auth", "tokens"], &[]);
    wait_until("the coordinator listens", LIMIT, || coordinator.stdout().contains("listening on"));
    std::fs::write(dir.path().join("spec.toml"), super::cluster::spec("\"quarterly\"", 3)).expect("spec");

    let anonymous = wf(dir.path(), &["submit", "spec.toml", "--coordinator", &url]);
    assert!(!anonymous.succeeded() && anonymous.stderr.contains("needs a token"), "{anonymous:?}");
    let as_worker =
        wf_tests::wf_env(dir.path(), &["submit", "spec.toml", "--coordinator", &url], &[("WF_TOKEN", &worker)]);
    assert!(!as_worker.succeeded() && as_worker.stderr.contains("may not call SweepService"), "{as_worker:?}");
    let submitted =
        wf_tests::wf_env(dir.path(), &["submit", "spec.toml", "--coordinator", &url], &[("WF_TOKEN", &user)]);
    assert!(submitted.succeeded(), "{}", submitted.stderr);
    let id = submitted.stdout.trim().to_string();

    let _pool = Process::start(
        dir.path(),
        &["worker", "--coordinator", &url, "--device", "cpu", "--token-file", "worker.token"],
        &[],
    );
    wait_until("the sweep finishes", LIMIT, || {
        let status = wf_tests::wf_env(dir.path(), &["status", &id, "--coordinator", &url], &[("WF_TOKEN", &user)]);
        status.stdout.contains(" finished")
    });
    let report = wf_tests::wf_env(dir.path(), &["report", &id, "--coordinator", &url], &[("WF_TOKEN", &user)]);
    assert!(report.succeeded(), "{}", report.stderr);
    // The audit log names who did what.
    let log = coordinator.stderr();
    assert!(log.contains("wf_audit") && log.contains("team-a") && log.contains("submit"), "{log}");
}
