"""The training recipe of one stitched supernet: initialise, train jointly, evaluate every stitch.

:class:`SupernetRecipe` is what each Ray Train worker runs (:mod:`orchestrator.train.worker`
connects it to Ray); it needs no Ray itself, so it also runs in one process for tests and
notebooks. Its steps, in the order :meth:`SupernetRecipe.run` takes them:

1. :meth:`~SupernetRecipe.setup`: build the supernet once, the data loaders, the seeded
   sampling rule (:mod:`snnet.sampling`), an optional teacher.
2. :meth:`~SupernetRecipe.initialise` (fresh runs only): **least-squares init**, distributed:
   each rank accumulates the normal equations of every stitching layer on its own shard of
   ``ls_samples`` training images, the sums are all-reduced and every rank solves the same
   system (:mod:`snnet.least_squares`); or Kaiming init, for comparison. Then
   :meth:`~SupernetRecipe.measure_anchors`: each anchor's top-1 before joint training, on the
   splits the final evaluation uses, so the report shows what joint training cost the anchors.
3. :meth:`~SupernetRecipe.train_epoch`: at step ``t`` rank ``r`` trains the stitches
   ``rule.draw(t, r, W)``. All stitches of a step go through one forward of the DDP module,
   so DDP's unused-parameter detection sees the whole step and a rule that trains several
   stitches per step (``sandwich``) accumulates gradients and distils in place without
   ``no_sync``. The recipe's timm parts (:mod:`orchestrator.train.augment`): mixup/cutmix, label
   smoothing, random erasing, repeated augmentation, drop path; AdamW or SGD with one or two
   (batch-scaled) learning rates, warmup plus cosine decay to ``min_lr``, optional gradient
   clipping, hard distillation from a teacher; bf16 autocast on GPU.
4. :meth:`~SupernetRecipe.evaluate_all`: every stitch on the evaluation split and on the
   selection split, spread over the workers (rank ``r`` takes every ``W``-th unfinished
   stitch), gathered each round.

**Selection apart from report** (issue 12): ``selection_fraction`` of the training set (seeded
by the run's seed; stratified for folders and the demo, by a hash of each sample's key for
``wds:`` shards: :func:`orchestrator.data.split_training_set`) is held out of
training; the final report carries every stitch's top-1 on it (``results_selection``) and its
hypervolume (``hv_selection``) beside the evaluation split's ``results``. ``data_fraction``
trains on a seeded, stratified part of what is left. **The early front**: after every epoch the
fixed subset :func:`orchestrator.data.fidelity.stitch_subset` (the anchors plus ``early_stitches``
over the FLOPs range) is scored on ``early_images`` fixed images of the selection split (of the
evaluation split when there is none), and its hypervolume
(:func:`orchestrator.catalog.objectives.hypervolume`) goes into the epoch's report as ``early_hv``.

:meth:`~SupernetRecipe.save` reports a :class:`TrainState` (the checkpoint schema) after every
epoch, every ``checkpoint_every_steps`` steps and now and then during evaluation;
:meth:`~SupernetRecipe.load` resumes from one, skipping finished steps and stitches.
Progress goes to the ``snnet.train`` logger, rank 0 only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from orchestrator.cli import plural
from orchestrator.train.augment import lr_lambda
from orchestrator.train.config import TrainConfig
from snnet import StitchedSupernet, StitchSpace, create_anchor
from snnet.sampling import SamplingRule, balance_report, make_rule, rule_class

__all__ = [
    "LeastSquaresFit",
    "SupernetRecipe",
    "SupernetStep",
    "TrainCallback",
    "TrainState",
    "Worker",
    "build_worker_supernet",
    "evaluate_stitch",
    "initialise",
    "load_callbacks",
    "ls_line",
    "lr_lambda",
    "step_loss",
    "training_logger",
]

LOGGER_NAME = "snnet.train"
#: Images the init scores use under ``scored`` sampling when ``score_images`` is 0.
SCORED_IMAGES = 256


# -- the checkpoint schema -------------------------------------------------------------------------


#: A long epoch logs its progress (steps, img/s, ETA) this often, in seconds.
PROGRESS_SECONDS = 120.0
#: Epoch lines per run, about: the demo's 10 epochs print 5, a 50-epoch run 5-6 (the last always).
EPOCH_LINES = 5


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


@dataclass
class TrainState:
    """Everything a run resumes from, and enough to rebuild its supernet without the driver.

    Written as one ``torch.save`` dict (:attr:`FILE` in a checkpoint folder) whose keys are
    these field names, read back with ``weights_only=True``. ``train_config`` is the run's
    :class:`~orchestrator.train.config.TrainConfig` as a plain dict and ``space`` its
    :meth:`StitchSpace.to_json`; ``optimizer`` and ``scheduler`` are ``None`` in checkpoints
    taken after training (evaluation needs neither).
    """

    FILE: ClassVar[str] = "state.pt"

    model: dict[str, torch.Tensor]
    train_config: dict[str, Any]
    space: str
    step: int = 0
    epoch: int = 0
    r2: dict[str, float] = field(default_factory=dict)
    # stitch id -> [top1, top5] on the evaluation split, then top-1 on the selection split when there is one
    evaluated: dict[int, list[float]] = field(default_factory=dict)
    # str(stitch id) -> its init scores (snnet.scores.StitchScore.to_dict() plus ls_r2), when the run scored
    init_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    # str(epoch) -> that epoch's early-front hypervolume: a run resumed from a checkpoint whose reports Ray
    # never saw (a stop before its controller's next poll) still knows every epoch's
    early_hv: dict[str, float] = field(default_factory=dict)
    # str(anchor's stitch id) -> [top1 on the evaluation split, top1 on the selection split or None], measured
    # before joint training (empty for epochs 0 and for checkpoints written before issue 28)
    anchors_before: dict[str, list[float | None]] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["evaluated"] = {str(k): list(v) for k, v in self.evaluated.items()}
        return data

    @classmethod
    def from_dict(cls, data: Any) -> TrainState:
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if not isinstance(data, dict) or k not in data]
        if missing:
            raise ValueError(f"a training checkpoint must hold {', '.join(required)}; this one lacks "
                             f"{', '.join(missing)}")
        state = cls(**{k: data[k] for k in names if k in data})
        state.evaluated = {int(k): list(v) for k, v in state.evaluated.items()}
        return state

    def write(self, folder: str | os.PathLike[str]) -> str:
        path = os.path.join(folder, self.FILE)
        torch.save(self.to_dict(), path)
        return path

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> TrainState:
        path = os.path.join(folder, cls.FILE)
        return cls.from_dict(torch.load(path, map_location="cpu", weights_only=True))


# -- where a recipe runs, and what may watch it ----------------------------------------------------


def _no_report(metrics: dict[str, Any], state: TrainState | None) -> None:
    pass


@dataclass
class Worker:
    """One of ``world`` data-parallel workers: its rank, device, and how it reports progress.

    ``report(metrics, state)`` is called by every rank at once (a collective under Ray Train),
    with a :class:`TrainState` on rank 0 and ``None`` elsewhere. ``wrap`` turns the step module
    into its DDP form when ``world > 1``.
    """

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    report: Callable[[dict[str, Any], TrainState | None], None] = _no_report
    wrap: Callable[[nn.Module], nn.Module] = lambda module: module


class TrainCallback:
    """Hooks into a running recipe; tests use them to observe or disturb a run."""

    def on_step(self, recipe: SupernetRecipe, step: int) -> None:
        """Before training step ``step`` (0-based, counted over the whole run)."""


def load_callbacks(specs: Iterable[str | dict[str, Any]]) -> list[TrainCallback]:
    """Callbacks from import specs: ``"pkg.module:factory"`` or ``{"target": ..., **kwargs}``."""
    callbacks = []
    for spec in specs:
        kwargs = dict(spec) if isinstance(spec, dict) else {"target": spec}
        module, _, name = str(kwargs.pop("target")).strip().partition(":")
        if not module or not name:
            raise ValueError(f"a callback spec looks like 'package.module:name', got {spec!r}")
        callbacks.append(getattr(importlib.import_module(module), name)(**kwargs))
    return callbacks


class _RankZeroFilter(logging.Filter):
    """Pass records of rank 0 only (the rank travels in the record's ``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "rank", 0) == 0


def training_logger() -> logging.Logger:
    """The ``snnet.train`` logger: ``[snnet] message`` lines on the process's real stdout.

    The real stdout, not ``sys.stdout``: Ray Train redirects the latter on its workers and
    would log every line twice. Records carrying ``rank != 0`` are dropped.
    """
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, _RankZeroFilter) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.__stdout__)
        handler.setFormatter(logging.Formatter("[snnet] %(message)s"))
        handler.addFilter(_RankZeroFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


# -- the pieces of a step --------------------------------------------------------------------------


class SupernetStep(nn.Module):
    """``forward(x, stitch_ids)`` -> one output per stitch: a whole step in one DDP forward."""

    def __init__(self, supernet: StitchedSupernet):
        super().__init__()
        self.supernet = supernet

    def forward(self, x: torch.Tensor, stitch_ids: tuple[int, ...]) -> list[torch.Tensor]:
        return [self.supernet(x, i) for i in stitch_ids]


def build_worker_supernet(config: TrainConfig, space: StitchSpace, device: torch.device, *,
                          load_weights: bool = True) -> StitchedSupernet:
    """The run's supernet on ``device``: each anchor built once, with its weights unless
    ``load_weights`` is False (a resumed run, whose checkpoint holds every weight)."""
    from orchestrator.data import demo_anchors as demo  # noqa: F401 - registers the demo anchors with timm on this process
    from orchestrator.train.augment import anchor_options

    specs = {s.name: s for s in config.anchors}
    extra = {"img_size": config.image_size} if config.image_size else {}
    extra.update(anchor_options(config))  # drop_path_rate, when set
    anchors = [create_anchor(specs[name], load_weights=load_weights, **extra) for name in space.anchor_names]
    return StitchedSupernet(space, anchors).to(device)


def ls_batches(dataset, samples: int, batch_size: int, rank: int, world: int, device, skip_log=None):
    """This rank's share of the first ``samples`` training images (fixed, seeded subset), read as
    every other reader reads them: :func:`orchestrator.data.calibration_batches` leaves unreadable
    files out and names them once (through ``skip_log``, the run's shared one, when given)."""
    from orchestrator.data import calibration_batches

    for x in calibration_batches(dataset, samples, batch_size, rank, world, skip_log=skip_log):
        yield x.to(device)


def initialise(net: StitchedSupernet, config: TrainConfig, dataset, rank: int, world: int, device,
               skip_log=None) -> dict[str, float]:
    """LS-initialise (all-reduced over ranks) or Kaiming-initialise every stitching layer; R^2
    per layer (a :class:`LeastSquaresFit`, which also counts the images used), ``{}`` for Kaiming."""
    import torch.distributed as dist

    if config.init == "kaiming":
        torch.manual_seed(config.seed)
        net.reset_stitch_layers()
        return {}
    net.eval()
    accs = net.least_squares_accumulators(config.ls_mode)
    images = 0
    for x in ls_batches(dataset, config.ls_samples, config.eval_batch_size, rank, world, device, skip_log):
        net.accumulate_least_squares(accs, x)
        images += x.shape[0]
    if dist.is_available() and dist.is_initialized() and world > 1:
        for acc in accs.values():
            acc.all_reduce_()
        total = torch.tensor(float(images), dtype=torch.float64, device=device)
        dist.all_reduce(total)
        images = int(total.item())
    return LeastSquaresFit(net.solve_least_squares(accs), images=images)


class LeastSquaresFit(dict):
    """R^2 per stitching layer (a plain dict to every reader), and :attr:`images`: how many
    images the fit saw on all ranks together, which is fewer than ``ls_samples`` on a smaller
    training set or where images were unreadable."""

    def __init__(self, r2: dict[str, float], images: int):
        super().__init__(r2)
        self.images = images


def ls_line(fit: dict[str, float], config: TrainConfig, seconds: float) -> str:
    """The log line of an LS init: layers, the images it really used, time, R^2 range."""
    values = list(fit.values())
    images = getattr(fit, "images", config.ls_samples)
    asked = f" (of the {config.ls_samples} ls_samples asks for)" if images != config.ls_samples else ""
    return (f"least-squares init of {len(values)} stitching layers on {images} images{asked} in {seconds:.1f}s: "
            f"R^2 min {min(values):.3f}, mean {sum(values) / len(values):.3f}, max {max(values):.3f}")


def step_loss(outputs: list[torch.Tensor], target: torch.Tensor, rule: str | SamplingRule | type[SamplingRule],
              teacher_labels: torch.Tensor | None = None,
              criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> torch.Tensor:
    """The loss of one step's outputs under a sampling rule (by name, class or instance).

    The mean cross-entropy of the stitches; a rule that :attr:`~SamplingRule.distils_from_first`
    (``sandwich``) instead sums the first output's cross-entropy and the others' cross-entropy
    against its detached prediction. ``teacher_labels`` (DeiT's hard distillation) average into
    the label term. ``criterion`` is the label loss (:func:`orchestrator.train.augment.make_criterion`:
    soft targets under mixup, label smoothing); the teacher and sandwich terms stay plain
    cross-entropy, as DeiT's hard distillation.
    """

    def ce(out: torch.Tensor) -> torch.Tensor:
        loss = criterion(out.float(), target)
        if teacher_labels is not None:
            loss = 0.5 * loss + 0.5 * F.cross_entropy(out, teacher_labels)
        return loss

    if (rule_class(rule) if isinstance(rule, str) else rule).distils_from_first:
        first = outputs[0]
        soft = first.detach().float().softmax(-1)
        return ce(first) + sum(F.cross_entropy(o.float(), soft) for o in outputs[1:])
    return sum(ce(o) for o in outputs) / len(outputs)


@torch.no_grad()
def evaluate_stitch(net: StitchedSupernet, stitch_id: int, loader, device, autocast) -> tuple[float, float, int]:
    """Top-1 and top-5 accuracy (percent) of one stitch over a loader, and the sample count."""
    correct1 = correct5 = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with autocast():
            out = net(x, stitch_id)
        top = out.float().topk(min(5, out.shape[-1]), dim=-1).indices
        hits = top == y[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=-1).sum().item()
        total += y.numel()
    return 100.0 * correct1 / max(total, 1), 100.0 * correct5 / max(total, 1), total


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


# -- the recipe ------------------------------------------------------------------------------------


def _unreadable(item: Any) -> bool:
    from orchestrator.data import Unreadable

    return isinstance(item, Unreadable)


def _size(dataset: Any) -> int:
    try:
        return len(dataset)
    except TypeError:
        return 0


class _Items(torch.utils.data.Dataset):
    """A few decoded ``(image, label)`` items held in memory (the early front's images of shards)."""

    def __init__(self, items: list[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


class SupernetRecipe:
    """Joint training and evaluation of one stitched supernet on one worker (module docstring).

    Args:
        config: the run's settings.
        space: its stitch space (the driver built and checked it).
        worker: this worker's rank, device and reporting; default one CPU worker, no reports.
        callbacks: :class:`TrainCallback` hooks.
        datasets: ``(train, val)`` to use instead of ``get_datasets(config.dataset, ...)``.
    """

    def __init__(self, config: TrainConfig, space: StitchSpace, worker: Worker | None = None, *,
                 callbacks: Sequence[TrainCallback] = (), datasets: tuple[Any, Any] | None = None):
        self.config, self.space = config, space
        self.worker = worker or Worker()
        self.rank, self.world, self.device = self.worker.rank, self.worker.world, self.worker.device
        self.callbacks = list(callbacks)
        self.log = logging.LoggerAdapter(training_logger(), {"rank": self.rank})
        self._datasets = datasets
        self.step = self.epoch = 0
        self.r2: dict[str, float] = {}
        self.evaluated: dict[int, list[float]] = {}
        self.init_scores: dict[str, dict[str, Any]] = {}  # str(stitch id) -> scores at init (score_images)
        self.latency: dict[str, float] = {}
        self.last_loss = float("nan")  # every report carries the latest epoch's loss (schedulers read it)
        self.early_hv: float | None = None  # ... and, once scored, the latest early-front hypervolume
        self.early_history: dict[str, float] = {}  # str(epoch) -> early_hv, across resumes (TrainState.early_hv)
        self.anchors_before: dict[str, list[float | None]] = {}  # the anchors' top-1 before joint training
        self.resumed = False
        self.model: nn.Module | None = None  # the (DDP-wrapped) step module, made when training starts
        self.teacher: nn.Module | None = None  # DeiT-style hard-label teacher, made when training starts

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- building ------------------------------------------------------------------------------

    def setup(self, *, load_weights: bool = True) -> None:
        """Build the supernet (once), the data loaders and the sampling rule. ``load_weights=False``
        leaves the anchors' weights unread (a resume: :meth:`load` replaces every one of them)."""
        from orchestrator.data import SkipLog, get_datasets, make_loader, split_training_set
        from orchestrator.train.augment import make_batch_erasing, make_criterion, make_mixup, transform_options

        c = self.config
        self.net = build_worker_supernet(c, self.space, self.device, load_weights=load_weights)
        full_train, self.val_ds = self._datasets or get_datasets(c.dataset, c.image_size, **transform_options(c))
        split = split_training_set(full_train, selection_fraction=c.selection_fraction, data_fraction=c.data_fraction,
                                   seed=c.seed, eval_transform=getattr(self.val_ds, "transform", None))
        if split.note:
            self.log.info(split.note)
        self.train_ds, self.selection_ds = split.train, split.selection
        # One log for every reader (LS images, training, early front, selection, evaluation): each unreadable
        # file is named once. Every rank reads the evaluation sets whole, so rank 0 alone names theirs.
        self.skips = SkipLog()
        self.whole_skips = self.skips if self.rank == 0 else SkipLog(None)
        self.selection_loader = None if self.selection_ds is None else make_loader(
            self.selection_ds, c.eval_batch_size, shuffle=False, seed=c.seed, skip_log=self.whole_skips)
        self._setup_early_front()
        workers = c.data_workers()
        self.loader = make_loader(self.train_ds, c.batch_size, rank=self.rank, world_size=self.world, shuffle=True,
                                  seed=c.seed, drop_last=True, repeats=c.aug_repeats, num_workers=workers,
                                  skip_log=self.skips)
        self.val_loader = make_loader(self.val_ds, c.eval_batch_size, shuffle=False, seed=c.seed, num_workers=workers,
                                      skip_log=self.whole_skips)
        self.steps_per_epoch = len(self.loader)
        self._make_rule()
        # timm's mixup/cutmix and label loss; random erasing on the batch where no timm transform erases
        self.mixup = make_mixup(c, self.net.anchors[-1].num_classes)
        self.criterion = make_criterion(c)
        self.erase = None if getattr(full_train, "transform", None) is not None else make_batch_erasing(c, self.device)

    def _make_rule(self) -> None:
        """The seeded sampling rule; ``scored`` draws by the init scores once they exist."""
        c = self.config
        options = dict(c.sampling_options)
        if c.sampling == "scored" and self.init_scores:
            name = options.get("score", rule_class("scored").default_options()["score"])
            options["scores"] = [self.init_scores.get(str(s.stitch_id), {}).get(name) for s in self.space]
        self.rule = make_rule(c.sampling, [s.flops for s in self.space], seed=c.seed, **options)

    def score_images(self) -> int:
        """How many images the init scores use: ``score_images``, 256 for ``scored`` sampling when 0."""
        return self.config.score_images or (SCORED_IMAGES if self.config.sampling == "scored" else 0)

    def score_init(self) -> dict[str, dict[str, Any]]:
        """Score every stitch at init (:func:`snnet.scores.score_stitches`) on ``score_images`` fixed
        images of the selection split (of the evaluation split when there is none), spread over the ranks
        (rank ``r`` takes every ``W``-th stitch) and gathered; each stitch's LS R^2 beside them."""
        from torch.utils.data import Subset

        from orchestrator.data import make_loader
        from orchestrator.data.fidelity import fixed_images
        from snnet.scores import score_stitches, stitch_r2

        t0 = time.perf_counter()
        images = self.selection_ds if self.selection_ds is not None else self.val_ds
        if isinstance(images, torch.utils.data.IterableDataset):  # shards: their first readable images
            from itertools import islice

            items = [i for i in islice(iter(images), self.score_images() * 2) if not _unreadable(i)]
            images = _Items(items[: self.score_images()])
        else:
            images = Subset(images, fixed_images(len(images), self.score_images(), self.config.seed).tolist())
        loader = make_loader(images, self.config.eval_batch_size, shuffle=False, seed=self.config.seed,
                             skip_log=self.whole_skips)
        ids = [s.stitch_id for s in self.space][self.rank::self.world]
        with self.autocast():
            mine = {str(i): sc.to_dict() for i, sc in score_stitches(self.net, loader, ids, self.device).items()}
        parts = [mine]
        if self._distributed():
            parts = [None] * self.world
            torch.distributed.all_gather_object(parts, mine)
        r2 = stitch_r2(self.space, self.r2)
        scores = {str(s.stitch_id): {**next(p[str(s.stitch_id)] for p in parts if str(s.stitch_id) in p),
                                     "ls_r2": r2[s.stitch_id]} for s in self.space}
        cka = [v["cka"] for v in scores.values() if v["cka"] is not None]
        kl = [v["kl"] for v in scores.values()]
        self.log.info(f"init scores of {len(scores)} stitches on {next(iter(scores.values()))['images']} images in "
                      f"{time.perf_counter() - t0:.1f}s: CKA min {min(cka, default=float('nan')):.3f}, "
                      f"KL max {max(kl):.3f}")
        return scores

    def flops_ref(self) -> float:
        """The hypervolume's reference FLOPs: ``hv_flops_ref``, else the largest anchor's."""
        return float(self.config.hv_flops_ref or max(p.flops for p in self.space.profiles))

    def _setup_early_front(self) -> None:
        """The early front's fixed stitches and images (the same on every rank and every resume)."""
        from torch.utils.data import Subset

        from orchestrator.data import make_loader
        from orchestrator.data.fidelity import fixed_images, stitch_subset

        c = self.config
        self.early_ids: list[int] = []
        self.early_loader = None
        if c.early_stitches == 0:
            return
        stitches = list(self.space)
        self.early_ids = stitch_subset([s.flops for s in stitches], [s.stitch_id for s in stitches if s.is_anchor],
                                       c.early_stitches)
        images = self.selection_ds if self.selection_ds is not None else self.val_ds
        if isinstance(images, torch.utils.data.IterableDataset):  # shards: their first images, in shard order
            from itertools import islice

            items = list(islice(iter(images), c.early_images * 2))
            self.whole_skips.report(item.name for item in items if _unreadable(item))
            images = _Items([item for item in items if not _unreadable(item)][: c.early_images])
        else:
            images = Subset(images, fixed_images(len(images), c.early_images, c.seed).tolist())
        self.early_loader = make_loader(images, c.eval_batch_size, shuffle=False, seed=c.seed,
                                        skip_log=self.whole_skips)

    def _apply_mode(self) -> None:
        """Freeze the anchors (``stitch-only``, ``lora``) and add LoRA updates (``lora``)."""
        if self.config.mode in ("stitch-only", "lora"):
            for p in self.net.anchors.parameters():
                p.requires_grad_(False)
        if self.config.mode == "lora":
            for layer in self.net.stitch_layers.values():
                layer.enable_lora(self.config.lora_rank)

    def _build_optimizer(self) -> None:
        """timm's AdamW or SGD over the anchor and stitch groups (batch-scaled), warmup and cosine to ``min_lr``."""
        from orchestrator.train.augment import group_lambdas, make_optimizer

        c = self.config
        total_steps = max(1, self.steps_per_epoch * c.epochs)
        self.optimizer = make_optimizer(self.net, c, self.world)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           group_lambdas(self.optimizer, total_steps, c))

    def initialise(self) -> dict[str, float]:
        """LS or Kaiming init of every stitching layer; returns R^2 per layer (LS only)."""
        t0 = time.perf_counter()
        fit = initialise(self.net, self.config, self.train_ds, self.rank, self.world, self.device, self.skips)
        self.r2 = dict(fit)  # plain: it travels in the reported metrics
        if self.r2:
            self.log.info(ls_line(fit, self.config, time.perf_counter() - t0))
        else:
            self.log.info(f"Kaiming init of {len(self.space.layers)} stitching layers")
        if self.score_images():
            self.init_scores = self.score_init()
            self._make_rule()
        return self.r2

    def measure_anchors(self) -> dict[str, list[float | None]]:
        """Each anchor's top-1 before joint training, on the splits the final evaluation uses (the
        evaluation split, and the selection split when there is one), spread over the ranks; kept in
        :attr:`anchors_before` (the checkpoint and the final report carry it) so the catalog and the
        summary show what joint training did to the anchors (issue 28). Nothing for ``epochs`` 0."""
        if self.config.epochs == 0:
            return {}
        ids = [s.stitch_id for s in self.space if s.is_anchor]
        self.net.eval()
        evaluation = self._evaluate_ids(ids, self.val_loader)
        selection = self._evaluate_ids(ids, self.selection_loader) if self.selection_loader is not None else {}
        self.anchors_before = {str(i): [evaluation[i], selection.get(i)] for i in ids}
        return self.anchors_before  # no log line: the summary shows before -> after (a console of < 30 lines)

    # -- checkpoints -----------------------------------------------------------------------------

    def state(self, with_optimizer: bool = True) -> TrainState:
        """The current :class:`TrainState`."""
        return TrainState(
            model=self.net.state_dict(),
            optimizer=self.optimizer.state_dict() if with_optimizer else None,
            scheduler=self.scheduler.state_dict() if with_optimizer else None,
            step=self.step, epoch=self.epoch, r2=dict(self.r2), evaluated=dict(self.evaluated),
            init_scores=dict(self.init_scores), early_hv=dict(self.early_history),
            anchors_before=dict(self.anchors_before),
            train_config=self.config.model_dump(), space=self.space.to_json(),
        )

    def save(self, metrics: dict[str, Any], *, with_optimizer: bool = True) -> None:
        """Report ``metrics`` from every rank, with rank 0's :class:`TrainState` as the checkpoint."""
        metrics = {"epoch": self.epoch, "step": self.step, "evaluated": len(self.evaluated),
                   "loss": self.last_loss, **({} if self.early_hv is None else {"early_hv": self.early_hv}), **metrics}
        self.worker.report(metrics, self.state(with_optimizer) if self.rank == 0 else None)

    def load(self, state: TrainState) -> None:
        """Continue from ``state``: weights, optimizer and schedule, counters, finished stitches."""
        self.net.load_state_dict(state.model)
        if state.optimizer:
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
        self.step, self.epoch = state.step, state.epoch
        self.r2, self.evaluated = dict(state.r2), dict(state.evaluated)
        self.init_scores = dict(state.init_scores)
        self.early_history = {str(k): float(v) for k, v in state.early_hv.items()}
        self.anchors_before = {str(k): list(v) for k, v in state.anchors_before.items()}
        self._make_rule()
        self.resumed = True
        self.log.info(f"resuming from checkpoint: epoch {self.epoch}, step {self.step}, "
                      f"{len(self.evaluated)} stitches evaluated")

    # -- training --------------------------------------------------------------------------------

    def _start_training(self) -> None:
        c, space = self.config, self.space
        if c.teacher is not None:
            from orchestrator.train.augment import create_teacher

            self.teacher = create_teacher(c.teacher, self.device)
        step_module = SupernetStep(self.net)
        self.model = self.worker.wrap(step_module) if self.world > 1 else step_module
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]
        self.log.info(f"training {len(space)} stitches for {plural(c.epochs, 'epoch')} x {self.steps_per_epoch} "
                      f"steps on {self.world} worker(s), sampling '{c.sampling}', mode '{c.mode}'")
        if self.rank == 0:
            sizes = sorted({self.world, 8, 64})
            # 50 steps keep each figure within about 0.03 of a 2000-step estimate, in half a second
            report = balance_report([s.flops for s in space], world_sizes=sizes, seed=c.seed, steps=50)
            self.log.info("expected DDP balance (mean/max work per step over ranks, from the stitches' FLOPs): "
                          + "; ".join(f"{rule} " + " ".join(f"w{w}={v:.2f}" for w, v in by_w.items())
                                      for rule, by_w in report.items()))

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x.to(self.device), y.to(self.device)
        if self.erase is not None:
            x = self.erase(x)
        if self.mixup is not None:
            x, y = self.mixup(x, y)  # soft targets, label smoothing folded in
        ids = tuple(self.rule.draw(self.step, self.rank, self.world))
        labels = None
        if self.teacher is not None:
            with torch.no_grad(), self.autocast():
                labels = self.teacher(x).argmax(-1)
        with self.autocast():
            outputs = self.model(x, ids)
        loss = step_loss(outputs, y, self.rule, labels, self.criterion)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            from timm.utils import dispatch_clip_grad

            dispatch_clip_grad(self.trainable, self.config.grad_clip, mode=self.config.grad_clip_mode)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.item()

    def train_epoch(self) -> float:
        """One epoch (the rest of it after a restart); returns its mean loss."""
        if self.model is None:
            self._start_training()
        c = self.config
        self.net.train()
        if c.mode != "full":  # frozen anchors keep their BatchNorm statistics too
            self.net.anchors.eval()
        self.loader.sampler.set_epoch(self.epoch)
        skip = self.step - self.epoch * self.steps_per_epoch  # batches finished before a restart
        t_epoch, loss_sum, seen = time.perf_counter(), 0.0, 0
        lr, shown = self.scheduler.get_last_lr()[-1], time.perf_counter()
        for i, (x, y) in enumerate(self.loader):
            if i < skip:
                continue
            for callback in self.callbacks:
                callback.on_step(self, self.step)
            loss_sum, seen = loss_sum + self._train_step(x, y), seen + 1
            if time.perf_counter() - shown >= PROGRESS_SECONDS:  # a long epoch says how far it is
                shown = time.perf_counter()
                self.log.info(self._progress(f"epoch {self.epoch + 1}/{c.epochs}", seen, self.steps_per_epoch - skip,
                                             shown - t_epoch, x.shape[0]))
            every = c.checkpoint_every_steps
            if every and self.step % every == 0 and i + 1 < self.steps_per_epoch:
                self.save({"loss": loss_sum / seen, "phase": "train"})
        self.epoch += 1
        seconds = time.perf_counter() - t_epoch
        self.last_loss = loss_sum / max(seen, 1)
        early = self.early_front()
        every = max(1, -(-c.epochs // EPOCH_LINES))  # at most about EPOCH_LINES epoch lines, the last always
        if self.epoch % every == 0 or self.epoch == c.epochs:
            rate = seen * self.loader.batch_size * self.world / max(seconds, 1e-9)
            eta = (c.epochs - self.epoch) * seconds
            self.log.info(f"epoch {self.epoch}/{c.epochs}  loss {self.last_loss:.4f}  lr {lr:.2e}  {seconds:.1f}s  "
                          f"{rate:,.0f} img/s" + (f"  early HV {self.early_hv:.4f}" if early else "")
                          + (f"  ETA {_duration(eta)}" if eta else ""))
        self.save({"loss": self.last_loss, "phase": "train", "epoch_seconds": seconds})
        return self.last_loss

    def early_front(self) -> dict[int, float]:
        """Score the early front (:meth:`_setup_early_front`) and set :attr:`early_hv`; returns
        ``{stitch_id: top1}`` (empty when ``early_stitches`` is 0). Every rank takes part."""
        from orchestrator.catalog.objectives import hypervolume

        if not self.early_ids or self.early_loader is None:
            return {}
        was_training = self.net.training
        self.net.eval()
        scores = self._evaluate_ids(self.early_ids, self.early_loader)
        self.net.train(was_training)
        if was_training and self.config.mode != "full":
            self.net.anchors.eval()
        flops = {s.stitch_id: s.flops for s in self.space}
        self.early_hv = float(hypervolume([(flops[i], top1) for i, top1 in scores.items()], self.flops_ref()))
        self.early_history[str(self.epoch)] = self.early_hv
        return scores

    def _evaluate_ids(self, ids: list[int], loader) -> dict[int, float]:
        """Top-1 of each stitch of ``ids`` on ``loader``: rank ``r`` takes every ``W``-th, all gathered."""
        out: dict[int, float] = {}
        for start in range(0, len(ids), self.world):
            mine = ids[start + self.rank] if start + self.rank < len(ids) else None
            result = None if mine is None else (mine, evaluate_stitch(self.net, mine, loader, self.device,
                                                                      self.autocast)[0])
            results = [result]
            if self._distributed():
                results = [None] * self.world
                torch.distributed.all_gather_object(results, result)
            out.update(r for r in results if r is not None)
        return out

    def _progress(self, what: str, done: int, total: int, seconds: float, batch: int) -> str:
        rate = done / max(seconds, 1e-9)
        return (f"{what}: step {done}/{total}  {rate * batch * self.world:,.0f} img/s  "
                f"ETA {_duration((total - done) / max(rate, 1e-9))}")

    # -- evaluation ------------------------------------------------------------------------------

    def measure_latency(self) -> dict[str, float]:
        """Per-stitch latency, on rank 0 alone, one stitch after another: concurrent timing on
        shared cores would measure the contention, not the stitch. Other ranks wait."""
        if self.rank == 0:
            from snnet.latency import measure_space_latency

            t0 = time.perf_counter()
            shape = self.space.profiles[0].input_size
            measured = measure_space_latency(self.net, [s.stitch_id for s in self.space], shape,
                                             batch_size=self.config.latency_batch_size, device=self.device)
            self.latency = {str(k): v for k, v in measured.items()}
            self.log.info(f"measured latency of {len(self.latency)} stitches at batch "
                          f"{self.config.latency_batch_size} on {device_name(self.device)} in "
                          f"{time.perf_counter() - t0:.1f}s")
        self._barrier()
        return self.latency

    def _distributed(self) -> bool:
        import torch.distributed as dist

        return self.world > 1 and dist.is_available() and dist.is_initialized()

    def _barrier(self) -> None:
        if self._distributed():
            torch.distributed.barrier()

    def results(self) -> dict[int, list[float]]:
        """``{stitch_id: [top1, top5]}`` on the evaluation split, of the stitches evaluated so far."""
        return {k: list(v[:2]) for k, v in sorted(self.evaluated.items())}

    def selection_results(self) -> dict[int, float]:
        """``{stitch_id: top1}`` on the selection split (empty without one)."""
        return {k: v[2] for k, v in sorted(self.evaluated.items()) if len(v) > 2}

    def final_metrics(self) -> dict[str, Any]:
        """The last report: ``results`` (evaluation split: ``{id: [top1, top5]}``), ``results_selection``
        (``{id: top1}`` on the selection split, empty without one), ``hv_selection`` (its hypervolume with
        :func:`orchestrator.catalog.objectives.hypervolume`; ``None`` without one), ``flops_ref``, ``train_images``
        and ``selection_images`` (this run's counts), R^2, the init scores, steps, latency and device."""
        from orchestrator.catalog.objectives import hypervolume

        selection = self.selection_results()
        hv = None
        if self.selection_ds is not None and len(selection) == len(self.space):
            flops = {s.stitch_id: s.flops for s in self.space}
            hv = float(hypervolume([(flops[k], v) for k, v in selection.items()], self.flops_ref()))
        return {"phase": "eval", "results": {str(k): v for k, v in self.results().items()},
                "results_selection": {str(k): v for k, v in selection.items()}, "hv_selection": hv,
                "flops_ref": self.flops_ref(), "train_images": _size(self.train_ds),
                "selection_images": _size(self.selection_ds) if self.selection_ds is not None else 0,
                "r2": self.r2, "init_scores": self.init_scores, "early_hv_history": dict(self.early_history),
                "anchors_before": dict(self.anchors_before), "eval_images": _size(self.val_ds) or None,
                "steps": self.step, "latency": self.latency,
                "device": device_name(self.device)}

    def _evaluate_round(self, todo: list[int], start: int) -> None:
        """Rank ``r`` evaluates ``todo[start + r]``; every rank learns every result."""
        mine = todo[start + self.rank] if start + self.rank < len(todo) else None
        result = None
        if mine is not None:
            top1, top5, _ = evaluate_stitch(self.net, mine, self.val_loader, self.device, self.autocast)
            result = (mine, [top1, top5])
            if self.selection_loader is not None:
                result[1].append(evaluate_stitch(self.net, mine, self.selection_loader, self.device, self.autocast)[0])
        results = [result]
        if self._distributed():
            results = [None] * self.world
            torch.distributed.all_gather_object(results, result)
        for r in results:
            if r is not None:
                self.evaluated[r[0]] = r[1]

    def _snapshot_due(self, last: float) -> bool:
        """All ranks agree whether a checkpoint is due: rank 0's clock decides."""
        due = torch.tensor([time.monotonic() - last >= self.config.eval_checkpoint_seconds])
        if self._distributed():
            torch.distributed.broadcast(due, src=0)
        return bool(due.item())

    def evaluate_all(self) -> dict[int, list[float]]:
        """Evaluate every stitch not evaluated yet, checkpointing progress; the final report
        carries all results. Returns ``{stitch_id: [top1, top5]}``."""
        self.net.eval()
        if self.config.measure_latency:
            self.measure_latency()
        space = self.space
        todo = [s.stitch_id for s in space if s.stitch_id not in self.evaluated]
        self.log.info(f"evaluating {len(todo)} of {len(space)} stitches on {len(self.val_ds)} images over "
                      f"{self.world} worker(s)" + (f", and on {len(self.selection_ds)} selection images"
                                                   if self.selection_ds is not None else ""))
        last_snapshot = time.monotonic()
        for start in range(0, len(todo), self.world):
            self._evaluate_round(todo, start)
            done = len(self.evaluated) == len(space)
            due = self._snapshot_due(last_snapshot)
            if due:
                self.log.info(f"evaluated {len(self.evaluated)}/{len(space)} stitches")
            if done or due:
                self.save(self.final_metrics() if done else {"phase": "eval"}, with_optimizer=False)
                last_snapshot = time.monotonic()
        if not todo:  # resumed after everything was evaluated: report the results once more
            self.save(self.final_metrics(), with_optimizer=False)
        return self.results()

    # -- all of it -------------------------------------------------------------------------------

    def run(self, state: TrainState | None = None) -> dict[int, list[float]]:
        """Set up, initialise or resume from ``state``, train the remaining epochs, evaluate."""
        self.setup(load_weights=state is None)  # a resumed run's weights all come from ``state``
        if state is None:
            self.initialise()
            self.measure_anchors()
        self._apply_mode()
        self._build_optimizer()
        if state is not None:
            self.load(state)
        while self.epoch < self.config.epochs:
            self.train_epoch()
        return self.evaluate_all()
