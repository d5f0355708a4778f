"""Security properties the project promises: nothing evaluates user strings, every checkpoint
load is weights-only, nothing listens beyond localhost by default, no credentials in the tree."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("snnet", "orchestrator", "search_spaces", "benchmarks") for p in (REPO / d).rglob("*.py"))


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


def test_sources_were_found():
    assert len(SOURCES) > 20


def test_nothing_listens_beyond_localhost_by_default():
    text = "\n".join(p.read_text() for p in SOURCES)
    assert "0.0.0.0" not in text
    for yaml_file in (REPO / "cluster").glob("*.yaml"):
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


def test_no_credentials_in_the_repository():
    skip = {".git", "__pycache__", ".pytest_cache"}
    for path in REPO.rglob("*"):
        if path.is_file() and not skip.intersection(path.parts) and path.suffix in {".py", ".yaml", ".yml", ".md", ".toml", ".json", ".txt", ""}:
            text = path.read_text(errors="ignore")
            for pattern in CREDENTIALS:
                assert not pattern.search(text), f"{path} matches {pattern.pattern}"
