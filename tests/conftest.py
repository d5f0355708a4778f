import contextlib
import os
import socket

import pytest
import torch

# Two cores shared by everything: keep intra-op threads low so tests don't oversubscribe.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_itemcollected(item):
    # Under pytest-xdist's --dist loadgroup (pyproject's addopts), a group runs on one worker, in order:
    # every Ray test in one group, one after another (the shared cluster is that worker's; a test with a
    # cluster of its own runs while the shared one idles: two busy clusters on two cores slowed every Ray
    # test 1.5-3x), each other module in its own (its module-scoped fixtures are built once). Marked as
    # each item is collected, before any pytest_collection_modifyitems (xdist's reads the groups there);
    # test_suite.py checks that the groups reach xdist.
    item.add_marker(pytest.mark.xdist_group("ray" if "integration" in item.keywords else item.module.__name__))


def pytest_collection_modifyitems(config, items):
    # The Ray group first (a stable sort: each group keeps its own order). It is the critical path, so one
    # worker starts it at once while the other runs the other modules; xdist hands out groups in this
    # order (pyproject's --no-loadscope-reorder).
    items.sort(key=lambda item: "integration" not in item.keywords)
    skips = {"gpu": None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA device"),
             "e2e": None if os.environ.get(E2E_ENV) == "1" else pytest.mark.skip(reason=f"e2e: set {E2E_ENV}=1")}
    for item in items:
        for marker, skip in skips.items():
            if skip is not None and marker in item.keywords:
                item.add_marker(skip)
        if "e2e" in item.keywords:
            item.add_marker(pytest.mark.timeout(1800))  # minutes by design (pyproject's default is 600 s)


#: Set to 1 to run the long end-to-end scenarios (marker ``e2e``) too; ``.ci/run`` passes it on.
E2E_ENV = "SNNET_E2E"
#: CPUs of the integration tier's one Ray cluster: the machine's (two here), so no test asks for more.
RAY_CPUS = max(2, os.cpu_count() or 2)


@pytest.fixture(scope="session")
def ray_cluster():
    """The integration tier's one local Ray cluster (one node, :data:`RAY_CPUS` CPUs, no token
    authentication), started once per test session and shut down by its handle. Drivers run as
    subprocesses join it with ``--address``; in-process tests with :func:`ray_connected`."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # as orchestrator.train.launch.quiet_ray
    # A free port for the node's dashboard agent, not its default: a head started by a test with `ray start`
    # (or a user's own Ray) may want that one, and its job server needs its agent up.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        agent_port = s.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": RAY_CPUS, "include_dashboard": False,
                                                            "dashboard_agent_listen_port": agent_port})
    try:
        yield cluster
    finally:
        cluster.shutdown()


_QUIET_KEYS = ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_COLOR_PREFIX", "RAY_ADDRESS", "NO_COLOR")


def run_train_console(root, *args: str):
    """``python -m orchestrator.train --workers 2`` writing under ``root``, as a new user runs it (none of
    the suite's quieting environment), stdout and stderr together; a ``CompletedProcess``."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in _QUIET_KEYS}  # the defaults a new user has
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.train", "--workers", "2", "--catalog", str(root / "catalog"),
         "--storage", str(root / "runs"), *args],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)


@pytest.fixture(scope="session")
def micro_console(ray_cluster, tmp_path_factory):
    """``(CompletedProcess, root)`` of one micro-demo ``orchestrator.train`` run on the shared cluster: its
    console (``tests/test_console.py``) and its catalog and checkpoint under ``root`` (``tests/test_serve.py``
    serves that trial). Trained once per session."""
    from orchestrator.data.demo_anchors import demo_anchor_specs

    root = tmp_path_factory.mktemp("console")
    anchors = ",".join(f"{s.name}={s.checkpoint}" for s in demo_anchor_specs(anchors=MICRO_ANCHORS, progress=None))
    settings = [f"--set={k}={v}" for k, v in MICRO.items()]
    return run_train_console(root, "--anchors", anchors, *settings, "--address", ray_cluster.address), root


@pytest.fixture
def local_cluster(ray_cluster):
    """The shared cluster, for a test whose drivers join it as subprocesses with ``--address``,
    once every actor of an earlier test is gone."""
    with connected(ray_cluster, log_to_driver=False):
        pass
    return ray_cluster


