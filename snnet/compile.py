"""Regional compilation of a stitched supernet: ``torch.compile`` per unit, never per stitch.

Every stitch runs the same units (a ViT's or Swin's blocks, a ResNet's bottlenecks) in a
different order, joined by cheap stitching layers. Compiling the whole stitched path would
make each stitch its own graph: 71 compilations for DeiT-Ti/S/B, and a recompile whenever the
training loop draws a stitch it has not seen. Compiling each *unit* in place instead
(``nn.Module.compile``, PyTorch's "regional compilation" recipe) gives one graph per distinct
unit shape (one per anchor width for DeiT-Ti/S/B, times training and evaluation mode), shared
by every block of that anchor and by every stitch: after one warm-up step per anchor,
changing the stitch never recompiles. Stems, heads and stitching layers stay eager (a few
percent of the FLOPs).

Since PyTorch 2.5 Dynamo treats a module's parameters as graph inputs, so the twelve blocks
of one anchor share one compiled graph rather than twelve; graphs are compiled with
``dynamic=False`` by default, so a new batch size compiles a new (static) graph rather than
a slower dynamic one. Pure PyTorch: nothing here imports Ray or the orchestrator.

Usage::

    from snnet.compile import compile_units, compile_counts
    net = build_supernet(...).to("cuda")
    compile_units(net)                  # in place; returns the modules compiled
    before = compile_counts()
    ...                                 # train / evaluate any stitches
    print(compile_counts()["graphs"] - before["graphs"])   # graphs compiled since
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["unit_modules", "compile_units", "uncompile_units", "compile_counts", "RECOMPILE_LIMIT"]

RECOMPILE_LIMIT = 64  # Dynamo cache entries allowed per code object once units are compiled


def unit_modules(net: nn.Module) -> list[nn.Module]:
    """The modules that make up the units of every anchor of ``net`` (a supernet or one anchor).

    For a ViT or ResNet these are the blocks; for Swin the first unit of a stage is the
    stage's downsampling followed by its first block, so both are listed. Identity modules
    (a stage without downsampling) are skipped: there is nothing to compile.
    """
    anchors = list(net.anchors) if hasattr(net, "anchors") else [net]
    modules: list[nn.Module] = []
    seen: set[int] = set()
    for anchor in anchors:
        for i in range(anchor.depth):
            for m in anchor.unit_modules(i):
                if isinstance(m, nn.Identity) or id(m) in seen:
                    continue
                seen.add(id(m))
                modules.append(m)
    return modules


def compile_units(net: nn.Module, *, dynamic: bool | None = False, **compile_kwargs: Any) -> list[nn.Module]:
    """Compile every unit module of ``net`` in place (``nn.Module.compile``); return them.

    ``net`` keeps its structure, parameters and state dict (keys unchanged), so optimizers,
    checkpoints, DDP wrapping and :meth:`~snnet.StitchedSupernet.fix` work as before.
    ``compile_kwargs`` go to :func:`torch.compile` (``backend``, ``mode``, ``options``).
    """
    import torch._dynamo

    modules = unit_modules(net)
    # Dynamo keeps its compiled graphs per code object, and every module compiled in place
    # enters through the same one (nn.Module._call_impl): each anchor width, training and
    # evaluation mode, the input's dtype (under autocast a stitching layer hands the back
    # anchor bf16 where its own stem gives float32) and each batch size is one entry. The
    # default limit of 8 entries would send the rest back to eager, silently: raise it.
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, RECOMPILE_LIMIT)
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    for m in modules:
        m.compile(dynamic=dynamic, **compile_kwargs)
    return modules


def uncompile_units(net: nn.Module) -> None:
    """Undo :func:`compile_units`: every unit module runs eagerly again."""
    for m in unit_modules(net):
        m._compiled_call_impl = None


def compile_counts() -> dict[str, int]:
    """Process-wide Dynamo counters: graphs compiled and frames Dynamo tried to compile.

    ``graphs`` (Dynamo's ``unique_graphs``) grows by one for every graph compiled, a
    recompilation included; ``frames`` by one for every compilation attempt (one that hits
    the recompile limit and falls back to eager counts here but not in ``frames_ok``). The
    differences over a stretch of steps are the (re)compilations in it.
    """
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "frames": int(counters["frames"]["total"]),
        "frames_ok": int(counters["frames"]["ok"]),
    }
