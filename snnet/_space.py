"""Stitch spaces: which stitches a family of anchors holds, and what each one costs.

A stitch (its anchors, cuts and path: :mod:`snnet._stitch`) joins anchors at cuts ``[j, k]``:
the front runs through unit ``j``, the back resumes at unit ``k``.

Enumeration follows SN-Net (Pan et al., CVPR 2023, Sec. 3.4) and its released
``paired_stitching``: a window of ``kernel_size`` units slides with step ``stride`` along the
depth; every pair ``(j, k)`` of unit ids inside one window position that no earlier window
produced becomes a cut (front through ``j``, back from ``k``), and all cuts new to a window
share that window's stitching layer. A window of 2 thus gives a plain cut and repeats of one
and two blocks. For DeiT-Ti/S/B with ``kernel_size=2, stride=1``, nearest stitching and
fast-to-slow direction this gives ``3 + 2 * 34 = 71`` stitches, in the released code's
order (``stitch_id`` is its config id); ``nearest=False`` adds the pair DeiT-Ti -> DeiT-B and
the three-anchor chains Ti -> S -> B, 732 in all, again in its order.

Beyond the paper (the default for hierarchical models, documented as wider): when depths
differ, the window's ids are mapped to the back anchor at the same relative depth;
hierarchical models (Swin, ResNet) are stitched stage by stage, between every pair of stages
whose feature maps have the same resolution, and since a stage's first unit downsamples, the
back resumes one unit later there (``k`` ranges over ``1..depth`` of the stage). With
``SpaceConfig(preset="paper")`` each family's space is exactly the released code's instead
(see :mod:`snnet._presets`): Swin stages 0-2, ResNet and ResNet -> Swin stages 1-2, plain cuts
between equal-depth stages and the nearest-interpolation ``unpaired_stitching`` between
unequal ones.

Each stitch's costs are summed along its path (:meth:`StitchSpace.path_flops`,
:meth:`StitchSpace.path_params`), the path the forward pass and the export walk too.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from ._errors import SNNetError, UnstitchableError
from ._presets import paper_plan
from ._stitch import Head, Junction, LayerSpec, SpaceConfig, Stem, Step, Stitch, Units, check_distinct, check_window

if TYPE_CHECKING:  # flops imports torch; a space (and so a search space) is checked without it
    from .flops import AnchorProfile

__all__ = ["StitchSpace", "window_cuts"]


def window_cuts(
    front_depth: int, back_depth: int, kernel_size: int, stride: int, *, shift: int = 0
) -> list[list[tuple[int, int]]]:
    """Cuts ``(j, k)`` in local unit ids, grouped by the window position that shares a layer.

    The window's pairs ``(j, t)`` are SN-Net's released ``paired_stitching`` (front through
    ``j``, back from ``t``), in its order; with equal depths and ``shift=0`` they are the cuts
    themselves. Otherwise the back resumes at ``k = round((t + shift) * back_depth /
    front_depth)``, the same relative depth; ``shift=1`` serves stages whose first unit
    downsamples (the back then resumes at ``1..back_depth``, never at the stage's first unit).
    """

    def mapped(t: int) -> int:  # round half up, in integers
        return (2 * (t + shift) * back_depth + front_depth) // (2 * front_depth)

    seen: set[tuple[int, int]] = set()
    windows: list[list[tuple[int, int]]] = []
    i = 0
    while i < front_depth:
        ids = range(i, min(i + kernel_size, front_depth))
        new = []
        for j in ids:
            for t in ids:
                cut = (j, mapped(t))
                if cut not in seen:
                    seen.add(cut)
                    new.append(cut)
        if new:
            windows.append(new)
        if i + kernel_size >= front_depth:
            break
        i += stride
    return windows


def _stage_runs(profile: AnchorProfile) -> list[tuple[int, list[int]]]:
    runs: dict[int, list[int]] = {}
    for unit, stage in enumerate(profile.stage_of):
        runs.setdefault(stage, []).append(unit)
    return sorted(runs.items())


def _stage_grids(profile: AnchorProfile) -> list[tuple[int, ...]]:
    return [profile.grid(profile.unit_shapes[units[-1]]) for _, units in _stage_runs(profile)]


def _layout_kind(layout: str) -> str:
    return "tokens" if layout == "tokens" else "spatial"


class StitchSpace:
    """All stitches of a family of anchors under one :class:`SpaceConfig`.

    Anchors are held as :class:`~snnet.flops.AnchorProfile` (no weights), ordered by FLOPs
    from small to large; stitch ids are positions in a deterministic enumeration, so the same
    anchors and config always give the same ids.
    """

    def __init__(self, profiles: Sequence[AnchorProfile],
                 config: SpaceConfig = SpaceConfig()):  # noqa: B008 - frozen: one shared default is safe
        config.validate()
        if not profiles:
            raise SNNetError("A stitch space needs at least one anchor, got none.")
        check_distinct([p.name for p in profiles])
        self.config = config
        self.profiles: tuple[AnchorProfile, ...] = tuple(sorted(profiles, key=lambda p: (p.flops, p.params, p.name)))
        self._check_family()
        self.layers: dict[str, LayerSpec] = {}
        self._pair_cache: dict[tuple[int, int], list[tuple[tuple[int, int], str]]] = {}
        self._paper_plan = None
        if config.preset == "paper":
            # None: the family's paper space is the default one
            self._paper_plan = paper_plan(self.profiles, config, self.layers)
        self.stitches: tuple[Stitch, ...] = tuple(self._enumerate())

    # -- validation ------------------------------------------------------------------------
    def _check_family(self) -> None:
        first = self.profiles[0]
        for p in self.profiles[1:]:
            if p.num_classes != first.num_classes:
                raise UnstitchableError(
                    f"Anchors must share their classifier's number of classes, got "
                    f"{first.name}: {first.num_classes} and {p.name}: {p.num_classes}."
                )
            if p.input_size != first.input_size:
                raise UnstitchableError(
                    f"Anchors must share their input size (C, H, W), got {first.name}: {first.input_size} "
                    f"and {p.name}: {p.input_size}."
                )
        if self.config.released_deit_head and any(p.family != "vit" for p in self.profiles):
            raise SNNetError(
                "released_deit_head reproduces SN-Net's released DeiT forward and applies to ViT anchors only, "
                f"got families {sorted({p.family for p in self.profiles})}."
            )
        check_window(self.config.kernel_size, [(p.name, p.depth) for p in self.profiles])

    # -- enumeration -----------------------------------------------------------------------
    def pair_cuts(self, front: int, back: int) -> list[tuple[tuple[int, int], str]]:
        """Every one-way cut ``(j, k)`` from anchor ``front`` into ``back`` with its layer key."""
        if (front, back) in self._pair_cache:
            return self._pair_cache[(front, back)]
        f, b = self.profiles[front], self.profiles[back]
        if _layout_kind(f.layout) != _layout_kind(b.layout):
            raise UnstitchableError(
                f"Cannot stitch {f.name} ({f.layout} activations) into {b.name} ({b.layout}): "
                "token sequences only join token sequences, feature maps only feature maps."
            )
        back_stages = {tuple(b.grid(b.unit_shapes[units[-1]])): (s, units) for s, units in _stage_runs(b)}
        # A plain ViT's back may resume at any block; a hierarchical stage's first unit
        # downsamples, so there the back resumes one unit later (see the module docstring).
        shift = 0 if len(set(b.stage_of)) == 1 else 1
        result: list[tuple[tuple[int, int], str]] = []
        window = 0
        for stage, units in _stage_runs(f):
            grid = tuple(f.grid(f.unit_shapes[units[-1]]))
            if grid not in back_stages:
                continue
            _, back_units = back_stages[grid]
            for cuts in window_cuts(len(units), len(back_units), self.config.kernel_size, self.config.stride,
                                    shift=shift):
                key = f"{front}to{back}_s{stage}_w{window}"
                global_cuts = tuple((units[j], back_units[0] + k) for j, k in cuts)
                self.layers[key] = LayerSpec(
                    key=key, front=front, back=back, stage=stage, window=window,
                    in_dim=f.width(f.unit_shapes[units[0]]), out_dim=b.width(b.unit_shapes[back_units[0]]),
                    in_layout=f.layout, out_layout=b.layout, grid=grid, cuts=global_cuts,
                )
                result.extend((cut, key) for cut in global_cuts)
                window += 1
        if not result:
            raise UnstitchableError(
                f"Cannot stitch {f.name} into {b.name}: no stage of {f.name} ends at a resolution "
                f"(token count or feature-map size) that a stage of {b.name} has; {f.name}'s stages end at "
                f"{_stage_grids(f)}, {b.name}'s at {_stage_grids(b)}."
            )
        self._pair_cache[(front, back)] = result
        return result

    def _pairs(self) -> list[tuple[int, int]]:
        return [c for c in self._combinations() if len(c) == 2]

    def _combinations(self) -> list[tuple[int, ...]]:
        """Anchor sequences to stitch, two or more, in the released code's order.

        Nearest stitching: FLOPs neighbours only. Otherwise every pair, then every chain of three
        or more anchors (``itertools.combinations`` order, as the released code's
        ``get_stitch_configs``). Slow-to-fast reverses each; ``both`` gives each way in turn.
        """
        n = len(self.profiles)
        if self.config.nearest:
            unordered = [(a, a + 1) for a in range(n - 1)]
        else:
            unordered = [c for size in range(2, n + 1) for c in itertools.combinations(range(n), size)]
        combos = []
        for c in unordered:
            if self.config.direction in ("fast-to-slow", "both"):
                combos.append(c)
            if self.config.direction in ("slow-to-fast", "both"):
                combos.append(tuple(reversed(c)))
        return combos

    def _chain_cuts(self, anchors: tuple[int, ...]) -> Iterator[tuple[tuple[tuple[int, int], ...], tuple[str, ...]]]:
        """Cuts through ``anchors`` in order: each middle anchor runs at least one of its units
        (the next cut's ``j`` is at least the previous cut's ``k``, as in the released code)."""
        if len(anchors) == 1:
            yield (), ()
            return
        for (j, k), key in self.pair_cuts(anchors[0], anchors[1]):
            for cuts, keys in self._chain_cuts(anchors[1:]):
                if not cuts or cuts[0][0] >= k:
                    yield ((j, k),) + cuts, (key,) + keys

    def _enumerate(self) -> Iterator[Stitch]:
        specs: list[tuple[tuple[int, ...], tuple[tuple[int, int], ...], tuple[str, ...]]] = []
        specs.extend(((a,), (), ()) for a in range(len(self.profiles)))
        if self.config.preset == "paper" and self._paper_plan is not None:
            specs.extend(self._paper_plan)
        else:
            for combo in self._combinations():
                specs.extend((combo, cuts, keys) for cuts, keys in self._chain_cuts(combo))
        if self.config.two_way:
            n = len(self.profiles)
            unordered = [(a, a + 1) for a in range(n - 1)] if self.config.nearest else [
                (a, b) for a in range(n) for b in range(a + 1, n)
            ]
            for a, b in unordered:
                for x, y in ((a, b), (b, a)):
                    depth_x = self.profiles[x].depth
                    for (j1, k1), key1 in self.pair_cuts(x, y):
                        for (j2, k2), key2 in self.pair_cuts(y, x):
                            # y runs at least one unit; x resumes past where it left and runs a unit.
                            if k1 <= j2 and j1 < k2 < depth_x:
                                specs.append(((x, y, x), ((j1, k1), (j2, k2)), (key1, key2)))
        for sid, (anchors, cuts, keys) in enumerate(specs):
            path = self._path(anchors, cuts, keys)
            yield Stitch(sid, anchors, cuts, keys, path, self.path_flops(path), self.path_params(path))

    def _path(self, anchors, cuts, keys) -> tuple[Step, ...]:
        steps: list[Step] = [Stem(anchors[0])]
        start = 0
        for i, ((j, k), key) in enumerate(zip(cuts, keys)):
            steps.append(Units(anchors[i], start, j + 1))
            steps.append(Junction(key))
            start = k
        last = anchors[-1]
        if start < self.profiles[last].depth:
            steps.append(Units(last, start, self.profiles[last].depth))
        steps.append(Head(last, norm=not (cuts and self.config.released_deit_head)))
        return tuple(steps)

    # -- costs (walk the path) ---------------------------------------------------------------
    def path_flops(self, path: Sequence[Step]) -> int:
        total = 0
        for step in path:
            if isinstance(step, Stem):
                total += self.profiles[step.anchor].stem_flops
            elif isinstance(step, Units):
                total += sum(self.profiles[step.anchor].unit_flops[step.start : step.stop])
            elif isinstance(step, Junction):
                total += self.layers[step.layer].flops
            else:
                profile = self.profiles[step.anchor]
                total += profile.head_flops - (0 if step.norm else profile.norm_flops)
        return total

    def path_params(self, path: Sequence[Step]) -> int:
        """Parameters the path uses, each counted once (a unit run twice counts once)."""
        used: set[tuple] = set()
        for step in path:
            if isinstance(step, Units):
                used.update(("unit", step.anchor, u) for u in range(step.start, step.stop))
            elif isinstance(step, Head):
                used.add(("Head", step.anchor, step.norm))
            else:
                used.add((type(step).__name__, getattr(step, "anchor", None), getattr(step, "layer", None)))
        total = 0
        for piece in used:
            kind, anchor, extra = piece
            if kind == "unit":
                total += self.profiles[anchor].unit_params[extra]
            elif kind == "Stem":
                total += self.profiles[anchor].stem_params
            elif kind == "Head":
                profile = self.profiles[anchor]
                total += profile.head_params - (0 if extra else profile.norm_params)
            else:
                total += self.layers[extra].params
        return total

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.stitches)

    def __getitem__(self, stitch_id: int) -> Stitch:
        return self.stitches[stitch_id]

    def __iter__(self) -> Iterator[Stitch]:
        return iter(self.stitches)

    @property
    def anchor_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    def find(self, anchors: Sequence[str], cuts: Sequence[Sequence[int]]) -> Stitch:
        """The stitch with these anchor names and cuts (raises :class:`SNNetError` if absent)."""
        want = (tuple(anchors), tuple(tuple(c) for c in cuts))
        for s in self.stitches:
            if (self.names(s), s.cuts) == want:
                return s
        raise SNNetError(f"No stitch with anchors {list(anchors)} and cuts {list(cuts)} in this space.")

    def names(self, stitch: Stitch) -> tuple[str, ...]:
        return tuple(self.profiles[a].name for a in stitch.anchors)

    def record(self, stitch: Stitch) -> dict:
        """A JSON-ready description of one stitch (the ``snnet.space --format jsonl`` row)."""
        return {
            "stitch_id": stitch.stitch_id,
            "anchors": list(self.names(stitch)),
            "cuts": [list(c) for c in stitch.cuts],
            "flops": stitch.flops,
            "params": stitch.params,
            "layers": list(stitch.layers),
        }

    def to_json(self) -> str:
        return json.dumps({"config": asdict(self.config), "profiles": [asdict(p) for p in self.profiles]})

    @classmethod
    def from_json(cls, text: str) -> StitchSpace:
        from .flops import AnchorProfile

        try:
            data = json.loads(text)
            profiles = [
                AnchorProfile(**{k: _tuplify(v) if isinstance(v, list) else v for k, v in p.items()})
                for p in data["profiles"]
            ]
            config = SpaceConfig(**data["config"])
        except SNNetError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # json's errors are ValueErrors
            what = f"it lacks {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise SNNetError(f"Not a stitch space as StitchSpace.to_json writes it ({what}).") from None
        return cls(profiles, config)


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value

