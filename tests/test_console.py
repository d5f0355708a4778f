"""Issue 14: ``python -m orchestrator.train --workers 2`` prints a console a person reads.

Marked ``integration``: the CLI runs as a subprocess, stdout and stderr together as a user sees them
in a redirected log. The micro demo (named by ``--anchors NAME=PATH``) joins the shared cluster with
``--address`` (conftest's session fixture ``micro_console``, whose catalog ``tests/test_serve.py`` serves);
the whole demo with its own local Ray instance, as a new user runs it, is ``e2e``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import MICRO_ANCHORS
from conftest import run_train_console as _train

pytestmark = pytest.mark.integration

MAX_LINES = 30


@pytest.fixture(scope="module")
def demo_console(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    return _train(root), root


def _check_console(proc: subprocess.CompletedProcess) -> None:
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


def _check_partition(proc: subprocess.CompletedProcess, root: Path, prefix: str) -> None:
    parts = [p.name for p in (root / "catalog").iterdir()]
    assert len(parts) == 1 and parts[0].startswith(f"sweep={prefix}-"), parts
    (trial,) = (root / "catalog" / parts[0]).glob("trial-*.parquet")
    weights = set(pq.read_table(trial).column("weights").to_pylist())
    assert all(w and "=file:" in w for w in weights)
    assert f"catalog rows: {root / 'catalog'}/{parts[0]}/{trial.name}" in proc.stdout


def test_the_micro_demo_console_is_short_and_plain(micro_console):
    _check_console(micro_console[0])


def test_the_micro_demo_writes_its_own_partition_with_the_weights(micro_console):
    _check_partition(*micro_console, prefix=MICRO_ANCHORS[0])


@pytest.mark.e2e
def test_the_demo_console_is_short_and_plain(demo_console):
    _check_console(demo_console[0])


@pytest.mark.e2e
def test_the_demo_writes_its_own_partition_with_the_weights(demo_console):
    _check_partition(*demo_console, prefix="demo")
