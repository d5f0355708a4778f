"""Atomic writes: readers see the old file or the whole new one, never a part of one.

:func:`atomic_write` writes through a temporary name beside the target and renames it into
place, on a local disk (``os.replace``, after ``fsync``) or on any filesystem pyarrow reaches
(``s3://``, ``gs://``, ...: the object store's own move, which is atomic or copy-then-delete
depending on the store; readers of a catalog skip hidden ``.``-names either way). On failure
the temporary file is removed and the error propagates; the target is never touched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["atomic_write"]


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


def _resolve(path: str, filesystem: Any) -> tuple[Any, str]:
    """``(None, local path)`` for the local disk, else ``(pyarrow filesystem, path on it)``."""
    if filesystem is None and "://" not in path:
        return None, path
    import pyarrow.fs as pafs

    if filesystem is None:
        filesystem, path = pafs.FileSystem.from_uri(path)
    if isinstance(filesystem, pafs.LocalFileSystem):
        return None, path
    return filesystem, path


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
