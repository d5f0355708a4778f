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
   ``no_sync`` (:mod:`orchestrator.train.steps`). The recipe's timm parts (:mod:`~orchestrator.train.augment`,
   :mod:`~orchestrator.train.optim`, :mod:`~orchestrator.train.teacher`): mixup/cutmix, label
   smoothing, random erasing, repeated augmentation, drop path; AdamW or SGD with one or two
   (batch-scaled) learning rates, warmup plus cosine decay to ``min_lr``, optional gradient
   clipping, hard distillation from a teacher; bf16 autocast on GPU.
4. :meth:`~SupernetRecipe.evaluate_all`: every stitch on the evaluation split and on the
   selection split, spread over the workers (rank ``r`` takes every ``W``-th unfinished
   stitch), gathered each round (:mod:`orchestrator.train.evaluate`: the evaluating half of the recipe).

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

:meth:`~SupernetRecipe.save` reports a :class:`~orchestrator.train.state.TrainState` (the checkpoint schema) after every
epoch, every ``checkpoint_every_steps`` steps and now and then during evaluation;
:meth:`~SupernetRecipe.load` resumes from one, skipping finished steps and stitches.
Progress goes to the ``snnet.train`` logger, rank 0 only.
"""


from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from timm.utils import dispatch_clip_grad
from torch import nn

from orchestrator import data  # its functions by module: tests replace data.get_datasets to count the opens
from orchestrator.cli import plural
from orchestrator.data import demo_anchors  # noqa: F401 - importing it registers the demo anchors with timm here
from orchestrator.train.augment import anchor_options, make_batch_erasing, make_criterion, make_mixup, transform_options
from orchestrator.train.config import TrainConfig
from orchestrator.train.evaluate import RecipeEvaluation
from orchestrator.train.optim import group_lambdas, make_optimizer
from orchestrator.train.speed import compile_blocks, step_context
from orchestrator.train.state import TrainCallback, TrainState, Worker, training_logger
from orchestrator.train.steps import SupernetStep, initialise, ls_line, step_loss
from orchestrator.train.stitch_losses import StitchLosses, all_reduce_sum
from orchestrator.train.summary import pruned_line
from orchestrator.train.teacher import create_teacher
from snnet import StitchedSupernet, StitchSpace, create_anchor
from snnet.sampling import balance_report, make_rule, rule_class
from snnet.scores import keep_best

__all__ = ["SupernetRecipe", "build_worker_supernet"]


#: A long epoch logs its progress (steps, img/s, ETA) this often, in seconds.
PROGRESS_SECONDS = 120.0


#: Epoch lines per run, about: the demo's 10 epochs print 5, a 50-epoch run 5-6 (the last always).
EPOCH_LINES = 5



def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"



def build_worker_supernet(config: TrainConfig, space: StitchSpace, device: torch.device, *,
                          load_weights: bool = True) -> StitchedSupernet:
    """The run's supernet on ``device``: each anchor built once, with its weights unless
    ``load_weights`` is False (a resumed run, whose checkpoint holds every weight)."""
    specs = {s.name: s for s in config.anchors}
    extra = {"img_size": config.image_size} if config.image_size else {}
    extra.update(anchor_options(config))  # drop_path_rate, when set
    anchors = [create_anchor(specs[name], load_weights=load_weights, **extra) for name in space.anchor_names]
    return StitchedSupernet(space, anchors).to(device)



class SupernetRecipe(RecipeEvaluation):
    """Joint training and evaluation of one stitched supernet on one worker (module docstring).

    Args:
        config: the run's settings.
        space: its stitch space (the driver built and checked it).
        worker: this worker's rank, device and reporting; default one CPU worker, no reports.
        callbacks: :class:`~orchestrator.train.state.TrainCallback` hooks.
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
        self.losses: StitchLosses | None = None  # per-stitch training losses, for a rule that learns from them
        self._loss_state: dict[str, Any] = {}  # ... as a checkpoint held them
        self.resumed = False
        self.model: nn.Module | None = None  # the (DDP-wrapped) step module, made when training starts
        self.teacher: nn.Module | None = None  # DeiT-style hard-label teacher, made when training starts

    def autocast(self) -> contextlib.AbstractContextManager:
        """Where a forward runs: bf16 autocast on GPU, within the ``gpu_speed`` measures' context."""
        stack = contextlib.ExitStack()
        stack.enter_context(step_context(self.config.speed_measures()))
        if self.device.type == "cuda":
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        return stack

    # -- building ------------------------------------------------------------------------------

    def setup(self, *, load_weights: bool = True) -> None:
        """Build the supernet (once), the data loaders and the sampling rule. ``load_weights=False``
        leaves the anchors' weights unread (a resume: :meth:`load` replaces every one of them)."""
        c = self.config
        self.net = build_worker_supernet(c, self.space, self.device, load_weights=load_weights)
        full_train, self.val_ds = self._datasets or data.get_datasets(c.dataset, c.image_size, **transform_options(c))
        split = data.split_training_set(full_train, selection_fraction=c.selection_fraction,
                                        data_fraction=c.data_fraction, seed=c.seed,
                                        eval_transform=getattr(self.val_ds, "transform", None))
        if split.note:
            self.log.info(split.note)
        self.train_ds, self.selection_ds = split.train, split.selection
        # One log for every reader (LS images, training, early front, selection, evaluation): each unreadable
        # file is named once. Every rank reads the evaluation sets whole, so rank 0 alone names theirs.
        self.skips = data.SkipLog()
        self.whole_skips = self.skips if self.rank == 0 else data.SkipLog(None)
        self.selection_loader = None if self.selection_ds is None else data.make_loader(
            self.selection_ds, c.eval_batch_size, shuffle=False, seed=c.seed, skip_log=self.whole_skips)
        self._setup_early_front()
        workers = c.data_workers()
        self.loader = data.make_loader(self.train_ds, c.batch_size, rank=self.rank, world_size=self.world,
                                       shuffle=True, seed=c.seed, drop_last=True, repeats=c.aug_repeats,
                                       num_workers=workers, skip_log=self.skips)
        self.val_loader = data.make_loader(self.val_ds, c.eval_batch_size, shuffle=False, seed=c.seed,
                                           num_workers=workers, skip_log=self.whole_skips)
        self.steps_per_epoch = len(self.loader)
        self._make_rule()
        # timm's mixup/cutmix and label loss; random erasing on the batch where no timm transform erases
        self.mixup = make_mixup(c, self.net.anchors[-1].num_classes)
        self.criterion = make_criterion(c)
        self.erase = None if getattr(full_train, "transform", None) is not None else make_batch_erasing(c, self.device)

    def _make_rule(self) -> None:
        """The seeded sampling rule; ``scored`` draws by the init scores once they exist, and a pruned run
        (``prune_score``) draws only from its kept stitches (:meth:`_prune`)."""
        c = self.config
        self._prune()
        ids = self.trained_ids()
        options = dict(c.sampling_options)
        if c.sampling == "scored" and self.init_scores:
            name = rule_class("scored").score_of(**options)
            options["scores"] = [self.init_scores.get(str(i), {}).get(name) for i in ids]
        self.rule = make_rule(c.sampling, [self.space[i].flops for i in ids], seed=c.seed,
                              stitch_ids=ids if self.kept is not None else None, **options)
        self.losses = None
        if self.rule.learns_from_losses:  # rescored by the losses of the finished epochs (none on a fresh run)
            self.losses = StitchLosses(ids)
            self.losses.load(self._loss_state)
            if self.losses.seen():
                self.rule.rescore(self.losses.means(), higher_is_better=False)

    def _prune(self) -> None:
        """Keep the anchors and the best ``prune_keep`` of the stitched stitches by ``prune_score``, once the init
        scores exist (after init, or read back from a checkpoint: a resumed run recomputes the same set from the
        same scores). Every rank holds the same gathered scores, so every rank keeps the same stitches."""
        c = self.config
        if c.prune_score is None or not self.init_scores:
            self.kept = None
            return
        scores = {s.stitch_id: self.init_scores.get(str(s.stitch_id), {}).get(c.prune_score) for s in self.space}
        kept = keep_best(self.space, scores, c.prune_score, c.prune_keep)
        if kept != self.kept:
            self.kept = kept
            self.log.info(pruned_line(len(self.pruned_ids()), sum(not s.is_anchor for s in self.space),
                                      c.prune_score, c.prune_keep))

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
            stitch_losses=self.losses.state() if self.losses is not None else {},
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
        self._loss_state = dict(state.stitch_losses)
        self._make_rule()
        self.resumed = True
        self.log.info(f"resuming from checkpoint: epoch {self.epoch}, step {self.step}, "
                      f"{len(self.evaluated)} stitches evaluated")

    # -- training --------------------------------------------------------------------------------

    def _start_training(self) -> None:
        c, space = self.config, self.space
        if c.teacher is not None:
            self.teacher = create_teacher(c.teacher, self.device)
        measures = c.speed_measures()
        compile_blocks(self.net, measures)  # in place, before DDP wraps the step module
        step_module = SupernetStep(self.net)
        self.model = self.worker.wrap(step_module) if self.world > 1 else step_module
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]
        self.log.info(f"training {len(self.trained_ids())} stitches for {plural(c.epochs, 'epoch')} x "
                      f"{self.steps_per_epoch} steps on {self.world} worker(s), sampling '{c.sampling}', "
                      f"mode '{c.mode}'" + (f", speed measures: {', '.join(measures)}" if measures else ""))
        if self.rank == 0:
            sizes = sorted({self.world, 8, 64})
            # 50 steps keep each figure within about 0.03 of a 2000-step estimate, in half a second
            report = balance_report([space[i].flops for i in self.trained_ids()], world_sizes=sizes, seed=c.seed,
                                    steps=50)
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
            dispatch_clip_grad(self.trainable, self.config.grad_clip, mode=self.config.grad_clip_mode)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        value = loss.item()
        if self.losses is not None:
            self.losses.add(ids, value)
        return value

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
                if self.losses is not None:  # the checkpoint holds every rank's losses of the epoch so far
                    self.losses.gather(all_reduce_sum(self.device, self.world))
                self.save({"loss": loss_sum / seen, "phase": "train"})
        self.epoch += 1
        if self.losses is not None:
            self.rule.rescore(self.losses.end_epoch(all_reduce_sum(self.device, self.world)), higher_is_better=False)
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

    def _progress(self, what: str, done: int, total: int, seconds: float, batch: int) -> str:
        rate = done / max(seconds, 1e-9)
        return (f"{what}: step {done}/{total}  {rate * batch * self.world:,.0f} img/s  "
                f"ETA {_duration((total - done) / max(rate, 1e-9))}")

    # -- evaluation ------------------------------------------------------------------------------

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
