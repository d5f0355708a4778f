import os

import pytest
import torch

# Two cores shared by everything: keep intra-op threads low so tests don't oversubscribe.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    # Under pytest-xdist's --dist loadgroup (pyproject's addopts), a group runs on one worker, in order:
    # every Ray test in one group (each starts Ray clusters that want the machine's cores), each other
    # module in its own (its module-scoped fixtures are built once).
    for item in items:
        item.add_marker(pytest.mark.xdist_group("ray" if "integration" in item.keywords else item.module.__name__))
    # The Ray group first (a stable sort: each group keeps its own order). It is the critical path (about
    # 30 of the suite's minutes on two cores), so one worker starts it at once while the other runs every
    # other module; xdist hands out groups in this order (pyproject's --no-loadscope-reorder).
    items.sort(key=lambda item: "integration" not in item.keywords)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def local_cluster():
    """A one-node Ray cluster of this test's own (2 CPUs), shut down by its handle."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def two_cpus(monkeypatch):
    """This machine has 2 CPUs and no GPU; no cluster to join; Ray must not start."""
    import sys

    import orchestrator.run as run

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
    its first ``anchors`` anchors, ``kernel_size: 2, stride: 1`` and ``epochs: 1`` unless given."""
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
