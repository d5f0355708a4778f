"""Unit tests (no Ray) of the training pieces: schedule, losses, the step module, evaluation,
initialisation, LoRA stitching layers, and the end-of-run summary.

The supernet is ResNet-18 -> ResNet-50 at 32x32 with 10 classes: real timm models, small enough
for two busy CPU cores.
"""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from orchestrator.data import make_loader
from orchestrator.train.config import TrainConfig
from orchestrator.train.evaluate import evaluate_stitch
from orchestrator.train.launch import catalog_rows
from orchestrator.train.optim import lr_lambda
from orchestrator.train.steps import LeastSquaresFit, SupernetStep, initialise, ls_batches, ls_line, step_loss
from orchestrator.train.summary import best_under, interpolation_stats, spearman, summarize
from snnet import StitchingLayer, least_squares
from snnet.least_squares import to_rows

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def net():
    from snnet import build_supernet

    torch.manual_seed(0)
    return build_supernet(["resnet18", "resnet50"], img_size=32, num_classes=10).eval()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _stitched(net, index: int = 0):
    return [s for s in net.space if not s.is_anchor][index]


# -- learning-rate schedule ------------------------------------------------------------------------


def test_lr_warmup_then_cosine_to_zero_at_the_end():
    f = lr_lambda(100, 0.1)  # 10 warmup steps
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(9) == 1.0 and f(10) == 1.0  # warmup ends at the peak, cosine starts there
    assert f(55) == pytest.approx(0.5)  # half way through the cosine
    assert f(100) == 0.0 and f(150) == 0.0  # exactly zero at (and after) the end
    after = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(after, after[1:])) and f(99) > 0
    assert f(10 + 30) == pytest.approx(0.5 * (1 + math.cos(math.pi * 30 / 90)))


def test_lr_without_warmup_and_tiny_runs():
    f = lr_lambda(10, 0.0)
    assert f(0) == 1.0 and f(5) == pytest.approx(0.5) and f(10) == 0.0
    one = lr_lambda(1, 0.1)  # int(0.1) = 0 warmup steps
    assert one(0) == 1.0 and one(1) == 0.0
    g = lr_lambda(5, 0.5)  # 2 warmup steps
    assert [g(0), g(1), g(2)] == [0.5, 1.0, 1.0] and g(5) == 0.0


def test_lr_schedule_drives_lambdalr_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(20, 0.25))
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.2 / 5) and max(seen) == pytest.approx(0.2)
    assert seen[-1] > 0 and opt.param_groups[0]["lr"] == 0.0


# -- losses ----------------------------------------------------------------------------------------


def _logits(k: int, batch: int = 4, classes: int = 5, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, classes, generator=g).requires_grad_() for _ in range(k)]


def _soft_ce(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    return -(probs * logits.log_softmax(-1)).sum(-1).mean()


@pytest.mark.parametrize("rule", ["uniform", "flops-bucket", "balanced"])
def test_step_loss_is_the_mean_cross_entropy(rule):
    outs = _logits(3)
    target = torch.tensor([0, 4, 2, 1])
    expected = sum(F.cross_entropy(o, target) for o in outs) / 3
    torch.testing.assert_close(step_loss(outs, target, rule), expected)
    one = _logits(1, seed=1)
    torch.testing.assert_close(step_loss(one, target, rule), F.cross_entropy(one[0], target))


def test_step_loss_hard_distillation_averages_label_and_teacher_ce():
    outs = _logits(2)
    target, teacher = torch.tensor([0, 4, 2, 1]), torch.tensor([3, 4, 0, 0])
    expected = sum(0.5 * F.cross_entropy(o, target) + 0.5 * F.cross_entropy(o, teacher) for o in outs) / 2
    torch.testing.assert_close(step_loss(outs, target, "uniform", teacher), expected)


def test_sandwich_loss_distils_from_the_detached_largest():
    outs = _logits(4, seed=3)
    target = torch.tensor([1, 1, 3, 0])
    largest = outs[0]
    probs = largest.detach().softmax(-1)
    expected = F.cross_entropy(largest, target) + sum(_soft_ce(o, probs) for o in outs[1:])
    loss = step_loss(outs, target, "sandwich")
    torch.testing.assert_close(loss, expected)  # a sum over the stitches: gradients accumulate
    loss.backward()
    # the largest only learns from the labels: no gradient through the soft targets
    onehot = F.one_hot(target, 5).float()
    torch.testing.assert_close(largest.grad, (largest.detach().softmax(-1) - onehot) / 4)
    for o in outs[1:]:  # the others learn towards the largest's distribution
        torch.testing.assert_close(o.grad, (o.detach().softmax(-1) - probs) / 4)


def test_sandwich_loss_with_teacher_labels_applies_them_to_the_largest():
    outs = _logits(2, seed=4)
    target, teacher = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 4, 4])
    probs = outs[0].detach().softmax(-1)
    expected = (0.5 * F.cross_entropy(outs[0], target) + 0.5 * F.cross_entropy(outs[0], teacher)
                + _soft_ce(outs[1], probs))
    torch.testing.assert_close(step_loss(outs, target, "sandwich", teacher), expected)


