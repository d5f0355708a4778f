"""The hard-distillation teacher (DeiT): any timm classifier, run but never stitched.

:func:`teacher_problems` checks a teacher's spec without loading weights (the driver's
:func:`orchestrator.train.checks.check_weights`), :func:`create_teacher` builds it frozen on a
worker. A teacher such as ``regnety_160`` need not be a stitchable family, so the family check
of :func:`snnet.anchors.check_spec` is left out; a teacher without weights teaches nothing and
is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from snnet import SNNetError
from snnet.anchors import AnchorSpec, UnsupportedFamilyError, adapter_for, build_model, check_model_name, check_spec

__all__ = ["teacher_problems", "create_teacher"]

_NO_TEACHER_WEIGHTS = ("teacher {name!r} has neither hub weights (pretrained: true) nor a local checkpoint; "
                       "a teacher with random weights teaches nothing: set one of them, or drop the teacher.")


def teacher_problems(spec: Any, **kwargs: Any) -> list[str]:
    """Every problem of a teacher found without loading weights (:func:`snnet.anchors.check_spec`
    less its stitchable-family check: a teacher such as ``regnety_160`` is only run, never
    stitched); a teacher without weights is a problem. An empty list when it is sound."""
    if isinstance(spec, str):
        spec = AnchorSpec(spec, pretrained=True)
    try:  # one meta build, shared with check_spec
        model, _ = build_model(spec, load_weights=False, device="meta", **kwargs)
    except Exception:  # noqa: BLE001 - an unknown name or bad kwargs: check_spec builds again and says so
        model = None
    problems = check_spec(spec, model=model, **kwargs)
    if model is not None:
        try:
            adapter_for(model, spec.name)
        except UnsupportedFamilyError as e:
            problems = [p for p in problems if p != str(e)]
    if not spec.pretrained and not spec.checkpoint:
        problems.append(_NO_TEACHER_WEIGHTS.format(name=spec.name))
    return problems


def create_teacher(spec: Any, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The teacher as a plain timm model in eval mode, frozen: hub weights where reachable (or
    cached), a local checkpoint otherwise (``spec.checkpoint`` wins), an :class:`SNNetError`
    saying what to do when neither loads."""
    if isinstance(spec, str):
        spec = AnchorSpec(spec, pretrained=True)
    check_model_name(spec.name)
    if not spec.checkpoint and not spec.pretrained:
        raise SNNetError(_NO_TEACHER_WEIGHTS.format(name=spec.name))
    model, _ = build_model(spec)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model

