"""Gather the wheels a bare, offline GPU machine needs to run ``benchmarks/gpu_check.sh``.

The lent GPU machines have PyTorch, timm, pyarrow, pandas and most of the scientific stack in
their image (Python 3.12), but no Ray, fvcore or optuna, and no network. This script, run
where a package registry is reachable, downloads the missing distributions as wheels for the
target Python into a folder (default ``.whl/``, which ``.gitignore`` already ignores), builds
pure-Python wheels for the two that PyPI ships only as sources (fvcore, iopath), and trims
Ray's wheel (79 MB) below the 64 MiB a call may carry: it drops the Java jar, the dashboard's
web front end and the RLlib / Serve / LLM libraries, none of which Ray Train and Tune import,
and stores what is left as ``ray-stripped.zip`` (a wheel's contents, under a name pip skips).
``gpu_check.sh`` installs the wheels with ``pip install --no-index --no-deps --target`` and
unpacks the zip beside them, keeping the files' modes (Ray's ``raylet`` and ``gcs_server``
are executables).

Usage (from the repository root)::

    python benchmarks/gpu_wheels.py            # -> .whl/ for CPython 3.12, manylinux x86-64
    python benchmarks/gpu_wheels.py --demo-cache --no-wheels   # -> .whl/demo-cache/ only
    python benchmarks/gpu_wheels.py --python-version 3.11 --out /tmp/w311

Only the registry's ordinary client (pip) is used; the versions are pinned below to those
this project is tested with.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# name==version of every distribution the offline machine lacks (binary where PyPI has wheels)
BINARY = [
    "ray==2.60.0",
    "timm==1.0.31",  # the image has a timm; carry ours so that both machines run the same code
    "yacs==0.1.8",
    "termcolor==3.3.0",
    "tensorboardx==2.6.5",
    "pydantic==2.13.4",  # pydantic pins its pydantic-core exactly: keep the two in step
    "pydantic-core==2.46.4",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
]
SOURCE_ONLY = ["fvcore==0.1.5.post20221221", "iopath==0.1.10"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
# prefixes of files dropped from Ray's wheel (nothing Ray Train / Tune / core imports)
RAY_DROP = ("ray/jars/", "ray/dashboard/client/build/", "ray/rllib/", "ray/serve/", "ray/llm/",
            "ray/tests/")


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim_wheel(path: Path, drop: tuple[str, ...], dest: Path) -> tuple[int, int]:
    """Write the wheel at ``path`` to ``dest`` without the files under ``drop``, RECORD rewritten to match."""
    tmp = dest.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in src.infolist():
            if info.filename == record_name or info.filename.startswith(drop) or info.filename.endswith(".js.map"):
                continue
            data = src.read(info)
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            lines.append(_record_line(info.filename, data))
        lines.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(lines) + "\n")
    os.replace(tmp, dest)
    return path.stat().st_size, dest.stat().st_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".whl", help="folder for the wheels (default .whl)")
    p.add_argument("--python-version", default="3.12", help="target CPython (the GPU image has 3.12)")
    p.add_argument("--demo-cache", action="store_true",
                   help="also pretrain (or reuse) the demo's anchors into OUT/demo-cache, which gpu_check.sh "
                        "copies to $SNNET_CACHE so the GPU machine skips the pretraining")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheels (with --demo-cache)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.demo_cache:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from orchestrator.data.demo_anchors import demo_anchor_specs

        for spec in demo_anchor_specs(out / "demo-cache"):
            print(f"demo anchor: {spec.checkpoint}", file=sys.stderr)
    if args.no_wheels:
        return 0
    abi = "cp" + args.python_version.replace(".", "")
    platform_args = [a for plat in PLATFORMS for a in ("--platform", plat)]
    _pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", args.python_version,
         "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none", *platform_args,
         "-d", str(out), *BINARY)
    with tempfile.TemporaryDirectory() as build:
        _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), *SOURCE_ONLY,
             "--cache-dir", build)
    for ray in out.glob("ray-*.whl"):
        before, after = trim_wheel(ray, RAY_DROP, out / "ray-stripped.zip")
        ray.unlink()  # only one copy of Ray may travel
        print(f"{ray.name}: {before / 2**20:.1f} MiB -> ray-stripped.zip {after / 2**20:.1f} MiB", file=sys.stderr)
    files = list(out.glob("*.whl")) + list(out.glob("*.zip"))
    total = sum(f.stat().st_size for f in files)
    print(f"{len(files)} files in {out}: {total / 2**20:.1f} MiB", file=sys.stderr)
    if total > 60 * 2**20:
        print("warning: over 60 MiB; a device call carries 64 MiB with the working tree", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