# -- the step module -------------------------------------------------------------------------------


def test_supernet_step_returns_one_output_per_stitch(net):
    step = SupernetStep(net)
    x = _images(2, seed=1)
    ids = (0, 1, _stitched(net, 0).stitch_id, _stitched(net, 5).stitch_id, 1)
    with torch.no_grad():
        outs = step(x, ids)
        assert len(outs) == len(ids)
        for i, out in zip(ids, outs):
            assert out.shape == (2, 10)
            assert torch.equal(out, net(x, i))
    assert all(k.startswith("supernet.") for k in step.state_dict())  # DDP wraps the whole supernet


def test_supernet_step_backward_reaches_exactly_the_used_stitching_layers(net):
    step = SupernetStep(net)
    stitch = _stitched(net, 3)
    net.zero_grad(set_to_none=True)
    try:
        out = step(_images(2, seed=2), (stitch.stitch_id,))
        out[0].sum().backward()
        for key, layer in net.stitch_layers.items():
            assert (layer.proj.weight.grad is not None) == (key in stitch.layers), key
    finally:
        net.zero_grad(set_to_none=True)


# -- evaluation ------------------------------------------------------------------------------------


def test_evaluate_stitch_top1_top5_against_a_hand_made_answer(net):
    stitch = _stitched(net, 2).stitch_id
    x = _images(20, seed=3)
    with torch.no_grad():
        out = net(x, stitch)
    order = out.argsort(-1, descending=True)
    # the label's rank among the 10 logits: 0 for 8 images, 2 and 4 for 4 each, 7 for 4
    rank_of = {0: 0, 1: 0, 2: 2, 3: 4, 4: 7}
    y = torch.stack([order[i, rank_of[i % 5]] for i in range(20)])
    by_hand_top1 = 100.0 * (out.argmax(-1) == y).sum().item() / 20
    by_hand_top5 = 100.0 * ((out > out.gather(1, y[:, None])).sum(-1) < 5).sum().item() / 20
    assert (by_hand_top1, by_hand_top5) == (40.0, 80.0)
    loader = make_loader(TensorDataset(x, y), 6, shuffle=False)  # batches of 6, 6, 6, 2
    top1, top5, total = evaluate_stitch(net, stitch, loader, CPU, contextlib.nullcontext)
    assert (top1, top5, total) == (40.0, 80.0, 20)


def test_evaluate_stitch_with_fewer_than_five_classes_and_no_data():
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 5.0, 1.0], [0.0, 1.0, 9.0]])

    def fake_net(x, stitch_id):
        return logits[x]

    loader = [(torch.tensor([0, 1]), torch.tensor([0, 2])), (torch.tensor([2]), torch.tensor([1]))]
    top1, top5, total = evaluate_stitch(fake_net, 0, loader, CPU, contextlib.nullcontext)
    assert (top1, top5, total) == (pytest.approx(100 / 3), 100.0, 3)
    assert evaluate_stitch(fake_net, 0, [], CPU, contextlib.nullcontext) == (0.0, 0.0, 0)


# -- initialisation --------------------------------------------------------------------------------


