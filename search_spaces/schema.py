"""The search-space models (pydantic v2, ``extra="forbid"``): what a sweep searches over and keeps fixed.

A :class:`SearchSpace` holds the anchor **families** (one picked per trial), the **space** and **training**
sections derived from :class:`~search_spaces.training.TrainConfig`'s own fields (a knob is written once), the
**resources** of one trial and the **searcher**. A space or training setting is ``T | Choice[T] | Range``: a
value, a list (:class:`Choice`) or ``{low, high, log}`` (:class:`IntRange`, :class:`FloatRange`).
:meth:`SearchSpace.from_dict` reports every problem at once, each at its YAML path (and line).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    create_model,
    field_serializer,
    model_validator,
)

from snnet import AnchorSpec, SNNetError, UnknownModelError, check_model_name
from snnet.sampling import RULES
from snnet.text import plural

from ._kinds import Bool, Float, Int, Kind, OneOf, Problem, Str, describe, did_you_mean, problems
from .names import NAME_RULES, validate_name
from .searchable import Choice, FloatRange, Param, searchable
from .training import SPACE_FIELDS, TrainConfig

__all__ = ["ALGORITHMS", "AnchorEntry", "Family", "OBJECTIVES", "Problem", "Resources", "SCHEDULERS", "SearchSpace",
           "Searcher", "TRAINING_PATHS", "TRAINING_SET_ELSEWHERE", "TrainingSection"]

#: Searcher algorithms: Optuna's TPE, NSGA-II (multi-objective), random and grid samplers.
ALGORITHMS: tuple[str, ...] = ("tpe", "nsga2", "random", "grid")
#: Trial schedulers acting on the per-epoch early front (``early_hv``): none, ASHA, asynchronous
#: HyperBand (ASHA's several brackets), or Optuna's MedianPruner (orchestrator.sweep.schedulers).
SCHEDULERS: tuple[str, ...] = ("none", "asha", "hyperband", "median")
#: Objectives a trial reports, with the direction each is optimised in.
OBJECTIVES: dict[str, str] = {"hypervolume": "max", "train_cost": "min", "best_top1": "max"}
#: The ``TrainConfig`` fields a search space sets outside ``training:``, and where.
TRAINING_SET_ELSEWHERE: dict[str, str] = {
    "anchors": "families:", **{name: "space:" for name in SPACE_FIELDS},
    "dataset": "the top-level dataset:", "image_size": "the top-level image_size:",
    "workers": "resources.workers_per_trial", "cpus_per_worker": "resources.cpus_per_worker",
    "use_gpu": "resources.gpus_per_worker", "gpus_per_worker": "resources.gpus_per_worker",
    "catalog": "the sweep driver (--catalog)", "sweep": "the top-level name:",
    "trial_id": "the sweep driver (one per trial)", "storage_path": "the sweep driver",
}
#: Where a search space keeps the ``TrainConfig`` fields it sets outside ``training:`` that a trial may vary:
#: ``--set training.FIELD=V`` on a sweep is ``--set PATH=V`` (the others belong to the driver or the families).
TRAINING_PATHS: dict[str, str] = {
    **{name: f"space.{name}" for name in SPACE_FIELDS}, "dataset": "dataset", "image_size": "image_size",
    "workers": "resources.workers_per_trial", "cpus_per_worker": "resources.cpus_per_worker",
    "gpus_per_worker": "resources.gpus_per_worker", "sweep": "name",
}
_DEMO_PREFIX = "snnet_demo_"
_STRICT = ConfigDict(extra="forbid", frozen=True)


# -- anchors, families, resources, searcher ------------------------------------------------------
class AnchorEntry(BaseModel):
    """One anchor: a timm name, hub weights or a local checkpoint, model kwargs (an ``AnchorSpec``)."""

    model_config = _STRICT
    name: Str
    pretrained: Bool = False
    checkpoint: Kind("str", nullable=True).annotated() = None
    kwargs: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self) -> AnchorEntry:
        if not self.name:
            raise Problem("name", "an anchor needs a timm model name, got ''")
        if self.pretrained and self.checkpoint is not None:
            raise SNNetError("give either pretrained: true (hub weights) or a checkpoint file, not both")
        return self

    @classmethod
    def expand(cls, raw: Any, pretrained: bool, kwargs: Mapping[str, Any]) -> Any:
        """A name or a mapping, with a family's defaults (a checkpoint replaces hub weights)."""
        if isinstance(raw, str):
            return {"name": raw, "pretrained": pretrained, "kwargs": dict(kwargs)}
        if isinstance(raw, dict):
            own = raw.get("kwargs") if isinstance(raw.get("kwargs"), dict) else {}
            return {"pretrained": pretrained and raw.get("checkpoint") is None, **raw, "kwargs": {**kwargs, **own}}
        return raw

    def spec(self) -> AnchorSpec:
        return AnchorSpec(self.name, pretrained=self.pretrained, checkpoint=self.checkpoint, kwargs=dict(self.kwargs))


