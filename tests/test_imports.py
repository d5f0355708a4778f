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
