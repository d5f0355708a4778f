"""Seeded stitch sampling rules for joint training of a stitched supernet under DDP.

Every training step, each DDP rank trains one or more stitches of the space. A rule picks
them from the stitches' FLOPs alone, and a draw is a pure function of
``(seed, step, rank, world_size)``: there is no RNG state to carry, so a run is reproducible
on any number of workers and after a restart from a checkpoint at any step.

``uniform``
    Each rank draws one stitch uniformly at random, independently of the other ranks. This
    is what SN-Net's released code does (Pan, Cai and Zhuang, "Stitchable Neural Networks",
    CVPR 2023, arXiv 2302.06586).
``sandwich``
    Each rank trains the largest-FLOPs stitch, the smallest-FLOPs stitch and ``num_random``
    (default 2) others drawn uniformly, the largest first: the training loop accumulates
    gradients over them and distils the others from the largest's detached output (the
    sandwich rule with in-place distillation of slimmable networks / BigNAS, as the design
    brief asks).
``flops-bucket``
    SN-Netv2's resource-constrained sampling (Pan et al., "Stitched ViTs are Flexible Vision
    Backbones", arXiv 2307.00154): split ``[min, max]`` FLOPs into ``num_buckets`` (default
    10) equal-width intervals, skip the empty ones, pick a bucket uniformly and a stitch
    uniformly inside it; each rank independently. Cheap and expensive stitches get equal
    share even where the space holds many more of one kind.
``balanced``
    Ours. All ranks share one bucket of stitches whose FLOPs are within a relative
    ``tolerance`` (default 0.05) of each other, chosen from ``(seed, step)`` with probability
    proportional to its size; inside it, a permutation seeded by ``(seed, step)`` gives rank
    ``r`` the element ``r mod len(bucket)``. Ranks of one step then do about the same work, so
    DDP's all-reduce does not wait for the slowest rank, while each rank's marginal is still
    exactly ``1/N`` for every stitch.
``scored``
    Ours (issue 30). Spends steps where the init scores (:mod:`snnet.scores`: ``cka`` by
    default, or ``kl``, ``ls_r2``, ``init_top1``) say a stitch is promising, but only among
    stitches of about the same cost: FLOPs buckets of relative ``tolerance`` (default 0.1) keep
    ``balanced``'s shares, a bucket of ``m`` of the ``N`` stitches is trained ``m/N`` of the
    steps. Inside a bucket stitch ``i`` gets ``floor / m + (1 - floor) * softmax(z / temperature)_i``,
    ``z`` the score standardised over the space (negated for ``kl``), so every stitch keeps at
    least ``floor / N`` of the steps and none is starved (``floor`` 1 is ``balanced``'s marginal).
    All ranks share the step's bucket and one offset ``u``; rank ``r`` takes the stitch at
    ``(u + r / W) mod 1`` of the bucket's cumulative probabilities (systematic sampling): each
    rank's marginal is exactly the probability above, and ranks spread over the bucket in
    proportion to it. Without scores (``scores=None``) it is ``balanced`` with systematic
    spreading. The training recipe passes ``scores`` from its init scores.

    ``focus="front"`` (with ``score`` ``init_top1`` and ``temperature`` 0.1 unless given; ``bucket``'s
    are ``cka`` and 1.0) spends the steps on the stitches that define the front instead: stitch ``i``
    gets ``floor / N + (1 - floor) * w_i / sum(w)`` with ``w = exp(-gap / temperature)``, ``gap`` its
    distance (in standardised score) to the best score among the stitches that cost no more
    (:func:`front_gaps`: 0 on the front). The step's bucket is drawn with its stitches' share of
    these probabilities, and ranks still share it. ``update="loss"`` (``learns_from_losses``) asks
    the training recipe to :meth:`ScoredRule.rescore` the rule after every epoch by each stitch's
    training loss (lower is better; summed over the ranks, older epochs' weight halved, a stitch
    not trained yet at the mean): the front of the run so far replaces the front at
    initialisation. Draws stay a pure function of ``(seed, step, rank)`` and the scores, which a
    checkpoint holds.

:func:`make_rule` builds a rule by name (:func:`rule_class` finds its class), over a whole space or, with
``stitch_ids``, over part of one (a pruned run trains only its kept stitches);
:meth:`SamplingRule.expected_balance` and
:func:`balance_report` give the expected mean-to-max ratio of per-rank work at a step (1.0:
no rank waits; on the DeiT-Ti/S/B space at 8 ranks ``uniform`` gets about 0.49).

What the training loss and the cost model need from a rule lives on the rule, so neither
branches on its name: :attr:`SamplingRule.distils_from_first` (the later outputs of a step
learn from the first one's detached prediction), :meth:`SamplingRule.stitches_per_step`
(forward passes per rank and step, for cost estimates) and
:meth:`SamplingRule.default_options`.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import math
import operator
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ._errors import SNNetError

__all__ = [
    "RULES",
    "BalancedRule",
    "FlopsBucketRule",
    "SamplingRule",
    "SandwichRule",
    "ScoredRule",
    "UniformRule",
    "balance_report",
    "flops_buckets",
    "front_gaps",
    "make_rule",
    "rule_class",
]

_WORD = 1 << 32
_PER_RANK, _SHARED = 0, 1  # stream tags: one rank's draw / a draw shared by all ranks of a step


def _int(value, what: str, low: int = 0, high: int = 1 << 64) -> int:
    """``value`` as an int in ``[low, high)`` or an :class:`SNNetError` saying what came."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise SNNetError(f"{what} must be an integer, got {value!r}.") from None
    if not low <= number < high:
        bound = f">= {low}" if high == 1 << 64 else f"in [{low}, {high})"
        raise SNNetError(f"{what} must be an integer {bound}, got {number}.")
    return number


