//! The Python that runs external trainers in tests and benches: `WF_PYTHON`, else the CI
//! venv's (`~/.cache/walkforward/venv`), if it imports polars.

use std::path::PathBuf;

/// A Python with polars, if one is found.
pub fn with_polars() -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    [std::env::var("WF_PYTHON").ok(), Some(format!("{home}/.cache/walkforward/venv/bin/python"))]
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|python| {
            std::process::Command::new(python).args(["-c", "import polars"]).output().is_ok_and(|o| o.status.success())
        })
}

/// [`with_polars`] for a test: `None` says why on stderr and passes, except under
/// `WF_REQUIRE_TOOLS` (CI), where a missing Python fails the test.
#[allow(dead_code)]
pub fn required() -> Option<PathBuf> {
    let found = with_polars();
    if found.is_none() {
        assert!(std::env::var_os("WF_REQUIRE_TOOLS").is_none(), "no Python with polars (set WF_PYTHON)");
        eprintln!("skipped: no Python with polars (set WF_PYTHON, or create the CI venv with .ci/run)");
    }
    found
}
