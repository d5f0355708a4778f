"""Issue 14: the demo ``python -m orchestrator.train --workers 2`` prints a console a person reads.

Marked ``integration``: it runs the whole demo (a private local Ray instance) as a subprocess,
stdout and stderr together as a user sees them in a redirected log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 30
QUIET_KEYS = ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_COLOR_PREFIX", "RAY_ADDRESS", "NO_COLOR")


@pytest.fixture(scope="module")
def demo_console(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    env = {k: v for k, v in os.environ.items() if k not in QUIET_KEYS}  # the defaults a new user has
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.train", "--workers", "2", "--catalog", str(root / "catalog"),
         "--storage", str(root / "runs")],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    return proc, root


def test_the_demo_console_is_short_and_plain(demo_console):
    proc, _ = demo_console
    out = proc.stdout
    lines = out.splitlines()
    assert proc.returncode == 0, out
    assert len(lines) < MAX_LINES, f"{len(lines)} lines:\n{out}"
    for noise in ("Reporting training result", "TrainingReport(", "PreemptionWatcher", "core_worker.cc",
                  "Token authentication is enabled", "Checkpoint successfully created", "\x1b[", "Traceback"):
        assert noise not in out, f"{noise!r} in the console:\n{out}"
    assert "[snnet] weights: snnet_demo_vit_tiny <- file:" in out
    assert "; starting 2 Ray Train workers\n" in out  # before the wait for Ray and its workers, the longest one
    assert "== summary" in out and "Spearman(FLOPs, top-1) = " in out and "nan" not in out


def test_the_demo_writes_its_own_partition_with_the_weights(demo_console):
    proc, root = demo_console
    parts = [p.name for p in (root / "catalog").iterdir()]
    assert len(parts) == 1 and parts[0].startswith("sweep=demo-"), parts
    (trial,) = (root / "catalog" / parts[0]).glob("trial-*.parquet")
    weights = set(pq.read_table(trial).column("weights").to_pylist())
    assert all(w and "=file:" in w for w in weights)
    assert f"catalog rows: {root / 'catalog'}/{parts[0]}/{trial.name}" in proc.stdout
