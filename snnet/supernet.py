"""The stitched supernet: anchors plus stitching layers, run along a caller-given stitch.

``StitchedSupernet.forward(x, stitch)`` runs exactly the stitch it is given; the module holds
no random state and no "current stitch", so sampling stays with the training loop (seeded,
reproducible on any number of workers). :meth:`StitchedSupernet.fix` returns a module bound
to one stitch for evaluation and deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import torch
from torch import nn

from ._space import StitchSpace
from ._stitch import Junction, LayerSpec, SpaceConfig, Stem, Step, Stitch, Units, check_distinct
from .anchors import Anchor, AnchorSpec, check_model_name, create_anchor
from .flops import profile_anchor
from .least_squares import LeastSquaresAccumulator, to_rows

__all__ = ["FixedStitch", "StandaloneStitch", "StitchingLayer", "StitchedSupernet", "build_supernet", "run_path"]


def run_path(
    path: Sequence[Step],
    x: torch.Tensor,
    anchor: Callable[[int], Anchor],
    layer: Callable[[str], nn.Module],
) -> torch.Tensor:
    """Run ``x`` along a stitch path, looking modules up with ``anchor(i)`` and ``layer(key)``."""
    for step in path:
        if isinstance(step, Stem):
            x = anchor(step.anchor).stem(x)
        elif isinstance(step, Units):
            x = anchor(step.anchor).forward_units(x, step.start, step.stop)
        elif isinstance(step, Junction):
            x = layer(step.layer)(x)
        elif step.norm:
            x = anchor(step.anchor).head(x)
        else:  # the released DeiT code's stitched head: no final norm
            x = anchor(step.anchor).model.forward_head(x)
    return x


class StitchingLayer(nn.Module):
    """Maps front-anchor activations to the back anchor's width at a cut.

    A linear map on tokens (or on channel-last feature maps), a 1x1 convolution between CNN
    feature maps; across layouts (ResNet -> Swin) the map is applied per pixel and the result
    put in the back anchor's layout.
    """

    def __init__(self, in_dim: int, out_dim: int, in_layout: str = "tokens", out_layout: str = "tokens"):
        super().__init__()
        self.in_layout, self.out_layout = in_layout, out_layout
        self.conv = in_layout == out_layout == "nchw"
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=1) if self.conv else nn.Linear(in_dim, out_dim)

    @classmethod
    def from_spec(cls, spec: LayerSpec) -> StitchingLayer:
        return cls(spec.in_dim, spec.out_dim, spec.in_layout, spec.out_layout)

    @property
    def in_dim(self) -> int:
        return self.proj.in_channels if self.conv else self.proj.in_features

    @property
    def out_dim(self) -> int:
        return self.proj.out_channels if self.conv else self.proj.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            return self.proj(x) + self._lora(x.movedim(1, -1)).movedim(-1, 1) if self.lora_rank else self.proj(x)
        if self.in_layout == "nchw":
            x = x.permute(0, 2, 3, 1)
        y = self.proj(x)
        if self.lora_rank:
            y = y + self._lora(x)
        if self.out_layout == "nchw":
            y = y.permute(0, 3, 1, 2)
        return y

    # -- low-rank updates (SN-Netv2) ---------------------------------------------------------
    lora_rank: int = 0

    def _lora(self, x_last: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(nn.functional.linear(x_last, self.lora_a), self.lora_b)

    def enable_lora(self, rank: int) -> None:
        """Freeze the current (least-squares) map and learn a low-rank update ``B A`` on top.

        SN-Netv2 (Pan et al., arXiv 2307.00154) trains LS-initialised stitching layers this way;
        ``B`` starts at zero, so the layer's output is unchanged at the start. The bias stays
        trainable. :meth:`merge_lora` folds the update back into one affine map.
        """
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.proj.weight.requires_grad_(False)
        self.lora_rank = rank
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_dim, device=self.proj.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=5**0.5)
        self.lora_b = nn.Parameter(torch.zeros(self.out_dim, rank, device=self.proj.weight.device))

    @torch.no_grad()
    def merge_lora(self) -> None:
        if not self.lora_rank:
            return
        delta = self.lora_b @ self.lora_a
        self.proj.weight.add_(delta.reshape(self.proj.weight.shape))
        self.proj.weight.requires_grad_(True)
        del self.lora_a, self.lora_b
        self.lora_rank = 0

    @torch.no_grad()
    def set_affine(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Load a ``(out, in)`` weight and ``(out,)`` bias (e.g. a least-squares solution)."""
        self.proj.weight.copy_(weight.reshape(self.proj.weight.shape))
        self.proj.bias.copy_(bias)

    def reset_kaiming(self) -> None:
        """PyTorch's default (Kaiming-uniform) initialisation, the paper's baseline."""
        self.proj.reset_parameters()


