"""What a sweep records beside its Tune experiment, and how a finished trial is known.

- ``snnet-sweep.json`` (:data:`RECORD`): the space's fingerprint, the code version and the space itself;
  ``--resume`` with an edited space stops before Ray starts unless ``--accept-changed-space`` says so
  (:func:`check_resume`).
- ``snnet-trials/<trial_id>.json`` (:data:`TRIAL_SETTINGS`): each started trial's resolved settings.
- ``snnet-epochs/<trial_id>.json`` (:data:`TRIAL_EPOCHS`): each trial's per-epoch early front.
- A trial's catalog file, written once and atomically with its reported result in the metadata
  (:data:`META_RESULT`), is the record of completion (:func:`completed_result`).

Every location may be a local folder or a URI (``s3://``, ``gs://``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pyarrow import fs as pafs

from orchestrator.catalog import trial_metadata
from orchestrator.storage import atomic_write, filesystem, join
from orchestrator.train.launch import code_version
from search_spaces import SearchSpace
from search_spaces.fingerprint import changed_fields, space_document, space_fingerprint
from snnet import SNNetError

__all__ = ["META_CODE", "META_EXPERIMENT", "META_FINGERPRINT", "META_RESULT", "META_SOURCE_SWEEP",
           "META_SOURCE_TRIAL", "RECORD", "TRIAL_EPOCHS", "TRIAL_SETTINGS", "check_resume", "completed_result",
           "exists", "finished_trials", "join", "latest_experiment", "read_json", "read_record", "sweep_record",
           "write_json"]

#: The sweep's record beside its Tune experiment: space fingerprint, code version, the space itself.
RECORD = "snnet-sweep.json"
#: Folder beside the experiment holding each started trial's resolved settings (``<trial_id>.json``).
TRIAL_SETTINGS = "snnet-trials"
#: Folder beside the experiment holding each trial's per-epoch early front (``<trial_id>.json``).
TRIAL_EPOCHS = "snnet-epochs"
#: Catalog file metadata keys the sweep writes (besides the schema version).
META_FINGERPRINT, META_CODE, META_EXPERIMENT, META_RESULT = (
    "snnet.space_fingerprint", "snnet.code_version", "snnet.experiment", "snnet.sweep_result")
#: Catalog file metadata keys linking a re-run to the trial it re-ran.
META_SOURCE_TRIAL, META_SOURCE_SWEEP = "snnet.source_trial", "snnet.source_sweep"


def exists(path: str) -> bool:
    fs, where = filesystem(path)
    return fs.get_file_info(where).type != pafs.FileType.NotFound


def read_json(path: str) -> Any:
    """The JSON file at ``path`` (local or URI), or None when absent or unreadable."""
    fs, where = filesystem(path)
    try:
        with fs.open_input_stream(where) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def write_json(path: str, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` (local or URI) atomically, making its folder."""
    data = json.dumps(value, indent=1, sort_keys=True, allow_nan=True).encode()
    fs, where = filesystem(path)
    fs.create_dir(where.rsplit("/", 1)[0], recursive=True)
    atomic_write(path, lambda out: out.write(data))


def sweep_record(search: SearchSpace) -> dict[str, Any]:
    """What a sweep records beside its experiment (:data:`RECORD`)."""
    return {"sweep": search.name, "space_fingerprint": space_fingerprint(search), "code_version": code_version(),
            "space": space_document(search)}


def read_record(experiment: str) -> dict[str, Any] | None:
    return read_json(join(experiment, RECORD))


def check_resume(record: dict[str, Any] | None, search: SearchSpace, *, accept_changed_space: bool,
                 experiment: str) -> bool:
    """Compare the space a sweep started with (its record) with the one ``--resume`` was given.

    Returns True when they differ and the user accepted it; raises one paragraph naming the
    changed dotted fields when they differ and ``accept_changed_space`` is False.
    """
    if record is None or record.get("space_fingerprint") == space_fingerprint(search):
        return False
    changed = changed_fields(record.get("space", {}), space_document(search))
    if accept_changed_space:
        return True
    shown = ", ".join(changed[:12]) + (f" and {len(changed) - 12} more" if len(changed) > 12 else "")
    raise SNNetError(
        f"The sweep in {experiment} started with a different search space: {shown or 'its fingerprint'} "
        f"changed (fingerprint {record.get('space_fingerprint')} then, {space_fingerprint(search)} now). "
        "Resume with the space and --set overrides it started with, start a new sweep (leave out --resume, "
        "or give a new --name), or pass --accept-changed-space to continue anyway: trials that already "
        "started keep the settings they started with, new trials take the edited space where it holds "
        "their point, and each trial's catalog rows say what it ran with."
    )


def completed_result(catalog: str, sweep: str, trial_id: str) -> dict[str, Any] | None:
    """The result a finished trial reported, read from its catalog file; None when it has not finished.

    The catalog is the record of completion: a trial's file is written atomically, once, with
    the reported result in its metadata, so a trial found here is never trained again.
    """
    meta = trial_metadata(catalog, sweep, trial_id)
    if not meta or META_RESULT not in meta:
        return None
    try:
        return json.loads(meta[META_RESULT])
    except ValueError:
        return None


def finished_trials(catalog: str, sweep: str, experiment: str) -> list[str]:
    """Trial ids of this experiment whose catalog file is complete (for the Ctrl-C summary)."""
    folder = join(experiment, TRIAL_SETTINGS)
    fs, where = filesystem(folder)
    try:
        names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(where))]
    except (OSError, ValueError):
        return []
    ids = sorted(n[:-5] for n in names if n.endswith(".json"))
    return [t for t in ids if META_RESULT in (trial_metadata(catalog, sweep, t) or {})]


def latest_experiment(storage: str, sweep: str) -> str | None:
    """The newest experiment of the sweep ``sweep`` in a local ``storage`` (None for a URI or none)."""
    if "://" in storage:
        return None
    if not os.path.isdir(storage):
        return None
    names = sorted(n for n in os.listdir(storage) if n.startswith(f"{sweep}-sweep-"))
    return os.path.join(storage, names[-1]) if names else None
