"""From a parsed YAML mapping to a :class:`SearchSpace`, collecting every problem on the way.

Each problem is recorded with its YAML path (``space.kernel_size[1]``) and, when the mapping
came from a file, its line; all of them end up in one :class:`SNNetError` paragraph, so a user
fixes a file in one pass (as torchtune validates its configs).
"""

from __future__ import annotations

import re
from typing import Any

from snnet import SNNetError
from snnet._space import SpaceConfig
from snnet.anchors import UnknownModelError, check_model_name
from snnet.sampling import RULES

from .schema import (
    _DEFAULT_SAMPLING,
    _INT0,
    _INT1,
    _SPACE_KINDS,
    ALGORITHMS,
    OBJECTIVES,
    SCHEDULERS,
    SPACE_FIELDS,
    TRAINING_FIELDS,
    TRAINING_SET_ELSEWHERE,
    AnchorEntry,
    Choice,
    Family,
    FloatRange,
    IntRange,
    Resources,
    Searcher,
    SearchSpace,
    _Kind,
    did_you_mean,
)

__all__ = ["parse_space", "Problems"]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_DEMO_PREFIX = "snnet_demo_"
_BAD = object()  # a value that failed validation (its problem is already recorded)

_TOP_KEYS = ("name", "description", "dataset", "image_size", "families", "space", "training", "resources", "searcher")
_FAMILY_KEYS = ("name", "description", "demo", "anchors", "pretrained", "kwargs")
_ANCHOR_KEYS = ("name", "pretrained", "checkpoint", "kwargs")
_RANGE_KEYS = ("low", "high", "log")
_RESOURCE_KINDS = {"workers_per_trial": _INT1, "cpus_per_worker": _INT1, "gpus_per_worker": _Kind("float", minimum=0)}
_SEARCHER_KINDS = {
    "algorithm": _Kind("str", choices=ALGORITHMS),
    "objectives": None,  # a list of names, parsed below
    "num_samples": _INT1,
    "max_concurrent_trials": _Kind("int", minimum=1, nullable=True),
    "scheduler": _Kind("str", choices=SCHEDULERS),
    "seed": _INT0,
}