@contextlib.contextmanager
def connected(cluster, **init_kwargs):
    """This process as a driver of ``cluster`` (``ray.init(address=...)``) until the block ends. It
    starts once the cluster's CPUs are all free: the actors of a killed or finished driver are reaped
    asynchronously, and a test started before they are gone would first wait for their CPUs."""
    import time

    import ray

    if ray.is_initialized():
        pytest.fail("another Ray instance is already connected in this process")
    ray.init(address=cluster.address, **init_kwargs)
    try:
        deadline = time.time() + 120
        while ray.available_resources().get("CPU", 0.0) < RAY_CPUS and time.time() < deadline:
            time.sleep(0.2)
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def ray_connected(ray_cluster):
    """This test's process as a driver of the shared cluster, disconnected after the test."""
    with connected(ray_cluster, log_to_driver=False) as ray:
        yield ray


@pytest.fixture
def two_cpus(monkeypatch):
    """This machine has 2 CPUs and no GPU; no cluster to join; Ray must not start."""
    import sys

    import orchestrator.train.cluster as run

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(run, "local_resources", lambda: {"CPU": 2.0, "GPU": 0.0})
    monkeypatch.setattr(run, "ensure_ray", lambda *a, **k: pytest.fail("Ray must not start"))
    if "ray" in sys.modules:
        monkeypatch.setattr(sys.modules["ray"], "is_initialized", lambda: False)


@pytest.fixture(scope="session")
def deit_small_family():
    """DeiT-Ti/S at 32x32 (4 tokens + cls): real timm models, fast to run."""
    from snnet import build_supernet

    torch.manual_seed(0)
    return build_supernet(["deit_tiny_patch16_224", "deit_small_patch16_224"], img_size=32)


@pytest.fixture(scope="session")
def deit_tsb_space():
    """The paper's DeiT-Ti/S/B space at 224x224 (k=2, s=1, nearest, fast-to-slow)."""
    from snnet import build_supernet

    return build_supernet(
        ["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"]
    ).space


def wait_for_registered_checkpoint(storage, timeout: float = 120.0) -> None:
    """Ray Train registers a reported checkpoint when its controller next polls the workers;
    a fault injected before that loses it. Wait until Ray's checkpoint manager lists one."""
    import glob
    import json
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        pattern = os.path.join(str(storage), "**", "checkpoint_manager_snapshot.json")
        for path in glob.glob(pattern, recursive=True):
            try:
                with open(path) as f:
                    if json.load(f).get("checkpoint_results"):
                        return
            except (OSError, ValueError):
                pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint was registered under {storage} within {timeout}s")


def import_blocker(*packages: str) -> str:
    """Python source that makes importing any of ``packages`` fail; prepend it to a ``-c`` script."""
    return (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {set(packages)!r}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )


DEMO_ANCHORS = ("snnet_demo_vit_tiny", "snnet_demo_vit_small", "snnet_demo_vit_base")


def demo_space(name: str, *, anchors: int = 2, space: dict | None = None, training: dict | None = None,
               resources: dict | None = None, searcher: dict | None = None) -> str:
    """YAML text of a small search space over the embedded demo family (the sweep tests' spaces):
    its first ``anchors`` anchors, ``kernel_size: 2, stride: 1`` and ``epochs: 1`` unless given.
    Trained by a test under Ray, it takes the micro demo's settings: ``training={**MICRO, ...}``."""
    import yaml

    doc = {"name": name, "dataset": "demo",
           "families": [{"name": "demo_vit", "demo": True, "anchors": list(DEMO_ANCHORS[:anchors])}],
           "space": {"kernel_size": 2, "stride": 1, **(space or {})},
           "training": {"epochs": 1, **(training or {})}}
    doc.update({k: v for k, v in (("resources", resources), ("searcher", searcher)) if v})
    return yaml.safe_dump(doc, sort_keys=False)


#: One trial process of one CPU at a time: what the sweep fault and re-run tests can afford.
ONE_WORKER = {"workers_per_trial": 1, "cpus_per_worker": 1}
#: A quick demo training run that checkpoints its evaluation.
QUICK = {"batch_size": 64, "eval_checkpoint_seconds": 30}

#: The micro demo, what the integration tier trains: the two smaller demo anchors (pretrained once and
#: cached, like the demo's), one epoch on a quarter of the demo's training digits (about 350 images),
#: 32 least-squares images, early fronts on 64 images; 18 stitches evaluated on the demo's validation
#: split. One training run costs seconds of compute; the full demo stays what users run.
MICRO_ANCHORS = DEMO_ANCHORS[:2]
MICRO = {"epochs": 1, "data_fraction": 0.25, "ls_samples": 32, "early_images": 64, "batch_size": 32}
#: Stitches of the micro demo's space (two 6-block anchors, k=2, s=1): 2 anchors + 16 stitches.
MICRO_STITCHES = 18


