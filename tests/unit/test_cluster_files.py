"""cluster/: every recipe parses, and its images, versions, commands and flags agree with what we pin and run."""

import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest
import yaml
from mlflow.cli import cli as mlflow_cli
from ray.scripts.scripts import start as ray_start

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PINS = dict(
    re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^]]*\])?==(.+)", d).groups()
    for d in PYPROJECT["project"]["dependencies"]
    if "==" in d
)
RAY, PYTHON = PINS["ray"], "py311"
IMAGE = f"tunelab:{PYPROJECT['project']['version']}"
MANIFESTS = sorted(CLUSTER.glob("**/*.yaml"))


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _walk(node, key: str):
    """Every value stored under ``key`` anywhere in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def _options(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in p.opts if opt.startswith("--")}


def _check_flags(args: list[str], command: click.Command, where: str) -> None:
    known = _options(command)
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, f"{where}: {arg} is not an option of this version's command"


def test_recipes_exist_and_parse():
    names = {p.relative_to(CLUSTER).as_posix() for p in MANIFESTS}
    assert {
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "ray-up/aws.yaml",
        "ray-up/onprem.yaml",
        "mlflow/mlflow-server.yaml",
    } <= names
    for path in MANIFESTS:
        assert _docs(path), path


def test_images_are_ours_or_rays_at_our_versions():
    base = re.search(r"^FROM (\S+)", (CLUSTER / "Dockerfile").read_text(), re.M).group(1)
    assert base == f"rayproject/ray:{RAY}-{PYTHON}"
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    for path in MANIFESTS:
        for doc in _docs(path):
            for image in [*_walk(doc, "image")]:
                assert image in (IMAGE, "postgres:15"), f"{path}: image {image}"


def test_kuberay_manifests_match_our_ray_and_use_token_auth():
    for name, kind in (("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob")):
        (doc,) = _docs(CLUSTER / "kuberay" / name)
        assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
        assert [*_walk(doc, "rayVersion")] == [RAY]
        for params in _walk(doc, "rayStartParams"):
            _check_flags([f"--{k}" for k in params], ray_start, name)
        for env in _walk(doc, "env"):
            by_name = {e["name"]: e for e in env}
            assert by_name["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in by_name["RAY_AUTH_TOKEN"]["valueFrom"]
            for secret in ("MLFLOW_TRACKING_PASSWORD",):
                if secret in by_name:
                    assert "secretKeyRef" in by_name[secret]["valueFrom"]
    (job,) = _docs(CLUSTER / "kuberay" / "rayjob.yaml")
    entry = shlex.split(job["spec"]["entrypoint"])
    assert entry[:2] == ["python", "scripts/search.py"] and (ROOT / entry[2]).is_file()


@pytest.mark.parametrize("name", ["aws.yaml", "onprem.yaml"])
def test_ray_up_commands_are_valid_for_our_ray(name):
    (doc,) = _docs(CLUSTER / "ray-up" / name)
    assert doc["provider"]["type"] == ("aws" if name == "aws.yaml" else "local")
    starts = [
        c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in doc[key] if "ray start" in c
    ]
    assert len(starts) == 2
    for command in starts:
        args = shlex.split(command.split("ray start", 1)[1])
        _check_flags(args, ray_start, name)
    head = next(c for c in doc["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head  # the job API is reached through `ray dashboard`'s SSH tunnel
    text = (CLUSTER / "ray-up" / name).read_text()
    assert "RAY_AUTH_MODE=token" in text
    # the secrets travel as a file: a node's shell has none of them to expand
    commands = [c for key, value in doc.items() if key.endswith("_commands") for c in value]
    assert not any(re.search(r"\$\{?(RAY_AUTH_TOKEN|MLFLOW_TRACKING_\w+)", c) for c in commands)
    assert doc["file_mounts"]["~/.tunelab.env"] == "~/.tunelab/cluster.env"
    assert all(". ~/.tunelab.env" in c for c in starts)
    for pin in re.findall(r"'ray\[[^]]+\]==([^']+)'", text):
        assert pin == RAY
    if "docker" in doc:
        assert doc["docker"]["image"] == IMAGE


def test_mlflow_server_command_is_valid_and_keeps_secrets_out():
    docs = _docs(CLUSTER / "mlflow" / "mlflow-server.yaml")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["mlflow", "server"]
    _check_flags(command[2:], mlflow_cli.commands["server"], "mlflow-server.yaml")
    assert "--app-name=basic-auth" in command
    assert any(a.startswith("--backend-store-uri=postgresql+psycopg2://") for a in command)
    assert "--serve-artifacts" in command and any(a.startswith("--allowed-hosts=") for a in command)
    env = {e["name"]: e for e in container["env"]}
    for secret in ("PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert "secretKeyRef" in env[secret]["valueFrom"], secret
    uri = next(a for a in command if a.startswith("--backend-store-uri="))
    assert ":" not in uri.split("//", 1)[1].split("@")[0]  # no password in the URI


def test_no_recipe_holds_a_secret():
    for path in [*MANIFESTS, CLUSTER / "Dockerfile"]:
        text = path.read_text()
        assert not re.search(r"(?i)(password|token|secret)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9+/]{16,}", text), path
