"""The training recipe without Ray: one CPU worker in this process, the demo digits and two
randomly initialised demo anchors (no pretraining, no cache), so a whole run takes seconds.

What must hold: a run resumed from any of its checkpoints ends with exactly the weights and
accuracies of the uninterrupted run; the checkpoint file has the schema export reads; callbacks
see every step; progress lines come from rank 0 only.
"""

from __future__ import annotations

import io
import os

import pytest
import torch

from orchestrator.train.config import TrainConfig
from orchestrator.train.recipe import SupernetRecipe
from orchestrator.train.state import TrainCallback, TrainState, Worker, _RankZeroFilter, load_callbacks, training_logger
from snnet import AnchorSpec, StitchSpace, create_anchor, profile_anchor

ANCHORS = ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]


class Recorder(TrainCallback):
    """Importable by spec (``test_recipe:Recorder``): records (step, resumed) of every step."""

    def __init__(self, tag: str = ""):
        self.tag, self.steps = tag, []

    def on_step(self, recipe, step):
        self.steps.append((step, recipe.resumed))


class Reports:
    """A ``Worker.report`` that keeps every (metrics, state) pair, the state written to bytes and
    read back at once as Ray persists it (a state's tensors are the live weights)."""

    def __init__(self):
        self.calls: list[tuple[dict, TrainState | None]] = []

    def __call__(self, metrics, state):
        if state is not None:
            buffer = io.BytesIO()
            torch.save(state.to_dict(), buffer)
            buffer.seek(0)
            state = TrainState.from_dict(torch.load(buffer, weights_only=True))
        self.calls.append((metrics, state))


@pytest.fixture(scope="module")
def setting():
    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm

    torch.manual_seed(0)
    config = TrainConfig(anchors=[AnchorSpec(n) for n in ANCHORS], epochs=1, batch_size=128, ls_samples=64,
                         eval_batch_size=200, workers=1, checkpoint_every_steps=2, eval_checkpoint_seconds=0.0,
                         sampling="sandwich", sampling_options={"num_random": 0}, seed=3)
    space = StitchSpace([profile_anchor(create_anchor(AnchorSpec(n))) for n in ANCHORS], config.space_config())
    return config, space


@pytest.fixture(scope="module")
def data():
    """651 training digits, 11 of them held out as the selection split (2%, seed 3), so 640 train:
    5 steps of 128 per epoch; 200 validation digits."""
    from torch.utils.data import Subset

    from orchestrator.data import get_datasets

    train, val = get_datasets("demo")
    return Subset(train, range(651)), Subset(val, range(200))


def _run(config, space, data, state=None, callbacks=()):
    torch.manual_seed(1)  # anchors are built with random weights: the same ones in every run
    reports = Reports()
    recipe = SupernetRecipe(config, space, Worker(report=reports), callbacks=callbacks, datasets=data)
    results = recipe.run(state)
    return recipe, results, reports


@pytest.fixture(scope="module")
def full_run(setting, data):
    config, space = setting
    recorder = Recorder()
    recipe, results, reports = _run(config, space, data, callbacks=[recorder])
    return recipe, results, reports, recorder


def test_a_run_reports_a_checkpoint_schedule_and_every_stitch(setting, full_run):
    config, space = setting
    recipe, results, reports, recorder = full_run
    assert recipe.steps_per_epoch == 640 // 128 == 5 and recipe.step == 5 and recipe.epoch == 1
    train = [m for m, _ in reports.calls if m["phase"] == "train"]
    assert [m["step"] for m in train] == [2, 4, 5]  # every 2 steps inside the epoch, then its end
    assert "epoch_seconds" in train[-1] and train[-1]["loss"] == recipe.last_loss
    evals = [m for m, _ in reports.calls if m["phase"] == "eval"]
    assert len(evals) == len(space)  # eval_checkpoint_seconds=0: one checkpoint per finished stitch
    final = evals[-1]
    assert sorted(map(int, final["results"])) == [s.stitch_id for s in space]
    assert set(final["r2"]) == set(space.layers) and final["steps"] == 5
    assert results == {int(k): v for k, v in final["results"].items()}
    assert all(0.0 <= t1 <= t5 <= 100.0 for t1, t5 in results.values())
    # the anchors' top-1 before joint training, on the evaluation and the selection split (issue 28)
    before = final["anchors_before"]
    assert sorted(map(int, before)) == [s.stitch_id for s in space if s.is_anchor] and final["eval_images"] == 200
    assert all(0.0 <= v <= 100.0 for pair in before.values() for v in pair)
    assert recorder.steps == [(t, False) for t in range(5)]
    assert all(s is not None for _, s in reports.calls)  # rank 0 attaches a state to every report
    assert all(s.optimizer is None for m, s in reports.calls if m["phase"] == "eval")


