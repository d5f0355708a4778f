"""Typed, validated search spaces: what a sweep searches over and what it keeps fixed.

A :class:`SearchSpace` is what a YAML file under ``search_spaces/`` loads into (see
:mod:`search_spaces` for the format and :func:`search_spaces.load_space`). It holds

* candidate anchor **families** (:class:`Family` of :class:`AnchorEntry`), one picked per trial;
* the SN-Net **space** settings (window ``kernel_size`` k, ``stride`` s, ``nearest``,
  ``direction``, ``two_way``; Pan, Cai and Zhuang, CVPR 2023, arXiv 2302.06586);
* **training** settings: any field of ``orchestrator.config.TrainConfig`` not set elsewhere;
* the **resources** of one trial and the **searcher** that drives the sweep.

Every setting under ``space`` and ``training`` is either fixed (a plain value) or searched:
a :class:`Choice` of values, or a :class:`FloatRange` / :class:`IntRange` (optionally on a
log scale). :meth:`SearchSpace.parameters` lists the searched ones under flat dotted keys
(``family``, ``space.kernel_size``, ``training.anchor_lr``); a searcher proposes one value for
each and :meth:`SearchSpace.trial_settings` turns that point into the plain values that build
one trial's ``TrainConfig``. This module imports neither Ray nor Optuna: mapping the
parameters onto a searcher's distributions is the orchestrator's job.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping, Union

from snnet import SNNetError
from snnet._space import DIRECTIONS, SpaceConfig
from snnet.anchors import AnchorSpec
from snnet.sampling import RULES

__all__ = [
    "ALGORITHMS",
    "AnchorEntry",
    "Choice",
    "FloatRange",
    "Family",
    "IntRange",
    "OBJECTIVES",
    "Param",
    "Resources",
    "SCHEDULERS",
    "SPACE_FIELDS",
    "SearchSpace",
    "Searcher",
    "TRAINING_FIELDS",
    "TRAINING_SET_ELSEWHERE",
]

#: Searcher algorithms: Optuna's TPE, NSGA-II (multi-objective), random and grid samplers.
ALGORITHMS: tuple[str, ...] = ("tpe", "nsga2", "random", "grid")
#: Trial schedulers: none, or ASHA early stopping on per-epoch metrics.
SCHEDULERS: tuple[str, ...] = ("none", "asha")
#: Objectives a trial reports, with the direction each is optimised in.
OBJECTIVES: dict[str, str] = {"hypervolume": "max", "train_cost": "min", "best_top1": "max"}

#: ``space:`` keys, in ``SpaceConfig`` order (defaults come from ``SpaceConfig``).
SPACE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SpaceConfig))

# Kept in sync with orchestrator.config (MODES, INITS and TrainConfig.validate) by
# tests/test_search_spaces.py: search_spaces may not import the orchestrator.
_MODES = ("full", "stitch-only", "lora")
_INITS = ("ls", "kaiming")
_LS_MODES = ("joint", "average")

#: TrainConfig's default sampling rule: whose ``sampling_options`` apply when ``sampling`` is unset.
_DEFAULT_SAMPLING = "uniform"

_PRIMITIVES = (type(None), bool, int, float, str)


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else repr(x)


# -- the kinds of value a setting takes --------------------------------------------------------
@dataclass(frozen=True)
class _Kind:
    """The values one setting accepts: a type plus bounds or a closed set of names."""

    type: str  # "int" | "float" | "bool" | "str"; "mapping" and "anchor" are parsed by their own code
    minimum: float | None = None
    below: float | None = None  # exclusive upper bound
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    searchable: bool = True

    def describe(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(self.choices)
        elif self.type == "bool":
            text = "true or false"
        elif self.type == "str":
            text = "a string"
        else:
            noun = "an integer" if self.type == "int" else "a number"
            if self.below is not None:
                text = f"{noun} in [{_num(self.minimum)}, {_num(self.below)})"
            elif self.minimum is not None:
                text = f"{noun} >= {_num(self.minimum)}"
            else:
                text = noun
        return text + (" or null" if self.nullable else "")

    def coerce(self, value: Any) -> Any:
        """``value`` in canonical form, or :class:`SNNetError` saying what must hold and what came.

        Floats also accept strings such as ``"1e-4"``: YAML 1.1 reads an exponent without a
        decimal point as a string, a trap worth forgiving.
        """
        if value is None and self.nullable:
            return None
        bad = SNNetError(f"must be {self.describe()}, got {value!r}")
        if self.type == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.type == "str":
            if not isinstance(value, str):
                raise bad
            if self.choices is not None and value not in self.choices:
                raise SNNetError(f"must be {self.describe()}, got {value!r}{did_you_mean(value, self.choices)}")
            return value
        if isinstance(value, bool):
            raise bad
        if self.type == "int":
            if not isinstance(value, int):
                raise bad
        else:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise bad from None
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            value = float(value)
        if (self.minimum is not None and value < self.minimum) or (self.below is not None and value >= self.below):
            raise bad
        return value


def did_you_mean(word: Any, options: Any) -> str:
    """``" (did you mean 'x'?)"`` for the closest option, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_INT0, _INT1 = _Kind("int", minimum=0), _Kind("int", minimum=1)
