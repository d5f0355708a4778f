"""The GPU speed option (issue 27): ``gpu_speed`` validated and resolved (on with ``use_gpu``, off without),
each measure applied where training applies it, and none of them changing the numerics: 20-step loss curves
from the same seed agree with the option off. CPU tests compile with Dynamo's ``aot_eager`` backend (inductor's
C++ compiling takes minutes here); the ``gpu`` test uses inductor and CUDA graphs under bf16 autocast."""

import pytest
import torch

import orchestrator.data.demo_anchors as demo
from orchestrator.train import speed
from orchestrator.train.__main__ import config_from_args, parse_args
from orchestrator.train.config import TrainConfig
from orchestrator.train.optim import make_optimizer
from orchestrator.train.recipe import SupernetRecipe
from orchestrator.train.steps import step_loss
from search_spaces import TrainingSection
from search_spaces.training import SPEED_MEASURES, SPEED_ON
from snnet import SNNetError, build_supernet
from snnet.compile import compile_counts, uncompile_units
from snnet.sampling import make_rule

#: |loss(option) - loss(off)| over 20 float32 steps on CPU. Seen: 2.4e-7 for fused AdamW (its kernel orders the
#: update's arithmetic differently), 0 for the others (aot_eager runs the same kernels; the SDPA order changes no
#: kernel where the math backend is the one that fits).
CPU_TOLERANCE = 1e-5
#: The same on a GPU under bf16 autocast, inductor's fused kernels against eager's: bf16 keeps 8 bits of mantissa
#: (relative steps of 0.4%), and a loss near 2.3 moves by about 0.01 per rounding step of the logits it averages.
GPU_TOLERANCE = 0.05


# -- the setting ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, canonical", [
    ("auto", "auto"), ("off", "off"), (" on ", "on"), (False, "off"), (True, "on"), ("fused_adamw", "fused_adamw"),
    ("sdpa_cudnn, fused_adamw", "fused_adamw,sdpa_cudnn"),
    ("cudagraphs,fused_adamw,cudagraphs", "fused_adamw,cudagraphs"),
])
def test_gpu_speed_takes_auto_off_on_or_measures_in_canonical_order(given, canonical):
    assert TrainConfig(gpu_speed=given).gpu_speed == canonical
    assert TrainConfig().gpu_speed == "off"  # until a GPU run measures what pays


@pytest.mark.parametrize("bad, words", [
    ("fused_adam", "did you mean 'fused_adamw'"), ("", "unknown measure ''"),
    ("on,fused_adamw", "unknown measure 'on'"),
    ("compile,cudagraphs", "one of 'compile' and 'cudagraphs'"), ("sdpa_flash,sdpa_cudnn", "one of 'sdpa_flash'"),
    (3, "got 3"),
])
def test_a_bad_gpu_speed_says_what_must_hold(bad, words):
    with pytest.raises(SNNetError, match="gpu_speed must") as e:
        TrainConfig(gpu_speed=bad)
    assert words in str(e.value)


def test_auto_is_on_with_use_gpu_and_off_without():
    assert TrainConfig().speed_measures() == ()
    assert TrainConfig(use_gpu=True).speed_measures() == ()  # the default stays off until a GPU run measures it
    assert TrainConfig(use_gpu=True, gpu_speed="auto").speed_measures() == SPEED_ON
    assert TrainConfig(gpu_speed="auto").speed_measures() == ()
    assert TrainConfig(use_gpu=True, gpu_speed="off").speed_measures() == ()
    assert TrainConfig(gpu_speed="on").speed_measures() == SPEED_ON  # forced, on CPU too
    assert TrainConfig(use_gpu=True, gpu_speed="sdpa_flash").speed_measures() == ("sdpa_flash",)
    assert set(SPEED_ON) <= set(SPEED_MEASURES)


def test_gpu_speed_comes_from_the_flag_set_and_a_space():
    assert config_from_args(parse_args(["--gpu-speed", "fused_adamw"])).gpu_speed == "fused_adamw"
    assert config_from_args(parse_args(["--set", "training.gpu_speed=off"])).gpu_speed == "off"  # YAML's false
    assert config_from_args(parse_args(["--set", "training.gpu_speed=sdpa_flash"])).gpu_speed == "sdpa_flash"
    assert TrainingSection.model_validate({"gpu_speed": ["off", "on"]}).gpu_speed.values == ("off", "on")
    with pytest.raises(Exception, match="unknown measure 'cuda_graphs'"):
        TrainingSection.model_validate({"gpu_speed": "cuda_graphs"})


# -- where each measure acts ------------------------------------------------------------------------------------

def _net():
    torch.manual_seed(0)
    return build_supernet(list(demo.DEMO_ANCHORS[:3]), img_size=16).train()