def _rng(seed: int, tag: int, step: int, rank: int) -> np.random.Generator:
    """A generator keyed by ``(seed, tag, step, rank)``, each encoded as two 32-bit words.

    A fixed-length key keeps the map injective: ``SeedSequence([a, b])`` and
    ``SeedSequence([a, b, 0])`` are the same stream, and a large int spans several words.
    """
    words = [w for v in (seed, tag, step, rank) for w in (v % _WORD, v // _WORD)]
    return np.random.default_rng(np.random.SeedSequence(words))


def _check_flops(flops: Sequence[int]) -> tuple[int, ...]:
    try:
        values = list(flops)
    except TypeError:
        raise SNNetError("flops must be a sequence of non-negative integers (one per stitch), "
                         f"got {flops!r}.") from None
    if not values:
        raise SNNetError("flops must list at least one stitch's FLOPs (a non-empty sequence), got an empty one.")
    return tuple(_int(f, f"flops[{i}]") for i, f in enumerate(values))


def flops_buckets(
    flops: Sequence[int], num_buckets: int | None = None, tolerance: float = 0.05
) -> list[list[int]]:
    """Group stitch ids by FLOPs; buckets ordered by FLOPs, ids inside by ``(flops, id)``.

    With ``num_buckets``: SN-Netv2's equal-width intervals of ``[min, max]`` (the maximum falls
    in the last one), empty intervals skipped. Without: greedy over sorted FLOPs, opening a new
    bucket when a stitch exceeds its bucket's smallest by more than ``tolerance`` (relative);
    this gives the fewest buckets whose max/min ratio is at most ``1 + tolerance``.
    """
    values = _check_flops(flops)
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    if num_buckets is not None:
        num_buckets = _int(num_buckets, "num_buckets", low=1)
        lo, span = values[order[0]], values[order[-1]] - values[order[0]]
        intervals: list[list[int]] = [[] for _ in range(num_buckets)]
        for i in order:
            at = (values[i] - lo) * num_buckets // span if span else 0
            intervals[min(at, num_buckets - 1)].append(i)
        return [b for b in intervals if b]
    if not (isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool)
            and math.isfinite(tolerance) and tolerance >= 0):
        raise SNNetError(f"tolerance must be a finite number >= 0 (relative FLOPs spread), got {tolerance!r}.")
    buckets: list[list[int]] = []
    for i in order:
        if buckets and values[i] <= values[buckets[-1][0]] * (1 + tolerance):
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


def front_gaps(flops: Sequence[int], values: Sequence[float]) -> np.ndarray:
    """Each stitch's gap to the front of (FLOPs, lower better; value, higher better): the best value
    among the stitches that cost no more than it, minus its own; 0 on the front. Of stitches with
    equal FLOPs the best is on the front, the others are not."""
    flops, values = np.asarray(flops, dtype=np.float64), np.asarray(values, dtype=np.float64)
    gaps, best = np.zeros(len(values)), -np.inf
    for i in np.lexsort((-values, flops)):  # cheapest first, the better value first among equal FLOPs
        best = max(best, values[i])
        gaps[i] = best - values[i]
    return gaps


class SamplingRule(abc.ABC):
    """A seeded stitch sampler: ``draw(step, rank, world_size)`` is a pure function.

    Subclasses take their options as keyword-only ``__init__`` arguments; an option a rule
    does not know raises :class:`SNNetError` naming the ones it takes.
    """

    name: ClassVar[str]
    #: The loss distils every later stitch of a step from the first one's detached output
    #: (in-place distillation), instead of averaging plain cross-entropies.
    distils_from_first: ClassVar[bool] = False

    def __init__(self, flops: Sequence[int], seed: int = 0, **options):
        if options:
            known = list(type(self).default_options())
            takes = f"takes the options {', '.join(known)}" if known else "takes no options"
            given = ", ".join(f"{k}={v!r}" for k, v in options.items())
            raise SNNetError(f"Sampling rule {self.name!r} {takes}; got {given}.")
        self.flops: tuple[int, ...] = _check_flops(flops)
        self.seed: int = _int(seed, "seed")

    @classmethod
    def default_options(cls) -> dict[str, object]:
        """The rule's options with their defaults (its keyword-only ``__init__`` arguments)."""
        return {p: v.default for p, v in inspect.signature(cls.__init__).parameters.items()
                if v.kind is inspect.Parameter.KEYWORD_ONLY}

    @classmethod
    def stitches_per_step(cls, **options) -> int:
        """How many stitches one rank trains per step with these options (default: one)."""
        return 1

    @classmethod
    def canonical_options(cls, **options) -> dict[str, object]:
        """These options without the ones at their default (and without per-stitch ``scores``), keys
        sorted: two spellings of one rule give the same dict (the catalog's ``sampling_options``)."""
        defaults = cls.default_options()
        return {k: options[k] for k in sorted(options) if k != "scores" and options[k] != defaults.get(k)}

    def __len__(self) -> int:
        return len(self.flops)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(stitches={len(self)}, seed={self.seed})"

    #: The training recipe feeds the stitches' training losses to :meth:`ScoredRule.rescore` after every epoch.
    learns_from_losses: bool = False

    #: The space's stitch id of each of the rule's stitches, when the rule draws from a part of a space
    #: (:func:`make_rule`'s ``stitch_ids``: a pruned run's kept stitches); None: its positions are the ids.
    stitch_ids: tuple[int, ...] | None = None

    def draw(self, step: int, rank: int, world_size: int) -> list[int]:
        """The stitch ids that ``rank`` of ``world_size`` trains at ``step``, in order."""
        world_size = _int(world_size, "world_size", low=1)
        picks = self._draw(_int(step, "step"), _int(rank, "rank", high=world_size), world_size)
        return picks if self.stitch_ids is None else [self.stitch_ids[i] for i in picks]

    @abc.abstractmethod
    def _draw(self, step: int, rank: int, world_size: int) -> list[int]: ...

    def _draw_all(self, step: int, world_size: int) -> list[list[int]]:
        """Every rank's draw at ``step`` (rules with shared draws compute them once)."""
        return [self._draw(step, r, world_size) for r in range(world_size)]

    def expected_balance(self, world_size: int, steps: int = 2000) -> float:
        """Mean over steps ``0..steps-1`` of mean/max per-rank work (sum of drawn FLOPs)."""
        world_size = _int(world_size, "world_size", low=1)
        steps = _int(steps, "steps", low=1)
        flops = np.asarray(self.flops, dtype=np.float64)
        ratios = []
        for step in range(steps):
            work = np.array([flops[ids].sum() for ids in self._draw_all(step, world_size)])
            ratios.append(work.mean() / work.max() if work.max() > 0 else 1.0)
        return float(np.mean(ratios))


class UniformRule(SamplingRule):
    """One stitch per rank, uniform over the space, ranks independent (SN-Net)."""

    name = "uniform"

    def _draw(self, step: int, rank: int, world_size: int) -> list[int]:
        return [int(_rng(self.seed, _PER_RANK, step, rank).integers(len(self)))]


class SandwichRule(SamplingRule):
    """Largest, smallest, then ``num_random`` uniform others per rank; the largest first.

    The random ones are distinct and exclude the two extremes while the space has enough
    stitches; otherwise they are drawn with replacement. Ties in FLOPs go to the lower id.
    """

    name = "sandwich"
    distils_from_first = True

    @classmethod
    def stitches_per_step(cls, **options) -> int:
        """The largest, the smallest and ``num_random`` others."""
        return 2 + int({**cls.default_options(), **options}["num_random"])

    def __init__(self, flops: Sequence[int], seed: int = 0, *, num_random: int = 2, **options):
        super().__init__(flops, seed, **options)
        self.num_random = _int(num_random, "sandwich option num_random")
        ids = range(len(self))
        self.largest = max(ids, key=lambda i: (self.flops[i], -i))
        self.smallest = min(ids, key=lambda i: (self.flops[i], i))
        middle = [i for i in ids if i not in (self.largest, self.smallest)]
        self._middle = np.array(middle or list(ids))

    def _draw(self, step: int, rank: int, world_size: int) -> list[int]:
        rng = _rng(self.seed, _PER_RANK, step, rank)
        picks = rng.choice(self._middle, size=self.num_random, replace=self.num_random > len(self._middle))
        return [self.largest, self.smallest, *map(int, picks)]


class FlopsBucketRule(SamplingRule):
    """A bucket of equal FLOPs width uniformly, then a stitch in it uniformly (SN-Netv2)."""

    name = "flops-bucket"

    def __init__(self, flops: Sequence[int], seed: int = 0, *, num_buckets: int = 10, **options):
        super().__init__(flops, seed, **options)
        self.num_buckets = _int(num_buckets, "flops-bucket option num_buckets", low=1)
        self.buckets = flops_buckets(self.flops, num_buckets=self.num_buckets)

    def _draw(self, step: int, rank: int, world_size: int) -> list[int]:
        rng = _rng(self.seed, _PER_RANK, step, rank)
        bucket = self.buckets[rng.integers(len(self.buckets))]
        return [bucket[rng.integers(len(bucket))]]


class BalancedRule(SamplingRule):
    """One narrow FLOPs bucket per step for all ranks, a different stitch per rank in it."""

    name = "balanced"

    def __init__(self, flops: Sequence[int], seed: int = 0, *, tolerance: float = 0.05, **options):
        super().__init__(flops, seed, **options)
        self.tolerance = tolerance
        self.buckets = flops_buckets(self.flops, tolerance=tolerance)
        self._bucket_of = [0] * len(self)
        for b, bucket in enumerate(self.buckets):
            for i in bucket:
                self._bucket_of[i] = b

    def _shared(self, step: int) -> list[int]:
        """The step's bucket, permuted: a uniform stitch picks it (P = size / N)."""
        rng = _rng(self.seed, _SHARED, step, 0)
        bucket = self.buckets[self._bucket_of[rng.integers(len(self))]]
        return [bucket[i] for i in rng.permutation(len(bucket))]

    def _draw(self, step: int, rank: int, world_size: int) -> list[int]:
        perm = self._shared(step)
        return [perm[rank % len(perm)]]

    def _draw_all(self, step: int, world_size: int) -> list[list[int]]:
        perm = self._shared(step)
        return [[perm[r % len(perm)]] for r in range(world_size)]


class ScoredRule(SamplingRule):
    """Steps spent by score: one FLOPs bucket per step for all ranks (as ``balanced``), stitches by score.

    ``focus="bucket"`` keeps ``balanced``'s bucket shares and weighs stitches inside a bucket;
    ``focus="front"`` weighs every stitch by its gap to the front of (FLOPs, score) over the whole space.
    ``update="loss"`` asks the training recipe to :meth:`rescore` the rule by the stitches' training
    losses after every epoch.
    """

    name = "scored"
    #: The scores it can draw by (:data:`snnet.scores.SCORES`) and their orientation.
    SCORES: ClassVar[dict[str, bool]] = {"ls_r2": True, "cka": True, "kl": False, "init_top1": True}
    #: ``score`` and ``temperature`` when not given, by ``focus``: a front needs a score that ranks accuracy
    #: (the stitch's top-1 at init; CKA ranks trained top-1 backwards on the demo) and a sharp weighting
    #: (at 1.0 the front's stitches get about 1.2x uniform's share); ``benchmarks/RESULTS.md`` measured these.
    FOCUS: ClassVar[dict[str, dict[str, object]]] = {"bucket": {"score": "cka", "temperature": 1.0},
                                                     "front": {"score": "init_top1", "temperature": 0.1}}
    UPDATES: ClassVar[tuple[str, ...]] = ("none", "loss")

    def __init__(self, flops: Sequence[int], seed: int = 0, *, score: str | None = None, floor: float = 0.5,
                 temperature: float | None = None, tolerance: float = 0.1, focus: str = "bucket",
                 update: str = "none", scores: Sequence[float] | None = None, **options):
        super().__init__(flops, seed, **options)
        if focus in self.FOCUS:
            score = self.FOCUS[focus]["score"] if score is None else score
            temperature = self.FOCUS[focus]["temperature"] if temperature is None else temperature
        for what, value, known in (("focus", focus, self.FOCUS), ("score", score, self.SCORES),
                                   ("update", update, self.UPDATES)):
            if value not in known:
                raise SNNetError(f"scored option {what} must be one of {', '.join(known)}, got {value!r}.")
        for what, value, ok, must in (("floor", floor, lambda v: 0 <= v <= 1, "in [0, 1]"),
                                      ("temperature", temperature, lambda v: v > 0, "> 0")):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and ok(value)):
                raise SNNetError(f"scored option {what} must be a number {must}, got {value!r}.")
        self.score, self.floor, self.temperature, self.tolerance = score, float(floor), float(temperature), tolerance
        self.focus, self.update = focus, update
        self.learns_from_losses = update == "loss"
        self.buckets = flops_buckets(self.flops, tolerance=tolerance)
        self._bucket_of = np.zeros(len(self), dtype=np.int64)
        for b, bucket in enumerate(self.buckets):
            self._bucket_of[bucket] = b
        self.rescore(scores, self.SCORES[score])

    @classmethod
    def canonical_options(cls, **options) -> dict[str, object]:
        """As :meth:`SamplingRule.canonical_options`, ``score`` and ``temperature`` at ``focus``'s defaults
        left out too: ``{focus: front}`` and ``{focus: front, score: init_top1}`` are one rule."""
        focus = cls.FOCUS.get(str(options.get("focus", "bucket")), {})
        return {k: v for k, v in super().canonical_options(**options).items() if focus.get(k, object()) != v}

    @classmethod
    def score_of(cls, **options) -> str:
        """The init score these options draw by (given, or ``focus``'s default)."""
        if options.get("score") is not None:
            return str(options["score"])
        return str(cls.FOCUS.get(str(options.get("focus", "bucket")), cls.FOCUS["bucket"])["score"])

    def rescore(self, scores: Sequence[float] | None, higher_is_better: bool = True) -> None:
        """Draw by these scores (one per stitch, None or NaN where unknown) from now on: the recipe passes the
        init scores at the start and, under ``update="loss"``, the stitches' training losses after each epoch."""
        self.scores, self._higher = self._check_scores(scores), bool(higher_is_better)
        z = self._standardised()
        if self.focus == "front":
            gaps = front_gaps(self.flops, z)
            w = np.exp(-(gaps - gaps.min()) / self.temperature)
            self.probabilities = self.floor / len(self) + (1 - self.floor) * w / w.sum()
        else:
            self.probabilities = np.zeros(len(self))
            for bucket in self.buckets:
                w = np.exp((z[bucket] - z[bucket].max()) / self.temperature)
                p = self.floor / len(bucket) + (1 - self.floor) * w / w.sum()
                self.probabilities[bucket] = p * len(bucket) / len(self)
        # per bucket: its stitch ids' cumulative probabilities within it (last one 1.0); the buckets' own
        self._cumulative: list[np.ndarray] = []
        for bucket in self.buckets:
            cum = np.cumsum(self.probabilities[bucket])
            cum /= cum[-1]
            cum[-1] = 1.0
            self._cumulative.append(cum)
        shares = np.cumsum([self.probabilities[b].sum() for b in self.buckets])
        shares[-1] = 1.0
        self._bucket_cumulative = shares / shares[-1]

    def _check_scores(self, scores: Sequence[float] | None) -> np.ndarray | None:
        if scores is None:
            return None
        try:
            values = np.array([np.nan if v is None else float(v) for v in scores], dtype=np.float64)
        except (TypeError, ValueError):
            raise SNNetError(f"scored option scores must be numbers (or null), one per stitch, "
                             f"got {scores!r}.") from None
        if values.shape != (len(self),):
            raise SNNetError(f"scored option scores must hold one score per stitch ({len(self)}), got {values.size}.")
        return values

    def _standardised(self) -> np.ndarray:
        """The scores as z-values over the space, higher better; a missing score counts as the mean."""
        if self.scores is None:
            return np.zeros(len(self))
        v = self.scores if self._higher else -self.scores
        known = np.isfinite(v)
        if not known.any():
            return np.zeros(len(self))
        mean, std = v[known].mean(), v[known].std()
        z = np.where(known, (v - mean) / std if std > 0 else 0.0, 0.0)
        return z

    def __repr__(self) -> str:
        return (f"ScoredRule(stitches={len(self)}, seed={self.seed}, score={self.score!r}, floor={self.floor}, "
                f"focus={self.focus!r}, update={self.update!r}, "
                f"scores={'given' if self.scores is not None else 'none'})")

    def _shared(self, step: int) -> tuple[list[int], np.ndarray, float]:
        """The step's bucket (``focus="bucket"``: a uniform stitch picks it, P = size / N; ``"front"``: its
        stitches' share of the probabilities), its cumulative
        probabilities and the shared offset ``u``."""
        rng = _rng(self.seed, _SHARED, step, 0)
        if self.focus == "bucket":
            b = int(self._bucket_of[rng.integers(len(self))])
        else:  # the bucket by its stitches' share of the probability
            b = min(int(np.searchsorted(self._bucket_cumulative, rng.random(), side="right")), len(self.buckets) - 1)
        return self.buckets[b], self._cumulative[b], float(rng.random())

    def _pick(self, bucket: list[int], cum: np.ndarray, u: float, rank: int, world_size: int) -> list[int]:
        at = (u + rank / world_size) % 1.0
        return [bucket[min(int(np.searchsorted(cum, at, side="right")), len(bucket) - 1)]]

    def _draw(self, step: int, rank: int, world_size: int) -> list[int]:
        return self._pick(*self._shared(step), rank, world_size)

    def _draw_all(self, step: int, world_size: int) -> list[list[int]]:
        shared = self._shared(step)
        return [self._pick(*shared, r, world_size) for r in range(world_size)]


