"""Least-squares initialisation of stitching layers by streaming normal equations.

SN-Net (Pan et al., CVPR 2023, Sec. 3.2) initialises a stitching layer with the
least-squares map ``M_o = A^+ B`` between the front anchor's activations ``A`` and the back
anchor's activations ``B`` at the cut, for the same inputs. With a bias term, ``A`` gains a
column of ones.

:class:`LeastSquaresAccumulator` never holds ``A`` or ``B``: it accumulates the Gram matrix
``G = A^T A``, the cross term ``H = A^T B`` and ``||B||^2`` in float64 over any number of
batches at constant memory. The solution ``M = G^+ H`` equals ``A^+ B`` (since
``A^+ = (A^T A)^+ A^T``), and the fit's ``R^2 = 1 - ||A M - B||^2 / ||B||^2`` (the paper's
Definition 6.1) follows from the same sums. Because the state is a sum, accumulators from
several DDP ranks combine by summation (:meth:`LeastSquaresAccumulator.all_reduce_`).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["LeastSquaresAccumulator", "least_squares", "to_rows"]


def to_rows(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Flatten activations of ``layout`` into ``(samples, channels)`` rows."""
    if layout == "nchw":
        x = x.movedim(1, -1)
    return x.reshape(-1, x.shape[-1])


class LeastSquaresAccumulator:
    """Sufficient statistics of ``min_M ||[A, 1] M - B||^2`` accumulated batch by batch."""

    def __init__(self, in_dim: int, out_dim: int, *, device: torch.device | str = "cpu"):
        self.in_dim, self.out_dim = in_dim, out_dim
        self.gram = torch.zeros(in_dim + 1, in_dim + 1, dtype=torch.float64, device=device)
        self.cross = torch.zeros(in_dim + 1, out_dim, dtype=torch.float64, device=device)
        self.target_sq = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add rows ``a`` (``(n, in_dim)``) and their targets ``b`` (``(n, out_dim)``)."""
        if a.shape[0] != b.shape[0] or a.shape[1] != self.in_dim or b.shape[1] != self.out_dim:
            raise ValueError(
                f"expected a: (n, {self.in_dim}) and b: (n, {self.out_dim}) with the same n, "
                f"got a: {tuple(a.shape)}, b: {tuple(b.shape)}"
            )
        a = torch.cat([a.to(self.gram), a.new_ones(a.shape[0], 1).to(self.gram)], dim=1)
        b = b.to(self.gram)
        self.gram.addmm_(a.T, a)
        self.cross.addmm_(a.T, b)
        self.target_sq += b.square().sum()
        self.count += a.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        """The state as tensors whose element-wise sum across workers is the joint state."""
        return [self.gram, self.cross, self.target_sq, self.count]

    def merge_(self, other: LeastSquaresAccumulator) -> LeastSquaresAccumulator:
        for mine, theirs in zip(self.tensors(), other.tensors()):
            mine += theirs.to(mine)
        return self

    def all_reduce_(self, group=None) -> LeastSquaresAccumulator:
        """Sum the state over a ``torch.distributed`` group (one collective call)."""
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in self.tensors()])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        offset = 0
        for t in self.tensors():
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        return self

    def solve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The minimum-norm least-squares ``(weight (out, in), bias (out,))`` in float64."""
        if self.count.item() == 0:
            raise ValueError("no samples were accumulated")
        solution = _psd_pinv(self.gram) @ self.cross
        return solution[:-1].T.contiguous(), solution[-1].clone()

    def r2(self, weight: torch.Tensor, bias: torch.Tensor) -> float:
        """``1 - ||[A, 1] M - B||^2 / ||B||^2`` for ``M = [weight^T; bias]`` on the accumulated data."""
        m = torch.cat([weight.T.to(self.gram), bias.to(self.gram)[None]], dim=0)
        residual = (m * (self.gram @ m)).sum() - 2 * (m * self.cross).sum() + self.target_sq
        denom = self.target_sq.item()
        return 1.0 - max(residual.item(), 0.0) / denom if denom > 0 else float("nan")


@contextlib.contextmanager
def _one_thread():
    # LAPACK's threaded eigensolver slows down by orders of magnitude when the cores are
    # busy (DDP workers, data loaders); these matrices are small enough for one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _psd_pinv(gram: torch.Tensor) -> torch.Tensor:
    """Pseudo-inverse of a symmetric PSD matrix, zeroing eigenvalues at rounding-noise level."""
    if gram.device.type == "cpu":
        with _one_thread():
            eigvals, eigvecs = torch.linalg.eigh(gram)
    else:
        eigvals, eigvecs = torch.linalg.eigh(gram)
    cutoff = eigvals.abs().max() * gram.shape[0] * torch.finfo(gram.dtype).eps
    inv = torch.where(eigvals > cutoff, 1.0 / eigvals, torch.zeros_like(eigvals))
    return (eigvecs * inv) @ eigvecs.T


def least_squares(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference solution ``[A, 1]^+ B`` by the pseudo-inverse of the full data matrix."""
    a = torch.cat([a.double(), a.new_ones(a.shape[0], 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.pinv(a) @ b.double()
    return solution[:-1].T.contiguous(), solution[-1].clone()