class Family(BaseModel):
    """Anchors of one kind, small to large, that one trial stitches into a supernet.

    ``demo=True``: the embedded demo ViTs, which the orchestrator pretrains and caches
    (``orchestrator.data.demo_anchors.demo_anchor_specs``). ``pretrained`` and ``kwargs`` given on the family
    are defaults for its anchors.
    """

    model_config = _STRICT
    name: Str
    anchors: tuple[AnchorEntry, ...]
    demo: Bool = False
    description: Annotated[Str, BeforeValidator(lambda v: "" if v is None else v)] = ""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        pretrained, kwargs, anchors = raw.pop("pretrained", False), raw.pop("kwargs", None) or {}, raw.get("anchors")
        demo = raw.get("demo") is True
        if demo and (pretrained or kwargs
                     or isinstance(anchors, list) and not all(isinstance(a, str) for a in anchors)):
            where = "pretrained" if pretrained else "kwargs" if kwargs else "anchors"
            raise Problem(where, "demo anchors are pretrained and cached by the orchestrator: "
                                 + ("give them as plain names" if where == "anchors" else "leave it out"))
        if not isinstance(kwargs, dict):
            raise Problem("kwargs", "must be a mapping of keyword arguments for timm.create_model")
        if isinstance(anchors, list):
            raw["anchors"] = [AnchorEntry.expand(a, pretrained is True, kwargs) for a in anchors]
        elif "anchors" in raw:
            raise Problem("anchors", f"must be a list of anchors, small to large, got {describe(anchors)}")
        return raw

    @model_validator(mode="after")
    def _check(self) -> Family:
        if not NAME_RULES["sweep"][0].fullmatch(self.name):  # family names: letters first, as sweep names
            raise Problem("name", f"must start with a letter and use only letters, digits, '_', '.' and '-', "
                                  f"got {self.name!r}")
        if len(self.anchors) < 2:
            raise Problem("anchors", f"a family needs at least two anchors to stitch, got {len(self.anchors)}")
        for i, a in enumerate(self.anchors):
            if self.demo and not a.name.startswith(_DEMO_PREFIX):
                raise Problem(f"anchors[{i}]", f"a demo family holds the embedded demo anchors ({_DEMO_PREFIX}*), "
                                               f"got {a.name!r}")
        return self

    @field_serializer("anchors")
    def _plain(self, anchors: tuple[AnchorEntry, ...]) -> list[Any]:
        return [a.name if self.demo else a.model_dump() for a in anchors]

    def anchor_names(self) -> list[str]:
        return [a.name for a in self.anchors]

    def anchor_specs(self) -> list[AnchorSpec]:
        """The anchors as :class:`AnchorSpec` objects, in order (not for demo families)."""
        if self.demo:
            raise SNNetError(
                f"Family {self.name!r} holds the embedded demo anchors: their weights come from "
                "orchestrator.data.demo_anchors.demo_anchor_specs(anchors=family.anchor_names()), which pretrains and "
                "caches them."
            )
        return [a.spec() for a in self.anchors]


class Resources(BaseModel):
    """What one trial reserves: Ray Train workers (DDP ranks), CPUs and GPUs per worker (a fraction shares one)."""

    model_config = _STRICT
    workers_per_trial: Int(1) = 2
    cpus_per_worker: Int(1) = 1
    gpus_per_worker: Float(0) = 0.0


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, (str, int)) else value


