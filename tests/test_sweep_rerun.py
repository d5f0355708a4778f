"""``--rerun-best`` end to end on a local Ray instance: a cheap sweep of two trials, then its best
trial re-run with overrides into the partition ``<name>_rerun``, linked to the trial it re-ran.
Marked ``integration`` (it trains three tiny demo supernets)."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ONE_WORKER, QUICK, demo_space

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]

SPACE = demo_space("rerundemo", training={**QUICK, "sampling": ["uniform", "balanced"]}, resources=ONE_WORKER,
                   searcher={"algorithm": "grid", "max_concurrent_trials": 1})


def _sweep(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "orchestrator.sweep", "--space", str(tmp_path / "space.yaml"),
            "--catalog", str(tmp_path / "catalog"), "--storage", str(tmp_path / "runs"), *extra]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def test_rerun_best_trains_the_best_trial_again_with_the_overrides_and_links_it(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    first = _sweep(tmp_path)
    assert "early_hv_spearman: n/a" in first.stdout  # two trials: fewer than three
    sources = {}
    for path in (tmp_path / "catalog" / "sweep=rerundemo").glob("trial-*.parquet"):
        meta = pq.read_schema(path).metadata
        sources[path.stem[len("trial-"):]] = json.loads(meta[b"snnet.sweep_result"])
    assert len(sources) == 2
    best = max(sources, key=lambda t: sources[t]["hypervolume"])

    second = _sweep(tmp_path, "--rerun-best", "1", "--set", "training.seed=7")
    assert f"re-run of {best}" in second.stdout
    files = list((tmp_path / "catalog" / "sweep=rerundemo_rerun").glob("trial-*.parquet"))
    assert len(files) == 1
    meta = pq.read_schema(files[0]).metadata
    assert meta[b"snnet.source_trial"].decode() == best and meta[b"snnet.source_sweep"] == b"rerundemo"
    rows = pq.read_table(files[0]).to_pylist()
    assert {r["seed"] for r in rows} == {7}
    source_rows = pq.read_table(tmp_path / "catalog" / "sweep=rerundemo" / f"trial-{best}.parquet").to_pylist()
    assert {r["sampling"] for r in rows} == {r["sampling"] for r in source_rows}  # the source's own settings
    assert len(rows) == len(source_rows)
