//! The `wf` binary's argument handling. Besides checking it, this integration test makes
//! every `cargo test`/`cargo nextest run` of the workspace build `target/<profile>/wf`
//! with the same features as the tests, which the end-to-end suite in `tests/` runs.

use std::process::Command;

fn wf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wf")).args(args).output().expect("wf runs")
}

#[test]
fn help_lists_the_data_commands() {
    let output = wf(&["data", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["prepare", "check", "synth", "hash"] {
        assert!(help.contains(command), "{command} missing from {help}");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let output = wf(&["data", "frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unrecognized subcommand"));
}
