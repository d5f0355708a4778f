"""Search spaces: every shipped YAML loads, malformed ones fail with every problem named, and a
point of the search turns into a valid TrainConfig. No Ray, no Optuna."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import search_spaces
from orchestrator.train.config import INITS, MODES, TrainConfig
from search_spaces import (
    TRAINING_SET_ELSEWHERE,
    Choice,
    FloatRange,
    IntRange,
    SearchSpace,
    TrainingSection,
    load_space,
    schema,
    shipped_spaces,
)
from snnet import SNNetError
from snnet.anchors import AnchorSpec

DEMO = ["snnet_demo_vit_tiny", "snnet_demo_vit_small", "snnet_demo_vit_base"]

BASE = {
    "name": "t",
    "dataset": "demo",
    "families": [{"name": "demo_vit", "demo": True, "anchors": list(DEMO)}],
    "space": {"kernel_size": [2, 3], "stride": 1},
    "training": {"epochs": 1, "sampling": ["uniform", "balanced"]},
    "resources": {"workers_per_trial": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
    "searcher": {"algorithm": "tpe", "objectives": ["hypervolume"], "num_samples": 2},
}


def write(tmp_path: Path, data, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def edited(**changes):
    """BASE with sections updated: edited(space={"stride": 0}) or edited(top=lambda d: ...)."""
    data = copy.deepcopy(BASE)
    for section, change in changes.items():
        if callable(change):
            change(data)
        else:
            data[section].update(change)
    return data


# -- shipped spaces ------------------------------------------------------------------------------
def test_shipped_spaces_are_listed():
    assert {"demo", "deit_ti_s_b", "swin_t_s_b", "resnet18_50", "resnet18_swin_t"} <= set(shipped_spaces())


@pytest.mark.parametrize("name", shipped_spaces())
def test_every_shipped_space_loads_and_builds_train_configs(name):
    space = load_space(name)
    assert space.name == name
    assert space.families and all(len(f.anchors) >= 2 for f in space.families)
    # the first point of each searched setting gives a valid TrainConfig
    point = {k: p.values[0] if isinstance(p, Choice) else p.low for k, p in space.parameters().items()}
    space.trial_config(point).validate()


@pytest.mark.parametrize("name", shipped_spaces())
def test_the_yaml_form_round_trips_through_json(name):
    space = load_space(name)
    data = json.loads(json.dumps(space.model_dump(mode="json")))
    assert SearchSpace.from_dict(data) == space
    # the pydantic spellings the sweep driver uses
    assert SearchSpace.model_validate(space.model_dump(mode="json")) == space
    copied = space.model_copy(update={"searcher": space.searcher.model_copy(update={"num_samples": 7})})
    assert copied.searcher.num_samples == 7 and copied.families == space.families


def test_demo_space_is_small_and_laptop_sized():
    space = load_space("demo")
    assert space.dataset == "demo" and space.families[0].demo
    assert space.families[0].anchor_names() == DEMO
    assert space.searcher.num_samples <= 4
    assert space.resources.workers_per_trial * space.resources.cpus_per_worker <= 2
    assert space.resources.gpus_per_worker == 0
    assert space.fixed()["training.epochs"] <= 5
    assert space.grid_size() is not None


def test_deit_space_has_the_papers_choices():
    space = load_space("deit_ti_s_b")
    params = space.parameters()
    assert params["space.kernel_size"] == Choice((2, 3, 4))
    assert params["space.stride"] == Choice((1, 2))
    assert set(params["training.sampling"].values) == {"uniform", "sandwich", "flops-bucket", "balanced"}
    assert space.fixed()["training.epochs"] == 50
    assert space.resources.gpus_per_worker == 1 and space.resources.workers_per_trial == 8
    assert space.families[0].anchor_specs() == [
        AnchorSpec(n, pretrained=True)
        for n in ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
    ]


# -- derived from TrainConfig ------------------------------------------------------------------------
def test_training_keys_cover_trainconfig_exactly():
    train_fields = set(TrainConfig.model_fields)
    assert set(TrainingSection.model_fields) | set(TRAINING_SET_ELSEWHERE) == train_fields
    assert not set(TrainingSection.model_fields) & set(TRAINING_SET_ELSEWHERE)


def test_training_kinds_agree_with_trainconfig():
    assert schema.TrainConfig is TrainConfig and search_spaces.MODES is MODES and search_spaces.INITS is INITS
    for mode in search_spaces.LS_MODES:
        TrainConfig(ls_mode=mode).validate()
    for name in TrainingSection.model_fields:
        kind = schema._kind(name) if name not in ("sampling_options", "teacher") else None
        if kind is not None and kind.type in ("int", "float") and kind.minimum is not None:
            boundary = int(kind.minimum) if kind.type == "int" else float(kind.minimum)
            extra = {"ls_samples": 1} if name == "ls_samples" else {}  # LS init needs a sample
            TrainConfig(**{name: boundary, **extra}).validate()
            with pytest.raises(SNNetError):
                kind(boundary - 1)


def test_every_demo_grid_point_builds_a_valid_trainconfig():
    space = load_space("demo")
    grid = {key: param.grid_values() for key, param in space.parameters().items()}
    assert len(list(itertools.product(*grid.values()))) == space.grid_size() == 4
    assert search_spaces.SPACE_FIELDS == ("kernel_size", "stride", "nearest", "direction", "two_way", "preset")
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        assert space.trial_family(point).name == "demo_vit"
        config = space.trial_config(point).validate()
        assert config.anchors is None  # the orchestrator pretrains demo anchors
        assert (config.workers, config.cpus_per_worker, config.use_gpu, config.dataset) == (2, 1, False, "demo")
        assert (config.kernel_size, config.sampling) == (point["space.kernel_size"], point["training.sampling"])


def test_trial_config_of_a_timm_family(tmp_path):
    path = write(tmp_path, {
        "name": "deit",
        "dataset": "/data/imagenet",
        "families": [{"name": "deit", "pretrained": True, "anchors": [
            "deit_tiny_patch16_224",
            {"name": "deit_small_patch16_224", "checkpoint": "/ckpt/s.pth", "kwargs": {"drop_path_rate": 0.1}},
        ]}],
        "training": {"sampling": ["uniform", "sandwich"], "sampling_options": {"sandwich": {"num_random": 3}},
                     "anchor_lr": {"low": "1e-5", "high": 1.0e-3, "log": True}, "teacher": "deit_base_patch16_224"},
        "resources": {"workers_per_trial": 8, "cpus_per_worker": 4, "gpus_per_worker": 1},
    })
    space = load_space(path)
    assert space.parameters()["training.anchor_lr"] == FloatRange(1e-5, 1e-3, log=True)  # "1e-5": YAML 1.1 string
    t = space.trial_config({"training.sampling": "sandwich", "training.anchor_lr": 2e-4}).validate()
    assert t.anchors == [
        AnchorSpec("deit_tiny_patch16_224", pretrained=True),
        AnchorSpec("deit_small_patch16_224", checkpoint="/ckpt/s.pth", kwargs={"drop_path_rate": 0.1}),
    ]
    assert t.sampling_options == {"num_random": 3} and t.use_gpu is True and t.workers == 8
    assert t.teacher == AnchorSpec("deit_base_patch16_224", pretrained=True)
    assert SearchSpace.from_dict(json.loads(json.dumps(space.model_dump(mode="json")))) == space
    # the uniform rule takes no options: none are passed to it
    assert space.trial_config({"training.sampling": "uniform", "training.anchor_lr": 1e-4}).sampling_options == {}


# -- parameters, fixed, grid ---------------------------------------------------------------------------
@pytest.fixture
def small_space() -> SearchSpace:
    return SearchSpace.from_dict({
        "name": "small",
        "families": [{"name": "a", "demo": True, "anchors": DEMO[:2]},
                     {"name": "b", "demo": True, "anchors": DEMO[1:]}],
        "space": {"kernel_size": [2, 3], "nearest": False},
        "training": {"sampling": ["uniform", "sandwich"], "epochs": {"low": 1, "high": 3}, "batch_size": 16},
    })


def test_parameters_fixed_and_grid(small_space):
    assert small_space.parameters() == {
        "family": Choice(("a", "b")),
        "space.kernel_size": Choice((2, 3)),
        "training.sampling": Choice(("uniform", "sandwich")),
        "training.epochs": IntRange(1, 3),
    }
    fixed = small_space.fixed()
    assert "family" not in fixed and "space.kernel_size" not in fixed
    assert fixed["space.nearest"] is False and fixed["space.stride"] == 1 and fixed["training.batch_size"] == 16
    assert fixed["resources.workers_per_trial"] == 2 and fixed["dataset"] == "demo"
    assert small_space.grid_size() == 2 * 2 * 2 * 3
    assert small_space.parameters()["training.epochs"].grid_values() == [1, 2, 3]
    with_range = SearchSpace.from_dict(edited(training={"anchor_lr": {"low": 1e-4, "high": 1e-3}}))
    assert with_range.grid_size() is None


def test_trial_config_turns_numpy_values_into_python(small_space):
    np = pytest.importorskip("numpy")
    point = {"family": np.str_("a"), "space.kernel_size": np.int64(3), "training.sampling": "uniform",
             "training.epochs": np.int64(2)}
    config = small_space.trial_config(point)
    assert type(config.kernel_size) is int and type(config.epochs) is int
    assert small_space.trial_family(point).name == "a"
    lr = SearchSpace.from_dict(edited(training={"anchor_lr": {"low": 1e-4, "high": 1e-3}}))
    value = lr.trial_config({"space.kernel_size": 2, "training.sampling": "uniform",
                             "training.anchor_lr": np.float32(5e-4)}).anchor_lr
    assert type(value) is float


def test_trial_config_picks_the_family(small_space):
    point = {"family": "b", "space.kernel_size": 3, "training.sampling": "sandwich", "training.epochs": 2,
             "space.nearest": False}
    config = small_space.trial_config(point)
    assert small_space.trial_family(point).anchor_names() == DEMO[1:]
    assert config.nearest is False and config.epochs == 2
    with pytest.raises(SNNetError, match="demo_anchor_specs"):
        small_space.trial_family(point).anchor_specs()


@pytest.mark.parametrize("params, fragment", [
    ({"family": "c"}, "family: 'c' is not one of ['a', 'b']"),
    ({"space.kernel_size": 4}, "space.kernel_size: 4 is not one of [2, 3]"),
    ({"space.kernel_size": True}, "space.kernel_size: True is not one of [2, 3]"),
    ({"training.epochs": 2.5}, "training.epochs: 2.5 is not an integer in [1, 3]"),
    ({"training.epochs": 4}, "training.epochs: 4 is not an integer in [1, 3]"),
    ({"space.nearest": True}, "space.nearest: the space fixes it to False"),
    ({"training.sampel": "uniform"}, "did you mean 'training.sampling'?"),
    ({}, "no value for the searched settings family, space.kernel_size"),
])
def test_trial_config_rejects_bad_points(small_space, params, fragment):
    point = {"family": "a", "space.kernel_size": 2, "training.sampling": "uniform", "training.epochs": 1}
    point = {**point, **params} if params else {}
    with pytest.raises(SNNetError) as err:
        small_space.trial_config(point)
    assert fragment in str(err.value)


# -- loading by name or path -------------------------------------------------------------------------
def test_load_by_name_equals_load_by_path():
    by_name = load_space("demo")
    path = Path(__import__("search_spaces").__file__).parent / "demo.yaml"
    assert load_space(path) == by_name == load_space(str(path))
    assert by_name.source and by_name.source.endswith("demo.yaml")


def test_unknown_name_lists_shipped_spaces():
    with pytest.raises(SNNetError) as err:
        load_space("deit_tsb")
    message = str(err.value)
    assert "Unknown search space 'deit_tsb'" in message
    assert all(name in message for name in shipped_spaces())


def test_missing_file(tmp_path):
    with pytest.raises(SNNetError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")


# -- malformed spaces ----------------------------------------------------------------------------------
MALFORMED = [
    ("unknown-key", edited(space={"kernal_size": 2}), "space.kernal_size: unknown key (did you mean 'kernel_size'?)"),
    ("kernel-zero", edited(space={"kernel_size": [2, 0]}), "space.kernel_size[1]: must be an integer >= 1, got 0"),
    ("stride-zero", edited(space={"stride": 0}), "space.stride: must be an integer >= 1, got 0"),
    ("wrong-type", edited(training={"epochs": "three"}), "training.epochs: must be an integer >= 0, got 'three'"),
    ("low-high", edited(training={"epochs": {"low": 3, "high": 1}}),
     "training.epochs: `low <= high` must hold, but got (low=3, high=1)"),
    ("log-low", edited(training={"anchor_lr": {"low": 0, "high": 1e-3, "log": True}}),
     "training.anchor_lr: a log range needs `low > 0`"),
    ("range-key", edited(training={"stitch_lr": {"low": 1e-3, "hi": 1e-2}}), "training.stitch_lr.hi: unknown key"),
    ("rule", edited(training={"sampling": ["uniform", "sandwhich"]}),
     "training.sampling[1]: must be one of uniform, sandwich, flops-bucket, balanced, scored, got 'sandwhich' "
     "(did you mean 'sandwich'?)"),
    ("rule-options",
     edited(training={"sampling": "sandwich", "sampling_options": {"sandwich": {"num_randm": 1}}}),
     "training.sampling_options.sandwich: Sampling rule 'sandwich' takes the options num_random"),
    ("direction", edited(space={"direction": "backwards"}),
     "space.direction: must be one of fast-to-slow, slow-to-fast, both"),
    ("train-field", edited(training={"learning_rate": 1e-3}),
     "training.learning_rate: unknown training setting (TrainConfig has no such field)"),
    ("set-elsewhere", edited(training={"kernel_size": 2}),
     "training.kernel_size: is set by space:, not under training:"),
    ("one-anchor", edited(top=lambda d: d["families"][0].update(anchors=DEMO[:1])),
     "families[0].anchors: a family needs at least two anchors to stitch, got 1"),
    ("no-families", edited(top=lambda d: d.update(families=[])), "families: needs at least one family"),
    ("missing-families", edited(top=lambda d: d.pop("families")), "families: is required"),
    ("nsga2", edited(searcher={"algorithm": "nsga2"}),
     "searcher.objectives: nsga2 is multi-objective and needs at least 2 objectives"),
    ("tpe-two", edited(searcher={"objectives": ["hypervolume", "train_cost"]}), "tpe optimises one objective, got 2"),
    ("objective", edited(searcher={"objectives": ["accuracy"]}),
     "searcher.objectives[0]: must be one of hypervolume, train_cost, best_top1, got 'accuracy'"),
    ("num-samples", edited(searcher={"num_samples": 0}), "searcher.num_samples: must be an integer >= 1, got 0"),
    ("grid-float", edited(searcher={"algorithm": "grid"}, training={"anchor_lr": {"low": 1e-4, "high": 1e-3}}),
     "searcher.algorithm: grid search needs finite values, but training.anchor_lr is a float range"),
    ("gpus", edited(resources={"gpus_per_worker": -1}), "resources.gpus_per_worker: must be a number >= 0, got -1"),
    ("workers", edited(resources={"workers_per_trial": 0}),
     "resources.workers_per_trial: must be an integer >= 1, got 0"),
    ("name", edited(top=lambda d: d.update(name="my sweep")), "name: is the sweep's catalog partition"),
    ("demo-data", edited(top=lambda d: d.update(dataset="/data/imagenet")),
     "families[0].demo: the demo anchors are trained on the 'demo' dataset"),
    ("demo-timm", edited(top=lambda d: d["families"][0]["anchors"].__setitem__(0, "resnet18")),
     "families[0].anchors[0]: a demo family holds the embedded demo anchors"),
    ("timm-name", edited(top=lambda d: d.update(dataset="/data", families=[
        {"name": "deit", "anchors": ["deit_tiny_patch16_224", "deit_smal_patch16_224"]}])),
     "families[0].anchors[1]: Unknown model 'deit_smal_patch16_224'"),
    ("both-weights", edited(top=lambda d: d.update(dataset="/data", families=[{"name": "r", "anchors": [
        "resnet18", {"name": "resnet50", "pretrained": True, "checkpoint": "/w.pth"}]}])),
     "families[0].anchors[1]: give either pretrained: true (hub weights) or a checkpoint file, not both"),
    ("not-mapping", "- demo\n- deit\n", "a search space file must hold a mapping"),
    ("empty-file", "", "must hold a mapping (name:, families:, space:, ...), got null"),
    ("yaml-syntax", "name: t\nspace: {kernel_size: [2, 3}\n", "is not valid YAML at line 2"),
    ("duplicate", "name: t\nname: u\nfamilies: []\n", "found duplicate key 'name'"),
]


@pytest.mark.parametrize("data, fragment", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_space_names_the_problem(tmp_path, data, fragment):
    path = write(tmp_path, data, "bad.yaml")
    with pytest.raises(SNNetError) as err:
        load_space(path)
    message = str(err.value)
    assert fragment in message
    assert str(path) in message  # the file is named
    assert "\n" not in message.strip()  # one paragraph


def test_all_problems_are_reported_at_once_with_lines(tmp_path):
    path = write(tmp_path, """\
