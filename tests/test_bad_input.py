"""One table of bad requests across the five command lines (design brief, section 4).

Every row is a user's mistake run as a real process (``python -m ...``, forked from the preloaded
``cli_runner`` server, see tests/_cli_server.py). Each must end with exit status 2, ``error:`` followed by
one paragraph (no blank line) that names the problem, no traceback, and no Ray instance: every row
runs with ``ray.init`` replaced by a guard that prints ``RAY-INIT-CALLED`` and exits 99.
``test_the_guard_fires_on_a_valid_request`` proves the guard works on a request that does reach
``ray.init``.

The table complements the per-CLI tests (test_cli_space.py, test_train_config.py,
test_search_spaces.py, test_catalog_query.py, test_export.py). All rows run once, by a module
fixture, and their results are cached.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUARD_MARK = "RAY-INIT-CALLED"
GUARD_EXIT = 99
TIMEOUT_S = 180

# -- the table -----------------------------------------------------------------------------------
# (cli, argv, expected fragments). ``{name}`` in an argument is replaced by a path of the ``world``
# fixture. Fragments must all appear after ``error:`` in the one error paragraph on stderr.

SPACE, TRAIN, SWEEP, CATALOG, EXPORT = ("snnet.space", "orchestrator.train", "orchestrator.sweep",
                                        "orchestrator.catalog", "orchestrator.export")

# A valid training request: ResNet-18/34 (no weights) on a two-class folder of 8x8 images, at 32x32;
# rows add one mistake to it.
RESNETS = ["--anchors", "resnet18,resnet34", "--num-classes", "2", "--dataset", "{images}", "--image-size", "32",
           "--epochs", "0", "--workers", "1"]
RUNS = ["--storage", "{tmp}/runs"]

CASES = [
    # python -m snnet.space
    pytest.param(SPACE, ["--anchors", "resnet18,resnet5O"], ("Unknown model 'resnet5O'", "Did you mean 'resnet50'"),
                 id="space-unknown-model-suggests"),
    pytest.param(SPACE, ["--kernel-size", "0"], "kernel_size must be an integer >= 1, got 0", id="space-k0"),
    pytest.param(SPACE, ["--stride", "0"], "stride must be an integer >= 1, got 0", id="space-s0"),
    pytest.param(SPACE, ["--anchors", "resnet18,resnet50", "--kernel-size", "9"], "kernel_size <= 8",
                 id="space-window-deeper-than-anchor"),
    pytest.param(SPACE, ["--anchors", "deit_tiny_patch16_224,resnet18"], "Cannot stitch",
                 id="space-vit-with-resnet"),
    pytest.param(SPACE, ["--anchors", "efficientnet_b0,efficientnet_b1"], "supports VisionTransformer",
                 id="space-unsupported-family"),
    pytest.param(SPACE, ["--anchors", ""], "--anchors needs at least one timm model name", id="space-empty-anchors"),
    # issue 28, item 7: an unknown flag is one line with the closest flag, not the usage dump
    pytest.param(SPACE, ["--kernal-size", "3"], ("unrecognized argument --kernal-size (did you mean '--kernel-size'?)",
                                                 "see python -m snnet.space --help"), id="space-misspelt-flag"),
    pytest.param(TRAIN, ["--epocs", "1"], ("unrecognized argument --epocs (did you mean '--epochs'?)",
                                           "see python -m orchestrator.train --help"), id="train-misspelt-flag"),
    pytest.param(TRAIN, ["--set", "lr=0.1"], "'lr' is none (did you mean 'anchor_lr', 'stitch_lr' or 'min_lr'?)",
                 id="train-set-unknown-field"),
    # python -m orchestrator.train
    pytest.param(TRAIN, ["--epochs", "-1"], "epochs must be an integer >= 0, got -1", id="train-negative-epochs"),
    pytest.param(TRAIN, ["--workers", "0"], "workers must be an integer >= 1, got 0", id="train-no-workers"),
    pytest.param(TRAIN, ["--sampling", "roulette"], ("argument --sampling: invalid choice: 'roulette'", "uniform"),
                 id="train-unknown-sampling-rule"),
    pytest.param(TRAIN, ["--mode", "lora", "--init", "kaiming"], "mode 'lora' learns updates of LS-initialised layers",
                 id="train-lora-with-kaiming"),
    pytest.param(TRAIN, ["--anchors", "resnet18,resnet50", "--dataset", "{tmp}/no-such-data"],
                 "no-such-data' is neither (no such directory)", id="train-missing-dataset"),
    pytest.param(TRAIN, ["--anchors", "resnet18,resnet50", "--dataset", "{val_only}"], "has no train/ folder",
                 id="train-dataset-without-train"),
    pytest.param(TRAIN, [*RESNETS, *RUNS, "--catalog", "{a_file}"], "The catalog must be a folder or URI, but",
                 id="train-catalog-is-a-file"),
    pytest.param(TRAIN, [*RESNETS, *RUNS, "--catalog", "{tmp}/cat", "--trial-id", "a/b"],
                 "A trial name must start with a letter or digit", id="train-trial-id-with-slash"),
    pytest.param(TRAIN, ["--batch-size", "-8"], "batch_size must be an integer >= 1, got -8",
                 id="train-negative-batch-size"),
    pytest.param(TRAIN, [*RESNETS[:2], *RESNETS[4:], *RUNS, "--catalog", "{tmp}/cat"],
                 "Anchors must classify the dataset's 2 classes, but resnet18 has 1000, resnet34 has 1000",
                 id="train-classes-differ"),
    pytest.param(TRAIN, [*RESNETS, *RUNS, "--catalog", "{tmp}/cat", "--address", "127.0.0.1:1"],
                 "The Ray cluster at '127.0.0.1:1' does not answer", id="train-dead-cluster-address"),
    pytest.param(TRAIN, [*RESNETS, "--catalog", "{tmp}/cat", "--storage", "{a_file}"], ("storage", "a_file.txt"),
                 id="train-storage-is-a-file"),
    # issue 14: everything that can fail before training fails before Ray starts
    pytest.param(TRAIN, [*RESNETS, *RUNS, "--catalog", "s3://nobucket/x"],
                 ("The catalog location 's3://nobucket/x' is not writable", "pass another --catalog"),
                 id="train-catalog-bucket-missing"),
    pytest.param(TRAIN, [*RESNETS, "--catalog", "{tmp}/cat", "--storage", "s3://nobucket/runs"],
                 ("Ray's run storage location 's3://nobucket/runs' is not writable", "--storage"),
                 id="train-storage-bucket-missing"),
    pytest.param(TRAIN, [*RESNETS, *RUNS, "--catalog", "{tmp}/cat", "--workers", "64"],
                 ("The run needs 64 workers x 1 CPU each (64 CPUs), but this machine", "--workers"),
                 id="train-workers-above-the-machine"),
    pytest.param(TRAIN, [*RESNETS, *RUNS, "--catalog", "{tmp}/cat", "--epochs", "1", "--batch-size", "4"],
                 ("The batch size 4 per worker x 1 workers needs at least 4 training images", "has 2"),
                 id="train-batch-above-the-training-set"),
    pytest.param(TRAIN, ["--anchors", "resnet18=/no/such/r18.pth,resnet34", "--num-classes", "2", "--dataset",
                         "{images}", "--image-size", "32", "--epochs", "0", "--workers", "1", *RUNS,
                         "--catalog", "{tmp}/cat"], "/no/such/r18.pth", id="train-checkpoint-missing"),
    # python -m orchestrator.sweep
    pytest.param(SWEEP, ["--space", "no_such_space"], ("Unknown search space 'no_such_space'", "demo", "resnet18_50"),
                 id="sweep-unknown-space"),
    pytest.param(SWEEP, ["--space", "{yaml_syntax}"], "is not valid YAML at line", id="sweep-yaml-syntax-error"),
    pytest.param(SWEEP, ["--space", "{yaml_no_families}"], "needs at least one family of anchors",
                 id="sweep-no-families"),
    pytest.param(SWEEP, ["--space", "{yaml_nsga2_one_objective}"], "nsga2 is multi-objective and needs at least 2",
                 id="sweep-nsga2-one-objective"),
    pytest.param(SWEEP, ["--space", "{yaml_low_above_high}"], "`low <= high` must hold", id="sweep-low-above-high"),
    pytest.param(SWEEP, ["--num-samples", "0"], "--num-samples must be >= 1, got 0", id="sweep-zero-samples"),
    pytest.param(SWEEP, ["--resume", "--storage", "{tmp}/no-runs"], "Nothing to resume: no earlier sweep 'demo'",
                 id="sweep-nothing-to-resume"),
    pytest.param(SWEEP, ["--max-concurrent-trials", "0"], "--max-concurrent-trials must be >= 1, got 0",
                 id="sweep-zero-concurrent-trials"),
    pytest.param(SWEEP, ["--space", "{a_dir}/"], "is a directory; give a YAML file", id="sweep-space-is-a-directory"),
    pytest.param(SWEEP, ["--space", "{yaml_binary}"], "Cannot read search space file", id="sweep-space-is-binary"),
    pytest.param(SWEEP, ["--address", "127.0.0.1:1"], "The Ray cluster at '127.0.0.1:1' does not answer",
                 id="sweep-dead-cluster-address"),
    pytest.param(SWEEP, ["--space", "{yaml_resnets}", "--catalog", "{tmp}/cat", "--storage", "{a_file}"],
                 ("storage", "a_file.txt"), id="sweep-storage-is-a-file"),
    # python -m orchestrator.catalog
    pytest.param(CATALOG, ["query", "{a_file}"], "is not a stitch catalog: it is a file, not a folder",
                 id="catalog-query-a-file"),
    pytest.param(CATALOG, ["query", "{tmp}/no-such-catalog"], "is not a stitch catalog: it is missing",
                 id="catalog-query-missing-path"),
    pytest.param(CATALOG, ["query", "{catalog}", "--max-flops=-1G"], "a negative budget matches nothing",
                 id="catalog-negative-flops-budget"),
    pytest.param(CATALOG, ["query", "{catalog}", "--min-top1", "150"], ("150", "outside that range"),
                 id="catalog-top1-above-100"),
    pytest.param(CATALOG, ["query", "{catalog}", "--sort", "speed"], ("Unknown sort column 'speed'", "flops"),
                 id="catalog-unknown-sort-column"),
    pytest.param(CATALOG, ["plot", "{catalog}"], "the following arguments are required: --out",
                 id="catalog-plot-without-out"),
    pytest.param(CATALOG, ["query", "{catalog}", "--pareot"], ("unrecognized argument --pareot (did you mean "
                 "'--pareto'?)", "see python -m orchestrator.catalog query --help"), id="catalog-misspelt-flag"),
    # python -m orchestrator.export
    pytest.param(EXPORT, ["{a_file}", "--out", "{tmp}/x.pt2", "--trial", "t0", "--stitch", "0"],
                 "is not a stitch catalog: it is a file", id="export-catalog-is-a-file"),
    pytest.param(EXPORT, ["{catalog}", "--out", "{tmp}/x.pt2", "--trial", "nope", "--stitch", "0"],
                 ("has no trial 'nope'", "its trials are: t0"), id="export-no-such-trial"),
    pytest.param(EXPORT, ["{catalog}", "--out", "{tmp}/x.pt2", "--trial", "t0"], "Say which stitch to export",
                 id="export-neither-stitch-nor-budget"),
]

# Not a mistake: a valid request that reaches ray.init, to prove the guard fires.
GUARD_CHECK = (TRAIN, [*RESNETS, *RUNS, "--catalog", "{tmp}/cat-ok"])
# Rows naming a cluster address must fail in seconds, not wait for Ray's connection timeout.
FAST_ADDRESS_S = 90  # generous for two loaded cores: the socket check itself gives up after 5 s


# -- the files the rows point at ----------------------------------------------------------------


def _demo_yaml(**replace: str) -> str:
    text = (REPO / "search_spaces" / "demo.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def _make_world(root: Path) -> dict[str, str]:
    import numpy as np
    from PIL import Image

    from orchestrator.catalog import CatalogWriter

    images = root / "images"
    for split in ("train", "val"):
        for i, cls in enumerate(("cat", "dog")):
            (images / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(images / split / cls / "0.png")
    (root / "val_only" / "val" / "cat").mkdir(parents=True)
    (root / "a_dir").mkdir()
    (root / "a_file.txt").write_text("not a catalog\n")
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "syntax.yaml").write_text("name: broken\nfamilies: [a, b\nspace:\n  kernel_size: 2\n")
    (root / "no_families.yaml").write_text("name: nothing\nfamilies: []\n")
    (root / "nsga2.yaml").write_text(_demo_yaml(**{"algorithm: tpe": "algorithm: nsga2"}))
    (root / "low_high.yaml").write_text(
        _demo_yaml(**{"anchor_lr: 3.0e-5": "anchor_lr: {low: 1.0e-2, high: 1.0e-3, log: true}"}))
    # A valid sweep over the same ResNets and images (the demo's would need its pretrained anchors).
    (root / "resnets.yaml").write_text(
        f"name: resnets\ndataset: {images}\nimage_size: 32\n"
        "families:\n  - name: resnet\n    anchors: [resnet18, resnet34]\n    kwargs: {num_classes: 2}\n"
        "training: {epochs: 0, batch_size: 2}\n"
        "resources: {workers_per_trial: 1, cpus_per_worker: 1, gpus_per_worker: 0}\n"
        "searcher: {algorithm: random, num_samples: 1}\n")
    rows = [dict(stitch_id=i, anchors=["resnet18", "resnet50"][: 1 + (i > 0)], cuts=[[i, i + 1]] if i else [],
                 flops=1_000_000 * (i + 1), params=10_000 * (i + 1), top1=50.0 + i, top5=90.0, sampling="uniform",
                 checkpoint=str(root / "no-checkpoint")) for i in range(3)]
    CatalogWriter(root / "catalog", "bad-input").write_trial("t0", rows)
    return {
        "tmp": str(root), "images": str(images), "val_only": str(root / "val_only"), "a_dir": str(root / "a_dir"),
        "a_file": str(root / "a_file.txt"), "catalog": str(root / "catalog"), "yaml_binary": str(root / "binary.yaml"),
        "yaml_syntax": str(root / "syntax.yaml"), "yaml_no_families": str(root / "no_families.yaml"),
        "yaml_nsga2_one_objective": str(root / "nsga2.yaml"), "yaml_low_above_high": str(root / "low_high.yaml"),
        "yaml_resnets": str(root / "resnets.yaml"),
    }


@pytest.fixture(scope="module")
def results(cli_runner, tmp_path_factory) -> dict[str, dict]:
    """Runs every row (and the guard check) once; keyed by the row id."""
    root = tmp_path_factory.mktemp("bad-input")
    world = _make_world(root)
    env = dict(cli_runner.env)
    env.pop("RAY_ADDRESS", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               AWS_EC2_METADATA_DISABLED="true")  # no credential lookups on the machine's metadata service
    jobs = {case.id: case.values[:2] for case in CASES}
    jobs["guard-check"] = GUARD_CHECK
    out = {}
    for key, (module, argv) in jobs.items():
        args = [a.format(**world) for a in argv]
        done = cli_runner.run(module, *args, cwd=root, env=env, timeout=TIMEOUT_S, no_ray=True)
        out[key] = {"args": args, "code": done.returncode, "out": done.stdout, "err": done.stderr,
                    "seconds": done.seconds}
    return out


def _describe(r: dict) -> str:
    return (f"exit {r['code']} after {r['seconds']:.1f}s; args {r['args']}\n"
            f"--- stdout\n{r['out']}\n--- stderr\n{r['err']}")


@pytest.mark.parametrize("cli, argv, expected", CASES)
def test_bad_input_is_one_error_paragraph_exit_2_and_no_ray(results, request, cli, argv, expected):
    r = results[request.node.callspec.id]
    output = r["out"] + r["err"]
    assert GUARD_MARK not in output and r["code"] != GUARD_EXIT, "ray.init was called:\n" + _describe(r)
    assert "Traceback" not in output, _describe(r)
    assert r["code"] == 2, _describe(r)
    err = r["err"].rstrip()
    at = err.find("error: ")
    assert at >= 0 and err.count("error: ") == 1, _describe(r)
    assert "usage: " not in err, _describe(r)  # argparse's mistakes too: one paragraph, no usage dump
    paragraph = err[at + len("error: "):]
    assert paragraph.strip() and "\n\n" not in err, _describe(r)  # one paragraph, no blank line
    for fragment in (expected,) if isinstance(expected, str) else expected:
        assert fragment in paragraph, f"{fragment!r} not in the error:\n" + _describe(r)
    if "--address" in argv:
        assert r["seconds"] < FAST_ADDRESS_S, _describe(r)


def test_a_refused_worker_count_is_not_announced_first(results):
    r = results["train-workers-above-the-machine"]
    assert "Ray Train worker" not in r["out"] + r["err"], _describe(r)


def test_an_unknown_set_field_is_not_answered_with_every_field(results):
    r = results["train-set-unknown-field"]
    assert "weight_decay" not in r["err"], _describe(r)


def test_the_table_covers_every_cli_with_enough_rows():
    by_cli = {}
    for case in CASES:
        by_cli[case.values[0]] = by_cli.get(case.values[0], 0) + 1
    assert set(by_cli) == {SPACE, TRAIN, SWEEP, CATALOG, EXPORT}
    assert len(CASES) >= 24 and len({c.id for c in CASES}) == len(CASES)


def test_the_guard_fires_on_a_valid_request(results):
    """The same guard on a valid ``orchestrator.train`` request: it gets to ray.init and is stopped."""
    r = results["guard-check"]
    assert r["code"] == GUARD_EXIT and GUARD_MARK in r["err"], _describe(r)
    assert "Traceback" not in r["out"] + r["err"], _describe(r)
    assert "stitches over resnet18, resnet34" in r["out"], _describe(r)  # prepare() passed
