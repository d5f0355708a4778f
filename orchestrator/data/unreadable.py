"""Unreadable images: the one path by which a file that cannot be decoded is dropped and named once.

A reader (:class:`~orchestrator.data.folders.ImageFolderSplit`,
:class:`~orchestrator.data.shards.WebDatasetShards`) decodes with :func:`decode_image` and returns
:class:`Unreadable` for a sample that fails, instead of raising or substituting another image;
the loaders (:mod:`orchestrator.data.loaders`) leave it out of the batch
(:func:`collate_readable`) and hand its name to a :class:`SkipLog`, which names each file once
per run, whichever reader met it first. Evaluation counts stay honest: a bad image is never
replaced by a neighbour.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any, NamedTuple

import torch
from torch.utils.data import default_collate

__all__ = ["Unreadable", "decode_image", "collate_readable", "skipped_message", "warn_on_stderr", "SkipLog"]


class Unreadable(NamedTuple):
    """Stands in for a sample that could not be decoded; loaders drop it and report its name once."""

    name: str
    reason: str


def collate_readable(batch: list[Any]) -> tuple[torch.Tensor | None, torch.Tensor | None, list[str]]:
    """Stack the readable samples of a batch; name the unreadable ones (never replaced by a neighbour)."""
    good = [b for b in batch if not isinstance(b, Unreadable)]
    skipped = [b.name for b in batch if isinstance(b, Unreadable)]
    if not good:
        return None, None, skipped
    x, y = default_collate(good)
    return x, y, skipped


def skipped_message(names: Sequence[str], shown: int = 10) -> str:
    """``"skipped 2 unreadable files: a.jpg, b.jpg"`` (the first ``shown`` names, then a count)."""
    names = list(names)
    listed = ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")
    return f"skipped {len(names)} unreadable file{'' if len(names) == 1 else 's'}: {listed}"


def warn_on_stderr(message: str) -> None:
    """A ``warning:`` line on stderr (what a :class:`SkipLog` reports through by default)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


class SkipLog:
    """The unreadable files already named, shared by every reader of a run's data, so each is named once.

    :func:`~orchestrator.data.loaders.make_loader`'s loaders and
    :func:`~orchestrator.data.loaders.calibration_batches` drop unreadable samples and hand
    their names to a log: :meth:`report` names the ones it has not named before in one line
    through ``on_skip`` (default: a ``warning:`` line on stderr; ``None`` keeps quiet). A run
    passes one log to all of its readers (least-squares images, training, the early front,
    selection, evaluation); a reader made without one gets its own.
    """

    def __init__(self, on_skip: Callable[[str], None] | None = warn_on_stderr):
        self.on_skip = on_skip
        self.named: dict[str, None] = {}

    def report(self, names: Iterable[str]) -> list[str]:
        """Name the files of ``names`` not named before, in one line; returns them."""
        new = [n for n in dict.fromkeys(names) if n not in self.named]
        self.named.update(dict.fromkeys(new))
        if new and self.on_skip is not None:
            self.on_skip(skipped_message(new))
        return new


def decode_image(data: bytes | IO[bytes], mode: str) -> Any:
    """The image in ``data`` (a file's bytes or an open file) decoded in PIL ``mode`` (``"RGB"``, ``"L"``)."""
    # PIL is imported here, where an image is decoded: importing orchestrator.data costs torch's import only
    from PIL import Image

    with Image.open(data if not isinstance(data, bytes) else io.BytesIO(data)) as img:
        return img.convert(mode)  # convert() decodes the whole image: truncated files fail here
