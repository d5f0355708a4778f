"""Performance measurements of the project, printed as ``name: value`` lines.

``python -m benchmarks [NAME ...]`` (from the repository root) runs all benchmarks, or the
named ones, and prints machine information (``machine_*`` lines) followed by each
benchmark's figures on stdout; progress goes to stderr. Every benchmark is a module here
with a ``run()`` returning a ``dict`` (or yielding ``(name, value)`` pairs) of figures:

``space_flops``    FLOPs/params of all 71 DeiT-Ti/S/B stitches: per-anchor profiles vs one
                   fvcore trace per stitch (speedup, mismatches).
``ddp_balance``    expected and measured DDP work balance of every sampling rule.
``step_overhead``  forward+backward of the supernet fixed at an anchor vs the plain timm model.
``ls_init``        streaming least squares vs the pseudo-inverse of the full matrix.
``gpu_train``      supernet vs plain DeiT-B training throughput (CUDA only).
``serve_slo``      one served supernet under a bursty load: the ``slo`` policy against fixed stitches
                   (SLO attainment, mean top-1, p99, memory); starts a local Ray Serve (minutes).
``stitch_ranking`` init scores (LS R^2, CKA, KL, top-1 at init) and baselines against the demo's
                   top-1 after joint training and its residual over the FLOPs interpolation
                   (Spearman, Kendall, bootstrap intervals; trains 6 demo supernets, minutes).

Sizes can be shrunk with environment variables (see each module and ``RESULTS.md``);
``SNNET_BENCH_TINY=1`` switches every benchmark to tiny settings for smoke tests.
The latest full run is kept in ``benchmarks/RESULTS.md``.
"""

BENCHMARKS: tuple[str, ...] = ("space_flops", "ddp_balance", "step_overhead", "ls_init", "gpu_train", "serve_slo",
                               "stitch_ranking")

__all__ = ["BENCHMARKS"]
