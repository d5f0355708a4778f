"""Smoke tests of ``python -m benchmarks``: every benchmark runs at a tiny size and prints the
figures its contract names as numbers. No timing targets here: those belong to the benchmarks."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a top-level folder, not an installed package
    sys.path.insert(0, str(ROOT))

from snnet.sampling import RULES  # noqa: E402 - after ROOT goes on sys.path


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setenv("SNNET_BENCH_TINY", "1")


def _number(value) -> float:
    number = float(value)
    assert math.isfinite(number), value
    return number


@pytest.fixture
def bench(cli_runner):
    """``python -m benchmarks ARGS`` in the repository, a real process forked from the ``cli_runner``
    server; keyword arguments are environment variables."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return cli_runner.run("benchmarks", *args, cwd=ROOT, env={**cli_runner.env, **env}, timeout=300)

    return run


def test_unknown_benchmark_is_a_one_line_error_with_exit_2(bench):
    done = bench("space_flops", "no_such_benchmark")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_benchmark" in lines[0] and "space_flops" in lines[0]


def test_cli_prints_only_name_value_lines(bench):
    done = bench("ls_init", "gpu_train", SNNET_BENCH_TINY="1")
    assert done.returncode == 0, done.stderr
    figures = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert all(line.count(": ") >= 1 for line in done.stdout.strip().splitlines())
    for key in ("machine_cpu", "machine_torch", "machine_timm", "machine_cores"):
        assert figures[key]
    for key in ("ls_init_stream_1k_s", "ls_init_pinv_1k_s", "ls_init_stream_10k_s", "ls_init_pinv_10k_s",
                "ls_init_stream_10k_peak_mb", "ls_init_pinv_10k_peak_mb"):
        assert _number(figures[key]) >= 0
    assert _number(figures["ls_init_max_abs_diff"]) < 1e-6
    if not torch.cuda.is_available():
        assert figures["gpu_train"] == "skipped (no CUDA device)"


def test_space_flops_tiny(tiny):
    from benchmarks import space_flops

    out = space_flops.run()
    for key in ("space_flops_ours_s", "space_flops_reference_s", "space_flops_speedup"):
        assert _number(out[key]) > 0
    assert out["space_flops_reference_stitches"] == 4
    assert out["space_flops_mismatches"] == 0


def test_ddp_balance_tiny(tiny):
    from benchmarks import ddp_balance

    out = ddp_balance.run()
    for rule in RULES:
        key = rule.replace("-", "_")
        for w in (2, 8, 64):
            assert 0 < _number(out[f"ddp_balance_{key}_w{w}"]) <= 1
        assert _number(out[f"ddp_balance_{key}_measured_w2"]) > 0
    assert "ddp_balance_flops_bucket_w8" in out


def test_step_overhead_tiny(tiny):
    from benchmarks import step_overhead

    out = step_overhead.run()
    for key in ("step_overhead_ratio", "step_overhead_supernet_s", "step_overhead_plain_s"):
        assert _number(out[key]) > 0
    assert out["step_overhead_same_logits"] == 1


def test_gpu_train_measure_runs_on_cpu():
    import orchestrator.data.demo_anchors as demo
    from benchmarks import gpu_train

    out = gpu_train.measure("cpu", anchors=demo.DEMO_ANCHORS[:2], batch=4, steps=1, warmup=1, img_size=16)
    for key in ("gpu_train_ratio", "gpu_train_supernet_samples_per_s", "gpu_train_plain_samples_per_s"):
        assert _number(out[key]) > 0


def test_gpu_speed_break_even_counts_the_steps_that_pay_back_the_warm_up():
    from benchmarks.gpu_train import _break_even

    # batch 100: eager 1 s a step, the option 0.5 s; over 2 warm-up steps the option spent 10 s more than its
    # steady rate gives (11 against 1), eager none (2 against 2): 10 s / 0.5 s saved a step = 20 steps
    eager, option = {"img_s": 100.0, "warm_s": 2.0}, {"img_s": 200.0, "warm_s": 11.0}
    assert _break_even(eager, option, batch=100, warm=2) == 20
    assert _break_even(eager, {"img_s": 90.0, "warm_s": 11.0}, batch=100, warm=2).startswith("never")


