"""Issue 14: what ``orchestrator.train`` checks before Ray starts, what it records and prints.

Unit tests, no Ray instance: write probes (local, ``mock://`` and an unreachable bucket),
workers x CPUs x GPUs against the machine or a cluster's resources, the batch size against the
training set, weights reachability, the ``weights`` catalog column, the end summary, the run's
own catalog partition, the resume command, budget queries that would mix sweeps, and the Ray
settings for a quiet console.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time

import pyarrow.parquet as pq
import pytest

from orchestrator.train.checks import PROBE_PREFIX, check_batch, check_weights, check_writable, weights_line
from orchestrator.train.cluster import check_resources, preflight, quiet_ray
from orchestrator.train.config import TrainConfig
from snnet import SNNetError
from snnet.anchors import AnchorSpec

# -- write probes ----------------------------------------------------------------------------------


def test_local_probe_writes_and_removes_its_file_and_creates_nothing(tmp_path):
    check_writable(str(tmp_path))
    check_writable(str(tmp_path / "not" / "yet"))  # probed in the nearest existing parent
    assert list(tmp_path.iterdir()) == []


def test_local_probe_names_an_unwritable_location():
    with pytest.raises(SNNetError) as info:
        check_writable("/proc/snnet-no/catalog")
    message = str(info.value)
    assert message.startswith("The catalog location '/proc/snnet-no/catalog' is not writable (")
    assert "pass another --catalog; nothing was trained." in message and "\n" not in message


def test_uri_probe_on_pyarrow_filesystems_leaves_nothing(tmp_path):
    check_writable("mock:///bucket/catalog")  # pyarrow's in-memory filesystem: folders made on write
    check_writable(f"file://{tmp_path}/catalog")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_bucket_fails_in_seconds_with_one_paragraph(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    start = time.perf_counter()
    with pytest.raises(SNNetError) as info:
        check_writable("s3://nobucket/x", "Ray's run storage", "--storage")
    assert time.perf_counter() - start < 60
    message = str(info.value)
    assert message.startswith("Ray's run storage location 's3://nobucket/x' is not writable (")
    assert "--storage" in message and "\n" not in message


def test_no_probe_file_is_left_on_a_writable_catalog_after_prepare_like_use(tmp_path):
    (tmp_path / "cat").mkdir()
    check_writable(str(tmp_path / "cat"))
    assert not [p for p in (tmp_path / "cat").iterdir() if p.name.startswith(PROBE_PREFIX)]


# -- resources ---------------------------------------------------------------------------------------


def test_workers_above_the_local_cpus_are_refused_before_ray(two_cpus):
    preflight(TrainConfig(workers=2))
    with pytest.raises(SNNetError) as info:
        preflight(TrainConfig(workers=3))
    assert str(info.value) == (
        "The run needs 3 workers x 1 CPU each (3 CPUs), but this machine (a local Ray instance) has 2 CPUs "
        "and 0 GPUs: pass --workers 2 or fewer, or run on a larger cluster (--address).")


def test_gpus_count_too():
    config = TrainConfig(workers=2, use_gpu=True, cpus_per_worker=2)
    check_resources(config, {"CPU": 8, "GPU": 2}, "x")
    with pytest.raises(SNNetError) as info:
        check_resources(config, {"CPU": 8, "GPU": 1}, "the Ray cluster at h:1")
    assert str(info.value) == (
        "The run needs 2 workers x 2 CPU and 1 GPU each (4 CPUs, 2 GPUs), but the Ray cluster at h:1 has 8 CPUs "
        "and 1 GPUs: pass --workers 1 or fewer, or run on a larger cluster (--address).")
    with pytest.raises(SNNetError, match="lower --workers or the CPUs/GPUs per worker"):
        check_resources(config, {"CPU": 8, "GPU": 0}, "x")


def test_with_an_address_the_cluster_is_asked_after_connecting(monkeypatch):
    import ray

    import orchestrator.train.cluster as run

    calls = []
    monkeypatch.setattr(run, "ensure_ray", lambda address=None, **k: calls.append(address))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    monkeypatch.setattr(run, "local_resources", lambda: pytest.fail("not the local machine"))
    with pytest.raises(SNNetError, match=r"but the Ray cluster at 10\.0\.0\.1:6379 has 1 CPUs and 0 GPUs"):
        preflight(TrainConfig(workers=2), address="10.0.0.1:6379")
    assert calls == ["10.0.0.1:6379"]


# -- batch size, weights -----------------------------------------------------------------------------


def test_a_batch_larger_than_the_training_set_is_refused():
    check_batch(TrainConfig(batch_size=8, workers=2), 16)
    check_batch(TrainConfig(batch_size=64, workers=2, epochs=0), 16)  # no training, no steps needed
    with pytest.raises(SNNetError) as info:
        check_batch(TrainConfig(batch_size=9, workers=2, dataset="/data/x"), 16)
    assert str(info.value) == (
        "The batch size 9 per worker x 2 workers needs at least 18 training images for one step, but the "
        "training set of '/data/x' has 16: lower --batch-size (at most 8) or --workers, or use --epochs 0 to "
        "only initialise and evaluate.")


def test_unreachable_weights_are_refused_in_one_paragraph(tmp_path):
    check_weights(TrainConfig(anchors=[AnchorSpec("resnet18"), AnchorSpec("resnet34")]))
    config = TrainConfig(anchors=[AnchorSpec("resnet18", checkpoint=str(tmp_path / "r18.pth")),
                                  AnchorSpec("resnet34", checkpoint=str(tmp_path / "r34.pth"))])
    with pytest.raises(SNNetError) as info:
        check_weights(config)
    assert "r18.pth" in str(info.value) and "r34.pth" in str(info.value) and "\n" not in str(info.value)


def test_weights_lines_warn_about_random_anchors():
    assert weights_line({"a": "hub:timm/a", "b": "file:/w/b.pth"}) == [
        "[snnet] weights: a <- hub:timm/a, b <- file:/w/b.pth"]
    lines = weights_line({"a": "random", "b": "hub:timm/b"})
    assert lines[0] == "[snnet] weights: a <- random, b <- hub:timm/b"
    assert lines[1].startswith("warning: a start from random weights (no --pretrained")


# -- catalog rows --------------------------------------------------------------------------------------


def _space():
    from snnet import SpaceConfig, StitchSpace, create_anchor, profile_anchor

    anchors = [create_anchor(AnchorSpec(n, kwargs={"num_classes": 2}), img_size=32) for n in ("resnet18", "resnet34")]
    return StitchSpace([profile_anchor(a) for a in anchors], SpaceConfig())


def test_rows_carry_where_the_weights_came_from_into_the_catalog(tmp_path):
    from orchestrator.catalog import SCHEMA, CatalogWriter, read_catalog
    from orchestrator.train.launch import catalog_rows

    space = _space()
    results = {str(s.stitch_id): [50.0, 90.0] for s in space}
    weights = {"resnet18": "file:/w/r18.pth", "resnet34": "random"}
    rows = catalog_rows(TrainConfig(), space, results, {}, "", weights=weights)
    by_path = {tuple(r["anchors"]): r["weights"] for r in rows}
    assert by_path[("resnet18",)] == "resnet18=file:/w/r18.pth"
    assert by_path[("resnet34",)] == "resnet34=random"
    assert set(by_path.values()) >= {"resnet18=file:/w/r18.pth; resnet34=random"}
    assert SCHEMA.field("weights").nullable
    path = CatalogWriter(tmp_path, "s").write_trial("t", rows)
    assert pq.read_table(path).column("weights").to_pylist() == [r["weights"] for r in rows]
    assert set(read_catalog(tmp_path).column("weights").to_pylist()) == set(by_path.values())
    assert all(r["weights"] is None for r in catalog_rows(TrainConfig(), space, results, {}, ""))


# -- summary -----------------------------------------------------------------------------------------


def _row(i, anchors, flops, top1, **extra):
    return {"stitch_id": i, "anchors": anchors, "cuts": [[1, 2]] if len(anchors) > 1 else [], "flops": flops,
            "top1": top1, "anchor_lr": 3e-4, "stitch_lr": 1e-3, **extra}


def test_summary_says_na_for_an_undefined_spearman_and_none_fits_for_an_empty_budget():
    from orchestrator.train.summary import spearman, summarize

    assert spearman([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2], [5, 5]) is None and spearman([1], [2]) is None

    class Space:
        layers = ("a",)

    rows = [_row(0, ["t"], 150e6, 50.0), _row(1, ["b"], 400e6, 80.0), _row(2, ["t", "b"], 300e6, 60.0),
            _row(3, ["t", "b"], 350e6, 60.0)]
    text = summarize(Space(), rows, catalog="s3://bucket/catalog")
    assert "Spearman(FLOPs, top-1) = n/a" in text and "nan" not in text
    assert "; lr anchors 3.00e-04, stitches 1.00e-03" in text and "0.00e+00" not in text
    assert re.search(r"^\s+25%\s+0\.100 G\s+none fits$", text, re.M)
    assert re.search(r"^\s+50%\s+0\.150 G\s+50\.0%\s+#0 t$", text, re.M)
    assert re.search(r"^\s+75%\s+0\.300 G\s+60\.0%\s+#2 t > b @ \[1,2\]$", text, re.M)
    assert text.splitlines()[-1] == "catalog:  s3://bucket/catalog"


# -- partitions, resume, budget queries ----------------------------------------------------------------


def test_each_train_run_gets_its_own_validated_partition():
    from orchestrator.train.__main__ import config_from_args, default_sweep, parse_args

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert default_sweep("deit_ti_s_b", when) == "deit_ti_s_b-20260102-030405"
    assert (default_sweep("vit_base_patch16_224.augreg_in21k", when)
            == "vit_base_patch16_224.augreg_in21k-20260102-030405")
    assert default_sweep("1x/..y", when) == "train-1x-.y-20260102-030405"
    assert config_from_args(parse_args(["--sweep", "mine"])).sweep == "mine"
    assert re.fullmatch(r"resnet18-\d{8}-\d{6}", config_from_args(parse_args(["--anchors", "resnet18,resnet34"])).sweep)


def test_ctrl_c_prints_the_command_that_resumes():
    from orchestrator.cli import interrupt_hint, run_cli
    from orchestrator.train.__main__ import catalog_file, resume_command

    config = TrainConfig(sweep="demo-20260101-000000", trial_id="t-1", catalog="s3://b/cat")
    command = resume_command(["--workers", "2", "--trial-id", "old", "--sweep=old", "--set", "seed=1"], config)
    assert command == ("python -m orchestrator.train --workers 2 --set seed=1 --sweep demo-20260101-000000 "
                       "--trial-id t-1")
    assert catalog_file(config) == "s3://b/cat/sweep=demo-20260101-000000/trial-t-1.parquet"

    def main(argv):
        with interrupt_hint(f"interrupted; resume this run with:\n  {command}"):
            raise KeyboardInterrupt

    assert run_cli(main, []) == 130


def _catalog(tmp_path, datasets):
    from orchestrator.catalog import CatalogWriter

    for sweep, (dataset, anchors) in datasets.items():
        rows = [{"stitch_id": i, "anchors": [anchors[i]], "cuts": [], "flops": 10 * (i + 1), "params": 1,
                 "top1": 50.0 + i, "dataset": dataset} for i in range(2)]
        CatalogWriter(tmp_path, sweep).write_trial("t", rows)
    return str(tmp_path)


def test_budget_queries_refuse_to_mix_datasets_or_families(tmp_path):
    from orchestrator.catalog import best_under, query

    catalog = _catalog(tmp_path, {"a": ("demo", ["x", "y"]), "b": ("/data/cifar", ["x", "y"])})
    with pytest.raises(SNNetError) as info:
        best_under(catalog, max_flops=100)
    assert str(info.value) == (
        "A budget query over the whole catalog would mix datasets: its sweeps are a (demo); b (/data/cifar). "
        "Pass --sweep NAME (sweep= in Python) to pick the stitch from one of them.")
    assert best_under(query(catalog, sweep="b"), max_flops=100)["sweep"] == "b"
    assert len(query(catalog, sweep="a", max_flops=15)) == 1
    assert len(query(catalog)) == 4  # no budget: nothing mixes a choice

    families = _catalog(tmp_path / "f", {"a": ("demo", ["x", "y"]), "b": ("demo", ["p", "q"])})
    with pytest.raises(SNNetError, match="would mix families of anchors"):
        query(families, max_flops="1G")
    same = _catalog(tmp_path / "s", {"a": ("demo", ["x", "y"]), "b": ("demo", ["x", "y"])})
    assert best_under(same, max_flops=100)["top1"] == 51.0


def test_the_catalog_cli_says_to_pass_sweep(tmp_path, capsys):
    from orchestrator.catalog.__main__ import main

    catalog = _catalog(tmp_path, {"a": ("demo", ["x", "y"]), "b": ("/data/cifar", ["x", "y"])})
    assert main(["query", catalog, "--max-flops", "1G"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "Pass --sweep NAME" in err
    assert main(["query", catalog, "--max-flops", "1G", "--sweep", "a"]) == 0


# -- console -----------------------------------------------------------------------------------------


def test_ray_is_configured_quiet_and_colourless_off_a_terminal(monkeypatch):
    import io

    for key in ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_COLOR_PREFIX", "NO_COLOR"):
        monkeypatch.delenv(key, raising=False)
    done = quiet_ray(io.StringIO())
    assert done == {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_COLOR_PREFIX": "0"}
    assert all(os.environ[k] == v for k, v in done.items())

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("RAY_COLOR_PREFIX")
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")  # the user's choice wins
    assert quiet_ray(Tty()) == {}
    assert "RAY_COLOR_PREFIX" not in os.environ and os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"
    monkeypatch.setenv("NO_COLOR", "1")
    assert quiet_ray(Tty()) == {"RAY_COLOR_PREFIX": "0"}


def test_the_worker_hook_quiets_only_ray_trains_report_logger():
    import logging

    from ray.train.v2._internal.execution import context

    from orchestrator.train.cluster import WORKER_SETUP_HOOK
    from orchestrator.train.ray_hooks import quiet_train_worker

    assert WORKER_SETUP_HOOK == f"{quiet_train_worker.__module__}.{quiet_train_worker.__name__}"
    logger = logging.getLogger(context.__file__)
    before = logger.level
    try:
        quiet_train_worker()
        assert logger.level == logging.WARNING and not logger.isEnabledFor(logging.INFO)
    finally:
        logger.setLevel(before)


def test_the_worker_hook_keeps_the_cleaners_slow_poll_warning_off_the_console():
    """Under load Ray Train's placement-group cleaner warns (on the driver's console, with colour codes)
    each time the GCS answers its poll late; the worker hook raises that logger to ERROR."""
    import logging

    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    from orchestrator.train.ray_hooks import quiet_train_worker

    logger = placement_group_cleaner.logger
    before = logger.level
    try:
        logger.setLevel(logging.NOTSET)  # as Ray leaves it (another test may have run the hook already)
        assert logger.isEnabledFor(logging.WARNING)
        quiet_train_worker()
        assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)
    finally:
        logger.setLevel(before)


def test_the_worker_hook_keeps_the_cleaners_gcs_timeout_off_the_console(monkeypatch, capsys):
    """Ray Train's PlacementGroupCleaner thread dies on a slow GCS (``RpcError``) with a traceback
    on the console; the worker hook turns exactly that into a log record, nothing else."""
    import threading

    from ray.exceptions import RpcError

    from orchestrator.train.ray_hooks import quiet_train_worker

    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_type))
    quiet_train_worker()
    quiet_train_worker()  # a second call does not wrap twice

    def run(name, exc):
        def target():
            raise exc
        t = threading.Thread(target=target, name=name)
        t.start()
        t.join()

    run("PlacementGroupCleanerMonitor", RpcError("Timed out while waiting for GCS to become available."))
    run("PlacementGroupCleanerMonitor", ConnectionError("Found multiple active Ray instances: {'a:1', 'b:2'}."))
    assert seen == []
    run("PlacementGroupCleanerMonitor", ValueError("a real bug"))
    run("SomeOtherThread", RpcError("not the cleaner"))
    assert seen == [ValueError, RpcError]
    assert capsys.readouterr().err == ""


def test_the_worker_hook_turns_a_slow_cleaner_stop_into_a_debug_line(monkeypatch):
    """Stopping a run on a busy machine: the controller's wait for the placement-group cleaner times out and
    Ray logs a traceback that reached the driver's console right after Ctrl-C's resume command; the worker hook
    makes exactly that record a DEBUG line without traceback, and leaves other errors as they are. Ray's own
    callback raises it here, with a cleaner whose stop never answers in time."""
    import logging
    from types import SimpleNamespace

    from ray.exceptions import GetTimeoutError
    from ray.train.v2._internal.callbacks import placement_group_callback as module

    from orchestrator.train.ray_hooks import quiet_train_worker

    quiet_train_worker()
    quiet_train_worker()  # one filter, however often the hook runs
    logger = logging.getLogger(module.__name__)
    assert len(logger.filters) == 1
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "level", logging.DEBUG)
    try:
        for error in (GetTimeoutError("Get timed out: some object(s) not ready."), ValueError("something else")):
            def get(ref, timeout=None, error=error):
                raise error

            monkeypatch.setattr(module.ray, "get", get)
            callback = module.PlacementGroupCleanerCallback.__new__(module.PlacementGroupCleanerCallback)
            callback._cleaner = SimpleNamespace(stop=SimpleNamespace(remote=lambda: "ref"))
            callback._stop_timeout = 0.01
            callback._stop_cleaner()
    finally:
        logger.removeHandler(handler)
    slow, bad = records
    assert slow.levelno == logging.DEBUG and slow.exc_info is None and "Get timed out" in slow.getMessage()
    assert bad.levelno == logging.ERROR and bad.exc_info is not None and "gracefully" in bad.getMessage()