class Searcher(BaseModel):
    """How the sweep searches: the algorithm, its objectives, budget, concurrency and scheduler."""

    model_config = _STRICT
    algorithm: OneOf(ALGORITHMS) = "tpe"
    objectives: Annotated[tuple[OneOf(tuple(OBJECTIVES)), ...], BeforeValidator(_listed)] = ("hypervolume",)
    num_samples: Int(1) = 1
    max_concurrent_trials: Int(1, nullable=True) = None  # None: derived from the cluster by the sweep driver
    scheduler: OneOf(SCHEDULERS) = "none"
    seed: Int(0) = 0
    #: Repeat every configuration over these training seeds (one trial per seed and configuration);
    #: None: each configuration runs once, with ``training.seed``.
    seeds: Annotated[tuple[Int(0), ...] | None, BeforeValidator(_listed)] = None

    @model_validator(mode="after")
    def _counts(self) -> Searcher:
        n, names = len(self.objectives), list(self.objectives)
        if not n:
            raise Problem("objectives", f"must be a non-empty list of objectives ({', '.join(OBJECTIVES)}), got []")
        if len(set(names)) < n:
            raise Problem("objectives", f"lists an objective more than once: {names}")
        if self.algorithm == "nsga2" and n < 2:
            raise Problem("objectives", f"nsga2 is multi-objective and needs at least 2 objectives, got {names}")
        if self.seeds is not None and not self.seeds:
            raise Problem("seeds", "lists no seed: give at least one, e.g. [0, 1, 2], or leave it out")
        if self.seeds is not None and len(set(self.seeds)) < len(self.seeds):
            raise Problem("seeds", f"lists a seed more than once: {list(self.seeds)}")
        if self.algorithm in ("tpe", "random") and n > 1:
            raise Problem("objectives", f"{self.algorithm} optimises one objective, got {n} ({', '.join(names)}); "
                                        "use nsga2 for several")
        return self


# -- the space and training sections, derived from TrainConfig ------------------------------------
def _kind(name: str) -> Kind:
    return next(m.func for m in TrainConfig.model_fields[name].metadata if isinstance(m, PlainValidator))


def _sampling_options(raw: Any) -> dict[str, dict[str, Any]]:
    """``{rule: {option: value}}``, each rule's options checked by building the rule."""
    if not isinstance(raw, dict):
        raise SNNetError(f"must map sampling rule names to their options, e.g. {{sandwich: {{num_random: 2}}}}, "
                         f"got {describe(raw)}")
    for rule, options in raw.items():
        if rule not in RULES:
            raise Problem(str(rule), f"must be a sampling rule ({', '.join(RULES)}) whose options follow"
                                     f"{did_you_mean(rule, RULES)}")
        if not isinstance(options, dict):
            raise Problem(rule, f"must be a mapping of {rule!r} options, got {describe(options)}")
        try:
            RULES[rule]((1, 2), **options)  # the rule validates its own options
        except (SNNetError, TypeError) as e:
            raise Problem(rule, str(e)) from None
    return {rule: dict(options) for rule, options in raw.items()}


def _section(name: str, fields: Iterable[str]) -> type[BaseModel]:
    special = {"sampling_options": (Annotated[dict[str, Any], PlainValidator(_sampling_options)], {}),
               # a teacher without weights teaches nothing: a plain name loads hub weights
               "teacher": (Annotated[AnchorEntry | None, BeforeValidator(lambda t: AnchorEntry.expand(t, True, {}))],
                           None)}
    return create_model(name, __config__=_STRICT, **{f: special.get(f) or (
        searchable(_kind(f)), TrainConfig.model_fields[f].default) for f in fields})


SpaceSection = _section("SpaceSection", SPACE_FIELDS)
TrainingSection = _section("TrainingSection", [f for f in TrainConfig.model_fields if f not in TRAINING_SET_ELSEWHERE])


