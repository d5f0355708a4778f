"""``--resume`` continues a sweep trial from its last checkpoint after the driver was SIGKILLed (issue 28,
item 1), on the shared cluster. ``test_sweep_faults.py`` runs the same scenario with Ctrl-C in the
default suite; this one, a driver killed with SIGKILL, is ``e2e``.

One micro demo trial of two epochs; its training worker holds at the first step of epoch 2, right
after reporting its epoch-1 checkpoint, and the sweep's driver is SIGKILLed there. Ray Train registers
a reported checkpoint only when its controller next polls the workers (every 2 s), so a stop in that
window (Ctrl-C or a kill during the demo's 1 s epochs) left a complete checkpoint folder that the
resumed run never received: it redid least-squares init and started at epoch 1. The test makes that
window certain by removing the run's checkpoint_manager_snapshot.json if the controller registered the
checkpoint before the kill. ``--resume`` must start the trial at the step after the checkpoint, without
LS init, and end with the catalog rows of an uninterrupted run of the same settings (computed here,
in-process, without Ray). About a minute on 2 cores: two sweep drivers.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import (
    MICRO,
    MICRO_STITCHES,
    ONE_WORKER,
    demo_space,
    micro_config,
    process_gone,
    training_images,
    uninterrupted_results,
    with_hooks,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[1]
SPACE = demo_space("ckptdemo", training={**MICRO, "epochs": 2, "sampling": "uniform"}, resources=ONE_WORKER)


def _wait_for(condition, what, process=None, log=None, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if process is not None:
            assert process.poll() is None, f"the driver ended before {what}:\n" + log.read_text()[-4000:]
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_a_killed_sweep_resumes_its_trial_from_the_checkpoint_ray_never_registered(local_cluster, tmp_path):
    from orchestrator.train.prepare import prepare

    steps = training_images(prepare(micro_config(tmp_path, workers=1), progress=None)) // MICRO["batch_size"]
    (tmp_path / "space.yaml").write_text(SPACE)
    catalog, storage, pids = tmp_path / "catalog", tmp_path / "runs", tmp_path / "pids"
    pids.mkdir()
    args = [sys.executable, "-m", "orchestrator.sweep", "--space", str(tmp_path / "space.yaml"), "--catalog",
            str(catalog), "--storage", str(storage), "--address", local_cluster.address, "--name", "exp"]
    # The cluster above runs without token authentication: the drivers must not turn it on.
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    held = pids / f"rank0-step{steps}.pid"

    # 1. The worker holds at epoch 2's first step, its epoch-1 checkpoint uploaded; the driver is killed there.
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        hooked = with_hooks(args, pid_dir=str(pids), hold_at_step=steps, hold_seconds=300)
        first = subprocess.Popen(hooked, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
        _wait_for(lambda: held.exists() and held.read_text().strip(), "the hold after epoch 1", first, log)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=60) == -signal.SIGKILL
    worker = int(held.read_text())
    _wait_for(lambda: process_gone(worker), "the dead driver's training worker to be ended by Ray", timeout=120)
    (run,) = storage.glob("ckptdemo-*")  # the trial's Ray Train run: <sweep>-<trial id>
    (checkpoint,) = [p for p in run.glob("checkpoint_*") if p.is_dir()]
    (run / "checkpoint_manager_snapshot.json").unlink(missing_ok=True)  # as if stopped before the poll
    assert not list(catalog.glob("**/*.parquet"))

    # 2. --resume: the trial goes on at the step after its checkpoint, without least-squares init.
    for path in pids.iterdir():
        path.unlink()
    resumed = subprocess.run(with_hooks(args + ["--resume"], pid_dir=str(pids)), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    text = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, text[-4000:]
    assert f"registered its checkpoint {checkpoint.name}: resuming from it" in text, text[-4000:]
    assert f"resuming from checkpoint: epoch 1, step {steps}, 0 stitches evaluated" in text
    assert "least-squares init" not in text and "epoch 1/2" not in text and "epoch 2/2" in text
    assert sorted(int(p.stem.split("step")[1]) for p in pids.glob("rank0-step*.pid")) == list(range(steps, 2 * steps))
    assert not checkpoint.exists()  # Ray never knew it: removed once the trial finished
    snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    assert {p.name for p in run.glob("checkpoint_*") if p.is_dir()} == {c["checkpoint_dir_name"]
                                                          for c in snapshot["checkpoint_results"]}

    # 3. Its rows are an uninterrupted run's: the same settings trained in one go, in this process.
    (trial,) = (storage / "exp" / "snnet-trials").glob("*.json")
    rows = pq.read_table(next(catalog.glob("sweep=ckptdemo/trial-*.parquet"))).to_pylist()
    reference = uninterrupted_results(json.loads(trial.read_text())["config"], tmp_path)
    assert len(rows) == len(reference) == MICRO_STITCHES
    assert {r["stitch_id"]: [r["top1"], r["top5"]] for r in rows} == reference
