"""The paper's recipe pieces (orchestrator.train.augment), each on small tensors, through timm's own parts.

What must hold: mixup/cutmix mix images and labels; label smoothing changes the loss; random
erasing erases (in timm's transform and on a demo batch); RepeatAugSampler repeats each image
on several ranks; SGD is chosen; one or two learning-rate groups with the paper's batch
scaling; cosine decays to the floor; every paper space loads and sets the released values.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import search_spaces
from orchestrator.data import make_loader
from orchestrator.data.transforms import _transforms
from orchestrator.train.augment import make_batch_erasing, make_criterion, make_mixup, transform_options
from orchestrator.train.config import TrainConfig
from orchestrator.train.optim import group_lambdas, lr_lambda, make_optimizer, scaled_lrs
from orchestrator.train.teacher import teacher_problems
from snnet import AnchorSpec, SNNetError


class TwoGroups(torch.nn.Module):
    """Stands in for the supernet: ``param_groups`` as StitchedSupernet's (anchors, stitching layers)."""

    def __init__(self):
        super().__init__()
        self.anchors, self.stitch_layers = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def param_groups(self, anchor_lr, stitch_lr, weight_decay):
        from snnet.supernet import StitchedSupernet

        return StitchedSupernet.param_groups(self, anchor_lr, stitch_lr, weight_decay)


def test_mixup_mixes_images_and_labels_with_smoothing_folded_in():
    config = TrainConfig(mixup=0.8, cutmix=0.0, label_smoothing=0.1)
    mixup = make_mixup(config, num_classes=5)
    torch.manual_seed(0)
    x = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(4)])
    y = torch.tensor([0, 1, 2, 3])
    mixed, target = mixup(x.clone(), y)
    lam = mixup.mixup_alpha and float(mixed[0, 0, 0, 0] - 3.0) / (0.0 - 3.0)  # x0 mixed with x3 (reversed batch)
    assert 0 < lam < 1 and not torch.equal(mixed, x)
    assert target.shape == (4, 5)
    torch.testing.assert_close(target.sum(-1), torch.ones(4))
    off, on = 0.1 / 5, 1 - 0.1 + 0.1 / 5  # timm's smoothed one-hot
    torch.testing.assert_close(target[0, 0], torch.tensor(lam * on + (1 - lam) * off))
    torch.testing.assert_close(target[0, 3], torch.tensor(lam * off + (1 - lam) * on))


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area():
    mixup = make_mixup(TrainConfig(mixup=0.0, cutmix=1.0), num_classes=4)
    torch.manual_seed(1)
    x = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(4)])
    mixed, target = mixup(x.clone(), torch.tensor([0, 1, 2, 3]))
    pasted = (mixed[0] == 3.0).float().mean().item()  # share of image 0 now from image 3
    assert 0 < pasted < 1 and set(mixed[0].unique().tolist()) == {0.0, 3.0}
    torch.testing.assert_close(target[0, 3], torch.tensor(pasted), atol=1e-6, rtol=0)  # lam from the box


def test_no_mixup_by_default_and_odd_batches_refused_with_it():
    assert make_mixup(TrainConfig(), 10) is None
    with pytest.raises(SNNetError, match="batch_size must be even with mixup or cutmix"):
        TrainConfig(mixup=0.8, batch_size=33)


def test_label_smoothing_changes_the_loss_and_soft_targets_under_mixup():
    logits, y = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]), torch.tensor([0, 1])
    plain = make_criterion(TrainConfig())
    smooth = make_criterion(TrainConfig(label_smoothing=0.1))
    assert plain is F.cross_entropy
    expected = (0.9 * F.cross_entropy(logits, y, reduction="none")
                - 0.1 * F.log_softmax(logits, -1).mean(-1)).mean()
    torch.testing.assert_close(smooth(logits, y), expected)
    assert smooth(logits, y) != plain(logits, y)
    soft = make_criterion(TrainConfig(mixup=0.8, label_smoothing=0.1))
    target = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])
    torch.testing.assert_close(soft(logits, target), (-target * F.log_softmax(logits, -1)).sum(-1).mean())


def test_random_erasing_erases_in_timms_transform_and_on_a_demo_batch():
    from PIL import Image

    train_tf, val_tf = _transforms(32, None, None, "bicubic", None, None, re_prob=1.0, re_mode="const")
    image = Image.new("RGB", (40, 40), (255, 255, 255))
    torch.manual_seed(0)
    x = train_tf(image)
    assert (x == 0).any() and (x != 0).any()  # a zero box on a white image
    assert not (val_tf(image) == 0).any()  # evaluation never erases
    erase = make_batch_erasing(TrainConfig(random_erasing=0.999999, random_erasing_mode="const"))
    batch = torch.ones(3, 1, 16, 16)
    out = erase(batch.clone())
    assert all((out[i] == 0).any() and (out[i] == 1).any() for i in range(3))
    assert make_batch_erasing(TrainConfig()) is None


