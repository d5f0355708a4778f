"""Export of one stitch as a standalone ``torch.export`` program, and latency measurement.

No Ray: each trial's checkpoint folder is made here the way ``orchestrator.train.worker`` writes it
(``state.pt`` with model, step, epoch, r2, evaluated, train_config, space) and its catalog rows
with :func:`orchestrator.train.launch.catalog_rows` and :class:`CatalogWriter`. Three trials:

* ``demo/t-vit``: the three demo ViTs (random weights, 16x16x1), with measured latencies;
* ``demo/t-lora``: the first two demo ViTs with unmerged LoRA updates in the stitching layers;
* ``cnn/t-resnet``: ResNet-18 -> ResNet-50 at 32x32, 10 classes (1x1-conv stitching layers, BN).

The exported programs are run in a fresh Python that cannot import snnet, orchestrator or timm.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import import_blocker
from torch import nn

import orchestrator.data.demo_anchors  # registers the demo anchors with timm
from orchestrator.catalog import CatalogWriter
from orchestrator.data.demo_anchors import DEMO_ANCHORS
from orchestrator.export import ExportResult, select_row
from orchestrator.export.__main__ import _summary, main
from orchestrator.export.checkpoint import load_state, rebuild_supernet
from orchestrator.train.config import TrainConfig
from orchestrator.train.launch import catalog_rows
from snnet import AnchorSpec, SNNetError, build_supernet
from snnet.extract import Pruned, extract_stitch
from snnet.latency import measure_latency, measure_space_latency


def _save_trial(root: Path, catalog: Path, sweep: str, trial: str, net, config: TrainConfig,
                seed: int, latency: bool = False, selection: bool = False) -> tuple[str, dict, dict]:
    """A checkpoint folder in training's format plus the trial's catalog rows; returns (folder, results,
    selection top-1s): with ``selection`` the rows carry a ``top1_selection`` drawn apart from ``top1``."""
    folder = root / "runs" / f"{sweep}-{trial}" / "checkpoint_000001"
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    results = {str(s.stitch_id): [round(rng.uniform(10, 90), 3), 99.0] for s in net.space}
    held_out = {str(s.stitch_id): round(rng.uniform(10, 90), 3) for s in net.space} if selection else {}
    torch.save({
        "model": net.state_dict(), "optimizer": None, "scheduler": None, "step": 7, "epoch": 1,
        "r2": {}, "evaluated": results, "train_config": config.model_dump(), "space": net.space.to_json(),
    }, folder / "state.pt")
    rows = catalog_rows(config, net.space, results, {}, str(folder), selection=held_out)
    if latency:
        for row in rows:
            row["latency_ms"] = row["flops"] / 1e6
    CatalogWriter(str(catalog), sweep).write_trial(trial, rows)
    return str(folder), results, held_out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The three trials in one catalog, with the supernets that produced them (outputs to compare)."""
    root = tmp_path_factory.mktemp("export")
    catalog = root / "catalog"
    torch.manual_seed(0)
    # Anchor specs point at files that do not exist: export must take every weight from state.pt.
    vit_specs = [AnchorSpec(n, checkpoint=str(root / f"gone-{n}.pth")) for n in DEMO_ANCHORS]
    vit = build_supernet([AnchorSpec(n) for n in DEMO_ANCHORS]).eval()
    vit_config = TrainConfig(anchors=vit_specs, dataset="demo", sweep="demo", trial_id="t-vit")
    vit_ckpt, vit_results, vit_selection = _save_trial(root, catalog, "demo", "t-vit", vit, vit_config, seed=1,
                                                       latency=True, selection=True)

    lora = build_supernet([AnchorSpec(n) for n in DEMO_ANCHORS[:2]]).eval()
    for layer in lora.stitch_layers.values():
        layer.enable_lora(3)
        with torch.no_grad():
            layer.lora_b.normal_(0, 0.5)  # a real update, so merging matters
    lora_config = TrainConfig(anchors=vit_specs[:2], mode="lora", lora_rank=3, sweep="demo", trial_id="t-lora")
    lora_ckpt, *_ = _save_trial(root, catalog, "demo", "t-lora", lora, lora_config, seed=2)

    resnet_specs = [AnchorSpec(n, kwargs={"num_classes": 10}) for n in ("resnet18", "resnet50")]
    cnn = build_supernet(resnet_specs, img_size=32).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, which must travel as buffers
        for m in cnn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    cnn_config = TrainConfig(anchors=resnet_specs, dataset="imagenet-folder", image_size=32, sweep="cnn",
                             trial_id="t-resnet")
    cnn_ckpt, *_ = _save_trial(root, catalog, "cnn", "t-resnet", cnn, cnn_config, seed=3)
    return dict(root=root, catalog=str(catalog), vit=vit, lora=lora, cnn=cnn, vit_results=vit_results,
                vit_selection=vit_selection, vit_ckpt=vit_ckpt, lora_ckpt=lora_ckpt, cnn_ckpt=cnn_ckpt)


