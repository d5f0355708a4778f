"""``python -m orchestrator.train``: train one stitched supernet with Ray Train, write its catalog rows.

With no arguments it trains the embedded demo (three tiny ViTs pretrained on handwritten
digits, cached after the first run) on a local Ray instance with 2 workers. ``--space NAME``
trains a search space's first point (each choice's first value, each range's documented
default: the geometric mean of a log range, else its low end); ``--set dotted.path=value``
changes any setting of it, and the flags given override both.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from orchestrator.cli import ArgumentParser, cli, did_you_mean, interrupt_hint, plural, shared_flags
from orchestrator.storage import default_storage
from orchestrator.train.cluster import check_reachable, preflight
from orchestrator.train.config import INITS, MODES, TrainConfig
from orchestrator.train.summary import summarize
from search_spaces import load_space, shipped_spaces
from search_spaces.loader import parse
from search_spaces.names import validate_name
from search_spaces.schema import TRAINING_SET_ELSEWHERE
from snnet import PRESETS, AnchorSpec, SNNetError
from snnet.sampling import RULES

__all__ = ["main", "parse_args", "config_from_args", "default_sweep", "resume_command", "catalog_file", "FLAGS"]

_D = TrainConfig()
#: The everyday flags, each one :class:`TrainConfig` field: ``(flag, field, add_argument keywords)``. Every
#: field, these included, is also ``--set training.FIELD=VALUE``; a flag given wins over ``--set`` and the space.
FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--dataset", "dataset", {"help": f"'demo' or an ImageNet-layout folder (train/, val/); default {_D.dataset!r}"}),
    ("--image-size", "image_size", {"type": int}),
    ("--kernel-size", "kernel_size", {"type": int}),
    ("--stride", "stride", {"type": int}),
    ("--preset", "preset", {"choices": PRESETS, "help": "'paper': the stitch space of SN-Net's released code for "
                            "the anchors' family (window and direction fixed by it); default: this project's wider "
                            "space"}),
    ("--epochs", "epochs", {"type": int, "help": f"0: initialise and evaluate only; default {_D.epochs}"}),
    ("--batch-size", "batch_size", {"type": int, "help": f"per worker; default {_D.batch_size}"}),
    ("--anchor-lr", "anchor_lr", {"type": float}),
    ("--stitch-lr", "stitch_lr", {"type": float}),
    ("--weight-decay", "weight_decay", {"type": float}),
    ("--mode", "mode", {"choices": MODES}),
    ("--lora-rank", "lora_rank", {"type": int}),
    ("--init", "init", {"choices": INITS}),
    ("--ls-samples", "ls_samples", {"type": int}),
    ("--sampling", "sampling", {"choices": sorted(RULES)}),
    ("--seed", "seed", {"type": int}),
    ("--workers", "workers", {"type": int, "help": f"default {_D.workers}"}),
    ("--gpu", "use_gpu", {"action": "store_true", "help": "one GPU per worker (nccl, bf16 autocast)"}),
    ("--gpu-speed", "gpu_speed", {"metavar": "MEASURES", "help": "auto (on with --gpu), off, on, or measures "
                                  "such as fused_adamw,cudagraphs,sdpa_flash (issue 27); default off until "
                                  "measured on a GPU"}),
    ("--checkpoint-every", "checkpoint_every_steps", {"type": int, "metavar": "STEPS"}),
    ("--max-failures", "max_failures", {"type": int}),
    ("--latency", "measure_latency", {"action": "store_true",
                                      "help": "measure every stitch's latency (median, after warm-up)"}),
    ("--latency-batch-size", "latency_batch_size", {"type": int}),
    ("--trial-id", "trial_id", {}),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags left out stay out of the namespace, so only what the user gave overrides a space."""
    shared = shared_flags(
        "space", "set", "catalog", "sweep", "storage", "address",
        space="demo", catalog=argparse.SUPPRESS, sweep=argparse.SUPPRESS, storage=argparse.SUPPRESS,
        helps={"space": "'demo' (default: the embedded demo, or --anchors and --dataset), a shipped search space "
                        f"({', '.join(shipped_spaces())}) or a YAML path: trains the space's first point",
               "set": "override a setting: a dotted path into the space (training.epochs=1, dataset=/data/x, "
                      "resources.workers_per_trial=1); training.FIELD (or FIELD without --space) sets any "
                      "TrainConfig field; repeatable",
               "catalog": f"catalog folder or URI (s3://, gs://); default {_D.catalog!r}",
               "sweep": "catalog partition to write into; default: the space's name and the start time "
                        "(demo-20260101-120000), so each run has its own"})
    p = ArgumentParser(prog="python -m orchestrator.train", description=__doc__.splitlines()[0],
                       argument_default=argparse.SUPPRESS, parents=[shared])
    p.add_argument("--anchors", default=None,
                   help="comma-separated timm names; NAME=PATH loads a local checkpoint for NAME")
    p.add_argument("--pretrained", action="store_true", default=False, help="load timm hub weights for the anchors")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size of the anchors")
    p.add_argument("--teacher", default=None, help="timm name (NAME=PATH for a checkpoint) for hard distillation")
    for flag, field, keywords in FLAGS:
        p.add_argument(flag, dest=field, **keywords)
    return p.parse_args(argv)