def test_transform_options_reach_timm_create_transform():
    config = TrainConfig(auto_augment="rand-m9-mstd0.5-inc1", random_erasing=0.25, interpolation="random")
    opts = transform_options(config)
    assert opts == {"auto_augment": "rand-m9-mstd0.5-inc1", "interpolation": "random", "crop_pct": None,
                    "re_prob": 0.25, "re_mode": "pixel"}
    train_tf, val_tf = _transforms(32, None, None, **{k: opts[k] for k in ("interpolation", "crop_pct",
                                                                           "auto_augment", "re_prob", "re_mode")})
    names = [type(t).__name__ for t in train_tf.transforms]
    assert "RandAugment" in names and "RandomErasing" in names
    with pytest.raises(SNNetError, match="auto_augment must be a timm auto-augment string"):
        TrainConfig(auto_augment="rund-m9")


def test_repeat_aug_sampler_repeats_each_image_on_different_ranks():
    data = TensorDataset(torch.arange(12).float(), torch.zeros(12, dtype=torch.long))
    loaders = [make_loader(data, 4, rank=r, world_size=3, shuffle=True, drop_last=True, repeats=3) for r in range(3)]
    assert type(loaders[0].sampler).__name__ == "RepeatAugSampler"
    seen = [torch.cat([x for x, _ in loader]).long().tolist() for loader in loaders]
    assert [len(s) for s in seen] == [4, 4, 4]
    # the first images of the epoch's shuffle, each on all three ranks
    assert sorted(seen[0]) == sorted(seen[1]) == sorted(seen[2]) and len(set(seen[0])) == 4
    plain = make_loader(data, 4, shuffle=True, drop_last=True)
    assert type(plain.sampler).__name__ == "DistributedSampler"


def test_sgd_is_chosen_with_momentum_and_adamw_by_default():
    net = TwoGroups()
    sgd = make_optimizer(net, TrainConfig(optimizer="sgd", momentum=0.8, anchor_lr=0.05, stitch_lr=None), world=1)
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["momentum"] == 0.8 and g["nesterov"] for g in sgd.param_groups)
    assert isinstance(make_optimizer(net, TrainConfig(), world=1), torch.optim.AdamW)


def test_one_or_two_learning_rate_groups_with_the_papers_batch_scaling():
    net = TwoGroups()
    two = make_optimizer(net, TrainConfig(anchor_lr=1e-4, stitch_lr=1e-3, weight_decay=0.05), world=1)
    assert {g["name"]: g["lr"] for g in two.param_groups} == {
        "anchors": 1e-4, "anchors_no_decay": 1e-4, "stitch_layers": 1e-3, "stitch_layers_no_decay": 1e-3}
    assert {g["name"]: g["weight_decay"] for g in two.param_groups}["anchors_no_decay"] == 0.0
    one = TrainConfig(anchor_lr=5e-5, stitch_lr=None, lr_scale_batch=512, batch_size=128)
    assert scaled_lrs(one, world=8) == (pytest.approx(1e-4), pytest.approx(1e-4), 2.0)  # DeiT: 5e-5 x 1024/512
    opt = make_optimizer(net, one, world=8)
    assert {round(g["lr"], 12) for g in opt.param_groups} == {1e-4}
    swin = TrainConfig(anchor_lr=5e-5, stitch_lr=5e-4, lr_scale_batch=512, batch_size=128)
    assert scaled_lrs(swin, world=8)[:2] == (pytest.approx(1e-4), pytest.approx(1e-3))
    assert scaled_lrs(TrainConfig(anchor_lr=0.05, stitch_lr=None), world=8)[:2] == (0.05, 0.05)  # not scaled


def test_cosine_decays_to_the_floor_per_group():
    f = lr_lambda(100, 0.1, floor=0.01)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.01) and f(1000) == pytest.approx(0.01)
    assert lr_lambda(100, 0.1)(100) == pytest.approx(0.0)  # today's default: to zero
    net = TwoGroups()
    config = TrainConfig(anchor_lr=1e-4, stitch_lr=1e-3, min_lr=1e-5, warmup_fraction=0.0)
    opt = make_optimizer(net, config, world=1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, group_lambdas(opt, 10, config))
    for _ in range(10):
        opt.step()
        sched.step()
    assert [round(g["lr"], 12) for g in opt.param_groups] == [1e-5] * 4  # each group ends at min_lr