def _junction(net, index: int = 0):
    return [s for s in net.space if not s.is_anchor][index]


# -- snnet.extract.extract_stitch ------------------------------------------------------------------


def test_extract_keeps_exactly_the_stitchs_weights_and_outputs(world):
    net = world["vit"]
    total = sum(p.numel() for p in net.parameters())
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for stitch in list(net.space)[:3] + [s for s in net.space if not s.is_anchor][::6]:
        module = extract_stitch(net, stitch).eval()
        assert sum(p.numel() for p in module.parameters()) == stitch.params, stitch
        torch.testing.assert_close(module(x), net(x, stitch))
    assert sum(p.numel() for p in net.parameters()) == total  # the supernet is left whole
    # A front anchor keeps no head, a back anchor no patch embedding or class token.
    cut = next(s for s in net.space if s.anchors == (0, 1) and s.cuts[0][1] > 1)
    module = extract_stitch(net, cut)
    front, back = module.anchors["0"].model, module.anchors["1"].model
    assert isinstance(front.head, Pruned) and isinstance(back.patch_embed, Pruned)
    assert "cls_token" not in dict(back.named_parameters()) and isinstance(back.blocks[0], Pruned)
    with pytest.raises(RuntimeError, match="pruned"):
        front.head(torch.zeros(1, 32))