_FLOAT0 = _Kind("float", minimum=0)

#: The kind of value every ``space:`` key takes.
_SPACE_KINDS: dict[str, _Kind] = {
    "kernel_size": _INT1,
    "stride": _INT1,
    "nearest": _Kind("bool"),
    "direction": _Kind("str", choices=DIRECTIONS),
    "two_way": _Kind("bool"),
}

#: ``TrainConfig`` fields accepted under ``training:``, with the kind of value each takes.
#: ``sampling_options`` and ``teacher`` have a structure of their own and are never searched.
TRAINING_FIELDS: dict[str, _Kind] = {
    "epochs": _INT0,
    "batch_size": _INT1,
    "eval_batch_size": _INT1,
    "anchor_lr": _FLOAT0,
    "stitch_lr": _FLOAT0,
    "weight_decay": _FLOAT0,
    "warmup_fraction": _Kind("float", minimum=0, below=1),
    "grad_clip": _FLOAT0,
    "mode": _Kind("str", choices=_MODES),
    "lora_rank": _INT1,
    "init": _Kind("str", choices=_INITS),
    "ls_samples": _INT0,
    "ls_mode": _Kind("str", choices=_LS_MODES),
    "sampling": _Kind("str", choices=tuple(RULES)),
    "sampling_options": _Kind("mapping", searchable=False),  # {rule: {option: value}}
    "seed": _INT0,
    "teacher": _Kind("anchor", nullable=True, searchable=False),  # an anchor entry
    "checkpoint_every_steps": _INT0,
    "eval_checkpoint_seconds": _FLOAT0,
    "max_failures": _INT0,
    "measure_latency": _Kind("bool"),
    "placement_strategy": _Kind("str", choices=("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")),
    "latency_batch_size": _INT1,
}

#: The other ``TrainConfig`` fields, and where a search space sets them instead.
TRAINING_SET_ELSEWHERE: dict[str, str] = {
    "anchors": "families:",
    **{name: "space:" for name in SPACE_FIELDS},
    "dataset": "the top-level dataset:",
    "image_size": "the top-level image_size:",
    "workers": "resources.workers_per_trial",
    "cpus_per_worker": "resources.cpus_per_worker",
    "use_gpu": "resources.gpus_per_worker",
    "catalog": "the sweep driver (--catalog)",
    "sweep": "the top-level name:",
    "trial_id": "the sweep driver (one per trial)",
    "storage_path": "the sweep driver",
}


