"""Scoring and evaluating stitches over the workers: the evaluating half of the training recipe.

:class:`RecipeEvaluation` is a base class of :class:`~orchestrator.train.recipe.SupernetRecipe`
and works on the state the recipe builds (its supernet, loaders, rank and world). Every method
that evaluates spreads the stitches over the ranks (rank ``r`` takes every ``W``-th) and gathers
the results, so every rank learns every result:

- :meth:`~RecipeEvaluation.score_init`: init scores (:func:`snnet.scores.score_stitches`) on
  ``score_images`` fixed images, before training;
- :meth:`~RecipeEvaluation.early_front`: the early front's hypervolume after each epoch (the fixed
  stitches of :func:`orchestrator.data.fidelity.stitch_subset` on ``early_images`` fixed images);
- :meth:`~RecipeEvaluation.evaluate_all`: every stitch on the evaluation and selection splits,
  checkpointed as it goes, and the final report (:meth:`~RecipeEvaluation.final_metrics`).

A pruned run (``prune_score``) trains only the stitches of :attr:`~RecipeEvaluation.kept`, the anchors and
the best-scored part of the space (:func:`snnet.scores.keep_best`); the early front and the final evaluation
take only those, and the final report lists the others as ``pruned``.
"""

from __future__ import annotations

import logging
import platform
import time
from itertools import islice
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Subset

from orchestrator.catalog.objectives import hypervolume
from orchestrator.data import Unreadable, make_loader
from orchestrator.data.fidelity import fixed_images, stitch_subset
from orchestrator.train.config import TrainConfig
from snnet import StitchedSupernet, StitchSpace
from snnet.latency import measure_space_latency
from snnet.scores import score_stitches, stitch_r2

__all__ = ["RecipeEvaluation", "evaluate_stitch", "device_name", "SCORED_IMAGES"]

#: Images the init scores use under ``scored`` sampling when ``score_images`` is 0.
SCORED_IMAGES = 256


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
    return f"cpu ({platform.processor() or platform.machine()})"


def _unreadable(item: Any) -> bool:
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


class RecipeEvaluation:
    """The evaluating half of :class:`~orchestrator.train.recipe.SupernetRecipe` (module docstring):
    the attributes below are the recipe's, set by its constructor and :meth:`setup`."""

    config: TrainConfig
    space: StitchSpace
    net: StitchedSupernet
    rank: int
    world: int
    device: torch.device
    log: logging.LoggerAdapter
    #: The stitch ids a pruned run trains and evaluates (the anchors and the best-scored part); None: all.
    kept: list[int] | None = None

    def score_images(self) -> int:
        """How many images the init scores use: ``score_images``, else 256 for ``scored`` sampling or a
        pruned run (``prune_score``), which need them, and none otherwise."""
        wanted = self.config.sampling == "scored" or self.config.prune_score is not None
        return self.config.score_images or (SCORED_IMAGES if wanted else 0)

    def trained_ids(self) -> list[int]:
        """The ids of the stitches this run trains and evaluates, in space order: all, or :attr:`kept`."""
        ids = [s.stitch_id for s in self.space]
        if self.kept is None:
            return ids
        kept = set(self.kept)
        return [i for i in ids if i in kept]

    def pruned_ids(self) -> list[int]:
        """The ids of the stitches a pruned run leaves untrained (none without ``prune_score``)."""
        trained = set(self.trained_ids())
        return [s.stitch_id for s in self.space if s.stitch_id not in trained]

    def score_init(self) -> dict[str, dict[str, Any]]:
        """Score every stitch at init (:func:`snnet.scores.score_stitches`) on ``score_images`` fixed
        images of the selection split (of the evaluation split when there is none), spread over the ranks
        (rank ``r`` takes every ``W``-th stitch) and gathered; each stitch's LS R^2 beside them."""
        t0 = time.perf_counter()
        images = self.selection_ds if self.selection_ds is not None else self.val_ds
        if isinstance(images, torch.utils.data.IterableDataset):  # shards: their first readable images
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
            items = list(islice(iter(images), c.early_images * 2))
            self.whole_skips.report(item.name for item in items if _unreadable(item))
            images = _Items([item for item in items if not _unreadable(item)][: c.early_images])
        else:
            images = Subset(images, fixed_images(len(images), c.early_images, c.seed).tolist())
        self.early_loader = make_loader(images, c.eval_batch_size, shuffle=False, seed=c.seed,
                                        skip_log=self.whole_skips)

    def early_front(self) -> dict[int, float]:
        """Score the early front (:meth:`_setup_early_front`) and set :attr:`early_hv`; returns
        ``{stitch_id: top1}`` (empty when ``early_stitches`` is 0). Every rank takes part."""
        trained = set(self.trained_ids())
        ids = [i for i in self.early_ids if i in trained]  # a pruned run: its trained ones
        if not ids or self.early_loader is None:
            return {}
        was_training = self.net.training
        self.net.eval()
        scores = self._evaluate_ids(ids, self.early_loader)
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

    def measure_latency(self) -> dict[str, float]:
        """Per-stitch latency, on rank 0 alone, one stitch after another: concurrent timing on
        shared cores would measure the contention, not the stitch. Other ranks wait."""
        if self.rank == 0:
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
        and ``selection_images`` (this run's counts), R^2, the init scores, steps, latency, device and ``pruned`` (the
        ids a pruned run left untrained: no top-1, no hypervolume share)."""
        selection = self.selection_results()
        hv = None
        if self.selection_ds is not None and len(selection) == len(self.trained_ids()):
            flops = {s.stitch_id: s.flops for s in self.space}
            hv = float(hypervolume([(flops[k], v) for k, v in selection.items()], self.flops_ref()))
        return {"phase": "eval", "results": {str(k): v for k, v in self.results().items()},
                "results_selection": {str(k): v for k, v in selection.items()}, "hv_selection": hv,
                "flops_ref": self.flops_ref(), "train_images": _size(self.train_ds),
                "selection_images": _size(self.selection_ds) if self.selection_ds is not None else 0,
                "r2": self.r2, "init_scores": self.init_scores, "early_hv_history": dict(self.early_history),
                "anchors_before": dict(self.anchors_before), "eval_images": _size(self.val_ds) or None,
                "steps": self.step, "latency": self.latency, "pruned": self.pruned_ids(),
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
        """Evaluate every trained stitch not evaluated yet, checkpointing progress; the final report
        carries all results. Returns ``{stitch_id: [top1, top5]}``."""
        self.net.eval()
        if self.config.measure_latency:
            self.measure_latency()
        trained = self.trained_ids()
        todo = [i for i in trained if i not in self.evaluated]
        self.log.info(f"evaluating {len(todo)} of {len(trained)} stitches on {len(self.val_ds)} images over "
                      f"{self.world} worker(s)" + (f", and on {len(self.selection_ds)} selection images"
                                                   if self.selection_ds is not None else ""))
        last_snapshot = time.monotonic()
        for start in range(0, len(todo), self.world):
            self._evaluate_round(todo, start)
            done = len(self.evaluated) == len(trained)
            due = self._snapshot_due(last_snapshot)
            if due:
                self.log.info(f"evaluated {len(self.evaluated)}/{len(trained)} stitches")
            if done or due:
                self.save(self.final_metrics() if done else {"phase": "eval"}, with_optimizer=False)
                last_snapshot = time.monotonic()
        if not todo:  # resumed after everything was evaluated: report the results once more
            self.save(self.final_metrics(), with_optimizer=False)
        return self.results()
