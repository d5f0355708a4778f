"""Driver side of one training run: prepare, check the cluster, train on Ray, hand back the catalog rows.

:func:`run_training` is what ``python -m orchestrator.train`` calls and what each sweep trial
calls inside its Ray Tune trainable. Everything a user can get wrong (settings, model names,
checkpoint files, anchors that cannot be stitched, the dataset) is checked first by
:func:`orchestrator.train.prepare.prepare`, and the cluster's resources by
:func:`orchestrator.train.cluster.preflight`, before any Ray resource is requested.

:func:`run_training` returns the run's rows (:func:`catalog_rows`, one per stitch) and writes no
catalog: the caller writes them once, :func:`record_run` for a plain run (a sweep trial adds its
own columns and metadata first). Ray is imported inside :func:`run_training` alone: the catalog's
readers, the export and the tests build rows (:func:`catalog_rows`) without it.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

import orchestrator
from orchestrator.catalog import CatalogWriter, catalog_values
from orchestrator.train.cluster import ensure_ray, preflight, worker_resources
from orchestrator.train.config import TrainConfig
from orchestrator.train.prepare import Prepared, prepare
from orchestrator.train.ray_hooks import interrupt_as_keyboard
from orchestrator.train.worker import remove_unregistered, stored_checkpoints, train_loop_per_worker
from search_spaces.fingerprint import config_fingerprint
from snnet import StitchSpace
from snnet.sampling import rule_class

__all__ = ["TrainResult", "run_training", "record_run", "catalog_rows", "code_version"]


@dataclass
class TrainResult:
    """One finished run: its settled config and stitch space, one catalog row per stitch
    (:func:`catalog_rows`), its last checkpoint and what the workers reported."""

    config: TrainConfig
    space: StitchSpace
    rows: list[dict[str, Any]]
    checkpoint: str
    r2: dict[str, float]
    loss: float | None = None  # the last training epoch's mean loss (None without training)
    train_images: int | None = None  # images trained on per epoch (after the selection split and data_fraction)
    hv_selection: float | None = None  # the whole space's hypervolume on the selection split (None without one)
    early_hv: dict[int, float] | None = None  # epoch -> its early-front hypervolume, across resumes (None: not scored)
    catalog_file: str | None = None  # the trial's catalog file, once record_run wrote it


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package's version, with the git commit when the code runs from a checkout:
    ``0.1.0+g<12 hex digits>``, ``.dirty`` added when tracked files differ from that commit
    (``unknown+g...`` for a source tree that is not installed). Looked up once per process."""
    try:
        base = package_version("snnet-orchestrator")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        base = "unknown"
    root = os.path.dirname(os.path.dirname(os.path.abspath(orchestrator.__file__)))
    if not os.path.exists(os.path.join(root, ".git")):  # an installed copy, or a tree shipped without .git
        return base

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0 or not head.stdout.strip():
            return base
        dirty = git("diff", "--quiet", "HEAD", "--").returncode == 1
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return base
    return f"{base}+g{head.stdout.strip()}" + (".dirty" if dirty else "")


def _uri(storage: str, path: str) -> str:
    """Ray's ``Checkpoint.path`` drops the scheme of remote storage: put it back."""
    scheme = storage.split("://", 1)[0] if "://" in storage else ""
    return f"{scheme}://{path}" if scheme and "://" not in path else path


