"""The demo trained for one epoch with the paper's whole recipe switched on (no Ray, one process):
mixup and cutmix, label smoothing, random erasing on the tensor batch, drop path on the anchors,
SGD with one batch-scaled learning rate and a cosine floor, repeated augmentation, and hard
distillation from a teacher loaded from a local file.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import Subset

from orchestrator.train.config import TrainConfig
from orchestrator.train.recipe import SupernetRecipe
from orchestrator.train.state import Worker
from snnet import AnchorSpec, StitchSpace, create_anchor, profile_anchor

ANCHORS = ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]


def test_demo_trains_one_epoch_with_the_full_paper_recipe(tmp_path):
    import timm
    from timm.layers import DropPath

    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm
    from orchestrator.data import get_datasets

    teacher_file = tmp_path / "teacher.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("snnet_demo_vit_small").state_dict(), teacher_file)
    config = TrainConfig(
        anchors=[AnchorSpec(n) for n in ANCHORS], epochs=1, batch_size=64, eval_batch_size=200, workers=1,
        ls_samples=32, seed=0, optimizer="sgd", momentum=0.9, anchor_lr=0.05, stitch_lr=None,
        lr_scale_batch=128, min_lr=1e-4, grad_clip=None, mixup=0.8, cutmix=1.0, label_smoothing=0.1,
        random_erasing=0.25, aug_repeats=3, drop_path_rate=0.1,
        teacher=AnchorSpec("snnet_demo_vit_small", checkpoint=str(teacher_file)))
    space = StitchSpace([profile_anchor(create_anchor(AnchorSpec(n))) for n in ANCHORS], config.space_config())
    train, val = get_datasets("demo")
    # 522 digits, 10 held out for selection (2%): 512 train
    recipe = SupernetRecipe(config, space, Worker(), datasets=(Subset(train, range(522)), Subset(val, range(200))))
    torch.manual_seed(1)
    results = recipe.run()

    assert type(recipe.loader.sampler).__name__ == "RepeatAugSampler"
    assert recipe.steps_per_epoch == 512 // 64  # 512 rounded to 256s, each image 3 times over ranks
    assert recipe.mixup is not None and type(recipe.criterion).__name__ == "SoftTargetCrossEntropy"
    assert recipe.erase is not None  # tensors: timm's RandomErasing on the batch
    assert isinstance(recipe.optimizer, torch.optim.SGD)
    assert {g["initial_lr"] for g in recipe.optimizer.param_groups} == {0.025}  # 0.05 x 64 / 128
    drop = [m.drop_prob for m in recipe.net.modules() if isinstance(m, DropPath)]
    assert drop and max(drop) == pytest.approx(0.1)  # timm spreads the rate linearly over the blocks
    assert recipe.teacher is not None and not recipe.teacher.training
    assert math.isfinite(recipe.last_loss)
    assert sorted(results) == [s.stitch_id for s in space]
    assert all(0 <= top1 <= 100 for top1, _ in results.values())
