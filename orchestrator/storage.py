"""Where files go and how they are written: atomic writes, and the default run storage beside the catalog.

Atomic writes: readers see the old file or the whole new one, never a part of one.

:func:`atomic_write` writes through a temporary name beside the target and renames it into
place, on a local disk (``os.replace``, after ``fsync``) or on any filesystem pyarrow reaches
(``s3://``, ``gs://``, ...: the object store's own move, which is atomic or copy-then-delete
depending on the store; readers of a catalog skip hidden ``.``-names either way). On failure
the temporary file is removed and the error propagates; the target is never touched.

Run storage: :func:`default_storage` puts Ray's run storage beside the catalog, and
:func:`check_outside_ray_runtime` refuses a location inside Ray's per-node runtime folders (a job's
``--working-dir`` copy is deleted with the job). Torch-free: ``orchestrator.train`` resolves its settings
before torch loads.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from snnet import SNNetError

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["RAY_RUNTIME_RESOURCES", "atomic_write", "check_outside_ray_runtime", "default_storage", "filesystem",
           "is_remote", "join", "local_path", "ray_runtime_folder"]


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[Any], None],
    *,
    filesystem: pyarrow.fs.FileSystem | None = None,
    to_path: bool = False,
) -> str:
    """Write ``path`` atomically with ``write`` and return the final path.

    Args:
        path: a local path, a URI pyarrow understands (``s3://bucket/key``), or a path on
            ``filesystem``.
        write: called once with a binary stream open for writing (or, with ``to_path``, the
            temporary file's local path, for writers that only take a name).
        filesystem: a ``pyarrow.fs.FileSystem`` that ``path`` lies on; default: the local disk
            for plain paths, the URI's filesystem for URIs.
        to_path: pass ``write`` a path, not a stream (local files only). The temporary name
            keeps the target's suffix, since some writers look at it.
    """
    target = os.fspath(path)
    fs, where = _resolve(target, filesystem)
    if fs is None:
        return _write_local(where, write, to_path)
    if to_path:
        raise ValueError(f"to_path=True needs a local target, got {target!r} on {type(fs).__name__}")
    return _write_remote(fs, where, write)


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URI of a filesystem other than the local disk (``s3://``, ``gs://``, ...);
    a plain path and a ``file://`` URI are local."""
    location = os.fspath(location)
    return "://" in location and not location.startswith("file://")


def local_path(location: str | os.PathLike[str]) -> str:
    """The absolute local path of a plain path or ``file://`` URI."""
    return os.path.abspath(os.fspath(location).removeprefix("file://"))


def filesystem(location: str | os.PathLike[str]) -> tuple[pyarrow.fs.FileSystem, str]:
    """``(pyarrow filesystem, path on it)`` for any location this project reads or writes: a local path or
    ``file://`` URI (the local disk, absolute path), else a URI pyarrow resolves (``s3://bucket/key``, with
    query parameters such as ``?endpoint_override=host:port&scheme=http``). The one place a location
    becomes a filesystem; pyarrow's errors (``ValueError``, ``pyarrow.ArrowException``) propagate."""
    import pyarrow.fs as pafs  # deferred: the torch-free and pyarrow-free CLI paths import this module

    location = os.fspath(location)
    if not is_remote(location):
        return pafs.LocalFileSystem(), local_path(location)
    return pafs.FileSystem.from_uri(location)


def join(base: str, *parts: str) -> str:
    """``base/part/...``: ``/``-joined for a URI (its scheme kept), ``os.path.join`` for a local path."""
    return "/".join([base.rstrip("/"), *parts]) if "://" in base else os.path.join(base, *parts)


def _resolve(path: str, filesystem_: Any) -> tuple[Any, str]:
    """``(None, local path)`` for the local disk, else ``(pyarrow filesystem, path on it)``."""
    if filesystem_ is None and "://" not in path:
        return None, path
    import pyarrow.fs as pafs

    if filesystem_ is None:
        filesystem_, path = filesystem(path)
    if isinstance(filesystem_, pafs.LocalFileSystem):
        return None, path
    return filesystem_, path


def _write_local(path: str, write: Callable[[Any], None], to_path: bool) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    stem, suffix = os.path.splitext(name)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=f"{suffix}.tmp" if not to_path else suffix)
    try:
        if to_path:
            os.close(fd)
            write(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _write_remote(fs: Any, path: str, write: Callable[[IO[bytes]], None]) -> str:
    folder, _, name = path.rpartition("/")
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp" if folder else f".{name}.{uuid.uuid4().hex}.tmp"
    if folder:
        fs.create_dir(folder, recursive=True)
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise
    return path


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