def micro_config(root, **changes):
    """A :class:`TrainConfig` of the micro demo writing under ``root`` (``changes`` on top): the
    pretrained demo anchors by checkpoint, two workers, one evaluation checkpoint at the end."""
    from orchestrator.data.demo_anchors import demo_anchor_specs
    from orchestrator.train.config import TrainConfig

    anchors = demo_anchor_specs(anchors=MICRO_ANCHORS, progress=None)
    settings = {"anchors": anchors, "catalog": str(root / "catalog"), "storage_path": str(root / "runs"),
                "workers": 2, "eval_checkpoint_seconds": 3600.0, **MICRO, **changes}
    return TrainConfig(**settings)


def hand_profile(name: str, width: int, scale: int):
    """A 4-block ViT's :class:`snnet.AnchorProfile` made by hand (no model is built): FLOPs and params
    ``scale`` per part, ``width`` channels, 10 classes."""
    from snnet import AnchorProfile

    return AnchorProfile(name=name, family="vit", layout="tokens", input_size=(1, 16, 16), num_classes=10,
                         stage_of=(0,) * 4, stem_shape=(17, width), unit_shapes=((17, width),) * 4,
                         stem_flops=scale, unit_flops=(scale,) * 4, head_flops=scale, stem_params=scale,
                         unit_params=(scale,) * 4, head_params=scale)


def paper_paired_stitching(depth, kernel_size, stride):
    """SN-Net's released ``paired_stitching``, written out independently: (fid, bid) configs."""
    cfgs, mapping, layer = [], [], -1
    i = 0
    while i < depth:
        ids = list(range(depth))[i : i + kernel_size]
        new = False
        for j in ids:
            for k in ids:
                if (j, k) not in cfgs:
                    new = True
                    cfgs.append((j, k))
                    mapping.append(layer + 1)
        if new:
            layer += 1
        i += stride
    return cfgs, mapping


def training_images(prepared) -> int:
    """Images one epoch trains on, as the driver predicts them (``prepared``: ``launch.prepare``'s)."""
    from orchestrator.train.prepare import dataset_key

    config = prepared[0]
    return prepared.known.datasets[dataset_key(config)].training_images(config)


