"""One supernet training run, typed and validated: :class:`TrainConfig`.

``python -m orchestrator.train`` parses its flags into one, and a sweep trial's point of its search space
resolves into one; it crosses to the Ray Train workers and into checkpoints as ``model_dump()``. A search
space's ``training:`` section is derived from these fields (:mod:`search_spaces.schema`), so a new training
knob is written here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from snnet import DIRECTIONS, PRESETS, AnchorSpec, SNNetError, SpaceConfig
from snnet.sampling import RULES, ScoredRule

from ._kinds import Bool, Float, Int, Kind, OneOf, Str, did_you_mean, problems

__all__ = ["TrainConfig", "MODES", "INITS", "LS_MODES", "PLACEMENTS", "SPACE_FIELDS", "SPEED_MEASURES", "SPEED_ON"]

MODES = ("full", "stitch-only", "lora")
INITS = ("ls", "kaiming")
LS_MODES = ("joint", "average")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
SCORES = tuple(ScoredRule.SCORES)  # the init scores a run can prune by (snnet.scores.SCORES)
#: The GPU speed measures of ``gpu_speed`` (issue 27; :mod:`orchestrator.train.speed` applies them): AdamW's fused
#: kernel; regional ``torch.compile`` of the blocks (snnet.compile), plainly or as CUDA graphs (``reduce-overhead``);
#: the SDPA backend tried first (flash attention or cuDNN's, the others kept as fallbacks).
SPEED_MEASURES = ("fused_adamw", "compile", "cudagraphs", "sdpa_flash", "sdpa_cudnn")
#: What ``gpu_speed: on`` (and ``auto`` with ``use_gpu``) turns on: a candidate, until a GPU run shows which pay.
SPEED_ON = ("fused_adamw", "cudagraphs", "sdpa_flash")


@dataclass(frozen=True)
class _SpeedKind(Kind):
    """``auto``, ``off``, ``on`` or a comma-separated list of :data:`SPEED_MEASURES`, in canonical form
    (a list: each name once, in the order of :data:`SPEED_MEASURES`)."""

    def __call__(self, value: Any) -> Any:
        if isinstance(value, bool):  # YAML 1.1 (a space, --set) reads off and on as booleans
            return "on" if value else "off"
        value = super().__call__(value)
        if value.strip() in ("auto", "off", "on"):
            return value.strip()
        names = [n.strip() for n in value.split(",")]
        for name in names:
            if name not in SPEED_MEASURES:
                raise SNNetError(f"must {self.describe()}, got {value!r}: unknown measure {name!r}"
                                 f"{did_you_mean(name, SPEED_MEASURES)}")
        if "compile" in names and "cudagraphs" in names:
            raise SNNetError(f"must name one of 'compile' and 'cudagraphs' (two ways to compile the blocks), "
                             f"got {value!r}")
        if "sdpa_flash" in names and "sdpa_cudnn" in names:
            raise SNNetError(f"must name one of 'sdpa_flash' and 'sdpa_cudnn' (the backend tried first), "
                             f"got {value!r}")
        return ",".join(n for n in SPEED_MEASURES if n in names)


_SPEED_TEXT = "be auto, off, on or a comma-separated list of " + ", ".join(SPEED_MEASURES)


class TrainConfig(BaseModel):
    """One stitched supernet: its anchors and space, the data, the resources, and how to train it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    # what to stitch (None: the embedded demo family); the space settings of snnet.SpaceConfig
    anchors: list[AnchorSpec] | None = None
    kernel_size: Int(1) = 2
    stride: Int(1) = 1
    nearest: Bool = True
    direction: OneOf(DIRECTIONS) = "fast-to-slow"
    two_way: Bool = False
    preset: Kind("str", choices=PRESETS, nullable=True).annotated() = None  # "paper": the released enumeration
    # data
    dataset: Str = "demo"
    image_size: Int(1, nullable=True) = None
    # resources of the run: Ray Train workers (DDP ranks) and their placement
    workers: Int(1) = 2
    use_gpu: Bool = False
    cpus_per_worker: Int(1) = 1
    gpus_per_worker: Float(0) = 0.0  # with use_gpu; a fraction shares one GPU between workers
    # speed measures that change no numerics (issue 27): auto (SPEED_ON with use_gpu, none without), off, on, or a
    # comma-separated list of SPEED_MEASURES, each switchable on its own (speed_measures() resolves it)
    # default off until a GPU run measures what pays (benchmarks/RESULTS.md, issue 27); then auto
    gpu_speed: _SpeedKind("str", text=_SPEED_TEXT).annotated() = "off"
    placement_strategy: OneOf(PLACEMENTS) = "PACK"
    # DataLoader processes per worker decoding images; null: cpus_per_worker - 1 (0 on the in-memory demo)
    loader_workers: Int(0, nullable=True) = None
    # training. Defaults suit the embedded demo; search spaces set their own for real families.
    epochs: Int(0) = 10
    batch_size: Int(1) = 32  # per worker
    eval_batch_size: Int(1) = 256
    # well below pretraining, as the paper fine-tunes (its DeiTs: 5e-5); the demo anchors pretrain at 1e-3: at 3e-4 the
    # stitches' gradients cost the largest 2-13 points of top-1, at 5e-5 up to 1.2, at 3e-5 under 1 (issue 28, item 6)
    anchor_lr: Float(0) = 3e-5
    # stitching layers learn faster than anchors; null: one learning rate (anchor_lr) for both, as DeiT's SN-Net
    stitch_lr: Kind("float", minimum=0, nullable=True).annotated() = 3e-3
    lr_scale_batch: Int(1, nullable=True) = None  # lr x total batch / this (the paper: 512); null: as given
    min_lr: Float(0) = 0.0  # cosine decays each group's lr to this floor (absolute, after batch scaling)
    weight_decay: Float(0) = 0.05
    warmup_fraction: Float(0, below=1) = 0.1
    grad_clip: Kind("float", minimum=0, nullable=True).annotated() = 1.0  # max gradient norm; null or 0: none
    grad_clip_mode: OneOf(("norm", "value", "agc")) = "norm"  # timm's dispatch_clip_grad: norm, value or agc (LeViT's)
    optimizer: OneOf(("adamw", "sgd")) = "adamw"
    momentum: Float(0, below=1) = 0.9  # SGD's (Nesterov, as timm's 'sgd')
    # the paper's augmentation and regularisation, through timm (orchestrator.train.augment); defaults: off
    auto_augment: Kind("str", nullable=True).annotated() = None  # timm's string, e.g. rand-m9-mstd0.5-inc1
    interpolation: OneOf(("bilinear", "bicubic", "random")) = "bicubic"
    # the evaluation crop; null: timm's
    crop_pct: Kind("float", minimum=0.1, maximum=1, nullable=True, text="lie in [0.1, 1] or be null").annotated() = None
    random_erasing: Float(0, below=1) = 0.0  # probability, on ImageNet folders and shards (timm's reprob)
    random_erasing_mode: OneOf(("pixel", "rand", "const")) = "pixel"
    mixup: Float(0) = 0.0  # mixup alpha (0: off)
    cutmix: Float(0) = 0.0  # cutmix alpha (0: off)
    mixup_prob: Float(0, maximum=1) = 1.0  # chance that a batch is mixed at all
    mixup_switch_prob: Float(0, maximum=1) = 0.5  # chance of cutmix instead of mixup when both are on
    label_smoothing: Float(0, below=1) = 0.0
    aug_repeats: Int(1) = 1  # repeated augmentation (timm RepeatAugSampler): each image this often per epoch
    drop_path_rate: Kind("float", minimum=0, below=1, nullable=True).annotated() = None  # anchors' stochastic depth
    mode: OneOf(MODES) = "full"
    lora_rank: Int(1) = 4
    init: OneOf(INITS) = "ls"
    ls_samples: Int(0) = 100  # the paper used 100 images
    ls_mode: OneOf(LS_MODES, text="be 'joint' or 'average'") = "joint"
    sampling: OneOf(tuple(RULES)) = "uniform"
    sampling_options: dict[str, Any] = {}
    seed: Int(0) = 0
    teacher: AnchorSpec | None = None  # hard distillation from an external model, as DeiT
    # selection apart from report, and fidelity (issue 12): a seeded, stratified part of the training set,
    # removed from training, scores stitches for the search (0: off, selection on the evaluation split)
    selection_fraction: Float(0, below=1) = 0.02
    early_stitches: Int(0) = 8  # after each epoch: the anchors plus this many stitches over the FLOPs range (0: off)
    early_images: Int(1) = 512  # ... scored on this many fixed images of the selection split
    data_fraction: Kind("float", above=0, maximum=1).annotated() = 1.0  # train on this seeded, stratified fraction
    # init scores of every stitch (snnet.scores: CKA and KL against its back anchor, top-1) after the stitching
    # layers' init, on this many fixed selection images, into the catalog (0: none; 'scored' sampling then uses 256)
    score_images: Int(0) = 0
    # train only the best-scored part of the space (issue 30): after init, keep the anchors and the best prune_keep
    # fraction of the stitched stitches by this init score (higher is better, lower for kl); the others are not
    # trained nor evaluated, and stay in the catalog marked pruned, without top-1. Scores on score_images (or 256)
    prune_score: Kind("str", choices=SCORES, nullable=True).annotated() = None
    prune_keep: Kind("float", above=0, maximum=1, text="be a fraction in (0, 1]").annotated() = 0.5
    # FLOPs of the hypervolume's reference point; null: the largest anchor's (a sweep sets its families' largest)
    hv_flops_ref: Kind("float", above=0, nullable=True, text="be a number > 0 or null").annotated() = None
    # fault tolerance
    checkpoint_every_steps: Int(0) = 0  # 0: at the end of every epoch only
    eval_checkpoint_seconds: Float(0) = 30.0  # how often finished evaluations are checkpointed
    max_failures: Int(0) = 3
    # per-stitch latency on the evaluation device (median of repeats after warm-up)
    measure_latency: Bool = False
    latency_batch_size: Int(1) = 1
    # where results go
    catalog: Str = "catalog"
    sweep: Str = "train"
    trial_id: str | None = None
    storage_path: Str = "runs"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _Worded(_message(e)) from None  # model_validate, which runs this __init__, passes it on

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> TrainConfig:  # type: ignore[override]
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as e:
            raise SNNetError(_already_worded(e) or _message(e)) from None

    @field_validator("anchors")
    @classmethod
    def _two_anchors(cls, anchors: list[AnchorSpec] | None) -> list[AnchorSpec] | None:
        if anchors is not None and len(anchors) < 2:
            raise SNNetError(f"must name at least two models to stitch, got {[a.name for a in anchors]}")
        return anchors

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.init == "ls" and self.ls_samples == 0:
            raise SNNetError("ls_samples must be >= 1 for least-squares init, got 0")
        if self.mode == "lora" and self.init != "ls":
            raise SNNetError("mode 'lora' learns updates of LS-initialised layers: use init 'ls'")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise SNNetError(f"batch_size must be even with mixup or cutmix (timm mixes a batch with its reverse), "
                             f"got {self.batch_size}")
        if self.aug_repeats > 1 and self.dataset.startswith("wds:"):
            raise SNNetError(f"aug_repeats must be 1 for WebDataset shards (they stream each sample once per epoch; "
                             f"repeated augmentation needs a folder or the demo), got {self.aug_repeats}")
        if self.auto_augment is not None:
            _check_auto_augment(self.auto_augment)
        options = {k: v for k, v in self.sampling_options.items() if k != "scores"}  # scores: the recipe's own
        RULES[self.sampling]((1, 2), **options)  # the rule checks its options: one paragraph before any training
        if self.prune_score == "ls_r2" and self.init != "ls":
            raise SNNetError(f"prune_score 'ls_r2' ranks stitches by their least-squares fit: use init 'ls' "
                             f"(or another prune_score: cka, kl, init_top1), got init {self.init!r}")
        return self

    def validate(self) -> TrainConfig:  # type: ignore[override]
        """Check again (after a field was set) and return ``self``; building one already validated it."""
        type(self).model_validate(self.model_dump())
        return self

    def speed_measures(self) -> tuple[str, ...]:
        """The speed measures ``gpu_speed`` turns on: ``auto`` is :data:`SPEED_ON` with ``use_gpu``, none without."""
        if self.gpu_speed == "auto":
            return SPEED_ON if self.use_gpu else ()
        if self.gpu_speed in ("off", "on"):
            return SPEED_ON if self.gpu_speed == "on" else ()
        return tuple(self.gpu_speed.split(","))

    def space_config(self) -> SpaceConfig:
        """The stitch-space settings of this run."""
        return SpaceConfig(**{name: getattr(self, name) for name in SPACE_FIELDS})

    def anchor_names(self) -> list[str]:
        return [a.name for a in self.anchors] if self.anchors else []

    def data_workers(self) -> int:
        """DataLoader processes per worker: ``loader_workers``, else all but one of its CPUs for image
        folders and shards (the rest runs the model), none for the demo (its images are in memory)."""
        if self.loader_workers is not None:
            return self.loader_workers
        return 0 if self.dataset == "demo" else self.cpus_per_worker - 1


