"""``python -m orchestrator.serve CATALOG``: one trial's supernet served on Ray Serve, every stitch of its
front switchable per request or by a latency SLO.

Usage::

    python -m orchestrator.serve CATALOG [--sweep S] [--trial T] [--checkpoint URI]
        [--stitches front|all|ID,ID,...] [--policy fixed|budget|slo] [--slo-ms MS]
        [--replicas N] [--cpus-per-replica C] [--gpus-per-replica G]
        [--max-batch-size B] [--batch-wait-ms W] [--host H] [--port P] [--name APP]
        [--address ADDR [--detach]] [--write-config FILE]

Everything that can be checked is checked before Ray starts: the catalog and the trial's rows, the
stitches asked for, the checkpoint (where export would read it, readable, holding this trial's
stitches), the port, the CPUs and GPUs the replicas ask for. A mistake is one ``error:`` paragraph
and exit 2. ``--write-config FILE`` writes the Serve config of the same application (for ``serve run``,
``serve deploy`` or a KubeRay RayService) and exits without starting anything.

Console: a start line (stitches, policy, memory, URL), the replicas' latency measurement, then one
line every 10 s while traffic flows (rate, stitch mix, p99, SLO misses). Ctrl-C shuts the application
down and exits 130.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from orchestrator.catalog import catalog_warnings_to_stderr
from orchestrator.cli import ArgumentParser, cli, format_flops, shared_flags
from orchestrator.serve.policy import POLICIES
from orchestrator.serve.source import settings_from_catalog
from orchestrator.serve.stats import merge_stats
from orchestrator.storage import atomic_write
from snnet import SNNetError

PROG = "python -m orchestrator.serve"
APP_IMPORT_PATH = "orchestrator.serve.app:build_app"
DEPLOYMENT = "StitchServer"
STATS_EVERY_S = 10.0

__all__ = ["build_parser", "main", "resolve", "serve_config"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Serve one trial's stitched supernet on Ray Serve: every stitch of its Pareto front (or those "
                    "named) from one set of weights, chosen per request (stitch id or budget) or by a latency SLO.",
        parents=[shared_flags("sweep", "address", options={"sweep": {"metavar": "S"}, "address": {"metavar": "ADDR"}},
                              helps={"sweep": "only rows of this sweep",
                                     "address": "deploy into the Ray cluster at this address"})])
    p.add_argument("catalog", metavar="CATALOG", help="catalog folder or URI (s3://, gs://)")
    p.add_argument("--trial", metavar="T", help="the trial to serve (optional when the selection holds one trial)")
    p.add_argument("--checkpoint", metavar="URI",
                   help="read the supernet from this checkpoint folder instead of the rows' (as export does)")
    p.add_argument("--stitches", default="front", metavar="front|all|ID,ID,...",
                   help="the stitches offered: the trial's Pareto front (default), all, or a list of ids")
    p.add_argument("--policy", choices=POLICIES,
                   help="fixed: one stitch; budget: best top-1 within each request's budget; slo: the most accurate "
                        "stitch that keeps the queue within --slo-ms (default: slo with --slo-ms, fixed with one "
                        "stitch, else budget)")
    p.add_argument("--slo-ms", type=float, metavar="MS", help="latency objective per request, in milliseconds")
    p.add_argument("--replicas", type=int, default=1, metavar="N", help="replicas (default 1)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0, metavar="C", help="CPUs per replica (default 1)")
    p.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G", help="GPUs per replica (default 0)")
    p.add_argument("--max-batch-size", type=int, default=8, metavar="B", help="images per batch (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="W",
                   help="how long a partial batch waits for more requests (default 5)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address the HTTP proxy listens on (default 127.0.0.1: this machine only; the "
                        "unspecified IPv4 or IPv6 address listens on every interface: put authentication in front)")
    p.add_argument("--port", type=int, default=8000, metavar="P",
                   help="HTTP port (default 8000; with --address, where Serve already runs, its own port stays)")
    p.add_argument("--name", default="snnet", metavar="APP", help="Serve application name (default snnet)")
    p.add_argument("--detach", action="store_true", help="with --address: deploy, print the URL and exit")
    p.add_argument("--write-config", metavar="FILE",
                   help="write the Serve config (serve run / serve deploy / RayService) and exit")
    return p


# ---------------------------------------------------------------------------------------------
# checks before Ray
# ---------------------------------------------------------------------------------------------


def _check_numbers(args: argparse.Namespace) -> None:
    problems = []
    if args.replicas < 1:
        problems.append(f"--replicas must be >= 1, got {args.replicas}")
    if not (args.cpus_per_replica > 0 and math.isfinite(args.cpus_per_replica)):
        problems.append(f"--cpus-per-replica must be > 0, got {args.cpus_per_replica:g}")
    if not (args.gpus_per_replica >= 0 and math.isfinite(args.gpus_per_replica)):
        problems.append(f"--gpus-per-replica must be >= 0, got {args.gpus_per_replica:g}")
    if args.max_batch_size < 1:
        problems.append(f"--max-batch-size must be >= 1, got {args.max_batch_size}")
    if not (args.batch_wait_ms >= 0 and math.isfinite(args.batch_wait_ms)):
        problems.append(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms:g}")
    if args.slo_ms is not None and not (args.slo_ms > 0 and math.isfinite(args.slo_ms)):
        problems.append(f"--slo-ms must be a number of milliseconds > 0, got {args.slo_ms:g}")
    if not 1 <= args.port <= 65535:
        problems.append(f"--port must be 1..65535, got {args.port}")
    if args.detach and not args.address:
        problems.append("--detach needs --address (a local Serve ends with this command)")
    if problems:
        raise SNNetError("; ".join(problems) + ".")


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise SNNetError(f"Cannot listen on {host}:{port} ({e.strerror or e}): another program holds the port, "
                             f"or the host is not this machine's. Choose another --port (or stop the other "
                             "server).") from None


def _check_local_resources(args: argparse.Namespace) -> None:
    cpus = os.cpu_count() or 1
    need = args.replicas * args.cpus_per_replica
    if need > cpus:
        raise SNNetError(f"{args.replicas} replica(s) x {args.cpus_per_replica:g} CPUs = {need:g} CPUs, and this "
                         f"machine has {cpus}; lower --replicas or --cpus-per-replica, or deploy into a cluster "
                         "with --address.")
    if args.gpus_per_replica:
        gpus = torch.cuda.device_count()
        if args.replicas * args.gpus_per_replica > gpus:
            raise SNNetError(f"{args.replicas} replica(s) x {args.gpus_per_replica:g} GPUs asked for, and this "
                             f"machine has {gpus} CUDA device(s); drop --gpus-per-replica or deploy with --address.")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """The checked :class:`~orchestrator.serve.replica.ServeSettings` (as a dict) of a command line."""
    _check_numbers(args)
    if args.write_config:
        _check_config_path(args.write_config)
    return settings_from_catalog(
        args.catalog, sweep=args.sweep, trial=args.trial, stitches=args.stitches, checkpoint=args.checkpoint,
        policy=args.policy, slo_ms=args.slo_ms, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
        device="cuda" if args.gpus_per_replica else "cpu", read_checkpoint=True).to_dict()


# ---------------------------------------------------------------------------------------------
# the Serve config
# ---------------------------------------------------------------------------------------------


def _check_config_path(path: str) -> None:
    folder = Path(os.path.abspath(path)).parent
    if Path(path).is_dir():
        raise SNNetError(f"--write-config {path!r} is a folder; name a .yaml file.")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise SNNetError(f"--write-config {path!r}: the folder {str(folder)!r} does not exist or is not writable.")


def serve_config(settings: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The Serve config (``ServeDeploySchema``) of the application: ``serve deploy`` / ``serve run`` read it,
    a KubeRay RayService embeds it as ``serveConfigV2``."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": args.host, "port": args.port},
        "applications": [{
            "name": args.name,
            "route_prefix": "/",
            "import_path": APP_IMPORT_PATH,
            "args": settings,
            "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
            "deployments": [{
                "name": DEPLOYMENT,
                "num_replicas": args.replicas,
                "ray_actor_options": {"num_cpus": args.cpus_per_replica, "num_gpus": args.gpus_per_replica},
            }],
        }],
    }


def _write_config(path: str, config: dict[str, Any]) -> None:
    header = (f"# Ray Serve config written by `{PROG}`: serve deploy {os.path.basename(path)} (or serve run), or\n"
              "# embed `applications` in a KubeRay RayService's serveConfigV2 (cluster/kuberay-rayservice.yaml).\n"
              "# Every node must import orchestrator (install the project in the image or a runtime_env) and\n"
              "# reach args.checkpoint (a URI, or a path on a shared file system).\n")
    text = header + yaml.safe_dump(config, sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()))


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def _unspecified(host: str) -> bool:
    """Whether ``host`` is the any-interface address (then the URL printed is this machine's loopback)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _start_line(info: dict[str, Any], url: str, replicas: int) -> str:
    ids = ", ".join(str(s["stitch"]) for s in info["stitches"])
    slo = f" (SLO {info['slo_ms']:g} ms)" if info["slo_ms"] else ""
    rss = max(r["rss_bytes"] for r in info["replicas"]) / 2**20
    return (f"serve: {len(info['stitches'])} stitches [{ids}] of trial {info['source']['trial']} from one supernet, "
            f"policy {info['policy']}{slo}, {replicas} replica(s) holding {info['model_bytes'] / 2**20:.1f} MB of "
            f"weights each (resident {rss:.0f} MB), at {url} (GET {url}stitches, GET {url}stats)")


def _profile_line(info: dict[str, Any]) -> str:
    parts = []
    for s in info["stitches"]:
        lat = s.get("latency_ms_by_batch") or {}
        one = lat.get("1")
        parts.append(f"{s['stitch']}:{one:.3g}" if one is not None else f"{s['stitch']}:?")
    return f"serve: measured latency at batch 1 (ms), per stitch: {' '.join(parts)}"


def _traffic_line(stats: dict[str, Any], previous: int, window_s: float) -> str:
    new = stats["requests"] - previous
    mix = sorted(stats["stitches"].items(), key=lambda kv: -kv[1]["requests"])
    total = max(1, stats["requests"])
    shown = " ".join(f"{sid}:{100 * v['requests'] / total:.0f}%" for sid, v in mix[:6])
    slo = (f", SLO misses {stats['slo_misses']} ({100 * stats['slo_misses'] / total:.1f}%)"
           if stats["slo_ms"] else "")
    p99 = f"{stats['p99_ms']:.1f} ms" if stats["p99_ms"] is not None else "-"
    return (f"serve: {new / window_s:.1f} req/s, {stats['requests']} answered, mix {shown}, p99 {p99}{slo}, "
            f"{stats['switches']} switches, {sum(stats['errors'].values())} rejected")


def _run(settings: dict[str, Any], args: argparse.Namespace) -> int:
    # Ray (and the application, which imports Ray Serve) load only here, once everything was checked: a mistake,
    # or --write-config, is answered without Ray's seconds of import
    import ray
    from ray import serve
    from ray.serve.config import HTTPOptions

    from orchestrator.serve.app import StitchServer
    from orchestrator.train.cluster import ensure_ray

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # no INFO line per deployment step
    started_ray = not ray.is_initialized()
    ensure_ray(args.address)  # a local instance of its own, or the cluster (an error paragraph if it fails)
    if args.address:
        free = ray.cluster_resources()
        need = {"CPU": args.replicas * args.cpus_per_replica, "GPU": args.replicas * args.gpus_per_replica}
        short = [f"{k} {v:g} (the cluster has {free.get(k, 0):g})" for k, v in need.items() if v > free.get(k, 0)]
        if short:
            raise SNNetError(f"The replicas ask for more than the cluster at {args.address} holds: {', '.join(short)}.")
    deployed = False
    try:
        serve.start(http_options=HTTPOptions(host=args.host, port=args.port),
                    logging_config={"enable_access_log": False, "log_level": "WARNING"})
        app = StitchServer.options(
            num_replicas=args.replicas,
            ray_actor_options={"num_cpus": args.cpus_per_replica, "num_gpus": args.gpus_per_replica},
        ).bind(settings)
        print(f"serve: starting {args.replicas} replica(s) of trial {settings['trial']} "
              f"({len(settings['stitches'])} stitches; loading the checkpoint and measuring latencies)",
              file=sys.stderr, flush=True)
        handle = serve.run(app, name=args.name, route_prefix="/",
                           logging_config={"enable_access_log": False, "log_level": "WARNING"})
        deployed = True
        info = handle.options(method_name="describe_all").remote().result()
        host = "127.0.0.1" if _unspecified(args.host) else args.host
        url = f"http://{host}:{args.port}/"
        print(_start_line(info, url, args.replicas), flush=True)
        print(_profile_line(info), flush=True)
        if args.detach:
            deployed = False  # left running on purpose
            print(f"serve: deployed into {args.address}; `serve shutdown` or `serve delete {args.name}` stops it")
            return 0
        previous, last = 0, time.time()
        while True:
            time.sleep(STATS_EVERY_S)
            now = time.time()
            try:
                snapshots = handle.broadcast("snapshot").results()
            except Exception:  # noqa: BLE001 - a replica restarting: skip this line, try again in 10 s
                continue
            stats = merge_stats(snapshots, since=last)
            if stats["requests"] > previous:
                print(_traffic_line(stats, previous, now - last), flush=True)
            previous, last = stats["requests"], now
    except KeyboardInterrupt:
        print("serve: shutting down", file=sys.stderr, flush=True)
        raise
    finally:
        if deployed:
            try:
                if started_ray and not args.address:
                    serve.shutdown()
                else:
                    serve.delete(args.name)
            finally:
                if started_ray:
                    ray.shutdown()


@cli()
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with catalog_warnings_to_stderr():
        settings = resolve(args)
    if args.address and not args.write_config:
        from orchestrator.train.cluster import check_reachable

        check_reachable(args.address)  # seconds, not minutes, before anything else waits on it
    if not args.address and not args.write_config:
        _check_port(args.host, args.port)
        _check_local_resources(args)
    n = len(settings["stitches"])
    flops = [s["flops"] for s in settings["stitches"]]
    print(f"serve: trial {settings['trial']} (sweep {settings['sweep']}), {n} stitch(es) from "
          f"{format_flops(min(flops))} to {format_flops(max(flops))} FLOPs, policy {settings['policy']}, "
          f"checkpoint {settings['checkpoint']}", file=sys.stderr, flush=True)
    if args.write_config:
        _write_config(args.write_config, serve_config(settings, args))
        print(f"wrote {args.write_config}: deploy it with `serve deploy {args.write_config}` (a running cluster) or "
              f"`serve run {args.write_config}`; a KubeRay RayService embeds its applications "
              "(cluster/kuberay-rayservice.yaml)")
        return 0
    return _run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
