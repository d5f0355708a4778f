"""Which checkpoint a stopped run resumes from, without Ray running (``orchestrator.train.worker``).

Ray Train restores a run started again under its name from the checkpoints its controller registered,
and it registers one only when it next polls the workers: a run stopped between a checkpoint's upload
and that poll leaves a complete checkpoint that ``ray.train.get_checkpoint()`` never returns. The
workers resume from the newest stored checkpoint that reads when it is newer than Ray's; the sweep-level
scenario is ``test_sweep_resume_checkpoint.py``.
"""

import os

import ray.train
import torch

from orchestrator.train.state import TrainState
from orchestrator.train.worker import latest_state, remove_unregistered, stored_checkpoints


def _checkpoint(run, stamp, epoch, *, torn=False):
    folder = run / f"checkpoint_2026-01-01_00-00-{stamp}.000000"
    folder.mkdir(parents=True)
    path = TrainState(model={"w": torch.full((4,), float(epoch))}, train_config={}, space="{}", epoch=epoch,
                      step=10 * epoch).write(folder)
    if torn:  # the stop cut the upload short
        with open(path, "r+b") as f:
            f.truncate(40)
    return str(folder)


def _registered(monkeypatch, path):
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint(path) if path else None)


def test_the_run_folder_lists_its_checkpoints_newest_first(tmp_path):
    run = tmp_path / "runs" / "demo-t1"
    assert stored_checkpoints(str(run)) == []  # a run that never started
    old, new = _checkpoint(run, "01", 1), _checkpoint(run, "02", 2)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    (run / "checkpoint_tmp_x").write_text("")  # a file, not a checkpoint folder
    assert stored_checkpoints(str(run)) == [new, old]


def test_a_newer_unregistered_checkpoint_wins_and_a_torn_one_is_skipped(tmp_path, monkeypatch):
    run = tmp_path / "demo-t1"
    first, second = _checkpoint(run, "01", 1), _checkpoint(run, "02", 2)
    _checkpoint(run, "03", 3, torn=True)
    stored, said = stored_checkpoints(str(run)), []

    _registered(monkeypatch, first)  # Ray registered epoch 1 only; epoch 2 reads, epoch 3 was cut short
    state = latest_state(stored, log=said.append)
    assert (state.epoch, state.step, state.model["w"].tolist()) == (2, 20, [2.0] * 4)
    assert len(said) == 2 and said[0].startswith("skipping the checkpoint checkpoint_2026-01-01_00-00-03")
    assert f"its checkpoint {os.path.basename(second)}: resuming from it" in said[1]

    _registered(monkeypatch, None)  # no snapshot at all: the newest that reads
    assert latest_state(stored).epoch == 2
    _registered(monkeypatch, second)  # Ray's own is the newest that reads: Ray's
    assert latest_state(stored[1:]).epoch == 2
    _registered(monkeypatch, None)
    assert latest_state([]) is None  # a fresh run


def test_unregistered_folders_go_once_the_run_has_finished(tmp_path):
    run = tmp_path / "demo-t1"
    stale, kept = _checkpoint(run, "01", 1), _checkpoint(run, "02", 2)
    gone = str(run / "checkpoint_2026-01-01_00-00-00.000000")  # num_to_keep removed it already
    assert remove_unregistered([kept, stale, gone], kept=[kept]) == [stale]
    assert stored_checkpoints(str(run)) == [kept]
