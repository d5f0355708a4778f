"""Issue 12 on a real local Ray instance: the demo trained for two epochs with two gloo workers
reports ``early_hv`` with every epoch and fills ``top1_selection`` in its catalog. Marked
``integration``.
"""

import json

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():
        pytest.skip("another Ray instance is already connected in this process")
    ray.init(address="local", num_cpus=3, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_the_demo_reports_early_hv_every_epoch_and_catalogs_top1_selection(ray_local, tmp_path):
    import ray.train

    from orchestrator.config import TrainConfig
    from orchestrator.objectives import hypervolume
    from orchestrator.run import prepare, run_training

    log = tmp_path / "reports.jsonl"

    class Recorder(ray.train.UserCallback):  # runs in Ray Train's controller: it writes, the test reads
        def after_report(self, run_context, metrics, checkpoint):
            with open(log, "a") as f:
                f.write(json.dumps({k: v for k, v in metrics[0].items() if k != "results"}) + "\n")

    config = TrainConfig(catalog=str(tmp_path / "catalog"), storage_path=str(tmp_path / "runs"), workers=2,
                         epochs=2, batch_size=64, eval_checkpoint_seconds=3600.0, trial_id="selection")
    prepared = prepare(config, progress=lambda m: None)
    space = prepared[1]
    result = run_training(prepared[0], prepared=prepared, progress=lambda m: None, callbacks=[Recorder()])

    reports = [json.loads(line) for line in log.read_text().splitlines()]
    epochs = [m for m in reports if m.get("phase") == "train" and "epoch_seconds" in m]
    assert [m["epoch"] for m in epochs] == [1, 2]
    assert all(isinstance(m["early_hv"], float) and 0.0 < m["early_hv"] < 1.0 for m in epochs), epochs
    final = reports[-1]
    assert final["phase"] == "eval" and final["selection_images"] == 30  # 2% of each digit's training images
    assert final["train_images"] == result.train_images == 1437 - 30
    assert result.hv_selection == final["hv_selection"]
    rows = pq.read_table(result.catalog_file).to_pylist()
    assert len(rows) == len(space) == 35
    selection = [r["top1_selection"] for r in rows]
    assert all(s is not None and 0.0 <= s <= 100.0 and round(s * 30 / 100, 6).is_integer() for s in selection)
    assert {str(r["stitch_id"]): r["top1_selection"] for r in rows} == final["results_selection"]
    ref = max(p.flops for p in space.profiles)
    assert final["hv_selection"] == hypervolume([(r["flops"], r["top1_selection"]) for r in rows], ref)
    # trained anchors: the selection split ranks them as the evaluation split does
    anchors = sorted((r for r in rows if len(r["anchors"]) == 1), key=lambda r: r["flops"])
    assert [r["top1_selection"] for r in anchors][-1] > [r["top1_selection"] for r in anchors][0]
