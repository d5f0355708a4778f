"""``python -m benchmarks [NAME ...]``: run all or the named benchmarks, print ``name: value`` lines."""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback

from . import BENCHMARKS
from ._common import log, machine_info

USAGE = f"usage: python -m benchmarks [NAME ...]   (names: {', '.join(BENCHMARKS)})"


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("\n", " ")


def _items(result):
    return result.items() if isinstance(result, dict) else result


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    unknown = [a for a in argv if a not in BENCHMARKS]
    if unknown:
        print(f"benchmarks: unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    names = [n for n in BENCHMARKS if n in argv] if argv else list(BENCHMARKS)

    # Results go to the real stdout; everything else any code (or a child process) writes to
    # fd 1 goes to stderr, so stdout holds only `name: value` lines.
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def emit(name: str, value) -> None:
        out.write(f"{name}: {_format(value)}\n")
        out.flush()

    status = 0
    for name, value in machine_info():
        emit(name, value)
    for bench in names:
        log(f"{bench}: starting")
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{bench}")
            for key, value in _items(module.run()):
                emit(key, value)
        except Exception as e:  # noqa: BLE001 - report and go on with the other benchmarks
            traceback.print_exc()
            emit(f"{bench}_error", f"{type(e).__name__}: {e}".splitlines()[0])
            status = 1
        log(f"{bench}: done in {time.perf_counter() - started:.1f}s")
    out.close()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