#: The settings of ``snnet.SpaceConfig`` a run (and a search space's ``space:``) sets, in its order.
SPACE_FIELDS: tuple[str, ...] = tuple(f for f in SpaceConfig.__dataclass_fields__ if f in TrainConfig.model_fields)


def _check_auto_augment(text: str) -> None:
    """timm's own parser reads the string (by building a tiny training transform with it)."""
    from timm.data import create_transform

    try:
        create_transform(32, is_training=True, auto_augment=text)
    except Exception as e:  # noqa: BLE001 - timm raises AssertionError, ValueError, KeyError... for a bad string
        raise SNNetError(f"auto_augment must be a timm auto-augment string such as 'rand-m9-mstd0.5-inc1', "
                         f"'original' or 'augmix-m5-w4-d2', got {text!r} ({type(e).__name__}: {e})") from None


class _Worded(SNNetError):
    """:meth:`TrainConfig.__init__`'s error, already worded by :func:`_message`."""


def _already_worded(error: ValidationError) -> str | None:
    """The message of :meth:`TrainConfig.__init__`'s own error, when pydantic's ``model_validate`` ran
    ``__init__`` (it does for a model that defines one) and wrapped that error: worded once, not twice."""
    found = error.errors()
    cause = (found[0].get("ctx") or {}).get("error") if len(found) == 1 and not found[0]["loc"] else None
    return str(cause) if isinstance(cause, _Worded) else None


def _message(error: ValidationError) -> str:
    found = problems(error)
    unknown = sorted(str(loc[0]) for loc, message in found if message == "unknown key")
    parts = [f"{'.'.join(map(str, loc))} {message}" if loc else message
             for loc, message in found if message != "unknown key"]
    text = ("Invalid training settings: " + "; ".join(parts)).rstrip(".") + "." if parts else ""
    if unknown:
        known = sorted(TrainConfig.model_fields)
        text = f"Unknown training settings {unknown}; known settings are {known}. {text}".strip()
    return text
