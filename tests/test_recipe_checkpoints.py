"""Checkpoints leave nothing behind (issue 11), and a killed worker resumes from the last one: on
the shared local Ray cluster, a driver whose job gives its workers a temp folder of this test's own
(``TMPDIR`` in the job's runtime environment) runs the micro demo. A multi-epoch run reports many
checkpoints, Ray keeps ``num_to_keep`` of them in storage, and no checkpoint folder stays in the temp
folder, during the run or after it; the same holds when a worker is killed mid-training and Ray Train
resumes the run from its last registered checkpoint, with one catalog row per stitch. Marked
``integration``.
"""

import glob
import os
import signal
import threading
import time

import pytest
from conftest import MICRO_STITCHES, connected, micro_config, training_images, wait_for_registered_checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_tmp(ray_cluster, tmp_path_factory):
    """This test as a driver of the shared cluster whose job's workers get a temp folder of their own."""
    tmp = tmp_path_factory.mktemp("worker-tmp")
    env = {"TMPDIR": str(tmp), "SNNET_TRAIN_CALLBACKS": "orchestrator._testing:TempDirProbe"}
    with connected(ray_cluster, log_to_driver=False, runtime_env={"env_vars": env}):
        yield tmp


def _leftovers(tmp) -> list[str]:
    return sorted(glob.glob(os.path.join(str(tmp), "**", "snnet-ckpt-*"), recursive=True))


def _stored(storage) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(str(storage), "**", "checkpoint_*"), recursive=True)
                  if os.path.isdir(p))