# -- searched values ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """Search over these values (a categorical distribution)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        values = tuple(self.values) if isinstance(self.values, (list, tuple)) else self.values
        if not isinstance(values, tuple) or not values:
            raise SNNetError(f"a choice needs at least one value, got {self.values!r}")
        odd = [v for v in values if not isinstance(v, _PRIMITIVES)]
        if odd:
            raise SNNetError(f"choice values must be null, booleans, numbers or strings, got {odd[0]!r}")
        object.__setattr__(self, "values", values)

    def canonical(self, value: Any) -> Any:
        """The listed value equal to ``value`` (so a searcher's numpy scalar becomes plain Python)."""
        for v in self.values:
            # 1 == True in Python, but a choice of [1, 2] must not accept true.
            if v == value and isinstance(v, bool) == isinstance(value, bool):
                return v
        raise SNNetError(f"{value!r} is not one of {list(self.values)}")

    def contains(self, value: Any) -> bool:
        return _contains(self, value)

    def grid_values(self) -> list[Any]:
        return list(self.values)


@dataclass(frozen=True)
class FloatRange:
    """Search over real numbers in ``[low, high]``, uniformly or on a log scale."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SNNetError(f"`{name}` must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        _check_range(self.low, self.high, self.log)

    def canonical(self, value: Any) -> float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and self.low <= value <= self.high:
            return float(value)
        raise SNNetError(f"{value!r} lies outside [{_num(self.low)}, {_num(self.high)}]")

    def contains(self, value: Any) -> bool:
        return _contains(self, value)


@dataclass(frozen=True)
class IntRange:
    """Search over the integers in ``[low, high]``, uniformly or on a log scale."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SNNetError(f"`{name}` must be an integer, got {value!r}")
        _check_range(self.low, self.high, self.log)

    def canonical(self, value: Any) -> int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and self.low <= value <= self.high:
            return int(value)
        raise SNNetError(f"{value!r} is not an integer in [{self.low}, {self.high}]")

    def contains(self, value: Any) -> bool:
        return _contains(self, value)

    def grid_values(self) -> list[int]:
        return list(range(self.low, self.high + 1))


def _contains(param: "Param", value: Any) -> bool:
    try:
        param.canonical(value)
    except SNNetError:
        return False
    return True


def _check_range(low: float, high: float, log: bool) -> None:
    if not isinstance(log, bool):
        raise SNNetError(f"`log` must be true or false, got {log!r}")
    if low > high:
        raise SNNetError(f"`low <= high` must hold, but got (low={_num(low)}, high={_num(high)})")
    if log and low <= 0:
        raise SNNetError(f"a log range needs `low > 0`, but got (low={_num(low)}, high={_num(high)})")


#: A searched setting.
Param = Union[Choice, FloatRange, IntRange]
_PARAM_TYPES = (Choice, FloatRange, IntRange)


# -- anchors, resources, searcher ----------------------------------------------------------------
@dataclass(frozen=True)
class AnchorEntry:
    """One anchor of a family: a timm name, hub weights or a local checkpoint, model kwargs.

    Mirrors :class:`snnet.anchors.AnchorSpec`; a ``checkpoint`` replaces hub weights.
    """

    name: str
    pretrained: bool = False
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> AnchorSpec:
        return AnchorSpec(self.name, pretrained=self.pretrained, checkpoint=self.checkpoint, kwargs=dict(self.kwargs))


@dataclass(frozen=True)
class Family:
    """Anchors of one kind, small to large, that one trial stitches into a supernet.

    ``demo=True``: the embedded demo ViTs, which the orchestrator pretrains and caches
    (``orchestrator.demo.demo_anchor_specs(anchors=family.anchor_names())``).
    """

    name: str
    anchors: tuple[AnchorEntry, ...]
    demo: bool = False
    description: str = ""

    def anchor_names(self) -> list[str]:
        return [a.name for a in self.anchors]

    def anchor_specs(self) -> list[AnchorSpec]:
        """The anchors as :class:`AnchorSpec` objects, in order (not for demo families)."""
        if self.demo:
            raise SNNetError(
                f"Family {self.name!r} holds the embedded demo anchors: their weights come from "
                "orchestrator.demo.demo_anchor_specs(anchors=family.anchor_names()), which pretrains and caches them."
            )
        return [a.spec() for a in self.anchors]