name: three
families:
  - name: demo_vit
    demo: true
    anchors: [snnet_demo_vit_tiny, snnet_demo_vit_small]
space:
  kernel_size: [2, 0]
training:
  sampling: unifrom
searcher:
  num_samples: 0
""")
    with pytest.raises(SNNetError) as err:
        load_space(path)
    message = str(err.value)
    assert f"Invalid search space {path}: 3 problems:" in message
    assert "space.kernel_size[1]: must be an integer >= 1, got 0 (line 7)" in message
    assert ("training.sampling: must be one of uniform, sandwich, flops-bucket, balanced, scored, "
            "got 'unifrom'") in message
    assert "searcher.num_samples: must be an integer >= 1, got 0 (line 11)" in message


def test_bounded_training_settings_are_checked_in_every_choice_and_range_at_load(tmp_path):
    """A bound of TrainConfig (mixup_prob in [0, 1], data_fraction in (0, 1]) holds for every value a
    space lists, at its YAML line: not only for the first point the driver builds."""
    path = write(tmp_path, """\
name: bounded
families:
  - name: demo_vit
    demo: true
    anchors: [snnet_demo_vit_tiny, snnet_demo_vit_small]
training:
  mixup_prob: [0.5, 1.5]
  data_fraction: {low: 0.0, high: 1.0}
  hv_flops_ref: 0
