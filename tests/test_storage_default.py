"""Where a run's files go (issue 28, item 3), without Ray: Ray's run storage defaults to ``runs`` beside
the catalog (local, or the same bucket prefix), where ``export`` trusts the catalog's checkpoints; a
catalog or storage inside Ray's runtime folder (where ``ray job submit --working-dir`` runs the driver,
so a relative path lands there) is refused before Ray starts, with the way out; the READMEs' job-submit
lines give both as absolute paths or URIs, with token authentication."""

import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

import orchestrator.sweep.__main__ as sweep_cli
import orchestrator.sweep.preflight as sweep_preflight
from orchestrator.export import check_checkpoint_location
from orchestrator.storage import check_outside_ray_runtime, default_storage, ray_runtime_folder
from orchestrator.train import __main__ as train
from snnet import SNNetError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("catalog,storage", [
    ("catalog", "runs"),
    ("catalog/", "runs"),
    ("sub/cat", "sub/runs"),
    ("/data/snnet/catalog", "/data/snnet/runs"),
    ("s3://bucket/team/catalog", "s3://bucket/team/runs"),
    ("gs://bucket/catalog/", "gs://bucket/runs"),
    ("s3://bucket", "s3://bucket/runs"),
    ("file:///data/catalog", "file:///data/runs"),
])
def test_the_storage_defaults_to_runs_beside_the_catalog(catalog, storage):
    assert default_storage(catalog) == storage


@pytest.mark.parametrize("catalog", ["sub/cat", "s3://bucket/team/catalog", "s3://bucket"])
def test_export_trusts_the_checkpoints_of_the_default_storage(catalog):
    check_checkpoint_location(f"{default_storage(catalog)}/demo-t1/checkpoint_2026-01-01_00-00-00.000000", catalog)


def test_train_writes_its_checkpoints_beside_its_catalog(tmp_path):
    def storage(*argv):
        return train.config_from_args(train.parse_args(list(argv))).storage_path

    assert storage("--catalog", "sub/cat") == "sub/runs"
    assert storage("--catalog", "s3://bucket/x/catalog") == "s3://bucket/x/runs"
    assert storage() == "runs"
    assert storage("--catalog", "sub/cat", "--storage", "elsewhere") == "elsewhere"
    assert storage("--catalog", "sub/cat", "--set", "storage_path=mine") == "mine"


def test_the_sweep_writes_its_experiment_beside_its_catalog(tmp_path):
    catalog, storage = sweep_preflight.check_locations(SimpleNamespace(name="demo"), str(tmp_path / "sub" / "cat"),
                                                       None)
    assert (catalog, storage) == (str(tmp_path / "sub" / "cat"), str(tmp_path / "sub" / "runs"))
    assert sweep_cli.parse_args([]).storage is None
    _, given = sweep_preflight.check_locations(SimpleNamespace(name="demo"), str(tmp_path / "cat"), str(tmp_path / "r"))
    assert given == str(tmp_path / "r")


@pytest.fixture
def job_package(tmp_path, monkeypatch):
    """This process as the driver ``ray job submit --working-dir .`` starts: in Ray's copy of the working
    directory, under the session's runtime folder, with the job's config in its environment."""
    runtime = tmp_path / "ray" / "session_2026-01-01_00-00-00_000000_1" / "runtime_resources"
    package = runtime / "working_dir_files" / "_ray_pkg_0123456789abcdef"
    package.mkdir(parents=True)
    monkeypatch.chdir(package)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}}')
    return runtime


def test_ray_s_runtime_folder_is_found_from_the_path(job_package, tmp_path):
    assert ray_runtime_folder("runs") == str(job_package)
    assert ray_runtime_folder(str(job_package.parent / "logs")) is None  # the session's other folders
    assert ray_runtime_folder(str(tmp_path / "runs")) is None
    assert ray_runtime_folder("s3://bucket/runs") is None
    check_outside_ray_runtime(str(tmp_path / "runs"))
    check_outside_ray_runtime("gs://bucket/runs")


def test_a_storage_in_ray_s_runtime_folder_is_refused_with_the_way_out(job_package):
    with pytest.raises(SNNetError) as e:
        check_outside_ray_runtime("runs")
    message = str(e.value)
    assert f"Ray's run storage 'runs' ({Path.cwd() / 'runs'}) lies inside Ray's runtime folder {job_package}" in message
    assert "this job's --working-dir copy" in message and "Ray deletes it" in message
    assert '--storage "$PWD/runs" on the ray job submit line' in message and "s3://" in message


def test_the_sweep_refuses_relative_paths_under_ray_job_submit_before_ray(job_package, tmp_path, capsys):
    import ray

    code = sweep_cli.main(["--catalog", "catalog"])  # the README's old line: no --storage, a relative catalog
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: The catalog 'catalog'") and "Traceback" not in err
    assert '--catalog "$PWD/catalog"' in err
    code = sweep_cli.main(["--catalog", str(tmp_path / "catalog"), "--storage", "runs"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Ray's run storage 'runs'") and "--resume" in err
    assert not ray.is_initialized() and not list(Path.cwd().iterdir())  # nothing written in the package


def _job_submit_lines(path: Path) -> list[list[str]]:
    """Every ``ray job submit`` command of a README's code blocks, continuations joined, as argv."""
    commands, fenced = [], False
    for line in re.sub(r"\\\n\s*", " ", path.read_text()).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and "ray job submit" in line:
            commands.append(shlex.split(line, comments=True))
    return commands


@pytest.mark.parametrize("readme", ["README.md", "cluster/README.md"])
def test_the_readmes_job_submit_lines_keep_their_files(readme):
    lines = _job_submit_lines(ROOT / readme)
    assert lines
    for argv in lines:
        assert argv[0] == "RAY_AUTH_MODE=token", argv  # Ray 2.6x heads ask for the token
        if "orchestrator.sweep" not in argv and "orchestrator.train" not in argv:
            continue
        for flag in ("--catalog", "--storage"):
            assert flag in argv, (flag, argv)
            value = argv[argv.index(flag) + 1]
            assert value.startswith(("$PWD/", "/")) or "://" in value, (flag, value, argv)


def test_every_location_becomes_a_filesystem_in_one_place(tmp_path, monkeypatch):
    import os

    import pyarrow.fs as pafs

    from orchestrator.storage import filesystem, is_remote, join, local_path

    monkeypatch.chdir(tmp_path)
    for location in ("runs", f"file://{tmp_path}/runs", tmp_path / "runs"):
        fs, path = filesystem(location)
        assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "runs")
        assert not is_remote(location) and local_path(location) == str(tmp_path / "runs")
    fs, path = filesystem("mock:///bucket/runs")
    assert type(fs).__name__ == "_MockFileSystem" and path == "bucket/runs" and is_remote("mock:///bucket/runs")
    assert join("s3://b/x/", "runs", "t.json") == "s3://b/x/runs/t.json"
    assert join("a/b", "runs") == os.path.join("a/b", "runs")
