"""The fleet load benchmark's smoke run: a tiny fleet through every round, every injection
and the final check, as ``make load`` runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.processes import ROOT

SMOKE = {
    "LOAD_REPOS": "20",
    "LOAD_TEAMS": "5",
    "LOAD_WORKERS": "1",
    "LOAD_THREADS": "4",
    # Short windows and jitter: the dry tokens recover within seconds, not a minute.
    "LOAD_RATE_WINDOW_SECONDS": "10",
    "GITHUB_RATE_LIMIT_JITTER_SECONDS": "1",
    "LOAD_ROUND_TIMEOUT_SECONDS": "300",
}


@pytest.mark.slow
def test_smoke_run_prints_its_table_and_exits_0(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        **SMOKE,
        "LOAD_WORKDIR": str(tmp_path),
    }

    run = subprocess.run(
        [sys.executable, "-m", "bench.load"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout
    assert "round 1" in table and "round 3" in table
    check = next(line for line in table.splitlines() if line.startswith("check:"))
    assert re.split(r"\s{2,}", check)[1:] == ["0 / 0 / 0"] * 3
    assert "revoked: team-03" in table
