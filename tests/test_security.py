"""Security properties the project promises: nothing evaluates user strings, every checkpoint
load is weights-only, nothing listens beyond localhost by default, no credentials in the tree."""

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _repository_files(root: Path = REPO) -> list[Path]:
    """The files git tracks in this checkout (that still exist), from ``git ls-files``.

    Never a walk of the folder: a virtual environment, build output or data set inside the
    checkout is not the repository's and must not be scanned.
    """
    if shutil.which("git") is None:
        return []
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True, timeout=60
        ).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return []
    names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
    return sorted(p for p in (root / n for n in names) if p.is_file())


FILES = _repository_files()
SOURCES = [
    p for p in FILES
    if p.suffix == ".py" and p.relative_to(REPO).parts[0] in ("snnet", "orchestrator", "search_spaces", "benchmarks")
]
needs_git = pytest.mark.skipif(
    shutil.which("git") is None or not (REPO / ".git").exists(),
    reason="not a git checkout (git ls-files lists the repository's files)",
)


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            yield name, node


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_eval_exec_or_unsafe_loads(path):
    for name, node in _calls(path):
        if isinstance(node.func, ast.Name):  # the builtins; nn.Module.eval() is fine
            assert name not in ("eval", "exec", "compile"), f"{path}:{node.lineno} calls {name}"
        if name == "load" and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "torch":
            kwargs = {k.arg: k.value for k in node.keywords}
            assert "weights_only" in kwargs and getattr(kwargs["weights_only"], "value", None) is True, (
                f"{path}:{node.lineno}: torch.load without weights_only=True"
            )
        if name in ("load", "loads") and getattr(getattr(node.func, "value", None), "id", "") == "pickle":
            pytest.fail(f"{path}:{node.lineno} unpickles data")
        if name == "load" and getattr(getattr(node.func, "value", None), "id", "") == "yaml":
            pytest.fail(f"{path}:{node.lineno}: yaml.load (use safe_load or a SafeLoader subclass)")


@needs_git
def test_sources_were_found():
    assert len(SOURCES) > 20
    assert not any(".venv" in p.parts or "site-packages" in p.parts for p in FILES)


@needs_git
def test_nothing_listens_beyond_localhost_by_default():
    text = "\n".join(p.read_text() for p in SOURCES)
    assert "0.0.0.0" not in text
    for yaml_file in (p for p in FILES if p.parent == REPO / "cluster" and p.suffix == ".yaml"):
        content = yaml_file.read_text()
        for line in content.splitlines():
            if "--dashboard-host" in line and not line.strip().startswith("#"):
                assert "--dashboard-host=127.0.0.1" in line or "--dashboard-host 127.0.0.1" in line, line


CREDENTIALS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"aws_secret_access_key\s*[=:]\s*\S+", re.I),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"ghp_[0-9A-Za-z]{36}"),
]


@needs_git
def test_no_credentials_in_the_repository():
    # Every tracked text file, whatever its suffix; binary files (a NUL byte) are skipped.
    for path in FILES:
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        text = data.decode("utf-8", errors="ignore")
        for pattern in CREDENTIALS:
            assert not pattern.search(text), f"{path.relative_to(REPO)} matches {pattern.pattern}"


def test_repository_files_come_from_git_not_from_the_folder(tmp_path: Path):
    """A virtual environment inside a checkout (with a planted credential) is never read."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "checkout"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text(".venv/\n")
    venv = repo / ".venv" / "lib" / "site-packages" / "pyarrow" / "tests"
    venv.mkdir(parents=True)
    (venv / "test_fs.py").write_text("key = 'AKIA" + "ABCDEFGHIJKLMNOP'\n")

    def run(*a):
        return subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)

    run("init", "-q")
    run("add", "pkg/mod.py", ".gitignore")
    (repo / "untracked.txt").write_text("not added")
    assert _repository_files(repo) == [repo / ".gitignore", repo / "pkg" / "mod.py"]
    assert _repository_files(tmp_path / "not-a-checkout") == []