def test_ls_batches_shard_a_fixed_subset_over_ranks():
    ids = torch.arange(10, dtype=torch.float32)
    ds = TensorDataset(ids.view(10, 1, 1, 1), torch.zeros(10, dtype=torch.long))

    def seen(samples, rank, world, batch=3):
        batches = list(ls_batches(ds, samples, batch, rank, world, CPU))
        assert all(len(b) <= batch for b in batches)
        return [int(v) for b in batches for v in b.flatten()]

    alone = seen(7, 0, 1)
    assert len(alone) == len(set(alone)) == 7
    r0, r1 = seen(7, 0, 2), seen(7, 1, 2)
    assert (len(r0), len(r1)) == (4, 3) and set(r0) | set(r1) == set(alone) and not set(r0) & set(r1)
    assert seen(7, 0, 1) == alone  # the subset is fixed (seeded), not drawn anew
    assert sorted(seen(100, 0, 1)) == list(range(10))  # more samples than images: all of them


def test_kaiming_init_is_seeded_and_returns_no_r2(net):
    net = copy.deepcopy(net)
    for layer in net.stitch_layers.values():
        layer.set_affine(torch.zeros_like(layer.proj.weight), torch.zeros_like(layer.proj.bias))
    assert initialise(net, TrainConfig(init="kaiming", seed=3), None, 0, 1, CPU) == {}
    first = {k: v.clone() for k, v in net.stitch_layers.state_dict().items()}
    assert all(v.abs().sum() > 0 for v in first.values())
    initialise(net, TrainConfig(init="kaiming", seed=3), None, 0, 1, CPU)
    assert all(torch.equal(first[k], v) for k, v in net.stitch_layers.state_dict().items())
    initialise(net, TrainConfig(init="kaiming", seed=4), None, 0, 1, CPU)
    assert not torch.equal(first[next(iter(first))], next(iter(net.stitch_layers.state_dict().values())))


def test_ls_init_matches_an_independent_pinv_solution(net):
    net = copy.deepcopy(net)
    x = _images(12, seed=4)
    ds = TensorDataset(x, torch.zeros(12, dtype=torch.long))
    config = TrainConfig(init="ls", ls_samples=100, eval_batch_size=5)  # all 12 images, batches of 5, 5, 2
    kaiming = {key: (layer.proj.weight.detach().clone(), layer.proj.bias.detach().clone())
               for key, layer in net.stitch_layers.items()}
    r2 = initialise(net, config, ds, 0, 1, CPU)
    assert set(r2) == set(net.space.layers)
    assert all(0.0 < v <= 1.0 for v in r2.values()), r2
    # The log line says how many images the fit used: the 12 there are, not the 100 asked for.
    assert r2.images == 12 and " on 12 images (of the 100 ls_samples asks for) in 0.5s: R^2 min" in ls_line(
        r2, config, 0.5)
    assert " on 100 images in " in ls_line(LeastSquaresFit(r2, images=100), config, 0.5)

    with torch.no_grad():
        acts = net.collect_activations(x)
    well_determined = []
    for key, spec in net.space.layers.items():
        a = torch.cat([to_rows(acts[spec.front][j + 1], spec.in_layout) for j, _ in spec.cuts]).double()
        b = torch.cat([to_rows(acts[spec.back][k], spec.out_layout) for _, k in spec.cuts]).double()
        w_ref, b_ref = least_squares(a, b)
        layer = net.stitch_layers[key]
        w = layer.proj.weight.detach().reshape(spec.out_dim, spec.in_dim).double()
        bias = layer.proj.bias.detach().double()
        fit, fit_ref = a @ w.T + bias, a @ w_ref.T + b_ref
        scale = b.abs().max().item()
        torch.testing.assert_close(fit, fit_ref, rtol=1e-3, atol=1e-4 * scale)
        well_determined.append(a.shape[0] > 4 * (spec.in_dim + 1))
        if well_determined[-1]:  # the solution itself is unique
            torch.testing.assert_close(w, w_ref, rtol=1e-3, atol=1e-4)
            torch.testing.assert_close(bias, b_ref, rtol=1e-3, atol=1e-4)
        r2_ref = 1.0 - (fit_ref - b).square().sum().item() / b.square().sum().item()
        assert r2[key] == pytest.approx(r2_ref, abs=1e-5), key
        kw, kb = (t.double() for t in kaiming[key])
        kaiming_err = (a @ kw.reshape(spec.out_dim, spec.in_dim).T + kb - b).square().sum()
        assert (fit_ref - b).square().sum() < kaiming_err  # LS is the better start
    assert True in well_determined and False in well_determined  # 32x32 ResNets: early stages yes, late ones no


# -- LoRA stitching layers -------------------------------------------------------------------------


