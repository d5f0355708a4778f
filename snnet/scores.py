"""Scores of every stitch at initialisation, before any joint training.

After the stitching layers are initialised (least squares, or Kaiming for comparison) a stitch
can be judged without training it, on a few hundred held-out images, against its own back
anchor (the last anchor of its path, which runs the final blocks and the head):

``ls_r2``
    The least-squares fit of its stitching layers, ``R^2 = 1 - ||A M - B||^2 / ||B||^2``
    (SN-Net's Definition 6.1, Pan, Cai and Zhuang, CVPR 2023, arXiv 2302.06586); the worst
    layer of the path. :meth:`StitchedSupernet.solve_least_squares` computes it per layer and
    :func:`stitch_r2` takes each stitch's minimum (1.0 for an anchor alone).
``cka``
    Linear CKA (Kornblith et al., ICML 2019, "Similarity of Neural Network Representations
    Revisited") between the stitch's activation after the back anchor's last block (what its
    head reads) and the back anchor's own activation there, for the same images. Each image's
    whole activation (tokens x channels, or channels x height x width) is one row, so the
    n x n Gram matrices of n images carry it: ``CKA = <HKH, HLH> / (||HKH|| ||HLH||)``. 1 for
    the anchor itself and for any stitch whose activation is a scaled rotation of it.
``kl``
    ``KL(back || stitch)``: the back anchor's class distribution against the stitch's, in nats,
    averaged over the images (the direction of distillation from the back anchor). 0 for the
    anchor itself; lower is better.
``init_top1``
    The stitch's own top-1 (percent) on the labelled images; ``None`` without labels.

:func:`score_stitches` computes ``cka``, ``kl`` and ``init_top1`` for all or some stitches; each
back anchor runs once. No training, no randomness: the same weights and images give the same
scores. :func:`keep_best` keeps the best-scored part of a space (a run's ``prune_score`` and
``prune_keep``: only those stitches and the anchors are trained). Whether these scores predict a
stitch's accuracy after joint training is measured by ``python -m benchmarks stitch_ranking``
(``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from ._stitch import Stitch
from .sampling import ScoredRule
from .supernet import StitchedSupernet, run_path

__all__ = ["HIGHER_IS_BETTER", "SCORES", "StitchScore", "keep_best", "linear_cka", "score_stitches", "stitch_r2"]

#: Orientation of each score: ``kl`` is a divergence (lower is better), the others higher.
HIGHER_IS_BETTER: dict[str, bool] = dict(ScoredRule.SCORES)
#: The score names, as catalog columns and as the ``scored`` sampling rule's ``score`` option.
SCORES: tuple[str, ...] = tuple(HIGHER_IS_BETTER)


@dataclass(frozen=True)
class StitchScore:
    """The init scores of one stitch (module docstring); ``images`` is how many they saw."""

    stitch_id: int
    cka: float
    kl: float
    init_top1: float | None
    images: int

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain values; an undefined score (``nan``: CKA of constant activations) is ``None``."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}


def _centred(gram: torch.Tensor) -> torch.Tensor:
    return gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same ``n`` examples (one row each, any widths).

    ``nan`` when either is constant over the examples (CKA is undefined there).
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs the same examples in both: got {x.shape[0]} and {y.shape[0]} rows")
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    return _cka_of_grams(_centred(x @ x.T), _centred(y @ y.T))


def _cka_of_grams(k: torch.Tensor, l_: torch.Tensor) -> float:
    denom = math.sqrt(float((k * k).sum()) * float((l_ * l_).sum()))
    return float((k * l_).sum()) / denom if denom > 0 else math.nan


def stitch_r2(stitches: Iterable[Stitch], r2: Mapping[str, float]) -> dict[int, float | None]:
    """Each stitch's LS R^2: the minimum over its layers' (1.0 for an anchor alone, ``None`` when
    none of its layers has one, as after Kaiming init)."""
    out: dict[int, float | None] = {}
    for s in stitches:
        values = [r2[k] for k in s.layers if k in r2]
        out[s.stitch_id] = 1.0 if s.is_anchor else (min(values) if values else None)
    return out


def keep_best(stitches: Iterable[Stitch], scores: Mapping[int, float | None], score: str,
              keep: float) -> list[int]:
    """The ids of the anchors and of the best ``keep`` fraction of the stitched stitches by ``score``.

    ``scores`` maps a stitch id to its ``score`` (higher is better, lower for ``kl``: :data:`HIGHER_IS_BETTER`).
    Of the ``n`` stitched stitches ``ceil(keep * n)`` are kept (at least one; ``keep`` 1 keeps all); ties go to
    the lower id, and a stitch without a finite score ranks after every scored one. A pure function of its
    arguments, so every rank (and a resumed run, from the scores in its checkpoint) keeps the same ones.
    Returns the kept ids in increasing order.
    """
    if score not in HIGHER_IS_BETTER:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if not (isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 < keep <= 1):
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    stitches = list(stitches)
    stitched = [s.stitch_id for s in stitches if not s.is_anchor]
    sign = -1.0 if HIGHER_IS_BETTER[score] else 1.0

    def rank(i: int) -> tuple[bool, float, int]:
        value = scores.get(i)
        known = value is not None and math.isfinite(value)
        return (not known, sign * value if known else 0.0, i)

    count = max(1, math.ceil(round(keep * len(stitched), 9))) if stitched else 0
    best = sorted(stitched, key=rank)[:count]
    return sorted([s.stitch_id for s in stitches if s.is_anchor] + best)


def _split(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


@torch.no_grad()
def _features_and_logits(net: StitchedSupernet, stitch: Stitch, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation the head reads (one flattened row per image, float64) and the logits."""
    body, head = stitch.path[:-1], stitch.path[-1:]
    feats, logits = [], []
    for x in batches:
        h = run_path(body, x, net.anchors.__getitem__, net.stitch_layers.__getitem__)
        logits.append(run_path(head, h, net.anchors.__getitem__, net.stitch_layers.__getitem__).float())
        feats.append(h.reshape(h.shape[0], -1).double())
    return torch.cat(feats), torch.cat(logits)


