"""``python -m orchestrator.serve``: checks before Ray, the Serve config and the RayService manifest, a
replica's model (in-process), and one real Serve application on the shared local Ray cluster.

The unit tests' trial is made here without Ray, as ``tests/test_export.py`` makes its trials: the first
two demo anchors with random weights, a checkpoint folder in training's format and the trial's catalog
rows, with top-1s that rise with FLOPs and wiggle, so the Pareto front holds some stitches and not others.
A second trial of the same sweep (``t2``) makes ``--trial`` necessary. The integration test serves the
micro demo that ``orchestrator.train`` trained for ``tests/test_console.py`` (conftest's ``micro_console``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import orchestrator.data.demo_anchors  # noqa: F401 - registers the demo anchors with timm
from orchestrator.catalog import CatalogWriter, load, pareto_front
from orchestrator.data.demo_anchors import DEMO_ANCHORS
from orchestrator.serve import RequestError
from orchestrator.serve.__main__ import APP_IMPORT_PATH
from orchestrator.serve.replica import ServedModel, ServeSettings
from orchestrator.serve.source import settings_from_catalog
from orchestrator.train.config import TrainConfig
from orchestrator.train.launch import catalog_rows
from snnet import AnchorSpec, build_supernet

ROOT = Path(__file__).resolve().parents[1]
RAYSERVICE = ROOT / "cluster" / "kuberay-rayservice.yaml"


def _trial(root: Path, catalog: Path, trial: str, net, specs, seed: int) -> str:
    folder = root / "runs" / trial / "checkpoint_000001"
    folder.mkdir(parents=True)
    config = TrainConfig(anchors=specs, dataset="demo", sweep="demo", trial_id=trial)
    rng = random.Random(seed)
    top = max(s.flops for s in net.space)
    results = {str(s.stitch_id): [round(40 + 40 * s.flops / top + rng.uniform(-4, 4), 3), 95.0] for s in net.space}
    torch.save({"model": net.state_dict(), "optimizer": None, "scheduler": None, "step": 7, "epoch": 1, "r2": {},
                "evaluated": results, "train_config": config.model_dump(), "space": net.space.to_json()},
               folder / "state.pt")
    CatalogWriter(str(catalog), "demo").write_trial(trial, catalog_rows(config, net.space, results, {}, str(folder)))
    return str(folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    catalog = root / "catalog"
    torch.manual_seed(0)
    specs = [AnchorSpec(n) for n in DEMO_ANCHORS[:2]]
    net = build_supernet(specs).eval()
    checkpoint = _trial(root, catalog, "t1", net, specs, seed=1)
    other = _trial(root, catalog, "t2", net, specs, seed=2)
    rows = load(str(catalog), sweep="demo")
    rows = rows[rows["trial_id"] == "t1"]
    front = [int(i) for i in pareto_front(rows)["stitch_id"]]
    assert 2 < len(front) < len(rows), "the planted top-1s must give a front of some stitches, not all"
    return SimpleNamespace(root=root, catalog=str(catalog), net=net, checkpoint=checkpoint, other=other, rows=rows,
                           front=front)


def _serve(cli_runner, *args, **kwargs):
    return cli_runner.run("orchestrator.serve", *map(str, args), no_ray=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# before Ray: the command line, the Serve config, the RayService manifest
# ---------------------------------------------------------------------------------------------


def test_write_config_writes_a_serve_config_of_the_trials_front(world, cli_runner, tmp_path):
    from ray.serve.schema import ServeDeploySchema

    from orchestrator.serve.app import build_app

    out = tmp_path / "serve.yaml"
    done = _serve(cli_runner, world.catalog, "--trial", "t1", "--slo-ms", 40, "--replicas", 2, "--port", 8500,
                  "--write-config", out)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(out.read_text())
    schema = ServeDeploySchema.model_validate(config)  # what `serve deploy` and a RayService check
    app = schema.applications[0]
    assert app.import_path == APP_IMPORT_PATH and schema.http_options.port == 8500
    assert app.deployments[0].num_replicas == 2
    settings = ServeSettings.from_dict(app.args)
    assert [int(s["stitch_id"]) for s in settings.stitches] == world.front
    assert settings.policy == "slo" and settings.slo_ms == 40 and settings.trial == "t1"
    assert settings.checkpoint == os.path.abspath(world.checkpoint)
    assert type(build_app(app.args)).__name__ == "Application"  # the builder takes what was written
    assert "serve deploy" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--trial", "nope"], "has no trial 'nope'; its trials are: t1, t2"),
    ([], "holds 2 trials"),
    (["--trial", "t1", "--stitches", "0,999"], "has no stitch 999"),
    (["--trial", "t1", "--stitches", "a,b"], "--stitches takes front, all, or stitch ids"),
    (["--trial", "t1", "--policy", "fixed"], "--policy fixed serves exactly one stitch"),
    (["--trial", "t1", "--policy", "slo"], "--policy slo needs a latency objective: --slo-ms"),
    (["--trial", "t1", "--policy", "budget", "--slo-ms", "10"], "--slo-ms applies to --policy slo only"),
    (["--trial", "t1", "--replicas", "0", "--max-batch-size", "0"],
     "--replicas must be >= 1, got 0; --max-batch-size must be >= 1"),
    (["--trial", "t1", "--cpus-per-replica", "4096"], "CPUs, and this machine has"),
    (["--trial", "t1", "--detach"], "--detach needs --address"),
    (["--trial", "t1", "--sweep", "other"], "has no sweep 'other'"),
    (["--trial", "t1", "--address", "127.0.0.1:9"], "does not answer"),
])
def test_mistakes_are_one_paragraph_and_exit_2_before_ray(world, cli_runner, args, message):
    done = _serve(cli_runner, world.catalog, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("error:") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "RAY-INIT-CALLED" not in done.stderr + done.stdout


def test_a_busy_port_and_a_foreign_checkpoint_are_refused_before_ray(world, cli_runner, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = _serve(cli_runner, world.catalog, "--trial", "t1", "--port", busy.getsockname()[1])
    assert done.returncode == 2 and "Cannot listen on 127.0.0.1" in done.stderr, done.stderr
    done = _serve(cli_runner, world.catalog, "--trial", "t1", "--checkpoint", world.other)
    assert done.returncode == 2 and "belongs to another trial" in done.stderr, done.stderr
    # a row whose checkpoint lies outside the catalog's storage is refused, as export refuses it
    specs = [AnchorSpec(n) for n in DEMO_ANCHORS[:2]]
    _trial(tmp_path / "elsewhere", tmp_path / "storage" / "catalog", "t1", world.net, specs, seed=1)
    done = _serve(cli_runner, tmp_path / "storage" / "catalog")
    assert done.returncode == 2 and "lies outside" in done.stderr and "--checkpoint" in done.stderr, done.stderr


def test_the_rayservice_manifest_embeds_a_valid_serve_config_of_this_application():
    import ray
    from ray.serve.schema import ServeDeploySchema

    from orchestrator.serve.app import BUILDER_ARGS

    with open(RAYSERVICE) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    assert [d["kind"] for d in docs] == ["RayService"] and docs[0]["apiVersion"] == "ray.io/v1"
    spec = docs[0]["spec"]
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(spec["serveConfigV2"]))
    app = serve_config.applications[0]
    assert app.import_path == APP_IMPORT_PATH and app.route_prefix == "/"
    assert set(app.args) <= set(BUILDER_ARGS) and "catalog" in app.args
    assert app.args["policy"] in ("fixed", "budget", "slo")
    assert [d.name for d in app.deployments] == ["StitchServer"]
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__ and cluster["authOptions"]["mode"] == "token"
    images = [c["image"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"]]
    assert all(image.startswith(f"rayproject/ray:{ray.__version__}-") for image in images), images
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for g in cluster["workerGroupSpecs"]
            for c in g["template"]["spec"]["containers"]]
    assert all(gpus) and app.deployments[0].ray_actor_options.num_gpus == 1 and app.args["device"] == "cuda"


# ---------------------------------------------------------------------------------------------
# a replica's model, in this process
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(world):
    settings = settings_from_catalog(world.catalog, trial="t1", stitches="all", max_batch_size=4)
    return ServedModel(replace(settings, profile_warmup=1, profile_repeats=1), log=lambda _m: None)


def test_one_replica_holds_the_supernet_once_whatever_it_serves(world, model):
    param_bytes = sum(p.numel() * p.element_size() for p in world.net.parameters())
    assert len(model.stitches) == len(world.net.space)
    assert model.model_bytes <= 1.1 * param_bytes
    # every stitch measured at every profiled batch size
    assert all(sorted(s.latency.ms) == [1, 2, 4] for s in model.stitches)


def test_a_replica_answers_each_stitch_as_the_supernet_does(world, model):
    x = torch.randn(3, *model.input_size, generator=torch.Generator().manual_seed(3))
    for stitch in world.net.space:
        with torch.no_grad():
            expected = world.net(x, stitch)
        torch.testing.assert_close(model.run(x, stitch.stitch_id), expected, rtol=0, atol=0)


def _png(pixels: torch.Tensor) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy(), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_are_decoded_and_normalised_as_the_demo_data_is(model):
    from orchestrator.data import DEMO_MEAN, DEMO_STD

    pixels = torch.randint(0, 256, (16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = ((pixels.float() / 255 - DEMO_MEAN[0]) / DEMO_STD[0])[None]
    x = model.decode({"image_b64": _png(pixels)})
    assert x.shape == (1, 1, 16, 16)
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)
    batch = model.decode({"images": [expected.tolist(), _png(pixels)]})
    torch.testing.assert_close(batch[0], batch[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("body, message", [
    ({}, "Send exactly one of 'image'"),
    ({"image": [[1.0, 2.0]]}, "has shape [1, 2]"),
    ({"image": [[[0.0] * 16] * 16] * 3}, "has shape [3, 16, 16]"),
    ({"image": "a string"}, "'image' must be a nested list"),
    ({"image": [["a"]]}, "not a nested list of numbers"),
    ({"image_b64": base64.b64encode(b"GIF89a but not really").decode()}, "not a readable PNG or JPEG"),
    ({"image_b64": "%%%"}, "not valid base64"),
    ({"images": []}, "non-empty list"),
    ({"image": [[[float("nan")] * 16] * 16]}, "NaN or infinite"),
])
def test_a_bad_image_is_400_with_the_expected_shape(model, body, message):
    with pytest.raises(RequestError) as e:
        model.decode(body)
    assert e.value.status == 400 and message in e.value.message


# ---------------------------------------------------------------------------------------------
# a real application on the shared Ray cluster
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_for_start(proc: subprocess.Popen, timeout: float = 240) -> list[str]:
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("serve: measured latency"):
            return lines
    proc.kill()
    pytest.fail("orchestrator.serve did not start:\n" + "".join(lines) + proc.stderr.read()[-4000:])


@pytest.mark.integration
def test_a_trained_trial_is_served_by_id_and_budget_equal_to_its_export_and_survives_bad_requests(
        micro_console, ray_cluster, tmp_path):
    """The user's path: the micro demo trained by ``orchestrator.train`` (conftest's ``micro_console``), then
    ``orchestrator.serve`` on its catalog (deployed into the shared cluster), requests, Ctrl-C."""
    from orchestrator.data import DEMO_MEAN, DEMO_STD, demo_datasets
    from orchestrator.export.__main__ import main as export_main

    assert micro_console[0].returncode == 0, micro_console[0].stdout[-3000:]
    catalog = str(micro_console[1] / "catalog")
    rows = load(catalog)
    (trial,) = set(rows["trial_id"])
    rows = rows.set_index("stitch_id")
    by_flops = sorted((int(i) for i in rows.index), key=lambda i: (rows.loc[i, "flops"], i))
    served = [by_flops[0], by_flops[len(by_flops) // 2], by_flops[-1]]
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.serve", catalog, "--trial", trial, "--port", str(port),
         "--stitches", ",".join(map(str, served)), "--address", ray_cluster.address, "--name", "snnet-test",
         "--max-batch-size", "4"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        began = time.time()
        for sid in served:  # while the replica starts
            export_main([catalog, "--trial", trial, "--stitch", str(sid), "--out", str(tmp_path / f"{sid}.pt2")])
        started = _wait_for_start(proc)
        assert f"3 stitches [{', '.join(map(str, served))}]" in started[0] and "policy budget" in started[0]
        url = f"http://127.0.0.1:{port}/"
        # two real validation digits, and one as the PNG file a client would send
        val = demo_datasets()[1]
        x = val.images[:2].clone()
        pixels = ((x[0, 0] * DEMO_STD[0] + DEMO_MEAN[0]) * 255).round().clamp(0, 255).to(torch.uint8)
        decoded = ((pixels.float() / 255 - DEMO_MEAN[0]) / DEMO_STD[0])[None, None]

        # each served stitch by id: its logits are its exported program's, for tensors and for a PNG
        for sid in served:
            program = torch.export.load(tmp_path / f"{sid}.pt2").module()
            status, answer = _request(url, {"images": x.tolist(), "logits": True, "stitch": sid})
            assert status == 200 and answer["stitch"] == sid and answer["flops"] == int(rows.loc[sid, "flops"])
            assert answer["top1"] == pytest.approx(rows.loc[sid, "top1"]) and answer["latency_ms"] > 0
            with torch.no_grad():
                assert (torch.tensor(answer["logits"]) - program(x)).abs().max() <= 1e-4
                status, answer = _request(url, {"image_b64": _png(pixels), "logits": True, "stitch": sid})
                assert status == 200 and (torch.tensor(answer["logits"]) - program(decoded)[0]).abs().max() <= 1e-4
            assert len(answer["top5"]) == 5 and answer["top5"][0][0] == int(program(decoded).argmax())

        # a budget: the most accurate served stitch within it; no budget: the most accurate served ("most
        # accurate" on the selection split, which every row of this trial has, as best_under ranks)
        rank = "top1_selection" if rows.loc[served, "top1_selection"].notna().all() else "top1"
        mid = served[1]
        status, answer = _request(url, {"image": x[0].tolist(), "max_flops": int(rows.loc[mid, "flops"])})
        under = [s for s in served if rows.loc[s, "flops"] <= rows.loc[mid, "flops"]]
        def best(ids: list[int]) -> int:
            return max(ids, key=lambda s: (rows.loc[s, rank], -rows.loc[s, "flops"]))

        assert status == 200 and answer["stitch"] == best(under)
        status, answer = _request(url, {"image": x[0].tolist()})
        assert status == 200 and answer["stitch"] == best(served)

        # every bad request between good ones: answered with its status, the good ones still answered
        bad = [
            (dict(raw=b"{not json"), 400), (dict(body={"image": [[0.0] * 16] * 16}), 400),
            (dict(body={"image_b64": base64.b64encode(b"\x00not an image").decode()}), 400),
            (dict(body={"image": x[0].tolist(), "stitch": 10_000}), 404),
            (dict(body={"image": x[0].tolist(), "max_flops": 1}), 422),
            (dict(body=[1, 2, 3]), 400),
        ]
        for kwargs, expected_status in bad:
            status, answer = _request(url, **kwargs)
            assert status == expected_status and answer["status"] == expected_status and answer["error"]
            status, answer = _request(url, {"image": x[0].tolist(), "stitch": served[0]})
            assert status == 200 and answer["stitch"] == served[0]
        status, answer = _request(url, {"image": x[0].tolist(), "stitch": 10_000})
        assert answer["served"] == sorted(served)
        status, answer = _request(url, {"image": x[0].tolist(), "max_flops": 1})
        assert answer["cheapest_stitch"] == served[0] and answer["cheapest_flops"] == int(rows.loc[served[0], "flops"])

        status, listing = _request(url + "stitches")
        assert status == 200 and [s["stitch"] for s in listing["stitches"]] == served
        assert all(set(s["latency_ms_by_batch"]) == {"1", "2", "4"} for s in listing["stitches"])
        [replica] = listing["replicas"]
        assert set(replica["latency_ms_by_batch"]) == {str(s) for s in served} and replica["rss_bytes"] > 0
        status, stats = _request(url + "stats")
        answered = 2 * len(served) + 2 + len(bad)
        assert stats["requests"] == answered and stats["errors"] == {"400": 4, "404": 2, "422": 2}

        # the Python way: a DeploymentHandle call with the same dict (joined without waiting for free CPUs: the
        # replica holds one)
        import ray
        from ray import serve

        ray.init(address=ray_cluster.address, log_to_driver=False)  # left connected: the finally below cleans up
        handle = serve.get_app_handle("snnet-test")
        by_handle = handle.remote({"image": x[0].tolist(), "stitch": served[-1], "logits": True}).result()
        assert by_handle["stitch"] == served[-1]
        torch.testing.assert_close(torch.tensor(by_handle["logits"]), torch.tensor(
            _request(url, {"image": x[0].tolist(), "stitch": served[-1], "logits": True})[1]["logits"]))

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the application goes, the command exits 130
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-3000:]
        assert "snnet-test" not in serve.status().applications
        assert "Traceback" not in err, err[-3000:]
        traffic = out.splitlines()  # after the start lines: one line per 10 s of traffic at most, never per request
        assert all(line.startswith("serve: ") and "req/s" in line for line in traffic), out
        assert len(traffic) <= (time.time() - began) / 10 + 1, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _remove_serve(ray_cluster)


def _remove_serve(cluster) -> None:
    """Shut Serve down on the shared cluster (its controller, proxy and any replica left by a failed test hold
    resources the next tests wait for)."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=cluster.address, log_to_driver=False)
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def test_the_readmes_serve_commands_parse():
    import shlex

    from orchestrator.serve.__main__ import build_parser

    calls = []
    for readme in (ROOT / "README.md", ROOT / "cluster" / "README.md"):
        inside, current = False, ""
        for raw in readme.read_text().splitlines():
            if raw.strip().startswith("```"):
                inside, current = not inside, ""
                continue
            current += raw.rstrip()
            if current.endswith("\\"):
                current = current[:-1] + " "
                continue
            line, current = current, ""
            if inside and line.strip().startswith("python -m orchestrator.serve"):
                calls.append(shlex.split(line, comments=True)[3:])
    assert len(calls) >= 4
    for argv in calls:
        build_parser().parse_args(argv)