@pytest.mark.parametrize("resume_at", ["step 2", "epoch end", "mid evaluation"])
def test_resuming_from_any_checkpoint_ends_exactly_like_the_uninterrupted_run(setting, data, full_run, resume_at):
    config, space = setting
    recipe, results, reports, _ = full_run
    pick = {
        "step 2": lambda m: m["phase"] == "train" and m["step"] == 2,
        "epoch end": lambda m: m["phase"] == "train" and m["step"] == 5,
        "mid evaluation": lambda m: m["phase"] == "eval" and m["evaluated"] == 3,
    }[resume_at]
    state = next(s for m, s in reports.calls if pick(m))
    recorder = Recorder()
    resumed, again, more = _run(config, space, data, state=state, callbacks=[recorder])
    assert again == results
    assert more.calls[-1][0]["results"] == reports.calls[-1][0]["results"]
    assert more.calls[-1][0]["anchors_before"] == reports.calls[-1][0]["anchors_before"]  # kept by the checkpoint
    final, reference = resumed.net.state_dict(), recipe.net.state_dict()
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)
    assert recorder.steps == [(t, True) for t in range(state.step, 5)]  # finished steps are skipped
    evaluated_again = sum(1 for m, _ in more.calls if m["phase"] == "eval")
    assert evaluated_again == max(1, len(space) - len(state.evaluated))


def test_checkpoint_file_has_the_schema_export_reads(setting, full_run, tmp_path):
    config, space = setting
    state = full_run[2].calls[0][1]
    path = state.write(tmp_path)
    assert os.listdir(tmp_path) == [TrainState.FILE] == ["state.pt"]
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "optimizer", "scheduler", "step", "epoch", "r2", "evaluated", "train_config",
                        "space", "init_scores", "early_hv", "anchors_before", "stitch_losses"}
    assert TrainConfig.model_validate(raw["train_config"]) == config
    assert StitchSpace.from_json(raw["space"]).to_json() == space.to_json()
    back = TrainState.read(tmp_path)
    assert (back.step, back.epoch, back.r2, back.evaluated) == (state.step, state.epoch, state.r2, state.evaluated)
    assert all(torch.equal(back.model[k], v) for k, v in state.model.items())
    last = full_run[2].calls[-1][1]
    assert all(isinstance(k, str) for k in last.to_dict()["evaluated"])  # str keys on disk, int in memory
    assert TrainState.from_dict(last.to_dict()).evaluated == last.evaluated
    with pytest.raises(ValueError, match="lacks train_config, space"):
        TrainState.from_dict({"model": {}, "step": 0})


def test_callbacks_load_from_specs_and_the_fault_keys(tmp_path, monkeypatch):
    from _hooks import PidFileHold

    from orchestrator.train.worker import callbacks_from

    made = load_callbacks(["test_recipe:Recorder", {"target": "test_recipe:Recorder", "tag": "b"}])
    assert [type(c).__name__ for c in made] == ["Recorder", "Recorder"] and made[1].tag == "b"
    with pytest.raises(ValueError, match="package.module:name"):
        load_callbacks(["no_colon"])
    found = callbacks_from({"callbacks": ["test_recipe:Recorder", PidFileHold(str(tmp_path), 2)], "train": {},
                            "space": ""})
    assert [type(c) for c in found] == [Recorder, PidFileHold]
    hold = found[1]

    class Fake:
        rank, resumed = 1, True

    hold.on_step(Fake(), 2)  # resumed: publishes its pid, does not hold
    assert (tmp_path / "rank1-step2.pid").read_text() == str(os.getpid())


