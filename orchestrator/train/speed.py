"""The GPU speed measures of a training run (issue 27): ``TrainConfig.gpu_speed``, each switchable on its own.

The GPU check (``benchmarks/RESULTS.md``) found uniform stitch sampling at 0.17 MFU on an H100: the drawn
stitches are dominated by the small anchors' blocks, which are launch-bound at batch 128. Each measure here
changes how the same step is computed, never what: the same parameters, the same loss, the same updates up to
floating-point reordering.

- ``fused_adamw``: AdamW's fused kernel (``torch.optim.AdamW(fused=True)``): one kernel updates every
  parameter, instead of a loop of per-tensor (``foreach``) kernels.
- ``compile``: regional ``torch.compile`` of the blocks (:func:`snnet.compile.compile_units`, ``dynamic=False``):
  one graph per anchor width, shared by every stitch; the recompile limit leaves room for the widths times
  training and evaluation mode, input dtype and batch shape.
- ``cudagraphs``: the same compiled with ``mode="reduce-overhead"``: each block's graph replays as a CUDA graph
  (one per width and batch shape), so a small anchor's block costs one launch instead of dozens.
  :func:`step_context` marks each step's start (``torch.compiler.cudagraph_mark_step_begin``).
- ``sdpa_flash`` / ``sdpa_cudnn``: the scaled-dot-product attention backend tried first (flash attention or
  cuDNN's); the others stay as fallbacks, so no input is refused.

Where they act: the optimizer (:func:`orchestrator.train.optim.make_optimizer`), the blocks compiled once when
training starts (:class:`~orchestrator.train.recipe.SupernetRecipe`), every forward of training and of the
evaluation in :func:`step_context` (the recipe's ``autocast``). The evaluation after training runs the compiled
blocks too (evaluation mode compiles its own graphs on first use); an evaluation-only run (``epochs: 0``) and
serving (:mod:`orchestrator.serve`, which builds its own supernet) stay eager.

Not a measure: a larger micro-batch for cheap stitches with gradient accumulation. It changes the batch each
gradient averages over and the number of optimizer steps, i.e. the training itself, which this option keeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from snnet.compile import compile_units

__all__ = ["COMPILE_BACKEND", "optimizer_options", "compile_blocks", "step_context"]

#: The compiler of ``compile`` and ``cudagraphs``. CPU tests set ``aot_eager`` (graph capture and AOT autograd,
#: without inductor's C++ compiling, which takes minutes on a small machine); ``reduce-overhead`` is inductor's.
COMPILE_BACKEND = "inductor"

_SDPA_ORDER = {
    "sdpa_flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                   SDPBackend.MATH],
    "sdpa_cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                   SDPBackend.MATH],
}


def optimizer_options(measures: Sequence[str]) -> dict[str, Any]:
    """Keyword arguments for AdamW under ``measures``: ``fused=True`` with ``fused_adamw``."""
    return {"fused": True} if "fused_adamw" in measures else {}


def compile_blocks(net: nn.Module, measures: Sequence[str], backend: str | None = None) -> list[nn.Module]:
    """Compile the blocks of ``net`` in place under ``compile`` or ``cudagraphs``; the modules compiled
    (none when neither is on). ``backend``: :data:`COMPILE_BACKEND` unless given."""
    if "compile" not in measures and "cudagraphs" not in measures:
        return []
    backend = backend or COMPILE_BACKEND
    options: dict[str, Any] = {"backend": backend}
    if "cudagraphs" in measures and backend == "inductor":  # other backends ignore a mode, with a warning
        options["mode"] = "reduce-overhead"
    return compile_units(net, **options)


def step_context(measures: Sequence[str]) -> contextlib.AbstractContextManager:
    """Where a forward (a training step's, an evaluation batch's) runs: the SDPA backend order of ``sdpa_*``;
    under ``cudagraphs`` a new step starts, so the CUDA graphs may reuse the previous step's memory."""
    stack = contextlib.ExitStack()
    for name, order in _SDPA_ORDER.items():
        if name in measures:
            stack.enter_context(sdpa_kernel(order, set_priority=True))
    if "cudagraphs" in measures:
        torch.compiler.cudagraph_mark_step_begin()
    return stack
