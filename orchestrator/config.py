"""Typed, validated settings of one supernet training run.

:class:`TrainConfig` is what ``python -m orchestrator.train`` parses its flags into and what
a sweep trial builds from its search space; it travels to the Ray Train workers as a plain
dict (:meth:`TrainConfig.to_dict`). :meth:`TrainConfig.validate` reports every problem at
once, before any model is built or any Ray resource is requested.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from snnet import SNNetError
from snnet.anchors import AnchorSpec
from snnet.sampling import RULES

__all__ = ["TrainConfig", "MODES", "INITS"]

MODES = ("full", "stitch-only", "lora")
INITS = ("ls", "kaiming")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class TrainConfig:
    """One stitched supernet: its anchors and space, the data, and how to train it."""

    # what to stitch (None: the embedded demo family)
    anchors: list[AnchorSpec] | None = None
    kernel_size: int = 2
    stride: int = 1
    nearest: bool = True
    direction: str = "fast-to-slow"
    two_way: bool = False
    # data
    dataset: str = "demo"
    image_size: int | None = None
    # training
    # Defaults suit the embedded demo; search spaces set their own for real families.
    epochs: int = 10
    batch_size: int = 32  # per worker
    eval_batch_size: int = 256
    anchor_lr: float = 3e-4  # 10x below pretraining, as the paper fine-tunes
    stitch_lr: float = 3e-3  # stitching layers learn faster than anchors
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    mode: str = "full"
    lora_rank: int = 4
    init: str = "ls"
    ls_samples: int = 100  # the paper used 100 images
    ls_mode: str = "joint"
    sampling: str = "uniform"
    sampling_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    teacher: AnchorSpec | None = None  # hard distillation from an external model, as DeiT
    # resources and fault tolerance
    workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: int = 1
    placement_strategy: str = "PACK"  # Ray placement of the workers: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD
    checkpoint_every_steps: int = 0  # 0: at the end of every epoch only
    eval_checkpoint_seconds: float = 30.0  # how often finished evaluations are checkpointed
    max_failures: int = 3
    # per-stitch latency on the evaluation device (median of repeats after warm-up)
    measure_latency: bool = False
    latency_batch_size: int = 1
    # where results go
    catalog: str = "catalog"
    sweep: str = "train"
    trial_id: str | None = None
    storage_path: str = "runs"

    def validate(self) -> "TrainConfig":
        problems = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        for name in ("kernel_size", "stride", "batch_size", "eval_batch_size", "workers", "cpus_per_worker", "lora_rank",
                     "latency_batch_size"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        for name in ("epochs", "ls_samples", "checkpoint_every_steps", "max_failures"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        for name in ("anchor_lr", "stitch_lr", "weight_decay", "grad_clip", "eval_checkpoint_seconds"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and value >= 0, f"{name} must be a number >= 0, got {value!r}")
        need(isinstance(self.warmup_fraction, (int, float)) and 0 <= self.warmup_fraction < 1,
             f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction!r}")
        need(self.placement_strategy in PLACEMENTS,
             f"placement_strategy must be one of {', '.join(PLACEMENTS)}, got {self.placement_strategy!r}")
        need(self.mode in MODES, f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        need(self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        need(self.ls_mode in ("joint", "average"), f"ls_mode must be 'joint' or 'average', got {self.ls_mode!r}")
        need(self.sampling in RULES, f"sampling must be one of {', '.join(RULES)}, got {self.sampling!r}")
        need(self.init != "ls" or self.ls_samples != 0, "ls_samples must be >= 1 for least-squares init, got 0")
        need(self.mode != "lora" or self.init == "ls", "mode 'lora' learns updates of LS-initialised layers: use init 'ls'")
        need(self.image_size is None or (isinstance(self.image_size, int) and self.image_size >= 1),
             f"image_size must be an integer >= 1, got {self.image_size!r}")
        need(self.anchors is None or len(self.anchors) >= 2,
             f"anchors must name at least two models to stitch, got {self.anchor_names()}")
        if problems:
            raise SNNetError("Invalid training settings: " + "; ".join(problems) + ".")
        return self

    def anchor_names(self) -> list[str]:
        return [a.name for a in self.anchors] if self.anchors else []

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SNNetError(f"Unknown training settings {unknown}; known settings are {sorted(known)}.")
        data = dict(data)
        if data.get("anchors") is not None:
            data["anchors"] = [a if isinstance(a, AnchorSpec) else AnchorSpec(**a) for a in data["anchors"]]
        if isinstance(data.get("teacher"), dict):
            data["teacher"] = AnchorSpec(**data["teacher"])
        return cls(**data)