def test_fused_adamw_reaches_the_optimizer_and_only_with_its_measure():
    net = _net()
    assert make_optimizer(net, TrainConfig(gpu_speed="fused_adamw"), 1).defaults["fused"] is True
    assert not make_optimizer(net, TrainConfig(gpu_speed="off"), 1).defaults.get("fused")
    assert not make_optimizer(net, TrainConfig(gpu_speed="compile"), 1).defaults.get("fused")
    sgd = make_optimizer(net, TrainConfig(gpu_speed="fused_adamw", optimizer="sgd"), 1)  # names AdamW's kernel only
    assert isinstance(sgd, torch.optim.SGD) and not sgd.defaults.get("fused")


def test_compile_blocks_compiles_the_units_and_cudagraphs_asks_inductor_for_reduce_overhead(monkeypatch):
    calls = []
    monkeypatch.setattr(speed, "compile_units", lambda net, **kw: calls.append(kw) or ["unit"])
    net = _net()
    assert speed.compile_blocks(net, ("fused_adamw", "sdpa_flash")) == [] and calls == []
    assert speed.compile_blocks(net, ("compile",)) == ["unit"]
    speed.compile_blocks(net, ("cudagraphs",))
    speed.compile_blocks(net, ("cudagraphs",), backend="aot_eager")
    assert calls == [{"backend": "inductor"}, {"backend": "inductor", "mode": "reduce-overhead"},
                     {"backend": "aot_eager"}]


def test_step_context_orders_the_sdpa_backends_and_marks_cudagraph_steps(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    before = torch._C._get_sdp_priority_order()
    with speed.step_context(("sdpa_cudnn",)):
        inside = torch._C._get_sdp_priority_order()
    assert inside[0] == int(torch.nn.attention.SDPBackend.CUDNN_ATTENTION) and inside != before
    assert torch._C._get_sdp_priority_order() == before  # restored on the way out
    assert marks == []
    with speed.step_context(("cudagraphs",)):
        pass
    assert marks == [1]


def test_the_recipes_forward_context_carries_the_measures(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    space = _net().space
    with SupernetRecipe(TrainConfig(gpu_speed="cudagraphs"), space).autocast():
        pass
    with SupernetRecipe(TrainConfig(gpu_speed="off"), space).autocast():
        pass
    assert marks == [1]


# -- numerics ---------------------------------------------------------------------------------------------------

def loss_curve(gpu_speed: str, steps: int = 20, device: str = "cpu", backend: str = "aot_eager") -> list[float]:
    """``steps`` uniform-sampling steps of the demo's Ti/S/B-like supernet from seed 0, as training runs them:
    the run's optimizer (:func:`make_optimizer`), its compiled blocks and its forward context."""
    net = _net().to(device)
    config = TrainConfig(gpu_speed=gpu_speed, anchor_lr=1e-3, stitch_lr=1e-3)
    measures = config.speed_measures()
    opt = make_optimizer(net, config, 1)
    torch._dynamo.reset()
    compiled = speed.compile_blocks(net, measures, backend=backend)
    graphs = compile_counts()["graphs"]
    rule = make_rule("uniform", [s.flops for s in net.space], seed=0)
    g = torch.Generator().manual_seed(0)
    cuda = device == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    losses = []
    try:
        for t in range(steps):
            x, y = torch.randn(8, 1, 16, 16, generator=g).to(device), torch.randint(0, 10, (8,), generator=g).to(device)
            with speed.step_context(measures), autocast:
                outputs = [net(x, i) for i in rule.draw(t, 0, 1)]
            loss = step_loss(outputs, y, "uniform")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        assert not compiled or compile_counts()["graphs"] > graphs  # the compiled blocks really ran compiled
    finally:
        uncompile_units(net)
        torch._dynamo.reset()
    return losses


@pytest.fixture(scope="module")
def eager_curve():
    return loss_curve("off")


@pytest.mark.parametrize("gpu_speed", [*SPEED_MEASURES, "on"])
def test_each_measure_keeps_the_20_step_loss_curve(eager_curve, gpu_speed):
    curve = loss_curve(gpu_speed)
    assert len(curve) == len(eager_curve) == 20
    assert max(abs(a - b) for a, b in zip(curve, eager_curve)) <= CPU_TOLERANCE
    assert eager_curve[0] != eager_curve[-1]  # the steps trained: a frozen curve would agree trivially


@pytest.mark.gpu
def test_the_option_on_a_gpu_keeps_the_bf16_loss_curve():
    eager = loss_curve("off", device="cuda", backend="inductor")
    for gpu_speed in ("on", "compile,fused_adamw,sdpa_cudnn"):
        curve = loss_curve(gpu_speed, device="cuda", backend="inductor")
        assert max(abs(a - b) for a, b in zip(curve, eager)) <= GPU_TOLERANCE, gpu_speed
