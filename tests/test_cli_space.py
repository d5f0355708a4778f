"""``python -m snnet.space``: the JSON-lines contract, the table, and bad input."""

import json

import pytest

DEIT = "deit_tiny_patch16_224,deit_small_patch16_224,deit_base_patch16_224"


@pytest.fixture
def run(cli_runner):
    """``python -m snnet.space ARGS``, a real process (forked from the preloaded ``cli_runner`` server)."""
    return lambda *args: cli_runner.run("snnet.space", *args)


def test_jsonl_for_deit_ti_s_b(run):
    proc = run("--anchors", DEIT, "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 71
    assert [r["stitch_id"] for r in rows] == list(range(71))
    for r in rows:
        assert isinstance(r["flops"], int) and isinstance(r["params"], int)
        assert len(r["cuts"]) == len(r["anchors"]) - 1
    assert rows[0] == {
        "stitch_id": 0, "anchors": ["deit_tiny_patch16_224"], "cuts": [], "flops": 1258411200,
        "params": 5717416, "layers": [],
    }
    # Stitch 3 is the released config 3, its (0, 0): DeiT-Ti block 0, then all of DeiT-S.
    assert rows[3]["anchors"] == ["deit_tiny_patch16_224", "deit_small_patch16_224"] and rows[3]["cuts"] == [[0, 0]]
    assert rows[3]["flops"] == 4696010496 + 197 * 384 * 5  # the released figure plus DeiT-S's final norm
    assert "RuntimeWarning" not in proc.stderr and "Traceback" not in proc.stderr


def test_table_and_options(run):
    proc = run("--anchors", "resnet18,resnet50", "--kernel-size", "3", "--direction", "both", "--image-size", "64")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["id", "anchors", "cuts", "GFLOPs", "params(M)"]
    assert "resnet50 > resnet18" in proc.stdout and "resnet18 > resnet50" in proc.stdout
    assert "stitches (2 anchors" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "anchors,count",
    [
        ("swin_tiny_patch4_window7_224,swin_small_patch4_window7_224,swin_base_patch4_window7_224", 3 + 28 + 64),
        ("resnet18,resnet50", 2 + 16),
        ("resnet18,swin_tiny_patch4_window7_224", 2 + 16),
    ],
)
def test_every_family_enumerates(run, anchors, count):
    proc = run("--anchors", anchors, "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == count


@pytest.mark.slow
@pytest.mark.parametrize(
    "anchors,count",
    [
        ("swin_tiny_patch4_window7_224,swin_small_patch4_window7_224,swin_base_patch4_window7_224", 41),
        ("resnet18,resnet50", 10),
        ("resnet18,swin_tiny_patch4_window7_224", 8),
        ("levit_192,levit_256", 8),
    ],
)
def test_paper_preset_per_family(run, anchors, count):
    proc = run("--anchors", anchors, "--preset", "paper", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == count and [r["stitch_id"] for r in rows] == list(range(count))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--anchors", "deit_tiny_patch16_22"], "Unknown model 'deit_tiny_patch16_22'"),
        (["--anchors", "resnet18,resnet5O"], "Did you mean 'resnet50'"),
        (["--kernel-size", "0"], "kernel_size must be an integer >= 1, got 0"),
        (["--stride", "-1"], "stride must be an integer >= 1, got -1"),
        (["--anchors", "resnet18,resnet50", "--kernel-size", "9"], "kernel_size <= 8"),
        (["--anchors", "deit_tiny_patch16_224,resnet18"], "Cannot stitch"),
        (["--anchors", "deit_tiny_patch16_224,vit_small_patch32_224"], "Cannot stitch"),
        (["--anchors", "efficientnet_b0,efficientnet_b1"], "supports VisionTransformer"),
        (["--anchors", ","], "at least one timm model name"),
        (["--image-size", "0"], "--image-size must be >= 1"),
        (["--preset", "papers"], "preset must be None or one of 'paper', got 'papers'"),
        (["--anchors", "resnet18,resnet50", "--preset", "paper", "--stride", "2"], "fixes kernel_size=2, stride=1"),
        # the model itself refuses the size: its message, named, not its traceback
        (["--anchors", "deit_tiny_patch16_224,deit_small_patch16_224", "--image-size", "8"],
         "deit_tiny_patch16_224 cannot run at image size 8: Calculated padded input size"),
        (["--anchors", "levit_192,levit_256", "--image-size", "50"], "levit_192 cannot run at image size 50: "),
        (["--anchors", "deit_tiny_patch16_224.nonexistent_tag,deit_small_patch16_224"],
         "Unknown pretrained tag 'nonexistent_tag' in 'deit_tiny_patch16_224.nonexistent_tag'"),
        (["--anchors", "resnet18.tv_in1kk,resnet50"], "(did you mean 'tv_in1k'?)"),
        (["--anchors", "deit_tiny_patch16_224.fb_in1k,deit_tiny_patch16_224"], "deit_tiny_patch16_224 appears twice"),
        (["--anchors", "resnet18,resnet18"], "Anchors must be distinct"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(run, args, message):
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_a_window_deeper_than_the_anchors_fails_before_they_are_built(monkeypatch, capsys):
    """Depths come from meta-device builds: no anchor (three DeiTs here) is built to learn k=30 cannot fit."""
    import snnet.supernet
    from snnet.space.__main__ import main

    monkeypatch.setattr(snnet.supernet, "build_supernet", lambda *a, **k: pytest.fail("the anchors were built"))
    assert main(["--kernel-size", "30"]) == 2
    assert capsys.readouterr().err == ("error: The window must fit the depth: kernel_size <= 12 (the depth of "
                                       "deit_tiny_patch16_224), got kernel_size=30.\n")


def test_score_prints_init_scores_of_every_stitch(run, tmp_path):
    """``--score --dataset DIR``: LS init on some images of a class folder, scores on the others; the
    anchors score CKA 1 and KL 0; a user's mistake is one paragraph before any model is built."""
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(tmp_path / "val" / c / f"{i}.png")
    args = ("--anchors", "deit_tiny_patch16_224,deit_small_patch16_224", "--image-size", "32", "--kernel-size", "1")
    proc = run(*args, "--score", "--dataset", str(tmp_path), "--ls-samples", "8", "--score-images", "100",
               "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 14 and all(r["images"] == 16 for r in rows)  # 24 images, 8 of them for LS
    for r in rows:
        assert {"ls_r2", "cka", "kl", "init_top1"} <= set(r) and 0 <= r["init_top1"] <= 100
        if len(r["anchors"]) == 1:
            assert (r["ls_r2"], r["cka"], r["kl"]) == (1.0, pytest.approx(1.0), 0.0)
        else:
            assert 0 < r["ls_r2"] <= 1 and r["cka"] < 1 and r["kl"] > 0
    for bad, message in ((("--score",), "--score needs --dataset DIR"),
                         (("--score", "--dataset", str(tmp_path / "nope")), "is not a folder"),
                         (("--dataset", str(tmp_path)), "add --score")):
        proc = run(*args, *bad)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
