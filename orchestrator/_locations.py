"""Where a run's files go: the default run storage beside the catalog, and the folder they must avoid.

Torch-free (``orchestrator.train`` resolves its settings before torch loads); :mod:`orchestrator.run`
re-exports these and checks every location before Ray starts.
"""

from __future__ import annotations

import os

from snnet import SNNetError

__all__ = ["RAY_RUNTIME_RESOURCES", "check_outside_ray_runtime", "default_storage", "ray_runtime_folder"]


def default_storage(catalog: str) -> str:
    """Ray's run storage when ``--storage`` is not given: ``runs`` beside the catalog, in the same folder or
    bucket prefix (``sub/catalog`` -> ``sub/runs``, ``s3://b/x/catalog`` -> ``s3://b/x/runs``; a catalog at a
    bucket's root -> ``s3://b/runs``), which is where ``orchestrator.export`` trusts a catalog's checkpoints."""
    catalog = os.fspath(catalog)
    if catalog.startswith("file://"):
        return "file://" + default_storage(catalog.removeprefix("file://"))
    if "://" in catalog:
        scheme, rest = catalog.split("://", 1)
        bucket, _, path = rest.strip("/").partition("/")
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        return f"{scheme}://{bucket}/" + (f"{parent}/runs" if parent else "runs")
    return os.path.join(os.path.dirname(os.path.normpath(catalog)), "runs")


#: Ray's per-node folder for runtime environments, ``<temp dir>/session_<time>/runtime_resources``:
#: ``ray job submit --working-dir`` unpacks the job's code under it (``working_dir_files/_ray_pkg_<hash>``)
#: and starts the driver there, and Ray deletes it when the package is no longer used.
RAY_RUNTIME_RESOURCES = "runtime_resources"


def ray_runtime_folder(path: str) -> str | None:
    """The Ray runtime-resources folder (:data:`RAY_RUNTIME_RESOURCES`) that the local ``path`` lies in
    (``None`` for a URI or a path outside one): a relative path under ``ray job submit --working-dir``
    resolves there, since the job's driver starts in Ray's copy of the working directory."""
    if "://" in path and not path.startswith("file://"):
        return None
    parts = os.path.realpath(os.path.abspath(path.removeprefix("file://"))).split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == RAY_RUNTIME_RESOURCES and parts[i - 1].startswith("session_"):
            return os.sep.join(parts[:i + 1])
    return None


def check_outside_ray_runtime(location: str, what: str = "Ray's run storage", flag: str = "--storage") -> None:
    """Refuse a catalog or run storage inside Ray's runtime folder (:func:`ray_runtime_folder`): what
    is written there is lost with the job's package, and ``--resume`` or ``export`` would never find it."""
    folder = ray_runtime_folder(location)
    if folder is None:
        return
    job = "this job's --working-dir copy, " if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") else ""
    where = os.path.abspath(location.removeprefix("file://"))
    raise SNNetError(
        f"{what} {location!r} ({where}) lies inside Ray's runtime folder {folder} ({job}where `ray job submit "
        "--working-dir` unpacks the job's code): Ray deletes it with the job's package, so --resume and export "
        f"could never find what is written there. Pass {flag} as an absolute folder that outlives the job (on a "
        f'local cluster: {flag} "$PWD/{"runs" if flag == "--storage" else "catalog"}" on the ray job submit line, '
        f"where $PWD is expanded by your shell) or a bucket URI shared by every node (s3://..., gs://...); "
        "nothing was trained."
    )
