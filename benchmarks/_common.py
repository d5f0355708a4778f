"""Helpers shared by the benchmarks: settings from the environment, logging, machine facts."""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from collections.abc import Iterator

DEIT_TSB: tuple[str, ...] = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")


def log(message: str) -> None:
    """Progress to stderr (stdout carries only ``name: value`` lines)."""
    print(f"[benchmarks] {message}", file=sys.stderr, flush=True)


def tiny() -> bool:
    """``SNNET_BENCH_TINY=1``: every benchmark at a smoke-test size (figures not meaningful)."""
    return os.environ.get("SNNET_BENCH_TINY", "").strip() not in ("", "0")


def env_int(name: str, default: int, tiny_default: int | None = None) -> int:
    """``$name`` as an int, else ``tiny_default`` under ``SNNET_BENCH_TINY``, else ``default``."""
    raw = os.environ.get(name, "").strip()
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise SystemExit(f"benchmarks: {name} must be an integer, got {raw!r}") from None
    return tiny_default if tiny() and tiny_default is not None else default


def threads() -> int:
    """Intra-op threads for in-process benchmarks: ``$SNNET_BENCH_THREADS``, default 1.

    One thread by default: where other jobs share the cores, a second OpenMP thread often
    waits, spinning, for a core another process holds, and a run then takes several times
    as long at random (seen here: the same fvcore trace in 0.4 s or 3-4 s). One thread gives
    steady figures; the ratios the benchmarks report compare like with like either way.
    """
    return env_int("SNNET_BENCH_THREADS", 1)


class Timer:
    """Accumulating timer: ``with timer: ...`` adds wall-clock time to ``timer.seconds`` and
    this process's CPU time (all its threads) to ``timer.cpu_seconds``.

    On a machine whose cores other jobs share, wall-clock time also counts the time this
    process waited for a core; CPU time does not (though threads that spin still count).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def __enter__(self) -> Timer:
        self._start, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._start
        self.cpu_seconds += time.process_time() - self._cpu


@functools.lru_cache(maxsize=4)
def build_anchors(names: tuple[str, ...], img_size: int):
    """Anchors with random weights (seeded), built once per process and shared by benchmarks."""
    import torch

    from snnet import create_anchor

    torch.manual_seed(0)
    log(f"building anchors {', '.join(names)} at {img_size}x{img_size} (random weights)")
    return tuple(create_anchor(n, img_size=img_size) for n in names)


@functools.lru_cache(maxsize=4)
def space_of(names: tuple[str, ...], img_size: int):
    """The stitch space (k=2, s=1, nearest, fast-to-slow) of ``names``, profiled once per process."""
    from snnet import StitchSpace, profile_anchor

    return StitchSpace([profile_anchor(a) for a in build_anchors(names, img_size)])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Iterator[tuple[str, object]]:
    import timm
    import torch

    yield "machine_cpu", _cpu_model()
    yield "machine_cores", os.cpu_count() or 0
    try:
        yield "machine_loadavg_1m", round(os.getloadavg()[0], 2)
    except OSError:
        pass
    yield "machine_python", platform.python_version()
    yield "machine_torch", torch.__version__
    yield "machine_timm", timm.__version__
    yield "machine_torch_threads", threads()
    yield "machine_cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
