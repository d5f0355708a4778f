"""Checkpoints leave nothing behind (issue 11): on a local Ray instance whose workers use a temp
folder of this test's own (``TMPDIR`` in the job's runtime environment), a multi-epoch demo run
reports many checkpoints, Ray keeps ``num_to_keep`` of them in storage, and no checkpoint folder
stays in the temp folder, during the run or after it. Marked ``integration``.
"""

import glob
import os

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker_tmp(tmp_path_factory):
    import ray

    if ray.is_initialized():
        pytest.skip("another Ray instance is already connected in this process")
    tmp = tmp_path_factory.mktemp("worker-tmp")
    env = {"TMPDIR": str(tmp), "SNNET_TRAIN_CALLBACKS": "orchestrator._testing:TempDirProbe"}
    ray.init(address="local", num_cpus=3, include_dashboard=False, runtime_env={"env_vars": env})
    try:
        yield tmp
    finally:
        ray.shutdown()


def _leftovers(tmp) -> list[str]:
    return sorted(glob.glob(os.path.join(str(tmp), "**", "snnet-ckpt-*"), recursive=True))


def _stored(storage) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(str(storage), "**", "checkpoint_*"), recursive=True)
                  if os.path.isdir(p))


def test_a_multi_epoch_run_leaves_no_checkpoint_in_the_temp_folder(worker_tmp, tmp_path):
    from orchestrator.config import TrainConfig
    from orchestrator.run import prepare, run_training

    storage = tmp_path / "runs"
    config = TrainConfig(catalog=str(tmp_path / "catalog"), storage_path=str(storage), workers=2, epochs=3,
                         batch_size=64, eval_checkpoint_seconds=0.0, trial_id="no-leak")
    prepared = prepare(config, progress=lambda m: None)
    assert _leftovers(worker_tmp) == [] and _stored(storage) == []
    result = run_training(prepared[0], prepared=prepared)
    # 3 epoch checkpoints and one per evaluation round (35 stitches over 2 workers) were reported:
    # storage keeps num_to_keep=2 of them, the last one is the run's checkpoint.
    stored = _stored(storage)
    assert len(stored) == 2 and all(os.path.isfile(os.path.join(p, "state.pt")) for p in stored)
    assert os.path.realpath(result.checkpoint) in map(os.path.realpath, stored)
    assert _leftovers(worker_tmp) == []
    # The workers did use this temp folder, and never saw a checkpoint folder left there.
    probe = (worker_tmp / "snnet-probe-rank0").read_text().split()
    assert probe == [str(3 * ((1437 // 2) // 64) - 1), "0"]  # the last step of epoch 3, no folder seen