def test_grad_clip_null_means_none_and_modes_are_timms():
    assert TrainConfig(grad_clip=None).grad_clip is None
    assert TrainConfig().grad_clip == 1.0 and TrainConfig().grad_clip_mode == "norm"
    with pytest.raises(SNNetError, match="grad_clip_mode must be one of norm, value, agc"):
        TrainConfig(grad_clip_mode="global")


def test_defaults_keep_todays_recipe():
    c = TrainConfig()
    assert (c.optimizer, c.stitch_lr, c.lr_scale_batch, c.min_lr, c.mixup, c.cutmix, c.label_smoothing,
            c.random_erasing, c.aug_repeats, c.drop_path_rate, c.auto_augment) == (
        "adamw", 3e-3, None, 0.0, 0.0, 0.0, 0.0, 0.0, 1, None, None)


def test_teacher_any_timm_classifier_with_weights_or_a_clear_error(tmp_path):
    import timm

    assert teacher_problems(AnchorSpec("resnet18"))[0].startswith(
        "teacher 'resnet18' has neither hub weights")
    path = tmp_path / "regnet.pth"
    model = timm.create_model("regnetx_002", num_classes=10)
    torch.save(model.state_dict(), path)
    spec = AnchorSpec("regnetx_002", checkpoint=str(path), kwargs={"num_classes": 10})
    assert teacher_problems(spec) == []  # a RegNet is no stitchable family, but a fine teacher
    from orchestrator.train.teacher import create_teacher

    teacher = create_teacher(spec)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    torch.testing.assert_close(teacher.state_dict()["head.fc.weight"], model.state_dict()["head.fc.weight"])
    with pytest.raises(SNNetError, match="neither hub weights"):
        create_teacher(AnchorSpec("regnetx_002"))


PAPER = {
    "paper_deit_ti_s_b": dict(epochs=50, optimizer="adamw", anchor_lr=5e-5, stitch_lr=None, lr_scale_batch=512,
                              min_lr=1e-6, grad_clip=None, auto_augment="rand-m9-mstd0.5-inc1", mixup=0.8,
                              cutmix=1.0, label_smoothing=0.1, random_erasing=0.25, aug_repeats=3,
                              drop_path_rate=0.1, preset="paper", kernel_size=2, stride=1),
    "paper_swin_t_s_b": dict(epochs=50, anchor_lr=5e-5, stitch_lr=5e-4, lr_scale_batch=512, grad_clip=5.0,
                             drop_path_rate=0.2, preset="paper"),
    "paper_resnet18_50": dict(epochs=30, optimizer="sgd", anchor_lr=0.05, stitch_lr=None, lr_scale_batch=None,
                              random_erasing=0.6, mixup=0.0, preset="paper"),
    "paper_resnet18_swin_t": dict(epochs=30, optimizer="sgd", anchor_lr=0.05, random_erasing=0.6, preset="paper"),
    "paper_levit_192_256": dict(epochs=100, anchor_lr=5e-5, grad_clip=0.01, grad_clip_mode="agc", preset="paper"),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_every_paper_space_loads_as_one_fixed_trial_with_the_released_values(name):
    space = search_spaces.load_space(name)
    assert space.name == name
    assert space.first_point() == {}  # nothing searched: one trial
    config = space.trial_config(space.first_point())
    for key, value in PAPER[name].items():
        got = getattr(config, key)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), key
    assert config.teacher is not None and config.teacher.name == "regnety_160.deit_in1k" and config.teacher.pretrained


def test_every_knob_is_reachable_with_set_and_bad_values_say_what_must_hold():
    from orchestrator.train.__main__ import config_from_args, parse_args

    config = config_from_args(parse_args([
        "--set", "stitch_lr=null", "--set", "mixup=0.8", "--set", "cutmix=1.0", "--set", "optimizer=sgd",
        "--set", "auto_augment=rand-m9-mstd0.5-inc1", "--set", "grad_clip=null", "--set", "lr_scale_batch=512",
        "--set", "aug_repeats=3", "--set", "drop_path_rate=0.1", "--set", "min_lr=1e-6"]))
    assert (config.stitch_lr, config.mixup, config.cutmix, config.optimizer, config.grad_clip, config.lr_scale_batch,
            config.aug_repeats, config.drop_path_rate, config.min_lr) == (
        None, 0.8, 1.0, "sgd", None, 512, 3, 0.1, 1e-6)
    space = search_spaces.load_space("paper_deit_ti_s_b", overrides=["training.mixup=0.5"])
    assert space.trial_config(space.first_point()).mixup == 0.5
    with pytest.raises(SNNetError, match="aug_repeats must be 1 for WebDataset shards"):
        TrainConfig(dataset="wds:/data/shards", aug_repeats=3)
    with pytest.raises(SNNetError, match="drop_path_rate must lie in \\[0, 1\\), got 1.5"):
        TrainConfig(drop_path_rate=1.5)