class StitchedSupernet(nn.Module):
    """SN-Net: a family of anchors and the stitching layers of a :class:`StitchSpace`.

    Args:
        space: the stitch space; ``space.profiles[i]`` describes ``anchors[i]``.
        anchors: the anchor modules, in the space's (FLOPs) order.

    Compatibility: :attr:`released_deit_head` (``space.config.released_deit_head``) reproduces
    SN-Net's released DeiT forward, whose stitched networks skip the back anchor's final norm.
    It is off for new runs (the paper's Swin and SN-Netv2 code, and this project, apply the
    norm); :func:`snnet.load_paper_checkpoint` turns it on, since the released DeiT weights were
    trained that way. It lives in the space so that forward, FLOPs and params walk one path.
    """

    def __init__(self, space: StitchSpace, anchors: Sequence[Anchor]):
        super().__init__()
        names = tuple(a.name for a in anchors)
        if names != space.anchor_names:
            raise ValueError(f"anchors must follow the space's order {space.anchor_names}, got {names}")
        self.space = space
        self.anchors = nn.ModuleList(anchors)
        self.stitch_layers = nn.ModuleDict({k: StitchingLayer.from_spec(s) for k, s in space.layers.items()})

    @property
    def released_deit_head(self) -> bool:
        return self.space.config.released_deit_head

    def set_released_deit_head(self, on: bool = True) -> None:
        """Switch the released-DeiT head compatibility (re-costs the space; ids and layers stay)."""
        if on != self.released_deit_head:
            self.space = StitchSpace(self.space.profiles, replace(self.space.config, released_deit_head=on))

    def _stitch(self, stitch: Stitch | int) -> Stitch:
        return self.space[stitch] if isinstance(stitch, int) else stitch

    def forward(self, x: torch.Tensor, stitch: Stitch | int) -> torch.Tensor:
        return run_path(self._stitch(stitch).path, x, self.anchors.__getitem__, self.stitch_layers.__getitem__)

    def fix(self, stitch: Stitch | int) -> FixedStitch:
        """``stitch`` as a module that runs it alone and shares this supernet's weights."""
        return FixedStitch.bind(self, self._stitch(stitch))

    # -- parameters -------------------------------------------------------------------------
    def stitch_parameters(self, stitch: Stitch | int) -> list[nn.Parameter]:
        """The parameters ``stitch`` uses, each once (walks the same path as ``forward``)."""
        seen: dict[int, nn.Parameter] = {}
        for step in self._stitch(stitch).path:
            if isinstance(step, Stem):
                params: Iterable[nn.Parameter] = self.anchors[step.anchor].stem_parameters()
            elif isinstance(step, Units):
                anchor = self.anchors[step.anchor]
                params = [p for u in range(step.start, step.stop) for p in anchor.unit_parameters(u)]
            elif isinstance(step, Junction):
                params = self.stitch_layers[step.layer].parameters()
            else:
                anchor = self.anchors[step.anchor]
                params = anchor.head_parameters()
                if not step.norm:
                    norm = {id(p) for p in anchor.model.norm.parameters()}
                    params = [p for p in params if id(p) not in norm]
            for p in params:
                seen.setdefault(id(p), p)
        return list(seen.values())

    def param_groups(self, anchor_lr: float, stitch_lr: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer groups: anchors and stitching layers, each with its own learning rate.

        Biases and 1-d parameters (norms) get no weight decay, as in timm's recipes.
        """
        groups = []
        for name, module, lr in (("anchors", self.anchors, anchor_lr),
                                 ("stitch_layers", self.stitch_layers, stitch_lr)):
            decay = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
            no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
            groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": weight_decay})
            groups.append({"name": f"{name}_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0})
        return [g for g in groups if g["params"]]

    # -- initialisation ---------------------------------------------------------------------
    def reset_stitch_layers(self) -> None:
        for layer in self.stitch_layers.values():
            layer.reset_kaiming()

    @torch.no_grad()
    def collect_activations(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per anchor: the stem's output followed by every unit's output, for input ``x``."""
        out = []
        for anchor in self.anchors:
            h = anchor.stem(x)
            acts = [h]
            for unit in anchor.units:
                h = unit(h)
                acts.append(h)
            out.append(acts)
        return out

    def least_squares_accumulators(self, mode: str = "joint") -> dict:
        """Empty accumulators: one per layer (``joint``) or one per (layer, cut) (``average``)."""
        if mode not in ("joint", "average"):
            raise ValueError(f"mode must be 'joint' or 'average', got {mode!r}")
        accs: dict = {}
        for key, spec in self.space.layers.items():
            device = self.stitch_layers[key].proj.weight.device
            accs[key] = LeastSquaresAccumulator(spec.in_dim, spec.out_dim, device=device)
            if mode == "average":
                for cut in spec.cuts:
                    accs[(key, cut)] = LeastSquaresAccumulator(spec.in_dim, spec.out_dim, device=device)
        return accs

    @torch.no_grad()
    def accumulate_least_squares(self, accs: dict, x: torch.Tensor) -> None:
        """Add one batch's front/back activations at every cut to the accumulators."""
        acts = self.collect_activations(x)
        for key, spec in self.space.layers.items():
            for j, k in spec.cuts:
                a = to_rows(acts[spec.front][j + 1], spec.in_layout)  # output of unit j
                b = to_rows(acts[spec.back][k], spec.out_layout)  # input of unit k
                accs[key].update(a, b)
                if (key, (j, k)) in accs:
                    accs[(key, (j, k))].update(a, b)

    @torch.no_grad()
    def solve_least_squares(self, accs: dict) -> dict[str, float]:
        """Set every stitching layer from the accumulators; return R^2 per layer on all its cuts.

        With per-cut accumulators present (``average`` mode) the layer takes the mean of the
        per-cut solutions, as SN-Net's released code does; otherwise the joint optimum.
        """
        r2 = {}
        for key, spec in self.space.layers.items():
            if (key, spec.cuts[0]) in accs:
                solutions = [accs[(key, cut)].solve() for cut in spec.cuts]
                weight = torch.stack([w for w, _ in solutions]).mean(0)
                bias = torch.stack([b for _, b in solutions]).mean(0)
            else:
                weight, bias = accs[key].solve()
            self.stitch_layers[key].set_affine(weight, bias)
            r2[key] = accs[key].r2(weight, bias)
        return r2

    def init_least_squares(self, batches: Iterable[torch.Tensor], mode: str = "joint") -> dict[str, float]:
        """Least-squares initialisation of every stitching layer from ``batches`` of images."""
        was_training = self.training
        self.eval()
        accs = self.least_squares_accumulators(mode)
        for x in batches:
            self.accumulate_least_squares(accs, x)
        self.train(was_training)
        return self.solve_least_squares(accs)


class StandaloneStitch(nn.Module):
    """A module bound to one stitch: ``forward(x)`` runs ``stitch.path`` over ``anchors`` and ``stitch_layers``.

    Args:
        stitch: the :class:`~snnet.Stitch` to run (or, for older callers, its path).
        anchors: the anchors on the path, keyed by their index in the space as a string.
        stitch_layers: the stitching layers of the stitch's junctions, keyed by layer key.

    :meth:`bind` builds one that shares a supernet's modules (what :meth:`StitchedSupernet.fix`
    returns, as ``FixedStitch``); :func:`snnet.extract.extract_stitch` builds one over pruned
    copies that hold only the stitch's weights (for deployment and ``torch.export``).
    """

    def __init__(self, stitch: Stitch | Sequence[Step], anchors: dict[str, Anchor],
                 stitch_layers: dict[str, nn.Module]):
        super().__init__()
        self.stitch = stitch if isinstance(stitch, Stitch) else None
        self.path = tuple(stitch.path if isinstance(stitch, Stitch) else stitch)
        self.anchors = nn.ModuleDict(anchors)
        self.stitch_layers = nn.ModuleDict(stitch_layers)

    @staticmethod
    def modules_of(supernet: StitchedSupernet, stitch: Stitch) -> tuple[dict[str, Anchor], dict[str, nn.Module]]:
        """The supernet's anchors and stitching layers that ``stitch`` runs (shared, not copied)."""
        anchors = {str(a): supernet.anchors[a] for a in sorted(set(stitch.anchors))}
        layers = {k: supernet.stitch_layers[k] for k in dict.fromkeys(stitch.layers)}
        return anchors, layers

    @classmethod
    def bind(cls, supernet: StitchedSupernet, stitch: Stitch | int) -> StandaloneStitch:
        """``stitch`` of ``supernet`` as a module sharing the supernet's weights."""
        stitch = supernet.space[stitch] if isinstance(stitch, int) else stitch
        return cls(stitch, *cls.modules_of(supernet, stitch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_path(self.path, x, lambda a: self.anchors[str(a)], self.stitch_layers.__getitem__)


#: What :meth:`StitchedSupernet.fix` returns: one stitch bound to the supernet's weights.
FixedStitch = StandaloneStitch


def build_supernet(
    anchors: Sequence[AnchorSpec | str],
    config: SpaceConfig = SpaceConfig(),  # noqa: B008 - SpaceConfig is a frozen dataclass: one shared default is safe
    **model_kwargs,
) -> StitchedSupernet:
    """Create the anchors, profile each once, enumerate the space and build the supernet."""
    specs = [AnchorSpec(a) if isinstance(a, str) else a for a in anchors]
    config.validate()
    for spec in specs:  # fail on a typo or a model named twice before building anything
        check_model_name(spec.name)
    check_distinct([spec.name for spec in specs])
    built = [create_anchor(spec, **model_kwargs) for spec in specs]
    space = StitchSpace([profile_anchor(a) for a in built], config)
    by_name = {a.name: a for a in built}
    return StitchedSupernet(space, [by_name[n] for n in space.anchor_names])