def _storage(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _run_dir(storage: str, name: str) -> str:
    """The Ray Train run's folder: ``<storage>/<name>`` (a URI keeps its scheme)."""
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else os.path.join(_storage(storage), name)


def run_training(
    config: TrainConfig,
    *,
    progress: Callable[[str], None] = print,
    prepared: Prepared | None = None,
    address: str | None = None,
    callbacks: list[Any] | None = None,
    worker_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train one supernet with Ray Train; the result holds one catalog row per stitch (written by
    the caller: :func:`record_run`).

    ``callbacks``: Ray Train callbacks (they run in Ray Train's controller). ``worker_callbacks``:
    :class:`~orchestrator.train.state.TrainCallback` objects (pickled to every worker) or import specs
    (``"package.module:name"``), called by every worker's recipe at its steps and epochs: how a caller
    probes or interrupts the training (the fault tests hold a worker at a step with one).
    """
    prepared = prepared or prepare(config, progress)
    config, space, weights = prepared.config, prepared.space, prepared.weights
    preflight(config, address)  # workers x CPUs x GPUs fit, before any resource is requested
    import ray.train  # deferred: see the module docstring
    from ray.train.torch import TorchTrainer

    ensure_ray(address)
    name = f"{config.sweep}-{config.trial_id}"
    # A run started again under its name resumes from its newest checkpoint, registered by Ray or not
    # (orchestrator.train.worker.latest_state); the checkpoints are listed here, once, for every worker.
    stored = stored_checkpoints(_run_dir(config.storage_path, name))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config.model_dump(), "space": space.to_json(), "stored_checkpoints": stored,
                           "callbacks": list(worker_callbacks)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.use_gpu,
            resources_per_worker=worker_resources(config),
            placement_strategy=config.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=_storage(config.storage_path),
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Ray Train's console at ERROR: its WARNINGs (a transient autoscaling-request traceback
            # every few seconds on a busy machine, among others) stay in Ray's own log files.
            logging_config=ray.train.LoggingConfig(log_level="ERROR"),
            callbacks=callbacks or None,
        ),
    )
    with interrupt_as_keyboard(trainer):  # Ctrl-C: KeyboardInterrupt here, so the command says how to resume
        result = trainer.fit()
    if result.error:
        raise result.error
    if stored:  # what an earlier, stopped attempt left that Ray's num_to_keep does not know of
        remove_unregistered(stored, [c.path for c, _ in result.best_checkpoints or []])
    metrics = result.metrics or {}
    if "results" not in metrics:
        raise RuntimeError(f"training ended without evaluation results (last metrics: {metrics})")
    checkpoint = _uri(config.storage_path, result.checkpoint.path) if result.checkpoint else ""
    rows = catalog_rows(config, space, metrics["results"], metrics.get("r2", {}), checkpoint,
                        latency=metrics.get("latency") or {}, device=metrics.get("device"), weights=weights,
                        selection=metrics.get("results_selection") or {},
                        selection_images=metrics.get("selection_images"), scores=metrics.get("init_scores"),
                        before=metrics.get("anchors_before"), eval_images=metrics.get("eval_images"),
                        pruned=metrics.get("pruned"))
    return TrainResult(config, space, rows, checkpoint, metrics.get("r2", {}), metrics.get("loss"),
                       metrics.get("train_images"), metrics.get("hv_selection"),
                       {int(k): float(v) for k, v in (metrics.get("early_hv_history") or {}).items()} or None)



def record_run(result: TrainResult) -> str:
    """Write ``result``'s rows as its trial's catalog file (``<catalog>/sweep=<sweep>/trial-<id>.parquet``)
    and return that file's path; :attr:`TrainResult.catalog_file` is set to it."""
    config = result.config
    result.catalog_file = CatalogWriter(config.catalog, config.sweep).write_trial(config.trial_id, result.rows)
    return result.catalog_file


def _trial_values(config: TrainConfig, space: StitchSpace, experiment: str) -> dict[str, Any]:
    """The catalog columns every row of a trial shares: its settings and bookkeeping."""
    options = rule_class(config.sampling).canonical_options(**config.sampling_options)
    return dict(
        kernel_size=config.kernel_size,
        stride=config.stride,
        preset=space.config.preset,
        released_deit_head=bool(getattr(space.config, "released_deit_head", False)),
        sampling=config.sampling,
        sampling_options=json.dumps(options, default=str) if options else None,  # null: the rule's defaults
        prune_score=config.prune_score,
        prune_keep=float(config.prune_keep) if config.prune_score is not None else None,
        dataset=config.dataset,
        init=config.init,
        mode=config.mode,
        epochs=config.epochs,
        data_fraction=float(config.data_fraction),  # fidelity: a cheap trial vs its full re-run
        image_size=config.image_size,  # null: each family's default resolution
        anchor_lr=float(config.anchor_lr),
        stitch_lr=float(config.stitch_lr) if config.stitch_lr is not None else None,  # None: one lr group
        seed=config.seed,
        workers=config.workers,
        code_version=code_version(),
        experiment=experiment,
        config_fingerprint=config_fingerprint(config),
    )


def catalog_rows(config: TrainConfig, space: StitchSpace, results: dict[str, list[float]],
                 r2: dict[str, float], checkpoint: str, *, latency: dict[str, float] | None = None,
                 device: str | None = None, weights: dict[str, str] | None = None,
                 selection: dict[str, float] | None = None, selection_images: int | None = None,
                 experiment: str | None = None,
                 scores: dict[str, dict[str, Any]] | None = None,
                 before: dict[str, list[float | None]] | None = None,
                 eval_images: int | None = None, pruned: Sequence[int | str] | None = None) -> list[dict[str, Any]]:
    """One catalog row per stitch; ``weights`` (anchor name -> source) fills the ``weights``
    column: ``name=source`` of each anchor on the stitch's path, joined by ``; ``; ``selection``
    (stitch id -> top-1 on the held-out selection split) fills ``top1_selection`` (null without one)
    and ``selection_images`` the split's size (0: none; None: not told). ``device`` (where the run
    measured) is stored only beside a measured latency. ``experiment`` names the run (default: Ray's run name
    ``<sweep>-<trial_id>``, which a resumed run keeps; a sweep gives its Tune experiment's name);
    ``config_fingerprint`` identifies the configuration (:func:`search_spaces.fingerprint.config_fingerprint`).
    ``scores`` (stitch id -> :meth:`snnet.scores.StitchScore.to_dict`) fills the init-score columns
    ``init_cka``, ``init_kl``, ``init_top1`` and ``score_images`` (null without them). ``before`` (an anchor's
    stitch id -> [top-1 on the evaluation split, on the selection split or None] before joint training) fills
    ``top1_before`` and ``top1_selection_before`` of the anchor rows (null on stitched rows and without it);
    ``eval_images`` is the evaluation split's size. ``pruned`` (stitch ids a pruned run left untrained) marks
    those rows ``pruned`` with no top-1, top-5 or selection top-1 (and is not looked up in ``results``)."""
    trial = _trial_values(config, space, experiment or f"{config.sweep}-{config.trial_id}")
    rows = []
    untrained = {int(i) for i in pruned or ()}
    for stitch in space:
        top1, top5 = (None, None) if stitch.stitch_id in untrained else results[str(stitch.stitch_id)]
        layer_r2 = [r2[k] for k in stitch.layers if k in r2]
        latency_ms = (latency or {}).get(str(stitch.stitch_id))
        score = (scores or {}).get(str(stitch.stitch_id)) or {}
        prior = list((before or {}).get(str(stitch.stitch_id)) or []) + [None, None]
        rows.append(catalog_values(
            **trial,
            stitch_id=stitch.stitch_id,
            anchors=list(space.names(stitch)),
            cuts=[list(c) for c in stitch.cuts],
            flops=stitch.flops,
            params=stitch.params,
            top1=top1,
            top5=top5,
            top1_selection=(selection or {}).get(str(stitch.stitch_id)),
            selection_images=selection_images,
            top1_before=prior[0],
            top1_selection_before=prior[1],
            eval_images=eval_images,
            pruned=stitch.stitch_id in untrained,
            latency_ms=latency_ms,
            latency_batch_size=config.latency_batch_size if latency_ms is not None else None,
            device=(device or ("cuda" if config.use_gpu else "cpu")) if latency_ms is not None else None,
            checkpoint=checkpoint,
            layers=list(stitch.layers),
            ls_r2=min(layer_r2) if layer_r2 else None,
            init_cka=score.get("cka"),
            init_kl=score.get("kl"),
            init_top1=score.get("init_top1"),
            score_images=score.get("images"),
            weights="; ".join(f"{a}={weights[a]}" for a in dict.fromkeys(space.names(stitch)) if a in weights)
                    or None if weights else None,
        ))
    return rows

