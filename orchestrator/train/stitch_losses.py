"""Each trained stitch's training loss, summed over the ranks, for a rule that learns from it.

A sampling rule whose ``learns_from_losses`` is true (``scored`` with ``update: loss``) is rescored after
every epoch by :class:`StitchLosses`' running means. Every rank adds the losses of the stitches it trained;
:meth:`StitchLosses.gather` all-reduces what the ranks added since the last gather into the epoch's
totals, which every rank then holds alike; :meth:`StitchLosses.end_epoch` folds the epoch into the
running sums, the older epochs' weight halved (``DECAY``), and returns each stitch's running mean. The
recipe gathers before every mid-epoch checkpoint, so a checkpoint (rank 0's) holds every rank's losses
and a resumed run rescores exactly as the uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["StitchLosses", "all_reduce_sum"]


def all_reduce_sum(device: torch.device, world: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function summing an array over the ranks (itself on one rank, or without a process group)."""
    if world <= 1 or not (dist.is_available() and dist.is_initialized()):
        return lambda values: values

    def reduce(values: np.ndarray) -> np.ndarray:
        tensor = torch.as_tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    return reduce


class StitchLosses:
    """Loss sums and counts per stitch: this rank's since the last gather, the epoch's over all ranks,
    and the running ones over the finished epochs."""

    #: The weight a finished epoch keeps at each later epoch's end.
    DECAY = 0.5

    def __init__(self, ids: Sequence[int]):
        self.ids = [int(i) for i in ids]
        self._position = {i: n for n, i in enumerate(self.ids)}
        self.local = np.zeros((2, len(self.ids)))
        self.epoch = np.zeros((2, len(self.ids)))
        self.running = np.zeros((2, len(self.ids)))

    def add(self, ids: Iterable[int], loss: float) -> None:
        """This rank trained ``ids`` at a step whose loss was ``loss``."""
        for i in ids:
            n = self._position[int(i)]
            self.local[0, n] += loss
            self.local[1, n] += 1

    def gather(self, reduce: Callable[[np.ndarray], np.ndarray]) -> None:
        """Add every rank's losses since the last gather to the epoch's (a collective: every rank calls it)."""
        self.epoch += reduce(self.local)
        self.local[:] = 0

    def end_epoch(self, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Gather, fold the epoch into the running sums and return :meth:`means`."""
        self.gather(reduce)
        self.running = self.DECAY * self.running + self.epoch
        self.epoch[:] = 0
        return self.means()

    def means(self) -> np.ndarray:
        """The running mean loss of each stitch, in ``ids`` order; NaN for one not trained yet."""
        sums, counts = self.running
        return np.divide(sums, counts, out=np.full(len(self.ids), np.nan), where=counts > 0)

    def seen(self) -> bool:
        """Whether a finished epoch trained any stitch."""
        return bool(self.running[1].any())

    def state(self) -> dict[str, Any]:
        """Plain lists for the checkpoint (the local sums are gathered into ``epoch`` before it is taken)."""
        return {"ids": list(self.ids), "epoch": self.epoch.tolist(), "running": self.running.tolist()}

    def load(self, state: dict[str, Any]) -> None:
        """Take a checkpoint's sums, if they are of these stitches (else keep the fresh zeros)."""
        if state and [int(i) for i in state.get("ids", [])] == self.ids:
            self.epoch = np.asarray(state["epoch"], dtype=np.float64).reshape(2, len(self.ids))
            self.running = np.asarray(state["running"], dtype=np.float64).reshape(2, len(self.ids))