@pytest.mark.parametrize("layouts, shape", [
    (("tokens", "tokens"), (2, 5, 6)),
    (("nchw", "nchw"), (2, 6, 3, 3)),
    (("nchw", "tokens"), (2, 6, 3, 3)),
])
def test_lora_keeps_outputs_trains_only_the_update_and_merges_back(layouts, shape):
    torch.manual_seed(0)
    layer = StitchingLayer(6, 8, *layouts)
    x = torch.randn(*shape)
    with torch.no_grad():
        before = layer(x)
    layer.enable_lora(2)
    assert layer.lora_rank == 2 and tuple(layer.lora_a.shape) == (2, 6) and tuple(layer.lora_b.shape) == (8, 2)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), before)  # B starts at zero
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"proj.bias", "lora_a", "lora_b"}
    layer(x).square().sum().backward()
    assert layer.proj.weight.grad is None and layer.lora_b.grad is not None and layer.proj.bias.grad is not None

    with torch.no_grad():
        layer.lora_b.normal_()  # as after some training
        updated = layer(x)
    assert not torch.allclose(updated, before)
    layer.merge_lora()
    assert layer.lora_rank == 0 and not hasattr(layer, "lora_a") and not hasattr(layer, "lora_b")
    assert layer.proj.weight.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(layer(x), updated, rtol=1e-5, atol=1e-5)
    assert {n for n, _ in layer.named_parameters()} == {"proj.weight", "proj.bias"}
    with pytest.raises(ValueError, match="rank must be >= 1"):
        layer.enable_lora(0)


def test_lora_on_the_supernet_keeps_outputs_and_one_step_moves_only_the_update(net):
    net = copy.deepcopy(net)
    stitch = _stitched(net, 1)
    x, y = _images(2, seed=5), torch.tensor([1, 7])
    with torch.no_grad():
        before = net(x, stitch.stitch_id)
    for p in net.anchors.parameters():  # what the training loop does in mode 'lora'
        p.requires_grad_(False)
    for layer in net.stitch_layers.values():
        layer.enable_lora(4)
    with torch.no_grad():
        torch.testing.assert_close(net(x, stitch.stitch_id), before)
    key = stitch.layers[0]
    layer = net.stitch_layers[key]
    weight, b = layer.proj.weight.detach().clone(), layer.lora_b.detach().clone()
    anchor_param = next(net.anchors.parameters()).detach().clone()
    bias_before = {k: lay.proj.bias.detach().clone() for k, lay in net.stitch_layers.items()}
    groups = net.param_groups(1e-3, 1e-2, 0.05)
    assert {g["name"] for g in groups} == {"stitch_layers", "stitch_layers_no_decay"}
    opt = torch.optim.AdamW(groups)
    loss = step_loss(SupernetStep(net)(x, (stitch.stitch_id,)), y, "uniform")
    loss.backward()
    opt.step()
    assert torch.equal(layer.proj.weight, weight) and torch.equal(next(net.anchors.parameters()), anchor_param)
    assert not torch.equal(layer.lora_b, b)  # the low-rank update learns
    bias_moved = [not torch.equal(lay.proj.bias, bias_before[k]) for k, lay in net.stitch_layers.items()]
    assert bias_moved == [k in stitch.layers for k in net.stitch_layers]  # only the used layer's bias
    with torch.no_grad():
        trained = net(x, stitch.stitch_id)
        for lay in net.stitch_layers.values():
            lay.merge_lora()
        torch.testing.assert_close(net(x, stitch.stitch_id), trained, rtol=1e-4, atol=1e-4)


# -- summary ---------------------------------------------------------------------------------------


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 100, 1000]) == pytest.approx(1.0)  # ranks, not values
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4) -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert spearman([1], [2]) is None and spearman([], []) is None  # undefined: the summary says n/a
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # constant: undefined


def test_spearman_agrees_with_scipy_on_ties():
    stats = pytest.importorskip("scipy.stats")
    x = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    y = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def _row(anchors, top1, flops, stitch_id=0, cuts=()):
    return {"anchors": list(anchors), "top1": top1, "flops": flops, "stitch_id": stitch_id, "cuts": list(cuts)}


