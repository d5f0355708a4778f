"""Streaming least squares against the pseudo-inverse of the full data matrix.

A stitching layer is initialised with ``M = [A, 1]^+ B`` (SN-Net, Sec. 3.2), ``A`` the front
anchor's activations at the cut (rows: tokens), ``B`` the back anchor's. The project never
holds ``A``: :class:`snnet.LeastSquaresAccumulator` sums ``[A,1]^T [A,1]`` and ``[A,1]^T B``
batch by batch in float64 and solves once (eigen-decomposition of the Gram matrix).
The reference, :func:`snnet.least_squares`, takes the pseudo-inverse of the whole ``[A, 1]``
(``torch.linalg.pinv``, an SVD) in float64.

Data: DeiT-S -> DeiT-B widths (384 -> 768), ``rows`` activation rows (1k and 10k tokens;
real activations would be 197 tokens per image), correlated float32 inputs
``A = Z C + o`` and targets ``B = A W + b + noise``, generated batch by batch (512 rows)
from seeded generators, so the streaming method sees the rows exactly as a data loader
would hand them over, and the reference gets the same rows concatenated.

Each (method, size) runs in a **fresh Python subprocess** (one thread), which:
imports torch, runs a small matmul, pinv and eigh (loading LAPACK and the BLAS's lazily
allocated buffers), resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), records the baseline peak RSS (``VmHWM`` in
``/proc/self/status``), then does the work. *Time*: the accumulation
and the solve (streaming) or the concatenation and the pseudo-inverse solve (reference),
data generation excluded. *Peak memory*: growth of the peak resident set size over the
baseline (psutil is not installed; tracemalloc does not see torch's allocations;
``ru_maxrss`` is not used because a child inherits the parent's RSS at fork in it); it
includes the data the method must hold at once (one batch for streaming, all rows for the
pseudo-inverse), with the granularity of the allocator. The analytic float64 bytes each
method's state needs are printed alongside. ``ls_init_max_abs_diff`` is the largest
absolute difference between the two solutions (weight and bias) over both sizes.

Settings: ``SNNET_BENCH_LS_ROWS`` (comma list, default ``1000,10000``; names use ``1k``,
``10k``), ``SNNET_BENCH_LS_DIMS`` (``384,768``); ``SNNET_BENCH_TINY=1``: 32 -> 64 wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from ._common import log, tiny

__all__ = ["run"]

BATCH = 512

_CHILD = r"""
import json, re, resource, sys, time
import torch
def peak_kb():
    # VmHWM: this process's own peak RSS. ru_maxrss would also count the parent's RSS at fork.
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass
torch.set_num_threads(1)
method, rows, d_in, d_out, batch, out = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                         int(sys.argv[5]), sys.argv[6])
from snnet.least_squares import LeastSquaresAccumulator, least_squares
for dtype in (torch.float32, torch.float64):  # load LAPACK and the BLAS's lazily allocated GEMM buffers
    w = torch.randn(600, 600, dtype=dtype); w @ w; w.T @ w; torch.linalg.pinv(w[:, :300]); torch.linalg.eigh(w.T @ w)
del w
g = torch.Generator().manual_seed(0)
mix = torch.randn(d_in, d_in, generator=g) / d_in ** 0.5 + torch.eye(d_in)
offset = torch.randn(d_in, generator=g)
weight = torch.randn(d_in, d_out, generator=g) / d_in ** 0.5
bias = torch.randn(d_out, generator=g)
def batch_at(i):
    gi = torch.Generator().manual_seed(1000 + i)
    n = min(batch, rows - i * batch)
    a = torch.randn(n, d_in, generator=gi) @ mix + offset
    return a, a @ weight + bias + 0.1 * torch.randn(n, d_out, generator=gi)
n_batches = (rows + batch - 1) // batch
reset_peak()
base = peak_kb()
seconds = 0.0
if method == "stream":
    acc = LeastSquaresAccumulator(d_in, d_out)
    for i in range(n_batches):
        a, b = batch_at(i)
        t = time.perf_counter(); acc.update(a, b); seconds += time.perf_counter() - t
    t = time.perf_counter(); w, c = acc.solve(); seconds += time.perf_counter() - t
else:
    parts = [batch_at(i) for i in range(n_batches)]
    t = time.perf_counter()
    a = torch.cat([p[0] for p in parts]); b = torch.cat([p[1] for p in parts])
    w, c = least_squares(a, b)
    seconds += time.perf_counter() - t
peak = peak_kb()
torch.save({"weight": w, "bias": c}, out)
print(json.dumps({"seconds": seconds, "peak_kb": peak - base}))
"""


def _label(rows: int) -> str:
    return f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


def _child(method: str, rows: int, d_in: int, d_out: int, out: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, method, str(rows), str(d_in), str(d_out), str(BATCH), out],
        capture_output=True, text=True, env=env, timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ls_init {method} at {rows} rows failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _analytic_mb(method: str, rows: int, d_in: int, d_out: int) -> float:
    """float64 bytes a method must hold: streaming state + one batch, or all rows + pinv + SVD."""
    k = d_in + 1
    if method == "stream":
        elems = k * k + k * d_out + min(BATCH, rows) * (k + d_out)
    else:  # [A,1] and B, pinv (k x rows), SVD factors U (rows x k), V (k x k)
        elems = rows * (k + d_out) + 2 * rows * k + k * k
    return elems * 8 / 2**20


def run() -> dict[str, float | int | str]:
    import torch

    rows_list = [int(r) for r in os.environ.get("SNNET_BENCH_LS_ROWS", "1000,10000").split(",") if r.strip()]
    raw_dims = os.environ.get("SNNET_BENCH_LS_DIMS", "32,64" if tiny() else "384,768")
    d_in, d_out = (int(d) for d in raw_dims.split(","))
    out: dict[str, float | int | str] = {"ls_init_dims": f"{d_in}->{d_out}", "ls_init_batch_rows": BATCH}
    max_diff = 0.0
    with tempfile.TemporaryDirectory(prefix="snnet-bench-") as tmp:
        for rows in rows_list:
            solutions = {}
            for method in ("stream", "pinv"):
                path = os.path.join(tmp, f"{method}-{rows}.pt")
                result = _child(method, rows, d_in, d_out, path)
                solutions[method] = torch.load(path, weights_only=True)
                label = _label(rows)
                out[f"ls_init_{method}_{label}_s"] = round(result["seconds"], 4)
                out[f"ls_init_{method}_{label}_peak_mb"] = round(result["peak_kb"] / 1024, 1)
                out[f"ls_init_{method}_{label}_analytic_mb"] = round(_analytic_mb(method, rows, d_in, d_out), 1)
                log(f"ls_init: {method} {rows} rows x {d_in}->{d_out}: {result['seconds']:.3f}s, "
                    f"peak RSS +{result['peak_kb'] / 1024:.1f} MB")
            s, p = solutions["stream"], solutions["pinv"]
            diff = max((s["weight"] - p["weight"]).abs().max().item(), (s["bias"] - p["bias"]).abs().max().item())
            out[f"ls_init_max_abs_diff_{_label(rows)}"] = float(f"{diff:.3g}")
            max_diff = max(max_diff, diff)
    out["ls_init_max_abs_diff"] = float(f"{max_diff:.3g}")
    return out