@torch.no_grad()
def score_stitches(
    net: StitchedSupernet,
    batches: Iterable,
    stitch_ids: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> dict[int, StitchScore]:
    """``cka``, ``kl`` and ``init_top1`` of each stitch of ``stitch_ids`` (default: all) on ``batches``.

    ``batches`` yields images or ``(images, labels)``; it is read once and held in memory (a few
    hundred images). The network runs in eval mode and is left in the mode it came in.
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    xs, ys = [], []
    for batch in batches:
        x, y = _split(batch)
        xs.append(x.to(device))
        ys.append(None if y is None else torch.as_tensor(y).to(device))
    if not xs:
        raise ValueError("score_stitches needs at least one batch of images, got none")
    labels = None if any(y is None for y in ys) else torch.cat(ys)
    n = sum(x.shape[0] for x in xs)
    space = net.space
    ids = list(range(len(space))) if stitch_ids is None else [int(i) for i in stitch_ids]
    own = {s.anchors[0]: s for s in space if s.is_anchor}
    was_training = net.training
    net.eval()
    try:
        backs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # back anchor -> (centred Gram, log-probs)
        out = {}
        for i in ids:
            stitch = space[i]
            back = stitch.anchors[-1]
            feats, logits = _features_and_logits(net, stitch, xs)
            gram = _centred(feats @ feats.T)
            if back not in backs:
                if stitch.is_anchor:
                    ref_gram, ref_logits = gram, logits
                else:
                    ref_feats, ref_logits = _features_and_logits(net, own[back], xs)
                    ref_gram = _centred(ref_feats @ ref_feats.T)
                backs[back] = (ref_gram, ref_logits.log_softmax(-1))
            ref_gram, ref_logp = backs[back]
            logp = logits.log_softmax(-1)
            kl = float((ref_logp.exp() * (ref_logp - logp)).sum(-1).mean())
            top1 = None if labels is None else 100.0 * float((logits.argmax(-1) == labels).float().mean())
            out[i] = StitchScore(i, _cka_of_grams(gram, ref_gram), max(kl, 0.0), top1, n)
    finally:
        net.train(was_training)
    return out