def test_gpu_speed_runs_on_cpu_from_the_same_weights(monkeypatch):
    from benchmarks import gpu_bench, gpu_train
    from snnet.compile import unit_modules

    monkeypatch.setenv("SNNET_GPU_COMPILE_BACKEND", "eager")
    b = gpu_bench.Bench(gpu_bench.Settings("cpu", tiny=True))
    net = b.supernet()
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    pool = [(b.x, b.y), (b.x.flip(0), b.y.flip(0))]
    runs = {v: gpu_train.speed_run(b, net, init, v, lambda t: [t % len(net.space)], 5, 2, pool) for v in ("off", "on")}
    for run in runs.values():
        assert len(run["losses"]) == 5 and run["img_s"] > 0 and run["warm_s"] > 0
    assert runs["off"]["losses"][0] != runs["off"]["losses"][-1]
    assert max(abs(a - c) for a, c in zip(runs["off"]["losses"], runs["on"]["losses"])) <= 1e-3
    assert all(m._compiled_call_impl is None for m in unit_modules(net))  # eager again afterwards


# -- the GPU check's Python part (benchmarks/gpu_bench.py), at its CPU smoke-test size ----------


@pytest.fixture(scope="module")
def demo_space():
    import orchestrator.data.demo_anchors as demo
    from snnet import build_supernet

    return build_supernet(list(demo.DEMO_ANCHORS)).space


def test_gpu_bench_anchor_shares_add_up_to_each_stitchs_flops(demo_space):
    from benchmarks.gpu_bench import anchor_shares

    for stitch in demo_space:
        shares = anchor_shares(demo_space, stitch)
        total = sum(share * demo_space.profiles[a].flops for a, share in shares.items())
        assert round(total) == stitch.flops
        if not stitch.cuts:
            assert shares == {stitch.anchors[0]: 1.0}
        else:
            assert set(shares) == set(stitch.anchors)


def test_gpu_bench_peak_table():
    from benchmarks.gpu_bench import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("some cpu") is None


def _figures(capsys) -> dict[str, str]:
    out = capsys.readouterr().out.strip().splitlines()
    assert all(": " in line for line in out), out
    return dict(line.split(": ", 1) for line in out)


def test_gpu_bench_parts_run_on_cpu_at_tiny_size(capsys, monkeypatch):
    from benchmarks import gpu_bench

    monkeypatch.setenv("SNNET_GPU_UNIFORM_STEPS", "3")
    monkeypatch.setenv("SNNET_GPU_STEPS", "1")
    monkeypatch.setenv("SNNET_GPU_COMPILE_BACKEND", "eager")
    s = gpu_bench.Settings("cpu", tiny=True)
    gpu_bench.part_throughput(s)
    figures = _figures(capsys)
    assert not [k for k, v in figures.items() if v.startswith("error")], figures
    for key in ("gpu_tput_ratio_b", "gpu_tput_plain_b_img_s", "gpu_tput_super_b_img_s", "gpu_tput_uniform_img_s",
                "gpu_tput_uniform_expected_img_s", "gpu_tput_plain_t_img_s", "gpu_tput_plain_s_img_s"):
        assert _number(figures[key]) > 0
    assert figures["gpu_tput_stitches"] == "35"

    gpu_bench.part_eval(s)
    figures = _figures(capsys)
    assert figures["gpu_eval_stitches"] == "35"
    assert len([k for k in figures if k.startswith("gpu_eval_s") and k.endswith("_img_s")]) == 35
    assert not [k for k, v in figures.items() if v.startswith("error")], figures

    gpu_bench.part_compile(s)
    figures = _figures(capsys)
    assert not [k for k, v in figures.items() if v.startswith("error")], figures
    assert figures["gpu_compile_recompiles"] == "0"
    assert int(figures["gpu_compile_warmup_graphs"]) >= 3
    assert _number(figures["gpu_compile_speedup"]) > 0