RULES: dict[str, type[SamplingRule]] = {
    rule.name: rule for rule in (UniformRule, SandwichRule, FlopsBucketRule, BalancedRule, ScoredRule)
}


def rule_class(name: str) -> type[SamplingRule]:
    """The class of the sampling rule called ``name``; an unknown name suggests the closest."""
    if name not in RULES:
        close = difflib.get_close_matches(str(name), RULES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SNNetError(
            f"Unknown sampling rule {name!r}: the sampling rule must be one of "
            f"{', '.join(RULES)}.{hint}"
        )
    return RULES[name]


def make_rule(name: str, flops: Sequence[int], seed: int = 0, *, stitch_ids: Sequence[int] | None = None,
              **options) -> SamplingRule:
    """The sampling rule called ``name`` over stitches with these FLOPs.

    ``stitch_ids`` (one distinct id per entry of ``flops``) draws from a part of a space: the rule sees only
    these stitches (their FLOPs, and per-stitch options such as ``scored``'s ``scores`` in the same order)
    and :meth:`SamplingRule.draw` returns their ids in the space.
    """
    rule = rule_class(name)(flops, seed, **options)
    if stitch_ids is not None:
        ids = tuple(_int(i, f"stitch_ids[{n}]") for n, i in enumerate(stitch_ids))
        if len(ids) != len(rule) or len(set(ids)) != len(ids):
            raise SNNetError(f"stitch_ids must name one distinct stitch id per entry of flops ({len(rule)}), "
                             f"got {list(ids)}.")
        rule.stitch_ids = ids
    return rule


def balance_report(
    flops: Sequence[int], world_sizes: Sequence[int] = (2, 8, 64), seed: int = 0, steps: int = 2000
) -> dict[str, dict[int, float]]:
    """``expected_balance`` of every rule (default options) at each world size."""
    return {
        name: {int(w): rule.expected_balance(w, steps) for w in world_sizes}
        for name, rule in ((n, make_rule(n, flops, seed)) for n in RULES)
    }
