"""One way to say a setting (issue 26): every ``TrainConfig`` field is ``--set training.FIELD=VALUE`` on the
commands that train. ``orchestrator.train`` takes every field; a sweep takes every field a trial may vary,
sets those its space keeps elsewhere there (``training.workers`` is ``resources.workers_per_trial``), and
names where the rest are set (the families' anchors, the driver's catalog, storage and trial ids)."""

import json

import pytest

from orchestrator.sweep.space import load_search
from orchestrator.train.__main__ import config_from_args, parse_args
from search_spaces import TrainConfig
from snnet import SNNetError

#: Fields a sweep's trials cannot vary: the families, the GPU switch (resources.gpus_per_worker) and the driver's.
NOT_PER_TRIAL = {"anchors", "use_gpu", "catalog", "trial_id", "storage_path"}


def _value(name: str) -> str:
    """A valid value of the field that differs from its default where one is easy to name."""
    changed = {"epochs": 3, "workers": 1, "kernel_size": 3, "stitch_lr": 0.002, "seed": 5, "dataset": "demo",
               "sweep": "renamed", "cpus_per_worker": 2}
    default = getattr(TrainConfig(), name)
    value = changed.get(name, default.model_dump() if hasattr(default, "model_dump") else default)
    return f"training.{name}={json.dumps(value)}"


def test_every_trainconfig_field_is_a_set_on_train_and_lands_in_the_config():
    for name in TrainConfig.model_fields:
        config = config_from_args(parse_args(["--set", _value(name)]))
        expected = json.loads(_value(name).split("=", 1)[1])
        got = getattr(config, name)
        assert (got.model_dump() if hasattr(got, "model_dump") else got) == expected, name


def test_a_sweep_takes_training_fields_where_its_space_keeps_them_and_names_the_rest():
    reached = []
    for name in TrainConfig.model_fields:
        if name in NOT_PER_TRIAL:
            with pytest.raises(SNNetError, match=f"training.{name}: is set by"):
                load_search("demo", [_value(name)], None, None)
            continue
        load_search("demo", [_value(name)], None, None)
        reached.append(name)
    assert len(reached) == len(TrainConfig.model_fields) - len(NOT_PER_TRIAL)
    search = load_search("demo", ["training.workers=1", "training.kernel_size=3", "training.sweep=renamed",
                                  "training.epochs=3"], None, None)
    assert search.resources.workers_per_trial == 1 and search.name == "renamed"
    assert search.fixed()["training.epochs"] == 3 and search.model_dump(mode="json")["space"]["kernel_size"] == 3
