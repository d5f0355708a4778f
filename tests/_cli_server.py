"""A preloaded process that runs ``python -m MODULE ARGS`` command lines in forked children.

Started once per test process by ``tests/conftest.py``'s ``cli_runner`` fixture. Importing torch, timm and
Ray costs about 7 s of CPU per process on the test machines; this server pays it once, then forks a
child per command line: the child is a real process (its own exit status, stdout and stderr, working
folder and environment, nothing shared with the tests' process), started in milliseconds.

Protocol: one JSON request per line on stdin (``module``, ``args``, ``cwd``, ``env``, ``timeout``,
``no_ray``), one JSON reply per line on stdout (``code``, ``out``, ``err``, ``seconds``); requests run
one at a time. ``no_ray`` makes any ``ray.init`` in the child print ``RAY-INIT-CALLED`` on stderr and
exit 99 (test_bad_input.py's guard). Nothing is preloaded that a command line must be seen not to
import (the tests of that run real subprocesses).
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback

PRELOAD = ("torch", "timm", "ray", "ray.train", "ray.tune", "pyarrow.parquet", "snnet", "orchestrator.train.launch",
           "orchestrator.data.demo_anchors", "orchestrator.sweep.driver", "orchestrator.train", "orchestrator.export",
           "orchestrator.catalog", "search_spaces")
GUARD_MARK, GUARD_EXIT = "RAY-INIT-CALLED", 99


def _no_ray(*args, **kwargs):
    sys.stdout.flush()
    sys.stderr.write(GUARD_MARK + "\n")
    sys.stderr.flush()
    os._exit(GUARD_EXIT)


def _child(request: dict, out_path: str, err_path: str) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if request.get("no_ray"):
            import ray
            import ray._private.worker

            ray.init = ray._private.worker.init = _no_ray
        sys.argv = [request["module"], *request["args"]]
        sys.path[0] = os.getcwd()  # as `python -m` does
        for name in (request["module"], request["module"] + ".__main__"):
            sys.modules.pop(name, None)  # run fresh as __main__, as `python -m` does (no runpy warning)
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - as the interpreter does: the traceback on stderr, exit 1
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run(request: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="snnet-cli-") as folder:
        out_path, err_path = os.path.join(folder, "out"), os.path.join(folder, "err")
        start = time.perf_counter()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, out_path, err_path)
        deadline = start + float(request.get("timeout") or 300)
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
            elif time.perf_counter() > deadline:
                os.kill(pid, signal.SIGKILL)
                status = os.waitpid(pid, 0)[1]
            else:
                time.sleep(0.005)
        code = os.waitstatus_to_exitcode(status)

        def read(path: str) -> str:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    return f.read()
            except FileNotFoundError:
                return ""

        return {"code": code, "out": read(out_path), "err": read(err_path),
                "seconds": time.perf_counter() - start}


def main() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a preloaded module prints later cannot corrupt the replies
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in sys.stdin:
        if line.strip():
            replies.write(json.dumps(_run(json.loads(line))) + "\n")
            replies.flush()


if __name__ == "__main__":
    main()