def test_interpolation_stats_on_hand_made_rows():
    rows = [
        _row(["A"], 60.0, 1),
        _row(["B"], 80.0, 4),
        _row(["A", "B"], 70.0, 2),  # inside
        _row(["A", "B"], 80.5, 2),  # inside by the slack
        _row(["A", "B"], 59.5, 2),  # inside by the slack
        _row(["A", "B"], 58.9, 2),  # below
        _row(["B", "A"], 90.0, 3),  # above
        _row(["C", "D"], 70.0, 3),  # no anchor rows: not counted
    ]
    assert interpolation_stats(rows) == (3, 5)
    assert interpolation_stats(rows, slack=0.0) == (1, 5)
    assert interpolation_stats(rows, slack=20.0) == (5, 5)
    assert interpolation_stats(rows[:2]) == (0, 0)


def test_best_under_on_hand_made_rows():
    rows = [
        _row(["A"], 60.0, 100, 0),
        _row(["B"], 80.0, 400, 1),
        _row(["A", "B"], 70.0, 200, 2),
        _row(["A", "B"], 70.0, 150, 3),  # same top-1, fewer FLOPs: preferred
        _row(["A", "B"], 65.0, 120, 4),
    ]
    assert best_under(rows, 99) is None
    assert best_under(rows, 100)["stitch_id"] == 0  # the budget itself fits
    assert best_under(rows, 149)["stitch_id"] == 4
    assert best_under(rows, 250)["stitch_id"] == 3
    assert best_under(rows, 400)["stitch_id"] == 1
    assert best_under([], 1e12) is None


def test_summarize_contains_the_expected_lines(net):
    space = net.space
    # anchors at 50% and 80%; stitched top-1 grows with FLOPs inside [51, 79]: every stitch lies
    # between its anchors, Spearman(FLOPs, top-1) over the stitched rows is 1, and ResNet-50 is best
    stitched_flops = [s.flops for s in space if not s.is_anchor]
    lo, hi = min(stitched_flops), max(stitched_flops)
    top1 = {s.stitch_id: 51.0 + 28.0 * (s.flops - lo) / (hi - lo) for s in space}
    top1.update({s.stitch_id: 50.0 if space.names(s) == ("resnet18",) else 80.0 for s in space if s.is_anchor})
    results = {str(i): [t, min(100.0, t + 20)] for i, t in top1.items()}
    r2 = {key: v for key, v in zip(space.layers, (0.5, 0.6, 0.7, 0.8))}
    rows = catalog_rows(TrainConfig(), space, results, r2, "")
    text = summarize(space, rows, r2=r2)
    lines = text.splitlines()
    assert lines[1].startswith("== summary ")
    anchors_line = next(line for line in lines if line.startswith("anchors:  "))
    assert anchors_line.index("resnet18 (") < anchors_line.index("  <  ") < anchors_line.index("resnet50 (")
    stitched = len(space) - 2
    assert f"stitches: {len(space)} (2 anchors + {stitched} stitched), {len(space.layers)} stitching layers" in text
    assert "LS init:  R^2 per stitching layer min 0.500, mean 0.650, max 0.800" in text
    assert f"{stitched}/{stitched} stitches lie between their anchors' top-1 (+-1 point)" in text
    assert "Spearman(FLOPs, top-1) = 1.00" in text
    assert "best stitch under a FLOPs budget:" in text
    largest = max(r["flops"] for r in rows)
    # a budget that nothing fits says so (here 25% of the largest is below ResNet-18's FLOPs; issue 14)
    fractions = [f for f in (0.25, 0.5, 0.75, 1.0) if best_under(rows, f * largest) is not None]
    assert fractions == [0.5, 0.75, 1.0]
    budget_lines = lines[lines.index("best stitch under a FLOPs budget:") + 2:]
    assert budget_lines[0].split()[0] == "25%" and budget_lines[0].endswith("none fits")
    budget_lines = budget_lines[1:]
    assert [line.split()[0] for line in budget_lines] == [f"{f:.0%}" for f in fractions]
    for line, fraction in zip(budget_lines, fractions):
        best = best_under(rows, fraction * largest)
        described = " > ".join(best["anchors"])
        if len(best["anchors"]) > 1:
            described += " @ " + " ".join(f"[{j},{k}]" for j, k in best["cuts"])
        assert line.endswith(f"#{best['stitch_id']} {described}"), line
        assert f"{best['top1']:.1f}%" in line
    assert budget_lines[-1].endswith("resnet50")
    assert "top-1:    stitched 51.0% .. 79.0% (mean " in text
    without_r2 = summarize(space, rows)
    assert "LS init" not in without_r2
