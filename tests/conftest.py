import os

import pytest
import torch

# Two cores shared by everything: keep intra-op threads low so tests don't oversubscribe.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
