"""Checks of the cluster configs under ``cluster/``: fast, offline, no Ray started.

The two Ray cluster launcher YAMLs are checked against the schema that ships inside the
installed ray package (``ray/autoscaler/ray-schema.json``) and against Ray's own config
preparation: the steps ``ray up`` runs before it talks to a cloud
(``ray.autoscaler._private.commands._bootstrap_config``):

* ``util.prepare_config``: ``fillout_defaults`` (merge with the provider's ``defaults.yaml``),
  ``merge_setup_commands``, ``validate_docker_config``, ``fill_node_type_min_max_workers``;
* ``util.validate_config``: the JSON schema plus Ray's cross-field checks (head type, worker bounds).

Skipped on purpose, because each of them calls a cloud API: the provider's
``fillout_available_node_types_resources`` (AWS ``DescribeInstanceTypes``, GCP machine types;
the configs state ``resources`` explicitly so nothing depends on it, and the counts are checked
against the tables below instead) and the provider's ``bootstrap_config`` (IAM roles, key pairs,
subnets, security groups). Of AWS's bootstrap, the steps that work on the config alone run here:
launch-template and network-interface merging (no-ops without those fields, asserted first) and
the default-AMI lookup for the region. GCP's bootstrap is API calls from start to end (project,
service account, key pair, subnet), and its module needs the Google API client, so none of it runs.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = {"aws": CLUSTER / "aws-gpu.yaml", "gcp": CLUSTER / "gcp-gpu.yaml"}
KUBERAY = CLUSTER / "kuberay-rayjob.yaml"
README = CLUSTER / "README.md"
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
RAY_VERSION = ray.__version__

# vCPUs and GPUs per machine type, to check the `resources` the configs state instead of letting
# Ray autodetect them through the cloud API.
AWS_GPU_INSTANCES = {
    "g4dn.xlarge": (4, 1), "g4dn.2xlarge": (8, 1), "g4dn.12xlarge": (48, 4),
    "g5.xlarge": (4, 1), "g5.2xlarge": (8, 1), "g5.4xlarge": (16, 1), "g5.8xlarge": (32, 1),
    "g5.12xlarge": (48, 4), "g5.24xlarge": (96, 4), "g5.48xlarge": (192, 8),
    "g6.xlarge": (4, 1), "g6.2xlarge": (8, 1), "g6.12xlarge": (48, 4), "g6.48xlarge": (192, 8),
    "p3.2xlarge": (8, 1), "p3.8xlarge": (32, 4), "p3.16xlarge": (64, 8),
    "p4d.24xlarge": (96, 8), "p5.48xlarge": (192, 8),
}
# Accelerator-optimized GCE machine types come with their GPUs attached (no guestAccelerators).
GCP_GPU_MACHINES = {
    "g2-standard-4": (4, 1), "g2-standard-8": (8, 1), "g2-standard-12": (12, 1),
    "g2-standard-16": (16, 1), "g2-standard-24": (24, 2), "g2-standard-32": (32, 1),
    "g2-standard-48": (48, 4), "g2-standard-96": (96, 8),
    "a2-highgpu-1g": (12, 1), "a2-highgpu-2g": (24, 2), "a2-highgpu-4g": (48, 4),
    "a2-highgpu-8g": (96, 8), "a2-megagpu-16g": (96, 16),
    "a2-ultragpu-1g": (12, 1), "a2-ultragpu-2g": (24, 2), "a2-ultragpu-4g": (48, 4),
    "a2-ultragpu-8g": (96, 8),
}

CREDENTIAL_PATTERNS = {
    "AWS access key id": re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}"),
    "AWS secret key name": re.compile(r"aws_secret_access_key", re.I),
    "AWS session token name": re.compile(r"aws_session_token", re.I),
    "private key block": re.compile(r"BEGIN (?:[A-Z]+ )*PRIVATE KEY"),
    "service account key field": re.compile(r"\"private_key(?:_id)?\""),
    "AWS account id in an ARN": re.compile(r"arn:aws[\w-]*:[\w-]+:[\w-]*:\d{12}:"),
    "12-digit account id": re.compile(r"(?<![\w.-])\d{12}(?![\w.-])"),
    "GitHub token": re.compile(r"gh[pousr]_[A-Za-z0-9]{36}"),
    "machine-specific home path": re.compile(r"/Users/\w|/home/\w|[A-Z]:\\\\Users"),
}
AUTH_OFF = re.compile(r"RAY_AUTH_MODE\W{0,4}disabled|auth_?mode\W{0,4}disabled", re.I)


def _load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _schema() -> dict:
    with open(RAY_SCHEMA) as f:
        return json.load(f)


@pytest.fixture(params=sorted(LAUNCHERS))
def launcher(request) -> tuple[str, dict]:
    return request.param, _load(LAUNCHERS[request.param])


def _workers(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def _head(config: dict) -> dict:
    return config["available_node_types"][config["head_node_type"]]


def _scheduling(node_config: dict) -> dict:
    """GCE `scheduling` as one dict (Ray's own examples write it as a list of one-key dicts)."""
    sched = node_config.get("scheduling") or {}
    if isinstance(sched, list):
        merged: dict = {}
        for item in sched:
            merged.update(item)
        return merged
    return dict(sched)


def _commands(cmds) -> str:
    return "\n".join(cmds or [])


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher configs
# ---------------------------------------------------------------------------------------------


def test_schema_ships_with_ray():
    assert RAY_SCHEMA.is_file(), f"no ray-schema.json in the installed ray package at {RAY_SCHEMA}"


def test_launcher_validates_against_ray_schema(launcher):
    jsonschema = pytest.importorskip("jsonschema")
    _, config = launcher
    jsonschema.validate(config, _schema())


def test_ray_schema_is_strict_enough_to_catch_a_typo(launcher):
    """The schema forbids unknown top-level keys: a misspelt field cannot pass silently."""
    jsonschema = pytest.importorskip("jsonschema")
    _, config = launcher
    broken = copy.deepcopy(config)
    broken["idle_timeout_minute"] = broken.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema())