def _spec(text: str, pretrained: bool, num_classes: int | None) -> AnchorSpec:
    name, _, path = text.partition("=")
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    path = path.strip()
    return AnchorSpec(name.strip(), pretrained=pretrained and not path, checkpoint=path or None, kwargs=kwargs)


def _with_flags(spec: AnchorSpec, pretrained: bool, num_classes: int | None) -> AnchorSpec:
    kwargs = {**spec.kwargs, **({"num_classes": num_classes} if num_classes is not None else {})}
    return replace(spec, pretrained=spec.pretrained or (pretrained and spec.checkpoint is None), kwargs=kwargs)


def _field_overrides(overrides: list[str]) -> dict[str, Any]:
    """``--set`` without a search space: TrainConfig fields, optionally under ``training.`` or ``space.``."""
    out = {}
    for text in overrides:
        keys, value = parse(text)
        if len(keys) == 2 and keys[0] in ("training", "space"):
            keys = keys[1:]
        if len(keys) != 1 or keys[0] not in TrainConfig.model_fields:
            fields = TrainConfig.model_fields
            hint = did_you_mean(keys[-1], fields) or f" (fields: {', '.join(fields)})"
            raise SNNetError(f"--set {text}: without --space a setting is a TrainConfig field, and "
                             f"{'.'.join(keys)!r} is none{hint}.")
        out[keys[0]] = value
    return out


def _space_overrides(overrides: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``--set`` with a search space: ``(the dotted paths into the space, TrainConfig fields)``. A
    ``training.FIELD`` that a space sets elsewhere (``workers``, ``catalog``, ``kernel_size``, ...: see
    :data:`search_spaces.schema.TRAINING_SET_ELSEWHERE`) is a field of the run, as without ``--space``."""
    paths, fields = [], {}
    for text in overrides:
        keys, value = parse(text)
        if len(keys) == 2 and keys[0] == "training" and keys[1] in TRAINING_SET_ELSEWHERE:
            fields[keys[1]] = value
        else:
            paths.append(text)
    return paths, fields


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the embedded demo or a space's first point, then --set, then the flags. Without
    ``--storage`` (or ``--set storage_path=...``) Ray's run storage is ``runs`` beside the catalog."""
    config = _config_from_args(args)
    given = "storage_path" in vars(args) or any(
        text.partition("=")[0].strip().rsplit(".", 1)[-1] == "storage_path" for text in args.overrides)
    return config if given else config.model_copy(update={"storage_path": default_storage(config.catalog)})


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    flags = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields and k not in ("anchors", "teacher")}
    if args.teacher:
        flags["teacher"] = _spec(args.teacher, args.pretrained, args.num_classes)
    if args.space == "demo":
        settings = _field_overrides(args.overrides)
        if args.anchors is not None:
            settings["anchors"] = [_spec(t, args.pretrained, args.num_classes) for t in args.anchors.split(",")
                                   if t.strip()]
        merged = {**settings, **flags}
        if "sweep" not in merged:
            first = merged["anchors"][0].name if merged.get("anchors") else "demo"
            merged["sweep"] = default_sweep(first)
        return TrainConfig(**merged)
    if args.anchors is not None:
        raise SNNetError(f"--space {args.space!r} names its own anchors: leave out --anchors (or use --space demo).")
    paths, fields = _space_overrides(args.overrides)
    space = _load(args.space, paths)
    point = space.first_point()
    family = space.trial_family(point)
    if "anchors" in fields:
        anchors = fields.pop("anchors")
    elif family.demo:  # the family's own demo anchors, pretrained and cached (all three only without --space)
        from orchestrator.data.demo_anchors import demo_anchor_specs  # torch: only for a demo family's anchors

        anchors = demo_anchor_specs(anchors=family.anchor_names(), brief=True)
    else:
        anchors = [_with_flags(a, args.pretrained, args.num_classes) for a in family.anchor_specs()]
    settings = {**fields, **flags}
    settings.setdefault("sweep", default_sweep(space.name))
    return space.trial_config(point, anchors=anchors, **settings)