def _key(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(raw: Any) -> str:
    kind = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kind.get(type(raw), repr(raw))


class Problems:
    """Problems found so far, each with its YAML path (and line, when known)."""

    def __init__(self, source: str, lines: dict[str, int] | None = None):
        self.source = source
        self.lines = lines or {}
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        line, at = None, path
        while line is None and at:
            line = self.lines.get(at)
            at = at[: max(at.rfind("."), at.rfind("["), 0)]
        where = f" (line {line})" if line is not None else ""
        self.items.append(f"{path or '(top level)'}: {message.rstrip('.')}{where}")

    def raise_if_any(self) -> None:
        if self.items:
            n = len(self.items)
            raise SNNetError(
                f"Invalid search space {self.source}: {n} problem{'s' if n > 1 else ''}: " + "; ".join(self.items) + "."
            )


def _mapping(p: Problems, path: str, raw: Any, known: tuple[str, ...], required: tuple[str, ...] = ()) -> dict | None:
    """``raw`` if it is a mapping; records unknown and missing keys."""
    if not isinstance(raw, dict):
        p.add(path, f"must be a mapping, got {_describe(raw)}")
        return None
    for key in raw:
        if key not in known:
            hint = did_you_mean(key, known) or f" (known keys: {', '.join(known)})"
            p.add(_key(path, key), f"unknown key{hint}")
    for key in required:
        if key not in raw:
            p.add(_key(path, key), "is required")
    return raw


def _typed(p: Problems, path: str, raw: Any, kind: _Kind) -> Any:
    try:
        return kind.coerce(raw)
    except SNNetError as e:
        p.add(path, str(e))
        return _BAD


def _setting(p: Problems, path: str, raw: Any, kind: _Kind) -> Any:
    """A fixed value, or a Choice (list) or range (mapping) to search over; ``_BAD`` if invalid."""
    numeric = kind.type in ("int", "float")
    if isinstance(raw, list):
        if not raw:
            p.add(path, "an empty list searches over nothing: give at least one value")
            return _BAD
        values = [_typed(p, f"{path}[{i}]", item, kind) for i, item in enumerate(raw)]
        if any(v is _BAD for v in values):
            return _BAD
        repeated = sorted({repr(v) for i, v in enumerate(values) if v in values[:i]})
        if repeated:
            p.add(path, f"lists {', '.join(repeated)} more than once")
            return _BAD
        return Choice(tuple(values))
    if isinstance(raw, dict):
        if not numeric:
            p.add(path, f"must be {kind.describe()}, or a list of them to search over, got a mapping")
            return _BAD
        return _range(p, path, raw, kind)
    return _typed(p, path, raw, kind)


def _range(p: Problems, path: str, raw: dict, kind: _Kind) -> Any:
    if _mapping(p, path, raw, _RANGE_KEYS, required=("low", "high")) is None or not {"low", "high"} <= raw.keys():
        return _BAD
    low = _typed(p, _key(path, "low"), raw["low"], kind)
    high = _typed(p, _key(path, "high"), raw["high"], kind)
    log = _typed(p, _key(path, "log"), raw.get("log", False), _Kind("bool"))
    if _BAD in (low, high, log) or any(k not in _RANGE_KEYS for k in raw):
        return _BAD
    try:
        return (IntRange if kind.type == "int" else FloatRange)(low, high, log)
    except SNNetError as e:
        p.add(path, str(e))
        return _BAD


def _kwargs(p: Problems, path: str, raw: Any) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        p.add(path, f"must be a mapping of keyword arguments for timm.create_model, got {_describe(raw)}")
        return {}
    return dict(raw)


def _anchor(p: Problems, path: str, raw: Any, pretrained: bool, kwargs: dict) -> AnchorEntry | None:
    """An anchor entry: a timm name, or ``{name, pretrained, checkpoint, kwargs}``."""
    if raw == "" or (isinstance(raw, dict) and raw.get("name") == ""):
        p.add(path, "an anchor needs a timm model name, got ''")
        return None
    if isinstance(raw, str):
        return AnchorEntry(raw, pretrained=pretrained, kwargs=dict(kwargs))
    if not isinstance(raw, dict):
        p.add(path, f"must be a timm model name or a mapping with keys {', '.join(_ANCHOR_KEYS)}, got {_describe(raw)}")
        return None
    if _mapping(p, path, raw, _ANCHOR_KEYS, required=("name",)) is None or "name" not in raw:
        return None
    name = _typed(p, _key(path, "name"), raw["name"], _Kind("str"))
    checkpoint = _typed(p, _key(path, "checkpoint"), raw.get("checkpoint"), _Kind("str", nullable=True))
    # A checkpoint replaces hub weights, so the family's pretrained default does not apply to it.
    default = pretrained and checkpoint is None
    hub = _typed(p, _key(path, "pretrained"), raw.get("pretrained", default), _Kind("bool"))
    if hub is True and isinstance(checkpoint, str):
        p.add(path, "give either pretrained: true (hub weights) or a checkpoint file, not both")
    own = _kwargs(p, _key(path, "kwargs"), raw.get("kwargs"))
    if _BAD in (name, checkpoint, hub):
        return None
    return AnchorEntry(name, pretrained=hub, checkpoint=checkpoint, kwargs={**kwargs, **own})


def _family(p: Problems, path: str, raw: Any, models: list[tuple[str, str]]) -> Family | None:
    if _mapping(p, path, raw, _FAMILY_KEYS, required=("name", "anchors")) is None:
        return None
    name = _typed(p, _key(path, "name"), raw.get("name", ""), _Kind("str"))
    if isinstance(name, str) and "name" in raw and not _NAME.fullmatch(name):
        p.add(_key(path, "name"), f"must use only letters, digits, '_', '.' and '-', got {name!r}")
    demo = _typed(p, _key(path, "demo"), raw.get("demo", False), _Kind("bool"))
    pretrained = _typed(p, _key(path, "pretrained"), raw.get("pretrained", False), _Kind("bool"))
    kwargs = _kwargs(p, _key(path, "kwargs"), raw.get("kwargs"))
    description = _typed(p, _key(path, "description"), raw.get("description") or "", _Kind("str"))
    at = _key(path, "anchors")
    items = raw.get("anchors")
    if "anchors" not in raw:
        return None
    if not isinstance(items, list):
        p.add(at, f"must be a list of anchors, small to large, got {_describe(items)}")
        return None
    if len(items) < 2:
        p.add(at, f"a family needs at least two anchors to stitch, got {len(items)}")
    if demo is True:
        # The orchestrator pretrains and caches demo anchors; weights or kwargs given here would be ignored.
        for key in ("pretrained", "kwargs"):
            if key in raw:
                p.add(_key(path, key), "demo anchors are pretrained and cached by the orchestrator: leave it out")
    anchors = [_anchor(p, f"{at}[{i}]", item, pretrained is True, kwargs) for i, item in enumerate(items)]
    for i, a in enumerate(anchors):
        if a is None:
            continue
        if demo is True:
            if not a.name.startswith(_DEMO_PREFIX):
                p.add(f"{at}[{i}]", f"a demo family holds the embedded demo anchors ({_DEMO_PREFIX}*), got {a.name!r}")
            elif not isinstance(items[i], str):
                p.add(f"{at}[{i}]", "demo anchors are pretrained and cached by the orchestrator: give them as plain names")
        elif not a.name.startswith(_DEMO_PREFIX):
            models.append((f"{at}[{i}]" if isinstance(items[i], str) else f"{at}[{i}].name", a.name))
    if _BAD in (name, demo, pretrained, description) or any(a is None for a in anchors) or "name" not in raw:
        return None
    return Family(name, tuple(anchors), demo=demo, description=description)


def _sampling_options(p: Problems, path: str, raw: Any) -> Any:
    """``{rule: {option: value}}``, each rule's options checked by building the rule."""
    if not isinstance(raw, dict):
        p.add(path, f"must map sampling rule names to their options, e.g. {{sandwich: {{num_random: 2}}}}, "
                    f"got {_describe(raw)}")
        return _BAD
    out = {}
    for rule, options in raw.items():
        at = _key(path, rule)
        if rule not in RULES:
            p.add(at, f"must be a sampling rule ({', '.join(RULES)}) whose options follow{did_you_mean(rule, RULES)}")
        elif not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            p.add(at, f"must be a mapping of {rule!r} options, got {_describe(options)}")
        else:
            try:
                RULES[rule]((1, 2), **options)  # the rule validates its own options
            except SNNetError as e:
                p.add(at, str(e))
            else:
                out[rule] = dict(options)
    return out if len(out) == len(raw) else _BAD


def _training(p: Problems, raw: Any, models: list[tuple[str, str]]) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        p.add("training", f"must be a mapping of TrainConfig settings, got {_describe(raw)}")
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        at = _key("training", key)
        if key in TRAINING_SET_ELSEWHERE:
            p.add(at, f"is set by {TRAINING_SET_ELSEWHERE[key]}, not under training:")
        elif key not in TRAINING_FIELDS:
            p.add(at, f"unknown training setting{did_you_mean(key, TRAINING_FIELDS) or ' (TrainConfig has no such field)'}")
        elif key == "sampling_options":
            out[key] = _sampling_options(p, at, value)
        elif key == "teacher":
            if value is None:
                out[key] = None
                continue
            # A teacher without weights teaches nothing: plain names load hub weights.
            entry = _anchor(p, at, value, pretrained=True, kwargs={})
            out[key] = entry if entry is not None else _BAD
            if entry is not None and not entry.name.startswith(_DEMO_PREFIX):
                models.append((at if isinstance(value, str) else f"{at}.name", entry.name))
        else:
            out[key] = _setting(p, at, value, TRAINING_FIELDS[key])
    sampling = out.get("sampling", _DEFAULT_SAMPLING)
    rules = set(sampling.values) if isinstance(sampling, Choice) else {sampling}
    if isinstance(out.get("sampling_options"), dict):
        for rule in out["sampling_options"]:
            if rule not in rules:
                p.add(_key("training.sampling_options", rule),
                      f"options for a rule this space never samples with (sampling: {', '.join(sorted(map(str, rules)))})")
    return out


def _section(p: Problems, path: str, raw: Any, kinds: dict[str, _Kind | None]) -> dict:
    if raw is None:
        return {}
    if _mapping(p, path, raw, tuple(kinds)) is None:
        return {}
    return {k: _typed(p, _key(path, k), v, kinds[k]) for k, v in raw.items() if kinds.get(k) is not None}


def _searcher(p: Problems, raw: Any, parameters: dict[str, Any]) -> Searcher | None:
    values = _section(p, "searcher", raw, _SEARCHER_KINDS)
    objectives = raw.get("objectives", ["hypervolume"]) if isinstance(raw, dict) else ["hypervolume"]
    if isinstance(objectives, str):
        objectives = [objectives]
    ok = True
    if not isinstance(objectives, list) or not objectives:
        p.add("searcher.objectives", f"must be a non-empty list of objectives ({', '.join(OBJECTIVES)}), "
                                     f"got {objectives!r}")
        ok = False
    else:
        for i, name in enumerate(objectives):
            if not isinstance(name, str) or name not in OBJECTIVES:
                p.add(f"searcher.objectives[{i}]",
                      f"must be one of {', '.join(OBJECTIVES)}, got {name!r}{did_you_mean(name, OBJECTIVES)}")
                ok = False
        if ok and len(set(objectives)) < len(objectives):
            p.add("searcher.objectives", f"lists an objective more than once: {objectives}")
            ok = False
    algorithm = values.get("algorithm", "tpe")
    if ok and algorithm == "nsga2" and len(objectives) < 2:
        p.add("searcher.objectives", f"nsga2 is multi-objective and needs at least 2 objectives, got {objectives}")
        ok = False
    if ok and algorithm in ("tpe", "random") and len(objectives) > 1:
        p.add("searcher.objectives", f"{algorithm} optimises one objective, got {len(objectives)} "
                                     f"({', '.join(objectives)}); use nsga2 for several")
        ok = False
    if algorithm == "grid":
        ranges = [k for k, v in parameters.items() if isinstance(v, FloatRange)]
        if ranges:
            p.add("searcher.algorithm", f"grid search needs finite values, but {', '.join(ranges)} "
                                        f"{'is a float range' if len(ranges) == 1 else 'are float ranges'}")
    if not ok or _BAD in values.values():
        return None
    return Searcher(**{**values, "objectives": tuple(objectives)})


def parse_space(data: Any, source: str = "<dict>", *, check_models: bool = True,
                lines: dict[str, int] | None = None) -> SearchSpace:
    """Validate ``data`` (a parsed YAML document) into a :class:`SearchSpace`.

    Args:
        data: the mapping a search-space YAML file holds.
        source: where it came from, for the error message (the file name).
        check_models: look up every non-demo anchor and teacher name in timm's registry.
        lines: YAML path -> line number, so problems can point at their line.

    Raises:
        SNNetError: one paragraph listing every problem, each with its YAML path.
    """
    p = Problems(source, lines)
    if not isinstance(data, dict):
        p.add("", f"a search space file must hold a mapping (name:, families:, space:, ...), got {_describe(data)}")
        p.raise_if_any()
    _mapping(p, "", data, _TOP_KEYS, required=("name", "families"))

    name = _typed(p, "name", data.get("name", ""), _Kind("str"))
    if isinstance(name, str) and "name" in data and not _NAME.fullmatch(name):
        p.add("name", f"is the sweep's catalog partition: use only letters, digits, '_', '.' and '-', got {name!r}")
    description = _typed(p, "description", data.get("description") or "", _Kind("str"))
    dataset = _typed(p, "dataset", data.get("dataset", "demo"), _Kind("str"))
    if dataset == "":
        p.add("dataset", "must be 'demo' or an ImageNet-layout folder path, got ''")
    image_size = _typed(p, "image_size", data.get("image_size"), _Kind("int", minimum=1, nullable=True))

    models: list[tuple[str, str]] = []
    families: list[Family] = []
    raw_families = data.get("families")
    if "families" in data:
        if not isinstance(raw_families, list):
            p.add("families", f"must be a list of anchor families, got {_describe(raw_families)}")
        elif not raw_families:
            p.add("families", "needs at least one family of anchors, got an empty list")
        else:
            parsed = [_family(p, f"families[{i}]", f, models) for i, f in enumerate(raw_families)]
            families = [f for f in parsed if f is not None]
            seen: set[str] = set()
            for i, fam in enumerate(parsed):
                if fam is not None and fam.name in seen:
                    p.add(f"families[{i}].name", f"{fam.name!r} names two families; family names must be unique")
                if fam is not None:
                    seen.add(fam.name)
                if fam is not None and fam.demo and dataset not in ("demo", _BAD):
                    p.add(f"families[{i}].demo",
                          f"the demo anchors are trained on the 'demo' dataset, not on {dataset!r}")

    defaults = SpaceConfig()
    space = {key: getattr(defaults, key) for key in SPACE_FIELDS}
    raw_space = data.get("space")
    if raw_space is not None and _mapping(p, "space", raw_space, SPACE_FIELDS) is not None:
        for key, value in raw_space.items():
            if key in _SPACE_KINDS:
                space[key] = _setting(p, _key("space", key), value, _SPACE_KINDS[key])

    training = _training(p, data.get("training"), models)
    res = _section(p, "resources", data.get("resources"), _RESOURCE_KINDS)
    resources = Resources(**res) if _BAD not in res.values() else None

    parameters = {f"space.{k}": v for k, v in space.items()}
    parameters.update({f"training.{k}": v for k, v in training.items()})
    searcher = _searcher(p, data.get("searcher"), parameters)

    if check_models and models:
        verdicts: dict[str, str | None] = {}
        for path, model in models:
            if model not in verdicts:
                try:
                    check_model_name(model)
                    verdicts[model] = None
                except UnknownModelError as e:
                    verdicts[model] = str(e)
            if verdicts[model]:
                p.add(path, verdicts[model])

    p.raise_if_any()
    return SearchSpace(
        name=name,
        families=tuple(families),
        space=space,
        training=training,
        dataset=dataset,
        image_size=image_size,
        description=description,
        resources=resources,
        searcher=searcher,
        source=source,
    )