def test_launcher_passes_ray_prepare_and_validate(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    _, config = launcher
    validate_config(copy.deepcopy(config))  # the file as written
    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` continues with
    validate_config(prepared)

    # Every top-level key is given explicitly: nothing of Ray's defaults.yaml leaks in.
    assert set(prepared) == set(config)
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert "ray-wheels" not in _commands(prepared[key]), key
    # The merged setup installs the project on the head and on every worker.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert "pip install" in _commands(prepared[key]) and "~/snnet" in _commands(prepared[key]), key
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["min_workers"] == 0 and head["max_workers"] == 0


def test_aws_offline_bootstrap_steps():
    pytest.importorskip("boto3")
    from ray.autoscaler._private.aws.config import (
        DEFAULT_AMI,
        _check_ami,
        _configure_from_launch_template,
        _configure_from_network_interfaces,
    )
    from ray.autoscaler._private.util import check_legacy_fields, prepare_config

    config = prepare_config(_load(LAUNCHERS["aws"]))
    for name, node_type in config["available_node_types"].items():
        # Without these fields the two merging steps below make no EC2 call.
        assert "LaunchTemplate" not in node_type["node_config"], name
        assert "NetworkInterfaces" not in node_type["node_config"], name
    check_legacy_fields(config)
    config = _configure_from_launch_template(config)
    config = _configure_from_network_interfaces(config)
    assert config["provider"]["region"] in DEFAULT_AMI, "no default Ray AMI for this region: set ImageId"
    _check_ami(config)
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"]["ImageId"] == DEFAULT_AMI[config["provider"]["region"]], name


def test_head_is_not_spot_or_preemptible(launcher):
    provider, config = launcher
    node_config = _head(config)["node_config"]
    if provider == "aws":
        assert "InstanceMarketOptions" not in node_config
        assert "spot" not in json.dumps(node_config).lower()
    else:
        sched = _scheduling(node_config)
        assert sched.get("preemptible") is not True
        assert str(sched.get("provisioningModel", "STANDARD")).upper() == "STANDARD"


def test_head_runs_no_training(launcher):
    _, config = launcher
    resources = _head(config)["resources"]
    assert resources.get("CPU") == 0, "the head must advertise no CPUs so no training lands on it"
    assert resources.get("GPU", 0) == 0
    if "machineType" in _head(config)["node_config"]:
        assert "guestAccelerators" not in _head(config)["node_config"]


def test_workers_have_gpus_and_autoscaling_bounds(launcher):
    provider, config = launcher
    workers = _workers(config)
    assert workers, "no worker node types"
    assert isinstance(config["idle_timeout_minutes"], (int, float)) and config["idle_timeout_minutes"] > 0
    assert sum(w["min_workers"] for w in workers.values()) <= config["max_workers"]
    for name, worker in workers.items():
        assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"], name
        cpus, gpus = worker["resources"].get("CPU"), worker["resources"].get("GPU", 0)
        assert gpus >= 1, f"{name} has no GPU"
        node_config = worker["node_config"]
        if provider == "aws":
            itype = node_config["InstanceType"]
            assert itype in AWS_GPU_INSTANCES, f"{name}: {itype} is not a known GPU instance type"
            assert (cpus, gpus) == AWS_GPU_INSTANCES[itype], f"{name}: resources do not match {itype}"
        else:
            machine = node_config["machineType"]
            accels = node_config.get("guestAccelerators") or []
            if machine in GCP_GPU_MACHINES:
                assert not accels, f"{name}: {machine} comes with its GPUs; no guestAccelerators"
                assert (cpus, gpus) == GCP_GPU_MACHINES[machine], f"{name}: resources do not match {machine}"
            else:
                assert machine.startswith("n1-"), f"{name}: GPUs attach only to N1 or A2/G2 machine types"
                assert sum(a["acceleratorCount"] for a in accels) == gpus, f"{name}: guestAccelerators != GPU"
                assert cpus == int(machine.rsplit("-", 1)[1]), f"{name}: CPU does not match {machine}"
            sched = _scheduling(node_config)
            assert sched.get("onHostMaintenance") == "TERMINATE", f"{name}: GPU VMs cannot live-migrate"
            if sched.get("preemptible"):
                assert sched.get("automaticRestart") is False, f"{name}: preemptible VMs cannot auto-restart"
            items = {i["key"]: i["value"] for i in node_config.get("metadata", {}).get("items", [])}
            assert items.get("install-nvidia-driver") == "True", name


def test_dashboard_stays_on_localhost(launcher):
    _, config = launcher
    head = _commands(config["head_start_ray_commands"])
    assert "ray start" in head and "--head" in head
    hosts = re.findall(r"--dashboard-host[= ](\S+)", head)
    assert hosts == ["127.0.0.1"], hosts
    assert "0.0.0.0" not in head
    assert "--dashboard-host" not in _commands(config["worker_start_ray_commands"])


def test_token_authentication_is_on_for_every_node(launcher):
    _, config = launcher
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts, key
        for cmd in starts:
            assert re.search(r"RAY_AUTH_MODE=token\b", cmd), f"{key}: ray start without RAY_AUTH_MODE=token"
    # Every node gets the same token, from the launching machine's default token file.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_setup_installs_the_project(launcher):
    _, config = launcher
    local = config["file_mounts"].get("~/snnet")
    assert local is not None, "the working tree must be mounted at ~/snnet"
    assert (ROOT / local / "pyproject.toml").is_file(), "`ray up` from the repo root must upload the repo"
    setup = _commands(config["setup_commands"])
    assert re.search(r"pip install[^\n]*-e ~/snnet", setup), setup


def test_launcher_image_matches_installed_ray(launcher):
    _, config = launcher
    docker = config["docker"]
    images = [docker["image"]] + [docker[k] for k in ("head_image", "worker_image") if k in docker]
    for image in images:
        repo, tag = image.split(":", 1)
        assert repo in ("rayproject/ray", "rayproject/ray-ml"), image
        assert tag.startswith(f"{RAY_VERSION}-py3"), f"{image} does not match the installed ray {RAY_VERSION}"
        assert tag.endswith("-gpu"), image


def _trial_shape(space: str = "deit_ti_s_b") -> tuple[int, float, float]:
    """(workers per trial, CPUs per worker, GPUs per worker) of a shipped search space."""
    path = ROOT / "search_spaces" / f"{space}.yaml"
    if not path.is_file():
        pytest.skip(f"search_spaces/{space}.yaml is not there")
    res = _load(path).get("resources") or {}
    return (int(res.get("workers_per_trial", 2)), float(res.get("cpus_per_worker", 1)),
            float(res.get("gpus_per_worker", 0)))


def _workers_per_node(cpus: float, gpus: float, cpw: float, gpw: float) -> int:
    fits = [int(cpus // cpw)] if cpw else []
    fits += [int(gpus // gpw)] if gpw else []
    return min(fits) if fits else 0


def test_launcher_can_host_a_deit_trial(launcher):
    """Some worker type, scaled to its max_workers, holds one trial of the deit_ti_s_b space."""
    _, config = launcher
    n, cpw, gpw = _trial_shape()
    capacity = {
        name: _workers_per_node(w["resources"].get("CPU", 0), w["resources"].get("GPU", 0), cpw, gpw)
        * min(w["max_workers"], config["max_workers"])
        for name, w in _workers(config).items()
    }
    assert max(capacity.values()) >= n, f"no worker type holds {n} training workers: {capacity}"


# ---------------------------------------------------------------------------------------------
# KubeRay RayJob
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rayjob() -> dict:
    with open(KUBERAY) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    jobs = [d for d in docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1, "cluster/kuberay-rayjob.yaml must hold exactly one RayJob"
    return jobs[0]


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_rayjob_kind_and_lifecycle(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    assert spec["rayClusterSpec"]["rayVersion"] == RAY_VERSION


def test_rayjob_entrypoint_runs_the_sweep(rayjob):
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "orchestrator.sweep"], argv
    sweep = pytest.importorskip("orchestrator.sweep.__main__")
    args = sweep.parse_args(argv[3:])
    assert "://" in args.catalog and "://" in args.storage, "pods share no disk: use bucket URIs"


def test_rayjob_runtime_env_ships_the_project(rayjob):
    import tomllib

    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert "://" in runtime_env["working_dir"], "working_dir must be a URI the cluster can download"
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]

    def name(req: str) -> str:
        return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")

    wanted = {name(d) for d in deps} - {"ray"}  # ray comes with the image
    installed = {name(p) for p in runtime_env.get("pip", [])}
    assert wanted <= installed, f"runtimeEnvYAML pip lacks {sorted(wanted - installed)}"


def test_rayjob_head_and_auth(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster.get("authOptions", {}).get("mode") == "token"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0", "no training on the head"
    # 127.0.0.1, or KubeRay's default (reachable only through the ClusterIP service), never a
    # binding spelled out for the outside.
    assert head["rayStartParams"].get("dashboard-host", "127.0.0.1") == "127.0.0.1"
    assert head["template"]["spec"].get("hostNetwork") is not True


def test_rayjob_worker_groups_request_gpus(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        name = group["groupName"]
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"], name
        for container in _containers(group["template"]):
            res = container["resources"]
            gpus = int(res["limits"]["nvidia.com/gpu"])
            assert gpus >= 1, name
            assert int(res.get("requests", {}).get("nvidia.com/gpu", gpus)) == gpus, name


def _quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_rayjob_worker_groups_can_host_a_deit_trial(rayjob):
    """Ray counts a pod's CPU and GPU limits. Some group holds one deit_ti_s_b trial at its
    maxReplicas, and the pods started with the cluster (`replicas`) hold one as well: the sweep
    sizes its concurrency from what is up when it starts."""
    n, cpw, gpw = _trial_shape()
    at_max, at_start = {}, 0
    for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = _containers(group["template"])[0]["resources"]["limits"]
        per_pod = _workers_per_node(_quantity(limits["cpu"]), _quantity(limits.get("nvidia.com/gpu", 0)), cpw, gpw)
        at_max[group["groupName"]] = per_pod * group["maxReplicas"]
        at_start += per_pod * group.get("replicas", 0)
    assert max(at_max.values()) >= n, f"no worker group holds {n} training workers: {at_max}"
    assert at_start >= n, f"the pods started with the cluster hold {at_start} of the {n} workers a trial needs"


def test_rayjob_containers_have_requests_limits_and_matching_images(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        for container in _containers(template):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)
            repo, tag = container["image"].split(":", 1)
            assert repo in ("rayproject/ray", "rayproject/ray-ml") and tag.startswith(RAY_VERSION), container["image"]
            for env in container.get("env", []):
                if env.get("name") == "RAY_AUTH_MODE":
                    assert env.get("value") == "token"


def _kuberay_images(path: Path) -> list[tuple[str, str, bool]]:
    """``(group, image, requests a GPU)`` of every container of a KubeRay manifest's Ray cluster."""
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    out = []
    for doc in docs:
        spec = doc.get("spec") or {}
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig")
        if not cluster:
            continue
        groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
        for name, group in groups:
            for container in _containers(group["template"]):
                resources = container.get("resources", {})
                gpu = any("nvidia.com/gpu" in resources.get(kind, {}) for kind in ("requests", "limits"))
                out.append((name, container["image"], gpu))
    return out


def test_readme_names_the_images_each_node_runs():
    """cluster/README.md says which image runs where; the configs run exactly those (issue 28, item 7)."""
    text = " ".join(README.read_text().split())
    launchers = {yaml.safe_load(path.read_text())["docker"]["image"] for path in LAUNCHERS.values()}
    kuberay = [i for path in sorted(CLUSTER.glob("kuberay-*.yaml")) for i in _kuberay_images(path)]
    assert len(launchers) == 1 and kuberay, (launchers, kuberay)
    heads = {image for group, image, _ in kuberay if group == "head"}
    workers = {image for group, image, _ in kuberay if group != "head"}
    for group, image, gpu in kuberay:  # CUDA where a GPU is requested, the plain image on the CPU-only head
        assert image.endswith("-gpu") == gpu, (group, image)
    (launcher,), (head,), (worker,) = launchers, heads, workers
    assert worker == launcher, (worker, launcher)
    named = set(re.findall(r"`(rayproject/ray[^`]*)`", text))
    assert named == {launcher, head}, f"cluster/README.md names {named}, the configs run {launcher} and {head}"
    assert re.search(rf"launcher configs run the image `{re.escape(launcher)}` on every node", text)
    assert re.search(rf"head pod on `{re.escape(head)}`", text)
    python = re.search(r"-py3(\d+)", launcher).group(1)
    assert f"Python (3.{python})" in text and f"Ray ({RAY_VERSION})" in text


# ---------------------------------------------------------------------------------------------
# Everything under cluster/
# ---------------------------------------------------------------------------------------------


def _cluster_files() -> list[Path]:
    files = [p for p in sorted(CLUSTER.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    assert {LAUNCHERS["aws"], LAUNCHERS["gcp"], KUBERAY, README} <= set(files)
    return files


def test_no_credentials_or_account_ids_in_cluster_files():
    found = []
    for path in _cluster_files():
        text = path.read_text(errors="replace")
        for what, pattern in CREDENTIAL_PATTERNS.items():
            for m in pattern.finditer(text):
                found.append(f"{path.relative_to(ROOT)}: {what}: {m.group(0)!r}")
    assert not found, "\n".join(found)


def test_credential_scan_would_notice_a_planted_secret():
    planted = {
        "AWS access key id": "key = AKIA" + "ABCDEFGHIJKLMNOP",
        "AWS secret key name": "aws_secret_" + "access_key = x",
        "private key block": "-----BEGIN RSA " + "PRIVATE KEY-----",
        "service account key field": '{"private' + '_key": "x"}',
        "12-digit account id": "role arn:aws:iam::" + "123456789012" + ":role/x",
    }
    for what, text in planted.items():
        assert CREDENTIAL_PATTERNS[what].search(text), what


def test_token_authentication_is_never_switched_off():
    offenders = []
    for path in _cluster_files():
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if AUTH_OFF.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    assert AUTH_OFF.search("export RAY_AUTH_MODE=" + "disabled")


# ---------------------------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------------------------


def _readme_commands() -> list[str]:
    """Logical lines of the README's fenced code blocks (backslash continuations joined)."""
    text = README.read_text()
    lines: list[str] = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S):
        current = ""
        for raw in block.splitlines():
            current += raw.rstrip()
            if current.endswith("\\"):
                current = current[:-1] + " "
                continue
            if current.strip():
                lines.append(current.strip())
            current = ""
    return lines


def _cli_calls(module: str) -> list[list[str]]:
    """argv after `python -m <module>` for every README command that runs it."""
    calls = []
    for line in _readme_commands():
        if f"-m {module}" not in line:
            continue
        tokens = shlex.split(line, comments=True)
        for i, tok in enumerate(tokens):
            if tok.startswith(f"python -m {module}"):  # quoted, as in `ray exec '...'`
                tokens = shlex.split(tok)
                i = 0
            if tokens[i:i + 3] == ["python", "-m", module]:
                args = []
                for t in tokens[i + 3:]:
                    if t in ("&&", "||", "|", ";", "&"):
                        break
                    args.append(t)
                calls.append(args)
                break
    return calls


def test_readme_covers_the_workflow():
    text = README.read_text()
    for needle in (
        "pip install -e", "ray up cluster/aws-gpu.yaml", "ray up cluster/gcp-gpu.yaml",
        "ray dashboard cluster/aws-gpu.yaml", "RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265",
        "--working-dir .", "ray job logs", "ray job status", "--resume",
        "python -m orchestrator.catalog query s3://my-snnet-bucket/catalog --sweep deit_ti_s_b --pareto",
        "python -m orchestrator.export", "kubectl apply -f cluster/kuberay-rayjob.yaml",
        "ray down cluster/aws-gpu.yaml", "ray down cluster/gcp-gpu.yaml", "ray start --head",
        "~/.ray/auth_token", "RAY_AUTH_TOKEN", "--dashboard-host=127.0.0.1", "ray get-auth-token",
    ):
        assert needle in text, f"cluster/README.md does not mention {needle!r}"


def test_readme_sweep_commands_parse():
    sweep = pytest.importorskip("orchestrator.sweep.__main__")
    calls = _cli_calls("orchestrator.sweep")
    assert len(calls) >= 3
    for argv in calls:
        sweep.parse_args(argv)
    assert any("--resume" in argv for argv in calls)


def test_readme_catalog_commands_parse():
    catalog_cli = pytest.importorskip("orchestrator.catalog.__main__")
    calls = _cli_calls("orchestrator.catalog")
    assert calls
    parser = catalog_cli.build_parser()
    for argv in calls:
        parser.parse_args(argv)


def test_readme_export_commands_parse():
    calls = _cli_calls("orchestrator.export")
    assert calls
    try:
        import importlib

        module = importlib.import_module("orchestrator.export")
        cli = importlib.import_module("orchestrator.export.__main__") if hasattr(module, "__path__") else module
    except ImportError:
        pytest.skip("orchestrator.export is not there yet")
    if hasattr(cli, "build_parser"):
        parse = cli.build_parser().parse_args
    elif hasattr(cli, "parse_args"):
        parse = cli.parse_args
    else:
        pytest.skip("orchestrator.export exposes no build_parser/parse_args to check against")
    for argv in calls:
        parse(argv)


@pytest.mark.skipif(sys.platform == "win32", reason="paths in the configs are POSIX")
def test_launcher_configs_are_plain_yaml_without_tabs():
    for path in LAUNCHERS.values():
        assert "\t" not in path.read_text(), path