def default_sweep(stem: str, now: _dt.datetime | None = None) -> str:
    """Each run's own catalog partition: ``<stem>-<UTC time stamp>`` (``stem`` cut to the sweep-name
    rule's characters), validated by :func:`orchestrator.catalog.validate_name`."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.").replace("..", ".")[:60]
    if not clean or not clean[0].isalpha():
        clean = f"train-{clean}".rstrip("-")
    return validate_name("sweep", f"{clean}-{now.strftime('%Y%m%d-%H%M%S')}")


def resume_command(argv: Sequence[str], config: TrainConfig) -> str:
    """The command that resumes this run: the same arguments with its sweep and trial id."""
    keep, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--trial-id", "--sweep"):
            skip = True
            continue
        if arg.startswith(("--trial-id=", "--sweep=")):
            continue
        keep.append(arg)
    return shlex.join(["python", "-m", "orchestrator.train", *keep, "--sweep", config.sweep,
                       "--trial-id", config.trial_id])


def catalog_file(config: TrainConfig) -> str:
    """The trial's catalog file as the user wrote the catalog (``s3://`` kept)."""
    return f"{config.catalog.rstrip('/')}/sweep={config.sweep}/trial-{config.trial_id}.parquet"


def _load(name: str, overrides: list[str]):
    if name not in shipped_spaces() and not name.endswith((".yaml", ".yml")) and "/" not in name:
        raise SNNetError(f"--space {name!r}: only 'demo' is built in as flags; other spaces are the shipped ones "
                         f"({', '.join(shipped_spaces())}) or a YAML path; or give anchors with --anchors.")
    return load_space(name, overrides=overrides)


@cli()
def main(argv: Sequence[str] | None = None) -> int:
    """Train; a user's mistake is one ``error:`` paragraph and exit 2 (:func:`orchestrator.cli.run_cli`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start = time.perf_counter()
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)  # a cluster that does not answer fails in seconds, before models are built
    config = config_from_args(args)  # torch-free: a bad setting is answered before torch and timm load
    # Deferred (as the demo anchors above): the training stack (torch, timm, snnet's models) loads only
    # once the settings have resolved, so `--help` and a bad flag or setting answer at once.
    from orchestrator.train.launch import record_run, run_training
    from orchestrator.train.prepare import prepare

    prepared = prepare(config)
    config, space = prepared.config, prepared.space
    preflight(config, args.address)  # refuse a worker count the machine cannot hold before announcing it
    print(f"[snnet] {len(space)} stitches over {', '.join(space.anchor_names)}; sweep {config.sweep}, "
          f"trial {config.trial_id}; starting {plural(config.workers, 'Ray Train worker')}", flush=True)
    hint = f"interrupted; resume this run with:\n  {resume_command(argv, config)}"
    with interrupt_hint(hint):
        result = run_training(config, prepared=prepared, address=args.address)
    record_run(result)
    prune = (config.prune_score, config.prune_keep) if config.prune_score is not None else None
    print(summarize(result.space, result.rows, r2=result.r2, prune=prune))
    print(f"catalog rows: {catalog_file(config)}\ncheckpoint:   {result.checkpoint} "
          f"({time.perf_counter() - start:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