@dataclass(frozen=True)
class Resources:
    """What one trial reserves: Ray Train workers (DDP ranks), CPUs and GPUs per worker."""

    workers_per_trial: int = 2
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0

    def model_copy(self, update: Mapping[str, Any] | None = None) -> "Resources":
        """A copy with some fields replaced (the pydantic spelling of :func:`dataclasses.replace`)."""
        return replace(self, **(update or {}))


@dataclass(frozen=True)
class Searcher:
    """How the sweep searches: the algorithm, its objectives, budget, concurrency and scheduler."""

    algorithm: str = "tpe"
    objectives: tuple[str, ...] = ("hypervolume",)
    num_samples: int = 1
    max_concurrent_trials: int | None = None  # None: derived from the cluster by the sweep driver
    scheduler: str = "none"
    seed: int = 0

    @property
    def directions(self) -> tuple[str, ...]:
        """``"max"`` or ``"min"`` per objective, in order."""
        return tuple(OBJECTIVES[o] for o in self.objectives)

    def model_copy(self, update: Mapping[str, Any] | None = None) -> "Searcher":
        """A copy with some fields replaced (the pydantic spelling of :func:`dataclasses.replace`)."""
        return replace(self, **(update or {}))


# -- the search space --------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; build one with :func:`search_spaces.load_space` or :meth:`from_dict`.

    ``space`` holds every ``SPACE_FIELDS`` key; ``training`` the ``TRAINING_FIELDS`` keys the
    file sets. Values are plain (fixed) or a :data:`Param` (searched).
    """

    name: str
    families: tuple[Family, ...]
    space: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    dataset: str = "demo"
    image_size: int | None = None
    description: str = ""
    resources: Resources = field(default_factory=Resources)
    searcher: Searcher = field(default_factory=Searcher)
    source: str | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", *, check_models: bool = True) -> "SearchSpace":
        """Validate a parsed YAML mapping; every problem is reported in one :class:`SNNetError`."""
        from ._parse import parse_space

        return parse_space(data, source, check_models=check_models)

    def to_dict(self) -> dict[str, Any]:
        """This space in the YAML format (plain JSON-able values); ``from_dict`` reads it back equal."""

        def plain(value: Any) -> Any:
            if isinstance(value, Choice):
                return list(value.values)
            if isinstance(value, (FloatRange, IntRange)):
                return {"low": value.low, "high": value.high, "log": value.log}
            if isinstance(value, AnchorEntry):
                return asdict(value)
            return value

        families = [
            {"name": f.name, "description": f.description, "demo": f.demo,
             "anchors": [a.name if f.demo else asdict(a) for a in f.anchors]}
            for f in self.families
        ]
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "image_size": self.image_size,
            "families": families,
            "space": {k: plain(v) for k, v in self.space.items()},
            "training": {k: plain(v) for k, v in self.training.items()},
            "resources": asdict(self.resources),
            "searcher": {**asdict(self.searcher), "objectives": list(self.searcher.objectives)},
        }

    # The pydantic spellings, so callers written against pydantic models work unchanged. The
    # serialised form is the YAML format itself, read back through the full validation.
    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return self.to_dict()

    @classmethod
    def model_validate(cls, data: Any) -> "SearchSpace":
        return data if isinstance(data, cls) else cls.from_dict(data)

    def model_copy(self, update: Mapping[str, Any] | None = None) -> "SearchSpace":
        return replace(self, **(update or {}))

    def family(self, name: str) -> Family:
        for fam in self.families:
            if fam.name == name:
                return fam
        raise SNNetError(
            f"Search space {self.name!r} has no family {name!r}{did_you_mean(name, self.family_names())}; "
            f"its families are {', '.join(self.family_names())}."
        )

    def family_names(self) -> list[str]:
        return [f.name for f in self.families]

    def parameters(self) -> dict[str, Param]:
        """Every searched setting under a flat key: ``family`` (if several), ``space.*``, ``training.*``."""
        params: dict[str, Param] = {}
        if len(self.families) > 1:
            params["family"] = Choice(tuple(self.family_names()))
        for section in ("space", "training"):
            for key, value in getattr(self, section).items():
                if isinstance(value, _PARAM_TYPES):
                    params[f"{section}.{key}"] = value
        return params

    def fixed(self) -> dict[str, Any]:
        """Every fixed setting of a trial under a flat key, as plain (YAML/JSON-like) values."""
        out: dict[str, Any] = {}
        if len(self.families) == 1:
            out["family"] = self.families[0].name
        out["dataset"] = self.dataset
        out["image_size"] = self.image_size
        for section in ("space", "training"):
            for key, value in getattr(self, section).items():
                if not isinstance(value, _PARAM_TYPES):
                    out[f"{section}.{key}"] = asdict(value) if isinstance(value, AnchorEntry) else value
        for key, value in asdict(self.resources).items():
            out[f"resources.{key}"] = value
        return out

    def grid_size(self) -> int | None:
        """Number of points of the full grid, or ``None`` when a float range makes it infinite."""
        size = 1
        for param in self.parameters().values():
            if isinstance(param, FloatRange):
                return None
            size *= len(param.grid_values())
        return size

    def grid(self) -> dict[str, list[Any]]:
        """The values of every searched setting, for a grid sampler."""
        if self.grid_size() is None:
            ranges = [k for k, p in self.parameters().items() if isinstance(p, FloatRange)]
            raise SNNetError(f"Search space {self.name!r} has no finite grid: {', '.join(ranges)} are float ranges.")
        return {key: param.grid_values() for key, param in self.parameters().items()}

    def trial_settings(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The settings of one trial at the point ``params`` of the search.

        ``params`` maps keys of :meth:`parameters` to one value each; every searched key is
        needed, fixed keys may be given (with their fixed value) or left out. Returns::

            {"family":   Family,                    # the chosen family
             "anchors":  list[AnchorSpec] | None,   # None for a demo family (see Family)
             "space":    {kernel_size, stride, nearest, direction, two_way},
             "training": {TrainConfig field: value}}

        ``training`` holds the ``training:`` settings plus ``dataset``, ``image_size``,
        ``workers``, ``cpus_per_worker`` and ``use_gpu``, so one trial's config is
        ``TrainConfig(**s["training"], **s["space"], anchors=s["anchors"])``.
        """
        searched, fixed = self.parameters(), self.fixed()
        problems = []
        point: dict[str, Any] = {}
        for key, value in params.items():
            if key in searched:
                try:
                    point[key] = searched[key].canonical(value)
                except SNNetError as e:
                    problems.append(f"{key}: {e}")
            elif key in fixed:
                if value != fixed[key]:
                    problems.append(f"{key}: the space fixes it to {fixed[key]!r}, got {value!r}")
            else:
                problems.append(f"{key}: not a setting of this space{did_you_mean(key, [*searched, *fixed])}")
        missing = [key for key in searched if key not in params]
        if missing:
            problems.append(f"no value for the searched settings {', '.join(missing)}")
        if problems:
            known = ", ".join(searched) or "none"
            raise SNNetError(
                f"Invalid trial parameters for search space {self.name!r}: {'; '.join(problems)} "
                f"(searched settings: {known})."
            )

        def pick(section: str, key: str) -> Any:
            value = getattr(self, section)[key]
            return point[f"{section}.{key}"] if isinstance(value, _PARAM_TYPES) else value

        family = self.family(point.get("family", self.families[0].name))
        space = {key: pick("space", key) for key in SPACE_FIELDS}
        training = {key: pick("training", key) for key in self.training}
        if "sampling_options" in training:  # per-rule options: keep the chosen rule's
            rule = training.get("sampling", _DEFAULT_SAMPLING)
            training["sampling_options"] = dict(training["sampling_options"].get(rule, {}))
        if isinstance(training.get("teacher"), AnchorEntry):
            training["teacher"] = training["teacher"].spec()
        training.update(
            dataset=self.dataset,
            image_size=self.image_size,
            workers=self.resources.workers_per_trial,
            cpus_per_worker=self.resources.cpus_per_worker,
            use_gpu=self.resources.gpus_per_worker > 0,
        )
        anchors = None if family.demo else family.anchor_specs()
        return {"family": family, "anchors": anchors, "space": space, "training": training}

