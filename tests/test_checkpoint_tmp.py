"""Temporary checkpoint folders left by a worker killed inside ``ray.train.report`` (issue 11's
known gap): the next worker on the host removes those of dead pids, and only those."""

from __future__ import annotations

import os
import subprocess
import sys

from orchestrator.train import worker as training


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folders_of_dead_workers_are_removed_and_live_or_foreign_ones_kept(tmp_path):
    prefix = training._host_prefix()
    dead = tmp_path / f"{prefix}{_dead_pid()}-abc123"
    live = tmp_path / f"{prefix}{os.getpid()}-def456"
    other_host = tmp_path / f"{training.CHECKPOINT_PREFIX}someotherhost-{_dead_pid()}-x"
    unrelated = tmp_path / "snnet-cache"
    for folder in (dead, live, other_host, unrelated):
        folder.mkdir()
        (folder / "state.pt").write_bytes(b"0" * 16)

    removed = training.remove_stale_checkpoints(str(tmp_path))

    assert removed == [str(dead)]
    assert not dead.exists()
    assert live.exists() and other_host.exists() and unrelated.exists()


def test_a_reported_checkpoint_folder_names_this_host_and_pid(tmp_path, monkeypatch):
    seen = {}

    class FakeState:
        def write(self, folder):
            seen["folder"] = folder
            assert os.path.basename(folder).startswith(f"{training._host_prefix()}{os.getpid()}-")
            assert training.remove_stale_checkpoints(os.path.dirname(folder)) == []  # our own is alive

    import ray.train

    monkeypatch.setattr(ray.train, "report", lambda metrics, checkpoint=None: seen.update(metrics=metrics))
    monkeypatch.setattr(ray.train.Checkpoint, "from_directory", classmethod(lambda cls, path: path))
    monkeypatch.setattr(training.tempfile, "tempdir", str(tmp_path))
    training.report_to_ray({"step": 1}, FakeState())
    assert seen["metrics"] == {"step": 1} and not os.path.exists(seen["folder"])


def test_a_missing_temp_folder_is_not_an_error(tmp_path):
    assert training.remove_stale_checkpoints(str(tmp_path / "absent")) == []