def test_progress_lines_come_from_rank_zero_only(setting, capfd):
    config, space = setting
    capfd.readouterr()
    for rank in (0, 1):
        SupernetRecipe(config, space, Worker(rank=rank, world=2)).log.info(f"hello from rank {rank}")
    out = capfd.readouterr().out
    assert out == "[snnet] hello from rank 0\n"
    # One handler of ours however many recipes were made (pytest may add capture handlers of its own).
    ours = [h for h in training_logger().handlers if any(isinstance(f, _RankZeroFilter) for f in h.filters)]
    assert len(ours) == 1


def test_a_run_prints_what_a_user_sees(setting, data, capfd):
    config, space = setting
    config = config.model_copy(update={"epochs": 0, "init": "kaiming"})
    capfd.readouterr()
    _run(config, space, data)
    out = capfd.readouterr().out.splitlines()
    assert out[0] == f"[snnet] Kaiming init of {len(space.layers)} stitching layers"
    assert out[1].startswith(f"[snnet] evaluating {len(space)} of {len(space)} stitches on 200 images over 1 worker")
    assert out[-1] == f"[snnet] evaluated {len(space)}/{len(space)} stitches"


def test_the_loaders_decode_in_the_workers_cpus_but_one(setting, data):
    """An image folder's CPUs but one go to DataLoader processes (``cpus_per_worker: 8  # data loading``
    in the shipped spaces), the demo's in-memory digits get none; ``loader_workers`` overrides both."""
    config, space = setting
    assert TrainConfig(dataset="imagenet", cpus_per_worker=8).data_workers() == 7
    assert TrainConfig(dataset="imagenet").data_workers() == 0  # one CPU runs the model and reads
    assert TrainConfig(cpus_per_worker=8).data_workers() == 0  # the demo
    assert TrainConfig(cpus_per_worker=8, loader_workers=3).data_workers() == 3
    recipe = SupernetRecipe(config.model_copy(update={"dataset": "imagenet", "cpus_per_worker": 3}), space,
                            Worker(report=lambda metrics, state: None), datasets=data)
    recipe.setup()
    assert recipe.loader.num_workers == recipe.val_loader.num_workers == 2
    x, y = next(iter(recipe.loader))
    assert x.shape[0] == y.shape[0] == config.batch_size


def test_ls_init_beats_kaiming_without_training(tmp_path):
    """The paper's Figure 14 effect on the pretrained micro demo anchors, in this process (one worker,
    the first 360 validation digits): LS-initialised stitches work before any training, Kaiming ones
    do not, and the anchors are untouched at epoch 0."""
    from conftest import micro_config
    from torch.utils.data import Subset

    from orchestrator.data import get_datasets

    train, val = get_datasets("demo")
    results = {}
    for init in ("ls", "kaiming"):
        config = micro_config(tmp_path, epochs=0, workers=1, init=init)
        space = StitchSpace([profile_anchor(create_anchor(s)) for s in config.anchors], config.space_config())
        _, results[init], _ = _run(config, space, (train, Subset(val, range(360))))

    def stitched_mean(init):
        tops = [results[init][s.stitch_id][0] for s in space if not s.is_anchor]
        return sum(tops) / len(tops)

    anchors = {s.stitch_id: results["ls"][s.stitch_id][0] for s in space if s.is_anchor}
    assert stitched_mean("ls") > stitched_mean("kaiming") + 30.0
    assert stitched_mean("ls") > min(anchors.values())  # above the smaller anchor, on average
    assert anchors == {i: results["kaiming"][i][0] for i in anchors}  # identical in both runs
