"""Fixtures: the repository's `wf` binary (built by cargo) and a scratch folder."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _target_dir() -> Path:
    if "CARGO_TARGET_DIR" in os.environ:
        return Path(os.environ["CARGO_TARGET_DIR"])
    return REPO / "target"


@pytest.fixture(scope="session")
def wf() -> Path:
    """The `wf` binary: `WF_BINARY`, else the debug build in cargo's target folder."""
    given = os.environ.get("WF_BINARY")
    path = Path(given) if given else _target_dir() / "debug" / "wf"
    if not path.exists():
        # The shape of the test build, so no dependency is rebuilt with other features.
        subprocess.run(["cargo", "build", "--quiet", "--workspace", "--tests"], cwd=REPO, check=True)
    assert path.exists(), f"no wf binary at {path}"
    return path