# -- the search space --------------------------------------------------------------------------
class SearchSpace(BaseModel):
    """A validated search space; build one with :func:`search_spaces.load_space` or :meth:`from_dict`.

    ``model_dump(mode="json")`` is the YAML format itself, and ``model_validate`` reads it back
    equal, so a space travels to Ray workers as plain data.
    """

    model_config = _STRICT
    name: Str
    description: Annotated[Str, BeforeValidator(lambda v: "" if v is None else v)] = ""
    dataset: Str = "demo"
    image_size: Int(1, nullable=True) = None
    families: tuple[Family, ...]
    space: SpaceSection = SpaceSection()
    training: TrainingSection = TrainingSection()
    resources: Resources = Resources()
    searcher: Searcher = Searcher()
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            raise SNNetError("a search space file must hold a mapping (name:, families:, space:, ...), "
                             f"got {describe(raw)}")
        training = raw.get("training")
        for key in training if isinstance(training, dict) else ():
            if key in TRAINING_SET_ELSEWHERE:
                raise Problem(f"training.{key}", f"is set by {TRAINING_SET_ELSEWHERE[key]}, not under training:")
        families = raw.get("families")
        if "families" in raw and not isinstance(families, list):
            raise Problem("families", f"must be a list of anchor families, got {describe(families)}")
        if families == []:
            raise Problem("families", "needs at least one family of anchors, got an empty list")
        return {k: v for k, v in raw.items() if not (k in ("space", "training", "resources", "searcher") and v is None)}

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpace:
        try:
            validate_name("sweep", self.name)
        except SNNetError as e:
            raise Problem("name", f"is the sweep's catalog partition: {e}") from None
        if not self.dataset:
            raise Problem("dataset", "must be 'demo' or an ImageNet-layout folder path, got ''")
        for i, fam in enumerate(self.families):
            if fam.name in self.family_names()[:i]:
                raise Problem(f"families[{i}].name", f"{fam.name!r} names two families; family names must be unique")
            if fam.demo and self.dataset != "demo":
                raise Problem(f"families[{i}].demo",
                              f"the demo anchors are trained on the 'demo' dataset, not on {self.dataset!r}")
        rules = set(self.training.sampling.values if isinstance(self.training.sampling, Choice)
                    else [self.training.sampling])
        for rule in self.training.sampling_options:
            if rule not in rules:
                raise Problem(f"training.sampling_options.{rule}", "options for a rule this space never samples "
                              f"with (sampling: {', '.join(sorted(map(str, rules)))})")
        if self.searcher.seeds is not None and isinstance(self.training.seed, Param):
            raise Problem("searcher.seeds", "repeats every configuration over these seeds, so training.seed "
                                            "must not be searched as well (a fixed training.seed is replaced)")
        ranges = [k for k, p in self.parameters().items() if isinstance(p, FloatRange)]
        if self.searcher.algorithm == "grid" and ranges:
            raise Problem("searcher.algorithm", f"grid search needs finite values, but {', '.join(ranges)} "
                                                f"{'is a float range' if len(ranges) == 1 else 'are float ranges'}")
        return self

    def __eq__(self, other: object) -> bool:  # the source file is not part of the space
        return isinstance(other, SearchSpace) and self.model_dump() == other.model_dump()

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", *, check_models: bool = True,
                  lines: Mapping[str, int] | None = None) -> SearchSpace:
        """Validate a parsed YAML document; :class:`SNNetError` lists every problem at its YAML path (and line)."""
        found, space = [], None
        try:
            space = cls.model_validate(data)
        except ValidationError as error:
            found = [(_path(loc), _unknown_key(loc) if message == "unknown key" else message)
                     for loc, message in problems(error)]
        if space is not None and check_models:
            found += space._unknown_models(data)
        if found:
            items = [f"{path or '(top level)'}: {message.rstrip('.')}{_line(lines or {}, path)}"
                     for path, message in found]
            raise SNNetError(f"Invalid search space {source}: {plural(len(items), 'problem')}: "
                             + "; ".join(items) + ".")
        return space.model_copy(update={"source": source})

    def _unknown_models(self, data: dict) -> list[tuple[str, str]]:
        """Every non-demo anchor and teacher name that timm does not know, at its YAML path."""
        named = [(f"families[{i}].anchors[{j}]"
                  + ("" if isinstance(data["families"][i]["anchors"][j], str) else ".name"),
                  a.name) for i, fam in enumerate(self.families) if not fam.demo for j, a in enumerate(fam.anchors)]
        teacher = self.training.teacher
        if teacher is not None and not teacher.name.startswith(_DEMO_PREFIX):
            named.append(("training.teacher" + ("" if isinstance(data["training"]["teacher"], str) else ".name"),
                          teacher.name))
        verdicts = {}
        for model in dict.fromkeys(model for _, model in named):
            try:
                check_model_name(model)
            except UnknownModelError as e:
                verdicts[model] = str(e)
        return [(path, verdicts[model]) for path, model in named if model in verdicts]

    def family(self, name: str) -> Family:
        for fam in self.families:
            if fam.name == name:
                return fam
        raise SNNetError(f"Search space {self.name!r} has no family {name!r}{did_you_mean(name, self.family_names())}; "
                         f"its families are {', '.join(self.family_names())}.")

    def family_names(self) -> list[str]:
        return [f.name for f in self.families]

    def _settings(self) -> dict[str, Any]:
        """``space.*`` (all) and ``training.*`` (those the file sets) settings, in field order."""
        return {**{f"space.{k}": getattr(self.space, k) for k in SPACE_FIELDS},
                **{f"training.{k}": getattr(self.training, k) for k in TrainingSection.model_fields
                   if k in self.training.model_fields_set}}

    def parameters(self) -> dict[str, Param]:
        """Every searched setting under a flat key: ``family`` (if several), ``space.*``, ``training.*``."""
        params: dict[str, Param] = {"family": Choice(tuple(self.family_names()))} if len(self.families) > 1 else {}
        return params | {k: v for k, v in self._settings().items() if isinstance(v, Param)}

    def fixed(self) -> dict[str, Any]:
        """Every fixed setting of a trial under a flat key, as plain (YAML/JSON-like) values."""
        out: dict[str, Any] = {"family": self.families[0].name} if len(self.families) == 1 else {}
        out.update(dataset=self.dataset, image_size=self.image_size)
        out.update({k: v.model_dump() if isinstance(v, AnchorEntry) else v
                    for k, v in self._settings().items() if not isinstance(v, Param)})
        return out | {f"resources.{k}": v for k, v in self.resources.model_dump().items()}

    def grid_size(self) -> int | None:
        """Number of points of the full grid, or ``None`` when a float range makes it infinite."""
        params = self.parameters().values()
        if any(isinstance(p, FloatRange) for p in params):
            return None
        return math.prod(len(p.grid_values()) for p in params)

    def first_point(self, family: str | None = None) -> dict[str, Any]:
        """The first choice of each searched setting, the documented default of each range
        (:meth:`FloatRange.first`: the geometric mean of a log range, else the low end)."""
        point = {key: param.first() for key, param in self.parameters().items()}
        return point | {"family": family} if family is not None and "family" in point else point

    def _point(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` checked against the space and made canonical."""
        searched, fixed = self.parameters(), self.fixed()
        errors, point = [], {}
        for key, value in params.items():
            if key in searched:
                try:
                    point[key] = searched[key].canonical(value)
                except SNNetError as e:
                    errors.append(f"{key}: {e}")
            elif key in fixed and value != fixed[key]:
                errors.append(f"{key}: the space fixes it to {fixed[key]!r}, got {value!r}")
            elif key not in fixed:
                errors.append(f"{key}: not a setting of this space{did_you_mean(key, [*searched, *fixed])}")
        missing = [key for key in searched if key not in params]
        if missing:
            errors.append(f"no value for the searched settings {', '.join(missing)}")
        if errors:
            raise SNNetError(f"Invalid trial parameters for search space {self.name!r}: {'; '.join(errors)} "
                             f"(searched settings: {', '.join(searched) or 'none'}).")
        return point

    def trial_family(self, params: Mapping[str, Any]) -> Family:
        """The family a trial at the point ``params`` stitches."""
        return self.family(params.get("family", self.families[0].name))

    def trial_config(self, params: Mapping[str, Any], **driver: Any) -> TrainConfig:
        """One trial's resolved, plain :class:`TrainConfig` at the point ``params`` (every searched key;
        fixed keys may be given).

        ``driver`` sets what the driver decides (``catalog``, ``trial_id``, ``storage_path``, and
        ``anchors`` for a demo family, else None: the runner's demo anchors); ``sweep`` defaults to
        this space's name.
        """
        point = self._point(params)
        settings = {key.partition(".")[2]: point.get(key, value) for key, value in self._settings().items()}
        if "sampling_options" in settings:  # per-rule options: keep the chosen rule's
            rule = settings.get("sampling", TrainConfig.model_fields["sampling"].default)
            settings["sampling_options"] = dict(settings["sampling_options"].get(rule, {}))
        if isinstance(settings.get("teacher"), AnchorEntry):
            settings["teacher"] = settings["teacher"].spec()
        family, res = self.trial_family(point), self.resources
        return TrainConfig(**{
            "anchors": None if family.demo else family.anchor_specs(), **settings, "dataset": self.dataset,
            "image_size": self.image_size, "workers": res.workers_per_trial, "cpus_per_worker": res.cpus_per_worker,
            "use_gpu": res.gpus_per_worker > 0, "gpus_per_worker": res.gpus_per_worker, "sweep": self.name, **driver})


# -- error locations: pydantic's onto YAML paths and lines -------------------------------------------
_TAGS = frozenset({"value", "choice", "range"})  # the branches of a searchable setting: not in YAML paths


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in _TAGS:
            out += f".{part}" if out else str(part)
    return out


def _models(tp: Any) -> Iterable[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for arg in get_args(tp):
        yield from _models(arg)


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """``unknown key`` with the closest known key, found on the model at ``loc``."""
    model: Any = SearchSpace
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = next(iter(_models(field.annotation)), None) if field is not None else model
        if model is None:
            return "unknown key"
    known = list(model.model_fields)
    if model is TrainingSection:
        return f"unknown training setting{did_you_mean(loc[-1], known) or ' (TrainConfig has no such field)'}"
    return f"unknown key{did_you_mean(loc[-1], known) or ' (known keys: ' + ', '.join(known) + ')'}"


def _line(lines: Mapping[str, int], path: str) -> str:
    while path and path not in lines:
        path = path[: max(path.rfind("."), path.rfind("["), 0)]
    return f" (line {lines[path]})" if path else ""