""")
    with pytest.raises(SNNetError) as err:
        load_space(path)
    message = str(err.value)
    assert "training.mixup_prob[1]: must lie in [0, 1], got 1.5 (line 7)" in message
    assert "training.data_fraction.low: must lie in (0, 1], got 0.0 (line 8)" in message
    assert "training.hv_flops_ref: must be a number > 0 or null, got 0 (line 9)" in message


def test_range_objects_validate_themselves():
    with pytest.raises(SNNetError, match=r"`low <= high` must hold, but got \(low=3, high=1\)"):
        IntRange(3, 1)
    with pytest.raises(SNNetError, match="log range needs `low > 0`"):
        FloatRange(0.0, 1.0, log=True)
    with pytest.raises(SNNetError, match="at least one value"):
        Choice(())
    assert Choice((1, 2)).canonical(2) == 2
    with pytest.raises(SNNetError, match=r"True is not one of \[1, 2\]"):
        Choice((1, 2)).canonical(True)


def test_package_imports_without_ray_optuna_or_orchestrator():
    from conftest import import_blocker

    code = import_blocker("ray", "optuna", "orchestrator") + """
import search_spaces
space = search_spaces.load_space('demo')
print(space.trial_config({'space.kernel_size': 2, 'training.sampling': 'uniform'}).workers)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2"