def test_a_multi_epoch_run_leaves_no_checkpoint_in_the_temp_folder(worker_tmp, tmp_path):
    from orchestrator.run import prepare, run_training

    storage = tmp_path / "runs"
    config = micro_config(tmp_path, epochs=3, eval_checkpoint_seconds=0.0, trial_id="no-leak")
    prepared = prepare(config, progress=lambda m: None)
    assert _leftovers(worker_tmp) == [] and _stored(storage) == []
    result = run_training(prepared[0], prepared=prepared, progress=lambda m: None)
    # 3 epoch checkpoints and one per evaluation round (18 stitches over 2 workers) were reported:
    # storage keeps num_to_keep=2 of them, the last one is the run's checkpoint.
    stored = _stored(storage)
    assert len(stored) == 2 and all(os.path.isfile(os.path.join(p, "state.pt")) for p in stored)
    assert os.path.realpath(result.checkpoint) in map(os.path.realpath, stored)
    assert _leftovers(worker_tmp) == []
    # The workers did use this temp folder, and never saw a checkpoint folder left there.
    probe = (worker_tmp / "snnet-probe-rank0").read_text().split()
    # the last step of epoch 3 (a rank's half of the epoch's images in whole batches), no folder seen
    assert probe == [str(3 * ((training_images(prepared) // 2) // config.batch_size) - 1), "0"]


def _ours_in_tmp(tmp) -> list[str]:
    """What our save path (and a resume reading its checkpoint back) could leave in a temp folder:
    ``report_to_ray``'s folders (``snnet-ckpt-*``), a ``TrainState`` file (``state.pt``) wherever it
    lies, and Ray's local copies of a checkpoint (``checkpoint_tmp_*`` from ``Checkpoint.as_directory``
    and their ``*.del_lock_*`` files). Everything else (the probe file, files Ray or torch write in
    ``TMPDIR`` for themselves) is not a checkpoint and is not counted."""
    from orchestrator.recipe import TrainState
    from orchestrator.training import CHECKPOINT_PREFIX

    found = []
    for folder, dirs, files in os.walk(str(tmp)):
        for name in dirs + files:
            if name.startswith((CHECKPOINT_PREFIX, "checkpoint_tmp_")) or ".del_lock_" in name \
                    or name == TrainState.FILE:
                found.append(os.path.relpath(os.path.join(folder, name), str(tmp)))
    return sorted(found)


def test_a_killed_and_resumed_run_keeps_num_to_keep_and_leaves_no_checkpoint_in_the_temp_folder(
        worker_tmp, tmp_path):
    import pyarrow.parquet as pq

    from orchestrator.catalog import read_catalog
    from orchestrator.run import prepare, run_training

    storage, pid_dir = tmp_path / "runs", tmp_path / "pids"
    pid_dir.mkdir()
    # One epoch of 11 steps (16 images per worker): checkpoints at steps 5 and 10, at the epoch's end
    # and after the evaluation (one, at its end): more than num_to_keep=2.
    config = micro_config(tmp_path, batch_size=16, checkpoint_every_steps=5, max_failures=1, trial_id="killed")
    prepared = prepare(config, progress=lambda m: None)
    assert (training_images(prepared) // 2) // config.batch_size == 11
    space = prepared[1]
    outcome = {}

    def train():
        try:
            outcome["result"] = run_training(prepared[0], prepared=prepared, progress=lambda m: None,
                                             fault_injection={"pid_dir": str(pid_dir), "hold_at_step": 7,
                                                              "hold_seconds": 600})
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = e

    thread = threading.Thread(target=train)
    thread.start()
    # Rank 0 (the rank that writes checkpoints) holds at step 7 on the first attempt, after the
    # step-5 checkpoint: once Ray has registered that checkpoint, kill rank 0 there.
    held = pid_dir / "rank0-step7.pid"
    deadline = time.time() + 300
    while time.time() < deadline and thread.is_alive() and not held.exists():
        time.sleep(0.05)
    assert held.exists(), f"training never reached step 7: {outcome}"
    victim = int(held.read_text())
    wait_for_registered_checkpoint(storage)
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive(), "training did not finish within 600 s of the kill"
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]

    # A new worker group resumed from the step-5 checkpoint: its rank 0 ran steps 5 to the last again,
    # and rank 1 is a new process too that resumed there, not from scratch.
    restarted = sorted(int(f.stem.split("step")[1]) for f in pid_dir.glob("rank0-step*.pid")
                       if int(f.read_text()) != victim)
    assert restarted and restarted == list(range(5, restarted[-1] + 1)), restarted
    first_rank1 = (pid_dir / "rank1-step0.pid").read_text()
    rank1_again = [int(f.stem.split("step")[1]) for f in pid_dir.glob("rank1-step*.pid")
                   if f.read_text() != first_rank1]
    assert rank1_again and min(rank1_again) == 5, rank1_again
    # The catalog: one row per stitch, none twice (the killed attempt wrote no rows).
    table = read_catalog(config.catalog)
    assert sorted(table.column("stitch_id").to_pylist()) == list(range(len(space))) == list(range(MICRO_STITCHES))
    assert pq.read_table(result.catalog_file).num_rows == MICRO_STITCHES
    # Storage: 3 or 4 checkpoints were reported over the two attempts (step 5 by the killed one); Ray
    # keeps num_to_keep=2 of them (the run's own checkpoint among them), each a whole checkpoint.
    stored = _stored(storage)
    assert len(stored) == 2 and all(os.path.isfile(os.path.join(p, "state.pt")) for p in stored), stored
    assert os.path.realpath(result.checkpoint) in map(os.path.realpath, stored)
    assert len(glob.glob(os.path.join(str(storage), "**", "state.pt"), recursive=True)) == 2  # no stray copy
    # The temp folder: nothing of our checkpoints is left, neither by the killed attempt nor by the
    # resumed one; the workers did use this folder (the resumed rank 0's probe file is there).
    assert _ours_in_tmp(worker_tmp) == [], os.listdir(worker_tmp)
    probe = (worker_tmp / "snnet-probe-rank0").read_text().split()
    assert probe == [str(restarted[-1]), "0"]  # the last step of the run, no checkpoint folder seen
