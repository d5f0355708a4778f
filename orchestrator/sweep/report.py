"""The report printed at the end of a sweep, and the ranking of its trials.

:func:`sweep_report` ranks a sweep's finished trials by the objectives (:func:`rank_trials`), says which split
the objective was computed on, lists the Pareto set of trials when there are several objectives
(:func:`pareto_trials`, Optuna's ``study.best_trials``), the trials a scheduler stopped early, whether joint
training kept the anchors' top-1, what pruned trials left untrained (``training.prune_score``), and how well the
epoch-1 early front predicted the final one (:func:`early_hv_spearman`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from orchestrator.cli import render_table
from orchestrator.train.summary import NOISE_SE, pruned_line, spearman
from search_spaces import OBJECTIVES

__all__ = ["early_hv_spearman", "pareto_trials", "rank_trials", "sweep_report"]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _signed(trial: dict[str, Any], objectives: Sequence[str]) -> tuple[float, ...]:
    """The trial's objective values, each signed so that larger is better."""
    return tuple(trial[o] if OBJECTIVES[o] == "max" else -trial[o] for o in objectives)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_trials(trials: Sequence[dict[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """The trials no other trial dominates over ``objectives`` (each in its direction of
    :data:`orchestrator.catalog.objectives.OBJECTIVES`), in input order: Optuna's ``study.best_trials``.

    A trial missing an objective, or holding a NaN, takes no part; equal trials are both kept.
    """
    scored = [(t, _signed(t, objectives)) for t in trials if all(_finite(t.get(o)) for o in objectives)]
    return [t for t, v in scored if not any(_dominates(w, v) for _, w in scored)]


def rank_trials(trials: Sequence[dict[str, Any]], objectives: Sequence[str]) -> list[dict[str, Any]]:
    """Trials best first: by non-dominated front (the Pareto set first, then the set that is Pareto
    once it is removed, ...), inside a front by the first objective. Trials without every
    objective come last, in input order."""
    left = [t for t in trials if all(_finite(t.get(o)) for o in objectives)]
    ranked: list[dict[str, Any]] = []
    while left:
        front = pareto_trials(left, objectives)
        ranked += sorted(front, key=lambda t: -_signed(t, objectives)[0])
        ids = {id(t) for t in front}
        left = [t for t in left if id(t) not in ids]
    return ranked + [t for t in trials if not all(_finite(t.get(o)) for o in objectives)]


def early_hv_spearman(trials: Sequence[dict[str, Any]], *, final: str = "hypervolume",
                      early: str = "early_hv_epoch1") -> float | None:
    """Spearman rank correlation between each finished trial's epoch-1 early hypervolume and its
    final full hypervolume; None with fewer than 3 trials holding both (or when undefined)."""
    pairs = [(t[early], t[final]) for t in trials if _finite(t.get(early)) and _finite(t.get(final))]
    if len(pairs) < 3:
        return None
    return spearman([p[0] for p in pairs], [p[1] for p in pairs])


def _settings(config: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                     for k, v in config.items())


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if _finite(value) else "n/a"


def _split_line(ok: Sequence[dict[str, Any]]) -> str:
    splits = sorted({t.get("objective_split") or "evaluation" for t in ok})
    if splits == ["selection"]:
        return ("objective on the selection split (top1_selection, held out of the training set); "
                "hv eval: the evaluation split's, for the report")
    if splits == ["evaluation"]:
        return "objective on the evaluation split: selection is off (training.selection_fraction: 0)"
    return "objective on the selection split where a trial had it, else on the evaluation split"


def _trial_cells(t: dict[str, Any]) -> list[str]:
    source = f" (re-run of {t['source_trial']})" if t.get("source_trial") else ""
    return [t["trial_id"], t["family"], _number(t.get("hypervolume"), ".4f"), _number(t.get("hypervolume_eval"), ".4f"),
            _number(t.get("early_hv_epoch1"), ".4f"), _number(t.get("best_top1_eval", t.get("best_top1")), ".1f") + "%",
            _settings(t["config"]) + source]


def _kept_lines(ok: Sequence[dict[str, Any]]) -> list[str]:
    """Whether joint training kept the anchors' top-1 (:func:`anchor_changes`, one list per trial):
    a count, then each trial with a DROP and its anchors before -> after."""
    measured = [t for t in ok if t.get("anchors_kept")]
    if not measured:
        return []
    dropped = [t for t in measured if any(c.get("dropped") for c in t["anchors_kept"])]
    lines = [f"anchors kept their top-1 through joint training (within {NOISE_SE:g} binomial standard errors) in "
             f"{len(measured) - len(dropped)}/{len(measured)} trials" + (":" if dropped else "")]
    for t in dropped:
        lines.append(f"  {t['trial_id']}: " + "; ".join(
            f"{c['anchor']} {c['before']:.1f}% -> {c['after']:.1f}% ({c['split']})" + (" DROP" if c["dropped"] else "")
            for c in t["anchors_kept"]))
    return lines


def _pruned_lines(ok: Sequence[dict[str, Any]]) -> list[str]:
    """What the pruned trials left untrained (each trial's ``prune_score``, ``prune_keep``, ``pruned_stitches``
    and ``stitched_stitches``): one line when every pruned trial pruned alike, else one per trial."""
    pruned = [t for t in ok if t.get("prune_score")]
    if not pruned:
        return []
    texts = {t["trial_id"]: pruned_line(t["pruned_stitches"], t["stitched_stitches"], t["prune_score"],
                                        t["prune_keep"]) for t in pruned}
    if len(set(texts.values())) == 1:
        return [f"{next(iter(texts.values()))} in {len(pruned)}/{len(ok)} trials; "
                "the catalog lists them marked pruned, without top-1"]
    return ["pruned trials (the catalog lists their pruned stitches marked pruned, without top-1):"] + [
        f"  {trial}: {text}" for trial, text in texts.items()]


def sweep_report(summary: dict[str, Any]) -> str:
    """The text printed at the end of a sweep, from :func:`orchestrator.sweep.driver.run_sweep`'s summary."""
    trials = summary["trials"]
    ok = [t for t in trials if "error" not in t and not t.get("stopped_early")]
    stopped = [t for t in trials if t.get("stopped_early")]
    failed = [t for t in trials if "error" in t]
    objectives = list(summary.get("objectives") or ["hypervolume"])
    lines = ["", f"== sweep '{summary['sweep']}' " + "=" * 50,
             f"{len(ok)} trials finished, {len(stopped)} stopped early, {len(failed)} failed; "
             f"experiment: {summary['experiment']}"]
    if ok:
        lines.append(_split_line(ok))
    table = render_table([_trial_cells(t) for t in rank_trials(ok, objectives)],
                         header=["trial", "family", "hypervolume", "hv eval", "early hv@1", "best top-1", "settings"],
                         right=[False, False, True, True, True, True])
    lines += ["  " + line for line in table.splitlines()]
    for t in stopped:
        lines.append(f"  stopped early: {t['trial_id']} after epoch {t.get('epoch')}, "
                     f"early hv {_number(t.get('early_hv'), '.4f')}  {_settings(t.get('config', {}))}")
    for t in failed:
        lines.append(f"  failed: {t['trial_id']}: {t['error']}")
    lines += _kept_lines(ok)
    lines += _pruned_lines(ok)
    rho = summary.get("early_hv_spearman")
    lines.append(f"early_hv_spearman: {_number(rho, '.3f')}  (epoch-1 early front against the final hypervolume, "
                 f"{sum(_finite(t.get('early_hv_epoch1')) for t in ok)} finished trials with both; n/a below 3)")
    if len(objectives) > 1:
        lines.append(f"Pareto set of trials over {', '.join(objectives)}:")
        for t in summary.get("pareto") or []:
            values = ", ".join(f"{o} {_number(t.get(o), '.4g')}" for o in objectives)
            lines.append(f"  {t['trial_id']}: {values}  {_settings(t['config'])}")
    lines.append(f"catalog: {summary['catalog']}  (partition sweep={summary['sweep']})")
    return "\n".join(lines)
