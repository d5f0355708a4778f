"""Training on the shared local Ray cluster (``ray_connected``): the micro demo end to end with two
gloo workers, the early front and the selection split on the way, and LS against Kaiming at epoch 0.
A worker killed mid-training is test_recipe_checkpoints.py's; the demo's console, test_console.py's.

Marked ``integration``: in-process drivers of the shared cluster. The demo anchors are pretrained
once and cached (``$SNNET_CACHE`` or ``~/.cache/snnet/demo``).
"""

import json
import os

import pyarrow.parquet as pq
import pytest
from conftest import MICRO_STITCHES, micro_config, training_images

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def micro_prepared(tmp_path_factory):
    from orchestrator.run import prepare

    base = micro_config(tmp_path_factory.mktemp("train"))
    return base, prepare(base, progress=lambda m: None)[1]


def _run(base, **changes):
    from orchestrator.run import prepare, run_training

    config = base.model_validate({**base.model_dump(), **changes})
    prepared = prepare(config, progress=lambda m: None)
    return run_training(config, prepared=prepared, progress=lambda m: None)


def test_the_micro_demo_trains_on_two_gloo_workers_reports_early_fronts_and_catalogs_every_stitch(
        ray_connected, micro_prepared, tmp_path):
    """Two epochs, two gloo workers, the 2% selection split held out (issue 12): one catalog row per
    stitch with its selection top-1, ``early_hv`` reported after every epoch."""
    import ray.train

    from orchestrator.objectives import hypervolume
    from orchestrator.run import prepare, run_training

    base, space = micro_prepared
    log = tmp_path / "reports.jsonl"

    class Recorder(ray.train.UserCallback):  # runs in Ray Train's controller: it writes, the test reads
        def after_report(self, run_context, metrics, checkpoint):
            with open(log, "a") as f:
                f.write(json.dumps({k: v for k, v in metrics[0].items() if k != "results"}) + "\n")

    config = base.model_copy(update={"epochs": 2, "trial_id": "two-epochs"})
    prepared = prepare(config, progress=lambda m: None)
    result = run_training(prepared[0], prepared=prepared, progress=lambda m: None, callbacks=[Recorder()])

    table = pq.read_table(result.catalog_file)
    assert table.num_rows == len(space) == MICRO_STITCHES
    assert sorted(table.column("stitch_id").to_pylist()) == list(range(len(space)))
    rows = table.to_pylist()
    assert all(0.0 <= r["top1"] <= 100.0 and r["top1"] <= r["top5"] for r in rows)
    assert all(r["workers"] == 2 and r["epochs"] == 2 and r["init"] == "ls" for r in rows)
    anchors = sorted((r for r in rows if len(r["anchors"]) == 1), key=lambda r: r["flops"])
    # pretrained anchors stay good while stitches train: still a family (about 49 / 75 % when cached)
    tops = [r["top1"] for r in anchors]
    assert tops[0] > 40.0 and tops[1] > tops[0] + 3.0, tops
    assert os.path.isdir(result.checkpoint)
    assert set(result.r2) == set(space.layers) and all(0 < v <= 1 for v in result.r2.values())

    reports = [json.loads(line) for line in log.read_text().splitlines()]
    epochs = [m for m in reports if m.get("phase") == "train" and "epoch_seconds" in m]
    assert [m["epoch"] for m in epochs] == [1, 2]
    assert all(isinstance(m["early_hv"], float) and 0.0 < m["early_hv"] < 1.0 for m in epochs), epochs
    final = reports[-1]
    assert final["phase"] == "eval" and final["selection_images"] == 30  # 2% of each digit's training images
    # the workers trained on the images the driver predicted: a quarter of the 1437 - 30 left
    assert final["train_images"] == result.train_images == training_images(prepared) < (1437 - 30) // 3
    assert result.hv_selection == final["hv_selection"]
    selection = [r["top1_selection"] for r in rows]
    assert all(s is not None and 0.0 <= s <= 100.0 and round(s * 30 / 100, 6).is_integer() for s in selection)
    assert {str(r["stitch_id"]): r["top1_selection"] for r in rows} == final["results_selection"]
    ref = max(p.flops for p in space.profiles)
    assert final["hv_selection"] == hypervolume([(r["flops"], r["top1_selection"]) for r in rows], ref)
    # trained anchors: the selection split ranks them as the evaluation split does
    assert anchors[-1]["top1_selection"] > anchors[0]["top1_selection"]


def test_ls_init_beats_kaiming_without_training(ray_connected, micro_prepared):
    base, _ = micro_prepared
    ls = _run(base, epochs=0, init="ls", trial_id="ls0")
    kaiming = _run(base, epochs=0, init="kaiming", trial_id="kaiming0")

    def stitched_mean(result):
        tops = [r["top1"] for r in result.rows if len(r["anchors"]) > 1]
        return sum(tops) / len(tops)

    # The paper's Figure 14 effect: LS-initialised stitches work before any training.
    assert stitched_mean(ls) > stitched_mean(kaiming) + 30.0
    assert stitched_mean(ls) > 60.0

    def anchor_top1(result):
        return {r["stitch_id"]: r["top1"] for r in result.rows if len(r["anchors"]) == 1}

    # Anchors are untouched at epoch 0: identical in both runs.
    assert anchor_top1(ls) == anchor_top1(kaiming)