class CliRunner:
    """Runs ``python -m MODULE ARGS`` as a real process forked from a preloaded server
    (``tests/_cli_server.py``): the same exit status, stdout and stderr as a fresh interpreter, without
    importing torch, timm and Ray again for each command line. Command lines run one at a time.
    A test that checks what a command line imports, or how fast it starts, runs a real subprocess."""

    def __init__(self):
        import subprocess
        import sys
        import tempfile
        import threading
        from pathlib import Path

        repo = Path(__file__).resolve().parents[1]
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), self.env.get("PYTHONPATH")) if p)
        self.log = tempfile.NamedTemporaryFile(prefix="snnet-cli-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_cli_server.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     cwd=repo, env=self.env, text=True)
        self.lock = threading.Lock()
        self._reply()  # ready

    def _reply(self) -> dict:
        import json

        line = self.proc.stdout.readline()
        if not line:
            with open(self.log.name) as f:
                pytest.fail("the command-line server died:\n" + f.read()[-4000:])
        return json.loads(line)

    def run(self, module: str, *args: str, cwd=None, env: dict | None = None, timeout: float = 300,
            no_ray: bool = False):
        """``python -m module *args`` in ``cwd`` (default: here) with ``env`` (default: this process's);
        a ``subprocess.CompletedProcess`` with text output and ``seconds`` (its wall time)."""
        import json
        import subprocess

        request = {"module": module, "args": [str(a) for a in args], "cwd": str(cwd or os.getcwd()),
                   "env": dict(self.env if env is None else env), "timeout": timeout, "no_ray": no_ray}
        with self.lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self._reply()
        done = subprocess.CompletedProcess([module, *request["args"]], reply["code"], reply["out"], reply["err"])
        done.seconds = reply["seconds"]
        return done

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        os.unlink(self.log.name)


@pytest.fixture(scope="session")
def cli_runner():
    """The session's :class:`CliRunner`: ``cli_runner.run("snnet.space", "--anchors", ...)``."""
    runner = CliRunner()
    try:
        yield runner
    finally:
        runner.close()


def checkpoint_folders_in(tmp) -> list[str]:
    """``report_to_ray``'s temporary checkpoint folders (``snnet-ckpt-*``) anywhere below ``tmp``."""
    import glob

    return sorted(glob.glob(os.path.join(str(tmp), "**", "snnet-ckpt-*"), recursive=True))


def stored_checkpoints(storage) -> list[str]:
    """The checkpoint folders Ray Train keeps in a run's storage."""
    import glob

    return sorted(p for p in glob.glob(os.path.join(str(storage), "**", "checkpoint_*"), recursive=True)
                  if os.path.isdir(p))


def checkpoint_files_in(tmp) -> list[str]:
    """What our save path (and a resume reading its checkpoint back) could leave in a temp folder:
    ``report_to_ray``'s folders (``snnet-ckpt-*``), a ``TrainState`` file (``state.pt``) wherever it
    lies, and Ray's local copies of a checkpoint (``checkpoint_tmp_*`` from ``Checkpoint.as_directory``
    and their ``*.del_lock_*`` files). Everything else (the probe file, files Ray or torch write in
    ``TMPDIR`` for themselves) is not a checkpoint and is not counted."""
    from orchestrator.train.state import TrainState
    from orchestrator.train.worker import CHECKPOINT_PREFIX

    found = []
    for folder, dirs, files in os.walk(str(tmp)):
        for name in dirs + files:
            if name.startswith((CHECKPOINT_PREFIX, "checkpoint_tmp_")) or ".del_lock_" in name \
                    or name == TrainState.FILE:
                found.append(os.path.relpath(os.path.join(folder, name), str(tmp)))
    return sorted(found)


def process_gone(pid: int) -> bool:
    """Whether no process has the id ``pid`` any more (a killed driver's training worker, say)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def assert_resumed_run_left_checkpoints_clean(storage, checkpoint: str, worker_tmp, last_step: int) -> None:
    """After a run that lost a worker and resumed: Ray keeps ``num_to_keep=2`` whole checkpoints in
    ``storage`` (the run's own ``checkpoint`` among them, no stray ``state.pt``), nothing of ours is left
    in the workers' temp folder by either attempt, and the resumed rank 0 used that folder (its
    :class:`_hooks.TempDirProbe` file: ``last_step``, no checkpoint folder seen)."""
    import glob

    stored = stored_checkpoints(storage)
    assert len(stored) == 2 and all(os.path.isfile(os.path.join(p, "state.pt")) for p in stored), stored
    assert os.path.realpath(checkpoint) in map(os.path.realpath, stored)
    assert len(glob.glob(os.path.join(str(storage), "**", "state.pt"), recursive=True)) == 2  # no stray copy
    assert checkpoint_files_in(worker_tmp) == [], os.listdir(worker_tmp)
    assert (worker_tmp / "snnet-probe-rank0").read_text().split() == [str(last_step), "0"]


def uninterrupted_run(settings: dict, root):
    """The :class:`~orchestrator.train.recipe.SupernetRecipe` of a trial's recorded settings, trained and evaluated
    in one go in this process without Ray, on one thread as the Ray worker (the sum order of a float op
    follows it): ``results()`` and ``early_history`` are an uninterrupted run's."""
    import torch

    from orchestrator.train.config import TrainConfig
    from orchestrator.train.prepare import prepare
    from orchestrator.train.recipe import SupernetRecipe

    config, space = prepare(TrainConfig.model_validate({**settings, "catalog": str(root / "reference")}),
                            progress=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = SupernetRecipe(config, space)
        recipe.run()
        return recipe
    finally:
        torch.set_num_threads(threads)


def uninterrupted_results(settings: dict, root) -> dict[int, list[float]]:
    """``{stitch_id: [top1, top5]}`` of :func:`uninterrupted_run`."""
    return {k: list(v) for k, v in uninterrupted_run(settings, root).results().items()}


def with_hooks(args: list[str], **hooks) -> list[str]:
    """``[python, -m, orchestrator.sweep, *flags]`` as ``tests/_hooked_sweep.py`` with ``hooks`` on every trial
    (``kill_driver_after_write=True``; ``pid_dir=DIR, hold_at_step=N, hold_seconds=S``)."""
    import json
    import sys
    from pathlib import Path

    assert args[1:3] == ["-m", "orchestrator.sweep"], args
    return [sys.executable, str(Path(__file__).with_name("_hooked_sweep.py")), json.dumps(hooks), *args[3:]]
