"""``snnet`` is pure PyTorch + timm + fvcore: it must import without Ray, Optuna or pyarrow."""

import subprocess
import sys

from conftest import import_blocker

BLOCKER = import_blocker("ray", "optuna", "pyarrow") + """
import snnet, snnet.space, snnet.sampling
from snnet import build_supernet
net = build_supernet(['resnet18', 'resnet50'], img_size=32)
print(len(net.space))
"""


def test_snnet_imports_without_ray_optuna_pyarrow():
    proc = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "18"


def test_configuration_loads_without_the_training_stack():
    """A search space and a training config load, validate and resolve without torch, timm, fvcore, Ray
    or Optuna: the CLIs answer a bad flag or a bad YAML file without their import time."""
    script = import_blocker("torch", "timm", "fvcore", "ray", "optuna") + """
import snnet, search_spaces
from search_spaces import TrainConfig, load_space
space = load_space("demo")
config = space.trial_config(space.first_point(), anchors=None)
assert TrainConfig.model_validate(config.model_dump()) == config
try:
    load_space("demo", overrides=["space.kernel_size=0"])
except snnet.SNNetError as e:
    print(e)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "(with --set space.kernel_size=0): 1 problem: space.kernel_size: must be an integer >= 1, got 0" \
        in proc.stdout, proc.stdout


def test_every_public_name_resolves():
    """Each name in ``__all__`` of ``snnet`` (loaded on first use) and ``search_spaces`` is there."""
    import search_spaces
    import snnet

    for package in (snnet, search_spaces):
        missing = [name for name in package.__all__ if not hasattr(package, name)]
        assert not missing, (package.__name__, missing)
        assert set(package.__all__) <= set(dir(package))
    import snnet.supernet  # imports the submodule snnet.least_squares, whose name is also a function's

    assert snnet.least_squares is sys.modules["snnet.least_squares"].least_squares


def test_the_type_checking_imports_mirror_the_lazy_table():
    """``snnet/__init__.py`` lists each lazy name twice, for type checkers (``if TYPE_CHECKING:``) and in
    ``_LAZY``: the two must name the same modules and names, or a type checker sees another package."""
    import ast

    import snnet

    tree = ast.parse(open(snnet.__file__, encoding="utf-8").read())
    (block,) = [node for node in tree.body
                if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"]
    typed = {node.module: tuple(alias.name for alias in node.names) for node in block.body
             if isinstance(node, ast.ImportFrom) and node.level == 1}
    assert typed == snnet._LAZY


def test_every_snnet_module_imports_first():
    """Each module of ``snnet`` imports in a fresh ``snnet`` (no other of its modules loaded before it): an
    import cycle shows only in the order that meets it (``import snnet.export`` alone once failed, since
    ``snnet.supernet`` imports ``StandaloneStitch`` from it at its end)."""
    script = """
import importlib, pkgutil, sys
import snnet
names = [m.name for m in pkgutil.walk_packages(snnet.__path__, "snnet.") if not m.name.endswith("__main__")]
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "snnet" or m.startswith("snnet.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print(len(names), failed)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, failed = proc.stdout.split(" ", 1)
    assert int(count) >= 15 and failed.strip() == "[]", proc.stdout
