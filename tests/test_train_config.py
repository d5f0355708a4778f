"""Training settings (orchestrator.train.config.TrainConfig) and the ``python -m orchestrator.train`` CLI's bad input.

No Ray: the CLI cases all fail in :func:`orchestrator.train.launch.prepare`, and each subprocess runs with
``ray.init`` replaced by a guard that aborts, so a regression that reaches Ray fails loudly
instead of starting a cluster.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.train.__main__ import config_from_args, parse_args
from orchestrator.train.config import INITS, MODES, TrainConfig
from snnet import SNNetError
from snnet.anchors import AnchorSpec

REPO = Path(__file__).resolve().parents[1]


# -- TrainConfig.validate --------------------------------------------------------------------------


def test_defaults_are_valid_and_validate_returns_the_config():
    config = TrainConfig()
    assert config.validate() is config
    assert config.mode in MODES and config.init in INITS


def test_validate_reports_every_problem_in_one_message():
    with pytest.raises(SNNetError) as info:
        TrainConfig(workers=0, epochs=-1, mode="x").validate()
    message = str(info.value)
    assert message.startswith("Invalid training settings: ") and message.endswith(".")
    assert "\n" not in message
    assert "workers must be an integer >= 1, got 0" in message
    assert "epochs must be an integer >= 0, got -1" in message
    assert "mode must be one of full, stitch-only, lora, got 'x'" in message
    assert message.count("; ") == 2  # exactly these three problems


def test_validate_lists_many_problems():
    settings = dict(
        kernel_size=0,
        stride=-2,
        batch_size=1.5,
        anchor_lr=-1.0,
        warmup_fraction=1.0,
        init="orthogonal",
        ls_mode="median",
        sampling="nope",
        image_size=0,
        anchors=[AnchorSpec("resnet18")],
    )
    with pytest.raises(SNNetError) as info:
        TrainConfig(**settings).validate()
    message = str(info.value)
    for part in (
        "kernel_size must be an integer >= 1, got 0",
        "stride must be an integer >= 1, got -2",
        "batch_size must be an integer >= 1, got 1.5",
        "anchor_lr must be a number >= 0, got -1.0",
        "warmup_fraction must lie in [0, 1), got 1.0",
        "init must be one of ls, kaiming, got 'orthogonal'",
        "ls_mode must be 'joint' or 'average', got 'median'",
        "sampling must be one of uniform, sandwich, flops-bucket, balanced, scored, got 'nope'",
        "image_size must be an integer >= 1, got 0",
        "anchors must name at least two models to stitch, got ['resnet18']",
    ):
        assert part in message, part
    assert message.count("; ") == 9


@pytest.mark.parametrize(
    "kwargs, part",
    [
        (dict(mode="lora", init="kaiming"), "mode 'lora' learns updates of LS-initialised layers: use init 'ls'"),
        (dict(init="ls", ls_samples=0), "ls_samples must be >= 1 for least-squares init"),
        (dict(anchors=[]), "anchors must name at least two models to stitch, got []"),
        (dict(max_failures=-1), "max_failures must be an integer >= 0, got -1"),
        (dict(eval_checkpoint_seconds=-0.5), "eval_checkpoint_seconds must be a number >= 0, got -0.5"),
    ],
)
def test_validate_single_problems(kwargs, part):
    with pytest.raises(SNNetError, match="Invalid training settings: ") as info:
        TrainConfig(**kwargs).validate()
    assert part in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(epochs=0, ls_samples=0, init="kaiming"),  # no LS samples needed for Kaiming init
        dict(mode="lora", init="ls", lora_rank=1),
        dict(mode="stitch-only", sampling="sandwich", warmup_fraction=0.0),
        dict(anchors=[AnchorSpec("resnet18"), AnchorSpec("resnet50")], image_size=32),
    ],
)
def test_validate_accepts_edge_values(kwargs):
    TrainConfig(**kwargs).validate()


# -- model_dump / model_validate ----------------------------------------------------------------------


def _full_config() -> TrainConfig:
    return TrainConfig(
        anchors=[
            AnchorSpec("resnet18", checkpoint="/ckpt/r18.pth", kwargs={"num_classes": 10}),
            AnchorSpec("resnet50", pretrained=True, kwargs={"num_classes": 10, "drop_rate": 0.1}),
        ],
        teacher=AnchorSpec("deit_small_patch16_224", pretrained=True, kwargs={"num_classes": 10}),
        sampling="sandwich",
        sampling_options={"num_random": 3},
        dataset="/data/in10",
        image_size=32,
        epochs=0,
        mode="lora",
        lora_rank=8,
        trial_id="abc-1",
        catalog="s3://bucket/catalog",
    )


def test_model_dump_round_trips_through_json():
    config = _full_config()
    data = config.model_dump()
    assert data["anchors"][0] == {"name": "resnet18", "pretrained": False, "checkpoint": "/ckpt/r18.pth",
                                  "kwargs": {"num_classes": 10}}
    assert isinstance(data["teacher"], dict) and data["teacher"]["name"] == "deit_small_patch16_224"
    plain = json.loads(json.dumps(data))  # plain data: travels to Ray workers as it is
    back = TrainConfig.model_validate(plain)
    assert back == config
    assert all(isinstance(a, AnchorSpec) for a in back.anchors) and isinstance(back.teacher, AnchorSpec)
    assert back.anchor_names() == ["resnet18", "resnet50"]
    back.validate()


def test_round_trip_of_the_defaults_and_of_specs_given_as_objects():
    assert TrainConfig.model_validate(TrainConfig().model_dump()) == TrainConfig()
    specs = [AnchorSpec("resnet18"), {"name": "resnet50"}]
    config = TrainConfig.model_validate({"anchors": specs, "teacher": AnchorSpec("resnet50")})
    assert config.anchors == [AnchorSpec("resnet18"), AnchorSpec("resnet50")]
    assert config.teacher == AnchorSpec("resnet50")


def test_model_dump_is_a_copy():
    config = _full_config()
    data = config.model_dump()
    data["anchors"][0]["kwargs"]["num_classes"] = 99
    data["sampling_options"]["num_random"] = 99
    assert config.anchors[0].kwargs == {"num_classes": 10}
    assert config.sampling_options == {"num_random": 3}


def test_model_validate_names_unknown_keys():
    data = TrainConfig().model_dump()
    data.update(bogus=1, epochz=3)
    with pytest.raises(SNNetError,
                       match=r"Unknown training settings \['bogus', 'epochz'\]; known settings are \[") as info:
        TrainConfig.model_validate(data)
    assert "'epochs'" in str(info.value)


# -- parse_args / config_from_args ---------------------------------------------------------------
def test_train_takes_the_paper_preset():
    assert config_from_args(parse_args(["--preset", "paper"])).preset == "paper"
    assert config_from_args(parse_args([])).preset is None
    with pytest.raises(SystemExit):
        parse_args(["--preset", "released"])


def test_train_space_of_a_demo_family_stitches_that_familys_anchors(tmp_path):
    from conftest import demo_space

    (tmp_path / "two.yaml").write_text(demo_space("twodemo", anchors=2))
    config = config_from_args(parse_args(["--space", str(tmp_path / "two.yaml")]))
    assert config.anchor_names() == ["snnet_demo_vit_tiny", "snnet_demo_vit_small"]
    assert all(a.checkpoint and os.path.isfile(a.checkpoint) for a in config.anchors)  # the cached pretrained ones


def test_cli_defaults_give_the_default_config_in_a_partition_of_its_own():
    import re

    config = config_from_args(parse_args([]))
    assert re.fullmatch(r"demo-\d{8}-\d{6}", config.sweep)  # each run its own partition (issue 14)
    assert config.model_copy(update={"sweep": TrainConfig().sweep}) == TrainConfig()


def test_cli_anchor_specs_and_flags():
    args = parse_args([
        "--anchors", "resnet18=/w/r18.pth, resnet50", "--pretrained", "--num-classes", "10",
        "--teacher", "resnet101", "--epochs", "0", "--workers", "1", "--init", "kaiming",
        "--sampling", "flops-bucket", "--mode", "stitch-only", "--catalog", "gs://b/cat", "--sweep", "s1",
        "--trial-id", "t9", "--image-size", "32", "--checkpoint-every", "5", "--gpu",
    ])
    config = config_from_args(args)
    assert config.anchors == [
        AnchorSpec("resnet18", pretrained=False, checkpoint="/w/r18.pth", kwargs={"num_classes": 10}),
        AnchorSpec("resnet50", pretrained=True, kwargs={"num_classes": 10}),
    ]
    assert config.teacher == AnchorSpec("resnet101", pretrained=True, kwargs={"num_classes": 10})
    assert (config.epochs, config.workers, config.init, config.sampling, config.mode) == (
        0, 1, "kaiming", "flops-bucket", "stitch-only")
    assert (config.catalog, config.sweep, config.trial_id, config.image_size) == ("gs://b/cat", "s1", "t9", 32)
    assert config.checkpoint_every_steps == 5 and config.use_gpu
    config.validate()


def test_cli_space_other_than_demo_needs_anchors():
    with pytest.raises(SNNetError, match="only 'demo' is built in"):
        config_from_args(parse_args(["--space", "deit"]))


# -- the CLI's bad input, end to end -------------------------------------------------------------

@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """An ImageNet-layout folder with two classes and one tiny image per class and split."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imagefolder")
    for split in ("train", "val"):
        for i, cls in enumerate(("cat", "dog")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(folder / "0.png")
    return root


def _cases(folder: Path, a_file: Path) -> dict[str, tuple[list[str], str]]:
    data = ["--dataset", str(folder), "--image-size", "32"]
    return {
        "negative-epochs-and-no-workers": (
            ["--epochs", "-1", "--workers", "0"],
            "Invalid training settings: workers must be an integer >= 1, got 0; "
            "epochs must be an integer >= 0, got -1.",
        ),
        "lora-needs-ls": (["--mode", "lora", "--init", "kaiming"], "mode 'lora' learns updates of LS-initialised"),
        "unknown-model": (["--anchors", "resnet18,resnet5O"], "Unknown model 'resnet5O'"),
        "missing-dataset": (["--dataset", "/nonexistent/folder", "--anchors", "resnet18,resnet50"],
                            "'/nonexistent/folder' is neither (no such directory)"),
        "demo-anchors-on-other-data": (["--dataset", str(folder)], "needs its own anchors (give them with --anchors)"),
        "catalog-is-a-file": (["--anchors", "resnet18,resnet50", "--num-classes", "2", *data, "--catalog", str(a_file)],
                              f"The catalog must be a folder or URI, but {str(a_file)!r} is a file."),
        "unstitchable": (["--anchors", "deit_tiny_patch16_224,resnet18", "--num-classes", "2", *data],
                         "Cannot stitch deit_tiny_patch16_224"),
        "classes-differ": (["--anchors", "resnet18,resnet50", *data],
                           "Anchors must classify the dataset's 2 classes, but resnet18 has 1000, resnet50 has 1000"),
    }


CASES = [
    "negative-epochs-and-no-workers",
    "lora-needs-ls",
    "unknown-model",
    "missing-dataset",
    "demo-anchors-on-other-data",
    "catalog-is-a-file",
    "unstitchable",
    "classes-differ",
]


def _check_one_error_paragraph(returncode: int, stdout: str, stderr: str, expected: str) -> None:
    output = stdout + stderr
    assert "TEST GUARD" not in output and "Started a local Ray instance" not in output
    assert "Traceback" not in output
    assert returncode == 2, output
    err = stderr.strip()
    assert err.startswith("error: ") and err.count("error:") == 1, err
    assert "\n\n" not in err and len(err.splitlines()) == 1, err  # one paragraph
    assert expected in err, err


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the CLI gets as far as Ray (in this process)."""
    import orchestrator.train.launch as run

    def boom(*args, **kwargs):
        raise AssertionError("TEST GUARD: the CLI reached Ray")

    monkeypatch.setattr(run, "ensure_ray", boom)
    monkeypatch.setattr(run, "run_training", boom)


@pytest.mark.parametrize("case", CASES)
def test_cli_bad_input_ends_with_one_error_paragraph_before_ray(case, image_folder, tmp_path, monkeypatch, capsys,
                                                                no_ray):
    from orchestrator.train.__main__ import main

    a_file = tmp_path / "catalog.txt"
    a_file.write_text("not a catalog")
    args, expected = _cases(image_folder, a_file)[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNNET_CACHE", str(tmp_path / "snnet-cache"))
    code = main(args)
    out, err = capsys.readouterr()
    _check_one_error_paragraph(code, out, err, expected)
    # nothing was trained, pretrained or written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.txt"]


def test_cli_bad_input_as_a_subprocess(cli_runner, image_folder, tmp_path):
    """The real ``python -m orchestrator.train`` entry point (a process forked from the preloaded
    ``cli_runner`` server, ``ray.init`` guarded): exit status 2, no traceback, no Ray."""
    a_file = tmp_path / "catalog.txt"
    a_file.write_text("not a catalog")
    cases = _cases(image_folder, a_file)
    env = {k: v for k, v in cli_runner.env.items() if k != "RAY_ADDRESS"}
    env["SNNET_CACHE"] = str(tmp_path / "snnet-cache")  # demo pretraining, if ever reached, stays here
    for name in ["negative-epochs-and-no-workers", "demo-anchors-on-other-data", "classes-differ"]:
        done = cli_runner.run("orchestrator.train", *cases[name][0], cwd=tmp_path, env=env, timeout=180,
                              no_ray=True)
        assert "RAY-INIT-CALLED" not in done.stderr, done.stderr
        _check_one_error_paragraph(done.returncode, done.stdout, done.stderr, cases[name][1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.txt"]


# -- checks that must happen in prepare(), before training ------------------------------------------


def _prepare_args(image_folder: Path, tmp_path: Path, **kw) -> TrainConfig:
    anchors = [AnchorSpec(n, kwargs={"num_classes": 2}) for n in ("resnet18", "resnet50")]
    settings = dict(anchors=anchors, dataset=str(image_folder), image_size=32, catalog=str(tmp_path / "cat"),
                    epochs=0, workers=1)
    return TrainConfig(**{**settings, **kw})


def test_prepare_accepts_good_settings_and_names_the_trial(image_folder, tmp_path):
    from orchestrator.train.prepare import prepare

    config, space = prepare(_prepare_args(image_folder, tmp_path), progress=None)
    assert len(space) == 18 and space.anchor_names == ("resnet18", "resnet50")
    assert config.trial_id and config.catalog == str(tmp_path / "cat")
    assert not (tmp_path / "cat").exists()  # checked, not created


def test_prepare_rejects_a_bad_trial_id_before_training(image_folder, tmp_path):
    from orchestrator.train.prepare import prepare

    with pytest.raises(SNNetError, match="trial name"):
        prepare(_prepare_args(image_folder, tmp_path, trial_id="bad/id"), progress=None)


def test_prepare_rejects_a_catalog_below_a_file_before_training(image_folder, tmp_path):
    from orchestrator.train.prepare import prepare

    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    config = _prepare_args(image_folder, tmp_path, catalog=str(a_file / "catalog"))
    with pytest.raises(SNNetError, match="catalog"):
        prepare(config, progress=None)


# -- --space, --set and the resources a run asks Ray for ----------------------------------------------


def test_train_space_runs_the_first_point_with_overrides_and_flags():
    args = parse_args(["--space", "deit_ti_s_b", "--dataset", "/data/x", "--num-classes", "3", "--epochs", "1",
                       "--set", "resources.workers_per_trial=1", "--set", "training.seed=7"])
    config = config_from_args(args)
    assert (config.dataset, config.epochs, config.workers, config.seed) == ("/data/x", 1, 1, 7)
    assert (config.kernel_size, config.stride) == (2, 1)  # the first choices
    assert config.anchors[0] == AnchorSpec("deit_tiny_patch16_224", pretrained=True, kwargs={"num_classes": 3})
    assert config.sampling == "uniform" and config.sampling_options == {}  # the chosen rule's options


@pytest.mark.parametrize("argv, fragment", [
    (["--set", "epochz=3"], "'epochz' is none (did you mean 'epochs'?)"),
    (["--space", "deit_ti_s_b", "--set", "training.epochs=-1"], "training.epochs: must be an integer >= 0, got -1"),
    (["--space", "deit_ti_s_b", "--anchors", "resnet18,resnet50"], "names its own anchors"),
])
def test_train_overrides_name_the_path(argv, fragment):
    with pytest.raises(SNNetError) as err:
        config_from_args(parse_args(argv))
    assert fragment in str(err.value)


def test_set_without_a_space_sets_trainconfig_fields():
    config = config_from_args(parse_args(["--set", "training.epochs=2", "--set", "anchor_lr=1e-4", "--epochs", "3"]))
    assert (config.epochs, config.anchor_lr) == (3, 1e-4)  # flags win over --set


def test_a_fractional_gpu_reaches_ray_as_that_fraction():
    from orchestrator.train.cluster import worker_resources

    assert worker_resources(TrainConfig(use_gpu=True, gpus_per_worker=0.5, cpus_per_worker=2)) == {"CPU": 2, "GPU": 0.5}
    assert worker_resources(TrainConfig(use_gpu=True)) == {"CPU": 1, "GPU": 1}
    assert worker_resources(TrainConfig()) == {"CPU": 1}


def test_grid_search_expands_an_integer_range_to_its_grid():
    from orchestrator.sweep.tuner import tune_search_space
    from search_spaces import load_space

    space = load_space("demo", overrides=["searcher.algorithm=grid", "training.epochs={low: 1, high: 3}"])
    tune_space = tune_search_space(space)
    assert (tune_space["training__epochs"] == {"grid_search": [1, 2, 3]}
            == {"grid_search": space.parameters()["training.epochs"].grid_values()})