def test_serve_slo_trace_is_seeded_and_bursty():
    from benchmarks.serve_slo import bursty_trace

    arrivals, windows = bursty_trace(0, duration_s=60, base_rate=2.0, burst_rate=8.0, burst_s=8, bursts=3)
    again, _ = bursty_trace(0, duration_s=60, base_rate=2.0, burst_rate=8.0, burst_s=8, bursts=3)
    assert arrivals == again and arrivals == sorted(arrivals) and 0 <= arrivals[0] and arrivals[-1] < 60
    assert len(windows) == 3 and all(b - a == pytest.approx(8) for a, b in windows)
    inside = sum(1 for t in arrivals if any(a <= t < b for a, b in windows))
    # 24 s of bursts at 8/s and 36 s at 2/s: about 192 and 72 arrivals
    assert 150 < inside < 240 and 45 < len(arrivals) - inside < 100


def test_serve_slo_summary_counts_unanswered_requests_as_misses():
    from benchmarks.serve_slo import summarize

    figures = summarize([10.0, 30.0, None, 20.0], [80.0, 70.0, 75.0], slo_ms=25.0, duration_s=2.0,
                        stitches=[9, 0, 9])
    assert figures["attainment"] == 0.5 and figures["throughput"] == 1.5
    assert figures["mean_top1"] == 75.0 and figures["p50_ms"] == 20.0 and figures["p99_ms"] == 30.0
    assert figures["stitches"] == "9:2 0:1"


def test_serve_slo_uses_the_released_deit_accuracies_and_serves_front_points():
    from benchmarks.serve_slo import RELEASED_DEIT_TOP1, _front

    assert len(RELEASED_DEIT_TOP1) == 71 and RELEASED_DEIT_TOP1[:3] == (70.564, 79.464, 81.934)
    flops = [1, 2, 3, 4, 5]
    top1 = [10.0, 30.0, 20.0, 40.0, 45.0]
    assert _front(flops, top1, 8) == [0, 1, 3, 4]
    assert _front(flops, top1, 2) == [0, 4]


def test_stitch_ranking_statistics_on_planted_rows():
    """The residual is top-1 minus the trained anchors' line; a predictor equal to a target ranks it at 1
    with the interval [1, 1]; a reversed one at -1."""
    import numpy as np

    from benchmarks.stitch_ranking import _table, correlations

    def row(i, anchors, flops, top1, cka):
        return {"stitch_id": i, "anchors": anchors, "flops": flops, "params": flops, "top1": top1, "ls_r2": cka,
                "init_cka": cka, "init_kl": 1 - cka, "init_top1": top1 - 5}

    rows = [row(0, ["a"], 10, 50.0, 1.0), row(1, ["b"], 30, 70.0, 1.0)]
    rows += [row(2 + i, ["a", "b"], 15 + 3 * i, 55.0 + 3 * i + (-1) ** i, 0.5 + 0.1 * (-1) ** i) for i in range(4)]
    table = _table(rows)
    np.testing.assert_allclose(table["residual"], [1, -1, 1, -1])  # the line is 50 + (flops - 10)
    np.testing.assert_allclose(table["interp"], [50.0, 53.0, 56.0, 59.0])  # the anchors' init top-1 (45, 65)
    rho, tau, lo, hi, _ = correlations([table, table], "cka", "residual", boot=50)
    assert (rho, tau, lo, hi) == (1.0, 1.0, 1.0, 1.0)
    assert correlations([table], "kl", "residual", boot=0)[0] == 1.0  # -kl: lower divergence ranks higher


def test_stitch_ranking_rule_entries_and_their_figure_names():
    """``RULE:KEY=VALUE:...`` gives a rule its options (numbers as numbers); a variant's compare group becomes a
    figure name of letters, digits and single underscores."""
    from benchmarks.stitch_ranking import _label, _rule_entry

    assert _rule_entry("uniform") == ("uniform", {}, "uniform")
    name, options, label = _rule_entry("scored:score=init_top1:focus=front:temperature=0.1:update=loss:floor=1")
    assert name == "scored" and label == "scored-scoreinit_top1-focusfront-temperature0.1-updateloss-floor1"
    assert options == {"score": "init_top1", "focus": "front", "temperature": 0.1, "update": "loss", "floor": 1}
    assert _label("scored(focus=front, score=init_top1, temperature=0.1)") == \
        "scored_focus_front_score_init_top1_temperature_0_1"