def test_extract_cnn_carries_only_used_buffers(world):
    net = world["cnn"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for stitch in [net.space[0], _junction(net, -1)]:
        module = extract_stitch(net, stitch).eval()
        assert sum(p.numel() for p in module.parameters()) == stitch.params
        torch.testing.assert_close(module(x), net(x, stitch))
    stitch = next(s for s in net.space if s.cuts == ((3, 5),))  # resnet18 up to layer2 -> resnet50 layer2..
    module = extract_stitch(net, stitch).eval()
    assert sum(p.numel() for p in module.parameters()) == stitch.params
    torch.testing.assert_close(module(x), net(x, stitch))
    keys = module.state_dict().keys()
    assert not any(k.startswith("anchors.0.model.layer3") or k.startswith("anchors.0.model.fc") for k in keys)
    assert not any(k.startswith("anchors.1.model.layer1") or k.startswith("anchors.1.model.bn1") for k in keys)


# -- rebuilding a trial's supernet -----------------------------------------------------------------


def test_lora_checkpoint_merges_into_the_same_function(world):
    state = load_state(world["lora_ckpt"])
    assert any(k.endswith("lora_a") for k in state["model"])
    rebuilt = rebuild_supernet(state)
    assert all(layer.lora_rank == 0 and not hasattr(layer, "lora_a") for layer in rebuilt.stitch_layers.values())
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    for stitch in rebuilt.space:
        torch.testing.assert_close(rebuilt(x, stitch.stitch_id), world["lora"](x, stitch.stitch_id),
                                   rtol=1e-4, atol=1e-5)
        assert sum(p.numel() for p in rebuilt.stitch_parameters(stitch)) == stitch.params


def test_checkpoint_uri_is_read_through_pyarrow(world):
    state = load_state("file://" + world["vit_ckpt"])
    assert state["step"] == 7 and set(state["model"]) == set(world["vit"].state_dict())


# -- choosing the row ------------------------------------------------------------------------------


def test_budget_takes_the_best_selection_top1_under_it(world):
    """A budget chooses on top1_selection (the held-out split), never on top1 (the reported one),
    where the rows have it; t-vit's two top-1s are drawn apart, so the choices differ."""
    net, results, selection = world["vit"], world["vit_results"], world["vit_selection"]
    flops = sorted(s.flops for s in net.space)
    differ = 0
    for budget in (flops[0], flops[3], flops[len(flops) // 2], flops[-1]):
        row = select_row(world["catalog"], sweep="demo", trial="t-vit", max_flops=budget)
        fitting = [s for s in net.space if s.flops <= budget]
        best = max(fitting, key=lambda s: selection[str(s.stitch_id)])
        assert row["stitch_id"] == best.stitch_id and row["flops"] <= budget
        assert (row["chosen_by"], row["chosen_note"]) == ("top1_selection", None)
        assert (row["top1"], row["top1_selection"]) == (results[str(best.stitch_id)][0], selection[str(best.stitch_id)])
        differ += best is not max(fitting, key=lambda s: results[str(s.stitch_id)][0])
    assert differ  # the test tells the two columns apart
    # human units, and a latency budget (latency_ms = MFLOPs in this trial)
    row = select_row(world["catalog"], sweep="demo", trial="t-vit", max_flops=f"{flops[5] / 1e6}M")
    assert row["flops"] <= flops[5]
    row = select_row(world["catalog"], max_latency_ms=flops[5] / 1e6)  # only t-vit has latencies
    best = max((s for s in net.space if s.flops <= flops[5]), key=lambda s: selection[str(s.stitch_id)])
    assert (row["trial_id"], row["stitch_id"]) == ("t-vit", best.stitch_id)
    assert select_row(world["catalog"], trial="t-vit", stitch=3)["chosen_by"] is None  # named, not chosen


def test_budget_over_rows_without_a_selection_split_chooses_on_top1_and_says_so(world):
    """t-lora's rows have no top1_selection (an older catalog, or selection_fraction: 0): top1 chooses;
    mixed with t-vit's rows, which have it, top1 chooses for all of them (the splits do not compare)."""
    from orchestrator.catalog import load

    rows = load(world["catalog"], sweep="demo")
    budget = int(rows["flops"].max())
    for trial in ("t-lora", None):
        row = select_row(world["catalog"], sweep="demo", trial=trial, max_flops=budget)
        mine = rows if trial is None else rows[rows["trial_id"] == trial]
        assert row["top1"] == mine["top1"].max() and row["chosen_by"] == "top1"
        lacking = int(mine["top1_selection"].isna().sum())
        assert row["chosen_note"] == (
            f"chosen on top1, the evaluation split: {lacking} of the {len(mine)} candidate row(s) have no "
            "top1_selection (a catalog written before it existed, or trials run with training.selection_fraction: 0)")


def test_export_by_budget_writes_program_and_card(world, tmp_path, capsys):
    out = tmp_path / "deploy" / "best.pt2"
    budget = sorted(s.flops for s in world["vit"].space)[10]
    assert main([world["catalog"], "--sweep", "demo", "--trial", "t-vit", "--max-flops", str(budget),
                 "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    row = select_row(world["catalog"], sweep="demo", trial="t-vit", max_flops=budget)
    assert card["source"]["stitch_id"] == row["stitch_id"] and card["top1"] == row["top1"]
    stitch = world["vit"].space[row["stitch_id"]]
    assert (card["flops"], card["params"]) == (stitch.flops, stitch.params)
    assert card["anchors"] == list(world["vit"].space.names(stitch)) and card["cuts"] == [list(c) for c in stitch.cuts]
    assert card["input"]["shape"] == ["batch", 1, 16, 16] and card["input"]["dynamic_batch"]
    assert card["input"]["normalization"]["mean"] == list(orchestrator.data.demo_anchors.DEMO_MEAN)
    assert card["latency_ms"] == pytest.approx(stitch.flops / 1e6) and card["source"]["trial_id"] == "t-vit"
    assert f"stitch {row['stitch_id']}" in shown and "MB" in shown and "top-1" in shown
    # both top-1s on the card, and which one chose; the summary says it too
    assert (card["top1_selection"], card["chosen_by"], card["chosen_note"]) == (
        world["vit_selection"][str(row["stitch_id"])], "top1_selection", None)
    assert f"top-1 {row['top1']:.2f}% (selection split {row['top1_selection']:.2f}%)" in shown
    assert "chosen on top1_selection, the split held out of training" in shown
    note = "chosen on top1, the evaluation split: 3 of"
    fallback = dict(card, top1_selection=None, chosen_by="top1", chosen_note=note)
    result = ExportResult(out, out.with_suffix(".json"), None, row, stitch, fallback)
    assert f"\n  {note}\n" in _summary(result)
    assert "selection split" not in _summary(result).splitlines()[2]


# -- the exported program stands alone ---------------------------------------------------------------

FRESH = import_blocker("snnet", "orchestrator", "timm") + """
import torch
inputs = torch.load(sys.argv[1])
outputs = {}
for name, (path, x) in inputs.items():
    model = torch.export.load(path).module()
    outputs[name] = model(x)
torch.save(outputs, sys.argv[2])
assert not any(m.split('.')[0] in {'snnet', 'orchestrator', 'timm'} for m in sys.modules)
"""


def test_exported_stitches_run_in_plain_pytorch(world, tmp_path, capsys):
    cases = {  # name: (net, sweep, trial, stitch, input shape)
        "vit": (world["vit"], "demo", "t-vit", _junction(world["vit"], 20), (3, 1, 16, 16)),
        "lora": (world["lora"], "demo", "t-lora", _junction(world["lora"], 4), (2, 1, 16, 16)),
        "resnet": (world["cnn"], "cnn", "t-resnet", _junction(world["cnn"], 6), (1, 3, 32, 32)),
    }
    inputs, expected = {}, {}
    for name, (net, sweep, trial, stitch, shape) in cases.items():
        out = tmp_path / f"{name}.pt2"
        assert main([world["catalog"], "--sweep", sweep, "--trial", trial, "--stitch", str(stitch.stitch_id),
                     "--out", str(out)]) == 0, capsys.readouterr().err
        program = torch.export.load(str(out))
        params = sum(v.numel() for k, v in program.state_dict.items() if k in program.graph_signature.parameters)
        assert params == stitch.params
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(len(name)))
        inputs[name] = (str(out), x)
        with torch.no_grad():
            expected[name] = net(x, stitch)
    torch.save(inputs, tmp_path / "inputs.pt")
    proc = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "inputs.pt"), str(tmp_path / "outputs.pt")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    outputs = torch.load(tmp_path / "outputs.pt")
    for name in cases:
        torch.testing.assert_close(outputs[name], expected[name], rtol=1e-4, atol=1e-5)


def test_onnx_is_written_or_skipped_with_a_message(world, tmp_path, capsys):
    import importlib.util

    out = tmp_path / "anchor.pt2"
    code = main([world["catalog"], "--sweep", "demo", "--trial", "t-vit", "--stitch", "0", "--out", str(out), "--onnx"])
    err = capsys.readouterr().err
    assert out.is_file()
    if importlib.util.find_spec("onnx") is None:
        assert code == 0 and "onnx" in err and "not installed" in err
        assert json.loads(out.with_suffix(".json").read_text())["onnx"] is None
    else:
        assert code == 0 and out.with_suffix(".onnx").is_file(), err


# -- user mistakes -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_catalog(world):
    """A catalog whose row points at a deleted checkpoint, and one whose checkpoint predates the format."""
    root = world["root"]
    rows = catalog_rows(TrainConfig(), world["vit"].space, world["vit_results"], {}, str(root / "deleted"))
    CatalogWriter(str(root / "gone"), "demo").write_trial("t1", rows[:2])
    old = root / "old-ckpt"
    old.mkdir()
    torch.save({"model": world["vit"].state_dict(), "step": 0}, old / "state.pt")
    rows = catalog_rows(TrainConfig(), world["vit"].space, world["vit_results"], {}, str(old))
    CatalogWriter(str(root / "old"), "demo").write_trial("t1", rows[:2])
    (root / "plain.txt").write_text("not a catalog")
    return root


@pytest.mark.parametrize("args, message", [
    (["--trial", "nope", "--stitch", "0"], "no trial 'nope'; its trials are"),
    (["--sweep", "demo", "--trial", "t-vit", "--stitch", "999"], "has no stitch 999; its stitch ids run 0..34"),
    (["--stitch", "0"], "ambiguous"),
    (["--sweep", "zzz", "--stitch", "0"], "no sweep 'zzz'"),
    (["--max-flops", "1K"], "No stitch with a top-1 accuracy"),
    (["--sweep", "cnn", "--max-latency-ms", "5"], "no stitch here has a measured latency: `python -m "
                                                  "orchestrator.train --latency` measures"),
    (["--max-flops", "lots"], "FLOPs budget"),
    ([], "Say which stitch to export"),
    (["--trial", "t-vit", "--stitch", "1", "--max-flops", "1G"], "not both"),
])
def test_selection_mistakes_exit_2(world, tmp_path, capsys, args, message):
    out = tmp_path / "x.pt2"
    assert main([world["catalog"], *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_checkpoint_and_catalog_mistakes_exit_2(broken_catalog, tmp_path, capsys):
    root = broken_catalog
    for catalog, message in [
        (root / "gone", "checkpoint folder"),
        (root / "old", "lacks train_config, space"),
        (root / "plain.txt", "is not a stitch catalog"),
        (root / "missing", "is not a stitch catalog"),
        (root / "gone", "--out must name a .pt2 file"),
    ]:
        out = tmp_path / ("x.pth" if "--out" in message else "x.pt2")
        assert main([str(catalog), "--stitch", "0", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        error = err.splitlines()[-1]  # after the "exporting ..." progress line, if any
        assert error.startswith("error: ") and message in error and "Traceback" not in err, (catalog, err)


def test_cli_process_reports_a_mistake_without_traceback(broken_catalog, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "orchestrator.export", str(broken_catalog / "plain.txt"),
                           "--stitch", "0", "--out", str(tmp_path / "x.pt2")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_cli_answers_a_wrong_flag_or_catalog_without_torch(broken_catalog, tmp_path):
    """A wrong selection or a catalog that is none is answered before torch, timm or Ray load (with them
    unimportable: the same paragraph and exit 2, in a fraction of torch's import time)."""
    out = str(tmp_path / "x.pt2")
    for args, message in [([str(broken_catalog), "--out", out], "Say which stitch to export"),
                          ([str(tmp_path / "missing"), "--out", out, "--trial", "t", "--stitch", "0"],
                           "is not a stitch catalog")]:
        script = import_blocker("torch", "timm", "fvcore", "ray", "optuna") + (
            f"import runpy; sys.argv = ['orchestrator.export', *{args!r}]; "
            "runpy.run_module('orchestrator.export', run_name='__main__', alter_sys=True)")
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr


# -- export trusts nothing it reads ------------------------------------------------------------------


def _trial_with(root: Path, name: str, net, config: TrainConfig, state_extra: dict | None = None) -> Path:
    """A catalog at root/name/catalog whose one trial's checkpoint lies at root/name/runs/..."""
    folder = root / name
    ckpt, *_ = _save_trial(folder, folder / "catalog", "demo", "t1", net, config, seed=4)
    if state_extra is not None:
        state = torch.load(Path(ckpt) / "state.pt", weights_only=True)
        torch.save({**state, **state_extra}, Path(ckpt) / "state.pt")
    return folder / "catalog"


@pytest.mark.parametrize("kwargs, message", [
    ({"checkpoint_path": "/etc/hostname"}, "'checkpoint_path', which export does not pass to timm"),
    ({"pretrained_cfg_overlay": {"file": "/etc/hostname"}}, "'pretrained_cfg_overlay'"),
    ({"num_classes": -1}, "invalid values: num_classes=-1"),
    ({"img_size": "16; rm"}, "invalid values: img_size="),
])
def test_export_builds_anchors_only_from_known_options(world, tmp_path, capsys, monkeypatch, kwargs, message):
    import timm

    seen = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: seen.append(k) or real(*a, **k))
    specs = [AnchorSpec(n, kwargs=kwargs) for n in DEMO_ANCHORS]
    catalog = _trial_with(tmp_path, "hostile", world["vit"], TrainConfig(anchors=specs, sweep="demo", trial_id="t1"))
    assert main([str(catalog), "--stitch", "0", "--out", str(tmp_path / "x.pt2")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert not any(set(k) & {"checkpoint_path", "pretrained_cfg_overlay"} for k in seen)
    assert not (tmp_path / "x.pt2").exists()


def test_allowed_anchor_options_reach_timm(world):
    state = load_state(world["cnn_ckpt"])  # ResNets trained with num_classes=10 at 32x32
    net = rebuild_supernet(state)
    assert net.space.profiles[-1].num_classes == 10 and all(a.weights == "supernet-checkpoint" for a in net.anchors)


def test_a_checkpoint_holding_code_is_refused(world, tmp_path, capsys):
    catalog = _trial_with(tmp_path, "code", world["vit"], TrainConfig(sweep="demo", trial_id="t1"),
                          state_extra={"optimizer": torch.nn.Linear(2, 2)})  # a pickled object, not tensors
    assert main([str(catalog), "--stitch", "0", "--out", str(tmp_path / "x.pt2")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "as a weights-only file" in err and "Traceback" not in err


def test_a_checkpoint_outside_the_catalogs_storage_needs_the_user_to_name_it(world, tmp_path, capsys):
    # The row points at world's checkpoint, which lies outside tmp_path (this catalog's storage).
    rows = catalog_rows(TrainConfig(), world["vit"].space, world["vit_results"], {}, world["vit_ckpt"])
    catalog = tmp_path / "elsewhere" / "catalog"
    CatalogWriter(str(catalog), "demo").write_trial("t1", rows)
    out = tmp_path / "x.pt2"
    assert main([str(catalog), "--stitch", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lies outside" in err and f"--checkpoint {world['vit_ckpt']}" in err and not out.exists()
    assert main([str(catalog), "--stitch", "3", "--out", str(out), "--checkpoint", world["vit_ckpt"]]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["source"]["checkpoint"] == world["vit_ckpt"] and card["source"]["stitch_id"] == 3


def test_checkpoint_locations_inside_and_outside_the_storage(tmp_path):
    from orchestrator.export import check_checkpoint_location, storage_root

    assert storage_root("s3://bucket/team/catalog/") == "s3://bucket/team"
    inside = ["s3://bucket/team/runs/t1/checkpoint_000001", "s3://bucket/team/catalog/x"]
    outside = ["s3://other/team/runs/t1", "gs://bucket/team/runs/t1", "s3://bucket/teammate/runs",
               "s3://bucket/team/runs/../../secret", "/tmp/runs/t1", "file:///tmp/runs"]
    for uri in inside:
        check_checkpoint_location(uri, "s3://bucket/team/catalog")
    for uri in outside:
        with pytest.raises(SNNetError, match="lies outside"):
            check_checkpoint_location(uri, "s3://bucket/team/catalog")
    (tmp_path / "project" / "runs").mkdir(parents=True)
    (tmp_path / "project" / "escape").symlink_to(tmp_path)
    catalog = str(tmp_path / "project" / "catalog")
    check_checkpoint_location(str(tmp_path / "project" / "runs" / "t1"), catalog)
    check_checkpoint_location("file://" + str(tmp_path / "project" / "runs" / "t1"), catalog)
    for path in (tmp_path / "other", tmp_path / "project" / ".." / "other", tmp_path / "project" / "escape" / "x"):
        with pytest.raises(SNNetError, match="lies outside"):
            check_checkpoint_location(str(path), catalog)


# -- snnet.latency -----------------------------------------------------------------------------------


def _conv_stack(width: int, depth: int) -> nn.Module:
    layers = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


def test_measure_latency_is_positive_and_grows_with_the_model():
    torch.manual_seed(0)
    tiny, big = _conv_stack(4, 1), _conv_stack(64, 6)  # ~1e5 vs ~1e9 multiply-adds per image
    tiny_ms = measure_latency(tiny, (3, 64, 64), warmup=2, repeats=7)
    big_ms = measure_latency(big, (3, 64, 64), warmup=2, repeats=7)
    tiny_again = measure_latency(tiny, (3, 64, 64), warmup=2, repeats=7)
    for ms in (tiny_ms, big_ms, tiny_again):
        assert math.isfinite(ms) and ms > 0
    # ~1000x more work: a generous margin. The tiny model's faster measurement is the one compared: on a
    # loaded machine one median of a sub-millisecond pass can be inflated 60x (CI saw 0.24 ms, then 15.9 ms).
    assert big_ms > 3 * min(tiny_ms, tiny_again)
    assert big.training  # train/eval mode restored
    with pytest.raises(ValueError, match="batch_size"):
        measure_latency(tiny, (3, 8, 8), batch_size=0)


def test_measure_space_latency_covers_the_asked_stitches(world):
    net = world["vit"]
    ids = [0, 2, _junction(net, 3).stitch_id]
    latencies = measure_space_latency(net, ids, (1, 16, 16), warmup=1, repeats=3, batch_size=2)
    assert sorted(latencies) == sorted(ids)
    assert all(math.isfinite(v) and v > 0 for v in latencies.values())
    assert set(measure_space_latency(net, [1], warmup=0, repeats=1)) == {1}  # input shape from the space


@pytest.mark.gpu
def test_measure_latency_on_gpu():
    ms = measure_latency(_conv_stack(16, 2), (3, 32, 32), device="cuda", warmup=2, repeats=5)
    assert math.isfinite(ms) and ms > 0


# -- where the export goes: checked first, written whole or not at all ---------------------------------


def _no_model_work(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("the checkpoint was read before --out was checked")

    monkeypatch.setattr("orchestrator.export.checkpoint.load_state", refuse)


def test_an_out_that_cannot_be_written_is_refused_before_any_model_work(world, tmp_path, capsys, monkeypatch):
    _no_model_work(monkeypatch)
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "c" / "x.json").mkdir(parents=True)
    (tmp_path / "o" / "x.onnx").mkdir(parents=True)
    cases = [
        ([str(tmp_path / "afile" / "x.pt2")], "afile' is a file, not a folder"),
        ([str(tmp_path / "afile" / "deeper" / "x.pt2")], "afile' is a file, not a folder, so the folder"),
        ([str(tmp_path / "c" / "x.pt2")], "x.json' is a folder, and the export writes x.pt2, x.json side by side"),
        ([str(tmp_path / "o" / "x.pt2"), "--onnx"], "x.onnx' is a folder"),
    ]
    if Path("/proc/self").is_dir():  # procfs: an existing folder where nothing can be created
        cases.append((["/proc/nope/x.pt2"], "cannot write in '/proc' (No such file or directory), so the folder"))
    for out, message in cases:
        assert main([world["catalog"], "--sweep", "demo", "--trial", "t-vit", "--stitch", "0", "--out", *out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out ") and message in err and "Traceback" not in err, err
        assert err.count("\n") == 1  # no "exporting ..." line: nothing was read
    assert not (tmp_path / "c" / "x.pt2").exists() and not (tmp_path / "o" / "x.pt2").exists()


@pytest.mark.parametrize("fails", ["card", "program rename"])
def test_a_failed_write_leaves_no_program_without_its_card(world, tmp_path, capsys, monkeypatch, fails):
    import errno
    import os

    import orchestrator.export._from_catalog as export

    out = tmp_path / "deploy" / "x.pt2"
    if fails == "card":
        def atomic_write(*_a, **_k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(export, "atomic_write", atomic_write)
        message = "(No space left on device); neither x.pt2 nor its card x.json was written"
    else:  # e.g. a folder created at x.pt2 while the export ran
        real = os.replace

        def replace(src, dst):
            if Path(dst) == out:
                raise IsADirectoryError(errno.EISDIR, "Is a directory")
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        message = "(Is a directory); neither x.pt2 nor its card x.json was written"
    assert main([world["catalog"], "--sweep", "demo", "--trial", "t-vit", "--stitch", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    error = err.splitlines()[-1]
    assert error.startswith("error: Could not write the exported stitch to ") and message in error, err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no program, no card, no temporary file


def test_an_export_replaces_the_previous_pair(world, tmp_path, capsys):
    out = tmp_path / "x.pt2"
    out.write_text("old program")
    out.with_suffix(".json").write_text("old card")
    assert main([world["catalog"], "--sweep", "demo", "--trial", "t-vit", "--stitch", "0", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["size_bytes"] == out.stat().st_size and card["program"] == "x.pt2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.pt2"]


# -- a checkpoint that orchestrator.train did not write ----------------------------------------------


def _space_without_config(net) -> str:
    data = json.loads(net.space.to_json())
    del data["config"]
    return json.dumps(data)


@pytest.mark.parametrize("space, reason", [
    (_space_without_config, "(it lacks 'config')"),
    (lambda net: json.loads(net.space.to_json()), "(TypeError: the JSON object must be str"),
])
def test_a_checkpoint_with_a_damaged_space_exits_2(world, tmp_path, capsys, space, reason):
    catalog = _trial_with(tmp_path, "space", world["vit"], TrainConfig(sweep="demo", trial_id="t1"),
                          state_extra={"space": space(world["vit"])})
    assert main([str(catalog), "--stitch", "0", "--out", str(tmp_path / "x.pt2")]) == 2
    err = capsys.readouterr().err
    error = err.splitlines()[-1]
    assert (error.startswith("error: The checkpoint's stitch space cannot be read: Not a stitch space")
            and reason in error)
    assert "was not written by orchestrator.train, or is damaged" in error and "Traceback" not in err


def test_bad_training_settings_in_a_checkpoint_are_worded_once(world, tmp_path, capsys):
    config = TrainConfig(sweep="demo", trial_id="t1")
    catalog = _trial_with(tmp_path, "settings", world["vit"], config,
                          state_extra={"train_config": {**config.model_dump(), "epochs": "many"}})
    assert main([str(catalog), "--stitch", "0", "--out", str(tmp_path / "x.pt2")]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.count("Invalid training settings") == 1 and ".." not in error, error
    assert "Invalid training settings: epochs must be an integer >= 0, got 'many'. The checkpoint was not" in error


def test_a_checkpoint_that_is_no_torch_file_says_so_in_words(world, tmp_path, capsys):
    catalog = _trial_with(tmp_path, "text", world["vit"], TrainConfig(sweep="demo", trial_id="t1"))
    state = next((tmp_path / "text" / "runs").rglob("state.pt"))
    state.write_text("id,top1\n3,71.2\n")
    assert main([str(catalog), "--stitch", "0", "--out", str(tmp_path / "x.pt2")]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.endswith("it is not a file written by torch.save (it starts with b'id,top1\\n3,71.2\\n'; a checkpoint "
                          "is a zip archive or a pickle), or it is truncated."), error
    for content in (b"", b"hello"):  # an empty EOFError, a bare KeyError: 101
        state.write_bytes(content)
        assert main([str(catalog), "--stitch", "0", "--out", str(tmp_path / "x.pt2")]) == 2
        error = capsys.readouterr().err.splitlines()[-1]
        assert "it is not a file written by torch.save" in error and "Traceback" not in error, (content, error)


def test_a_checkpoint_file_named_instead_of_its_folder_gets_the_folder_suggested(world, tmp_path, capsys):
    state = str(Path(world["vit_ckpt"]) / "state.pt")
    assert main([world["catalog"], "--sweep", "demo", "--trial", "t-vit", "--stitch", "0",
                 "--out", str(tmp_path / "x.pt2"), "--checkpoint", state]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == (f"error: The trial's checkpoint {state!r} is a file, not a folder; name the folder that holds "
                     f"it instead: {world['vit_ckpt']}.")