# -- bounded reading -------------------------------------------------------------------------------
def test_a_billion_laughs_file_is_refused_quickly(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} "
                     f"[*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    path = write(tmp_path, "name: bomb\n" + "\n".join(lines) + "\nfamilies: *i\n")
    with pytest.raises(SNNetError) as err:
        load_space(path)
    message = str(err.value)
    assert "found the alias *a: YAML aliases are not allowed in a search space" in message and "line 3" in message
    assert "\n" not in message


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path):
    import search_spaces

    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write("name: big\nfamilies:\n")
        f.write("  - {name: x, anchors: [a, b]}\n" * (2 * search_spaces.MAX_BYTES // 30))
    with pytest.raises(SNNetError, match=r"is larger than 1024 KiB"):
        load_space(path)


def test_a_large_file_under_the_limit_loads_in_one_pass(tmp_path):
    """About 1 MB of list items: the line map is built once (no quadratic walk, no recursion)."""
    items = ", ".join(str(i) for i in range(1, 140_000))
    path = write(tmp_path, f"name: large\nfamilies: [{{name: d, demo: true, anchors: {DEMO}}}]\n"
                           f"space: {{kernel_size: [{items}]}}\n")
    assert path.stat().st_size < 1 << 20
    space = load_space(path)
    assert len(space.parameters()["space.kernel_size"].values) == 139_999


def test_deep_nesting_is_one_error(tmp_path):
    path = write(tmp_path, "name: deep\nfamilies: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(SNNetError, match="nests its values too deeply|must be|problem"):
        load_space(path)


# -- overrides --------------------------------------------------------------------------------------
def test_overrides_set_values_by_dotted_path():
    space = load_space("deit_ti_s_b", overrides=[
        "training.epochs=1", "dataset=/data/x", "resources.workers_per_trial=1", "space.kernel_size=[2, 3]",
        "training.anchor_lr={low: 1e-5, high: 1e-4}", "searcher.num_samples=2", "families.0.pretrained=false",
    ])
    fixed = space.fixed()
    assert fixed["training.epochs"] == 1 and fixed["dataset"] == "/data/x"
    assert fixed["resources.workers_per_trial"] == 1 and space.searcher.num_samples == 2
    assert space.parameters()["space.kernel_size"] == Choice((2, 3))
    assert space.parameters()["training.anchor_lr"] == FloatRange(1e-5, 1e-4)
    assert not space.families[0].anchors[0].pretrained
    assert "with --set training.epochs=1" in space.source


@pytest.mark.parametrize("override, fragment", [
    ("training.epochs=-1", "training.epochs: must be an integer >= 0, got -1 (line "),
    ("training.epochz=1", "training.epochz: unknown training setting (did you mean 'epochs'?)"),
    ("resources.workers_per_trial=[1, 2]", "resources.workers_per_trial: must be an integer >= 1, got [1, 2]"),
    ("name.x=1", "--set name.x=1: name is not a mapping or list in this search space."),
    ("training.epochs", "--set takes dotted.path=value"),
    ("training.epochs=[1", "is not valid YAML"),
])
def test_overrides_are_validated_like_the_file(override, fragment):
    with pytest.raises(SNNetError) as err:
        load_space("demo", overrides=[override])
    assert fragment in str(err.value)


# -- one resolved TrainConfig per trial ---------------------------------------------------------------
def test_trial_config_is_one_plain_trainconfig_that_round_trips():
    space = load_space("deit_ti_s_b", overrides=["resources.gpus_per_worker=0.5"])
    config = space.trial_config(space.first_point(), catalog="s3://b/c", trial_id="t1")
    assert isinstance(config, TrainConfig) and config.sweep == "deit_ti_s_b"
    assert config.anchor_lr == pytest.approx((5e-5 * 5e-4) ** 0.5)  # a log range's default: geometric mean
    assert (config.use_gpu, config.gpus_per_worker, config.workers) == (True, 0.5, 8)
    assert TrainConfig.model_validate(json.loads(json.dumps(config.model_dump()))) == config


def test_first_point_takes_first_choices_and_range_defaults(small_space):
    assert small_space.first_point() == {"family": "a", "space.kernel_size": 2, "training.sampling": "uniform",
                                         "training.epochs": 1}
    assert IntRange(1, 100, log=True).first() == 10 and FloatRange(1.0, 3.0).first() == 1.0
