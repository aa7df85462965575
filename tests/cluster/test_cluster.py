"""A real cluster on loopback, brought up by the same script as `make cluster-up`, studies sent by `make submit`.

PostgreSQL behind an MLflow server with basic auth, a `ray start` head (1 CPU) and worker (6 logical CPUs,
2 logical GPUs) with token auth. Tests run in file order on one cluster; the last one kills the worker node.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
STUDY = "studies/cluster.yaml"
HEAD_CPUS, WORKER_CPUS, WORKER_GPUS = 1, 6, 2
JOB_TIMEOUT_S = 420
POLL_S = 1.0

pytestmark = pytest.mark.cluster


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        out[key] = shlex.split(value)[0]
    return out


class LoopbackCluster:
    def __init__(self, root: Path):
        self.root = root
        self.env = _read_env(root / "env")
        self.state = json.loads((root / "state.json").read_text())
        self.storage = root / "tune"

    def api(self, path: str) -> dict:
        r = requests.get(
            f"{self.env['RAY_ADDRESS']}{path}",
            timeout=10,
            headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"},
        )
        r.raise_for_status()
        return r.json()

    def nodes(self) -> dict[str, str]:
        """node id -> 'head' | 'worker' for the nodes alive now."""
        result = self.api("/api/v0/nodes?limit=100&detail=false")["data"]["result"]["result"]
        return {n["node_id"]: "head" if n["is_head_node"] else "worker" for n in result if n["state"] == "ALIVE"}

    def submit(self, name: str, *sets: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
        """`make submit` as a user runs it: the cluster's client settings in the environment, not in the job."""
        env = {**os.environ, **self.env}
        cmd = [
            PY,
            "scripts/submit.py",
            STUDY,
            "--submission-id",
            name,
            "--set",
            f"name={name}",
            "--set",
            f"storage_path={self.storage}",
            *[a for s in sets for a in ("--set", s)],
        ]
        if wait:
            return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
        return subprocess.run([*cmd, "--no-wait"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    def job(self, name: str) -> dict:
        return self.api(f"/api/jobs/{name}")

    def wait_job(self, name: str) -> dict:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            info = self.job(name)
            if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                return info
            time.sleep(POLL_S)
        raise AssertionError(f"job {name} still {info['status']} after {JOB_TIMEOUT_S} s")

    def logs(self, name: str) -> str:
        return self.api(f"/api/jobs/{name}/logs")["logs"]


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="tunelab-cl-"))  # short: Ray and PostgreSQL put sockets in it
    script = [PY, "scripts/cluster.py"]
    try:
        subprocess.run(
            [
                *script,
                "up",
                "--dir",
                str(root),
                "--head-cpus",
                str(HEAD_CPUS),
                "--worker-cpus",
                str(WORKER_CPUS),
                "--worker-gpus",
                str(WORKER_GPUS),
            ],
            cwd=ROOT,
            check=True,
            timeout=900,
        )
        c = LoopbackCluster(root)
        saved = {
            k: os.environ.get(k)
            for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        }
        os.environ.update({k: c.env[k] for k in saved})  # MlflowClient reads credentials from the environment
        try:
            yield c
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    finally:
        subprocess.run([*script, "down", "--dir", str(root)], cwd=ROOT, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _listening() -> dict[int, set[str]]:
    """Port -> the addresses listening on it (IPv4 and IPv6), from the kernel's socket tables."""
    out: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                ip_hex, port_hex = local.split(":")
                ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(ip_hex)[::-1]) if len(ip_hex) == 8 else ip_hex
                out.setdefault(int(port_hex, 16), set()).add(ip)
    return out


def _runs(name: str) -> tuple[MlflowClient, dict[str, list]]:
    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name} in the tracking server"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    by_role: dict[str, list] = {}
    for r in runs:
        by_role.setdefault(r.data.tags.get("tunelab.role"), []).append(r)
    return client, by_role


def _head_commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_submitted_study_is_tracked_with_the_submitters_commit(cluster):
    # logistic_regression trials want 2 CPUs, more than the head has: they must run on the worker node; 3-fold
    # validation there as locally
    out = cluster.submit(
        "e2e", "models=[dummy, {name: logistic_regression, cpus_per_trial: 2}]", "split={folds: 3, test: 0.2}"
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    info = cluster.job("e2e")
    assert info["status"] == "SUCCEEDED"
    nodes = cluster.nodes()
    assert nodes[info["driver_node_id"]] == "head"
    # secrets live in the nodes' environment, never in a job's runtime env (which the job API shows anyone)
    assert cluster.env["MLFLOW_TRACKING_PASSWORD"] not in str(info)
    assert cluster.env["RAY_AUTH_TOKEN"] not in str(info)

    client, runs = _runs("e2e")
    commit = _head_commit()
    cells, trials = runs["cell"], runs["trial"]
    assert len(runs["study"]) == 1
    assert {(c.data.tags["tunelab.model"], c.data.tags["tunelab.dataset"]) for c in cells} == {
        (m, d) for m in ("dummy", "logistic_regression") for d in ("iris", "breast_cancer")
    }
    assert len(trials) == 4 * 3
    assert all("val_logloss_std" in t.data.metrics for t in trials)  # the fold mean, and its spread
    assert all(c.data.params["folds"] == "3" and c.data.tags["tunelab.best_model"] == "retrained" for c in cells)
    for run in [*runs["study"], *cells, *trials]:
        assert run.data.tags["git.commit"] == commit, run.info.run_name
        assert run.info.status == "FINISHED", run.info.run_name
    assert runs["study"][0].data.tags["git.dirty"] in ("true", "false")
    # each trial run says which node ran it
    assert {
        nodes[t.data.tags["tunelab.node_id"]] for t in trials if t.data.tags["tunelab.model"] == "logistic_regression"
    } == {"worker"}
    # models travelled to the server's artifact store over HTTP and were registered
    version = client.get_model_version_by_alias("e2e-iris", "champion")
    assert client.list_artifacts(version.run_id, "")  # logged through the proxy
    # by the jobs' own MLflow user, not the admin: it manages what it created, and nothing else
    granted = requests.get(
        f"{cluster.env['MLFLOW_TRACKING_URI']}/api/3.0/mlflow/users/permissions/list",
        params={"username": "tunelab-jobs"},
        auth=(cluster.env["MLFLOW_TRACKING_USERNAME"], cluster.env["MLFLOW_TRACKING_PASSWORD"]),
        timeout=30,
    ).json()
    assert granted["is_admin"] is False
    manages = {p["resource_pattern"] for p in granted["permissions"] if p["permission"] == "MANAGE"}
    assert {client.get_experiment_by_name("e2e").experiment_id, "e2e-iris"} <= manages


def test_everything_asks_for_credentials_and_no_secret_is_logged(cluster):
    jobs, mlflow = f"{cluster.env['RAY_ADDRESS']}/api/jobs/", cluster.env["MLFLOW_TRACKING_URI"]
    assert requests.get(jobs, timeout=10).status_code == 401
    assert requests.get(jobs, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 403
    search = f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    auth = (cluster.env["MLFLOW_TRACKING_USERNAME"], cluster.env["MLFLOW_TRACKING_PASSWORD"])
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=auth, timeout=10).status_code == 200
    assert requests.get(search, auth=auth, headers={"Host": "rebound.example"}, timeout=10).status_code == 403
    assert requests.get(f"{mlflow}/health", headers={"Host": "rebound.example"}, timeout=10).status_code == 200
    listening = _listening()
    for url in (cluster.env["RAY_ADDRESS"], mlflow):
        assert listening[int(url.rsplit(":", 1)[1])] == {"127.0.0.1"}, url
    assert listening[cluster.state["postgres_port"]] == {"127.0.0.1"}
    jobs_password = json.loads((cluster.root / "secrets.json").read_text())["jobs_password"]
    secrets = (cluster.env["RAY_AUTH_TOKEN"], cluster.env["MLFLOW_TRACKING_PASSWORD"], jobs_password)
    for path in cluster.root.rglob("*"):  # logs of every server, Ray's session logs, Tune's storage, artifacts
        if (
            path.is_file()
            and path.name not in ("env", "secrets.json")
            and "pg" not in path.relative_to(cluster.root).parts
        ):
            text = path.read_bytes()
            assert not any(s.encode() in text for s in secrets), path


def test_bad_study_is_refused_before_submission(cluster):
    out = cluster.submit("bad", "search.scheduler=ashaa")
    assert out.returncode == 2
    assert "search.scheduler" in out.stderr and "did you mean 'asha'" in out.stderr
    with pytest.raises(requests.HTTPError):
        cluster.job("bad")


def _peak(intervals: list[tuple[int, int, str]]) -> tuple[int, dict[str, int]]:
    """Most intervals open at once, and how many of those per device."""
    best, best_devices = 0, {}
    for start, _, _ in intervals:
        open_now = [d for s, e, d in intervals if s <= start < e]
        if len(open_now) > best:
            best, best_devices = len(open_now), {d: open_now.count(d) for d in set(open_now)}
    return best, best_devices


def test_fractional_gpus_pack_four_trials_per_gpu(cluster):
    out = cluster.submit(
        "gpus",
        "datasets=[iris]",
        "models=[{name: mlp, gpus_per_trial: 0.25, cpus_per_trial: 0.25}, dummy]",
        "search.num_samples=8",
        "search.max_concurrent_trials=8",
        "tracking.register_models=false",
        # long enough that trials started together are still running when the eighth starts
        "spaces={mlp: {budget: {steps: 2, per_step: 300}, width: 32, depth: 1, batch_size: 32}}",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    _, runs = _runs("gpus")
    nodes = cluster.nodes()
    gpu = [t for t in runs["trial"] if t.data.tags["tunelab.model"] == "mlp"]
    cpu = [t for t in runs["trial"] if t.data.tags["tunelab.model"] == "dummy"]
    assert len(gpu) == 8 and len(cpu) == 8
    for t in gpu:  # exactly one logical GPU each, on the node that has them
        assert t.data.tags["tunelab.cuda_visible_devices"] in ("0", "1")
        assert nodes[t.data.tags["tunelab.node_id"]] == "worker"
    assert {t.data.tags["tunelab.cuda_visible_devices"] for t in cpu} == {""}  # CPU families hold no GPU
    peak, per_device = _peak(
        [(t.info.start_time, t.info.end_time, t.data.tags["tunelab.cuda_visible_devices"]) for t in gpu]
    )
    assert peak == 8, (
        f"at most {peak} GPU trials ran at once: {sorted((t.info.start_time, t.info.end_time) for t in gpu)}"
    )
    assert per_device == {"0": 4, "1": 4}


def test_a_worker_node_dies_and_its_trials_are_retried_elsewhere(cluster):
    """Issue 6: the worker's process group is killed mid-study; the study completes on the head."""
    name, samples = "nodedies", 4
    out = cluster.submit(
        name,
        "datasets=[iris]",
        "models=[{name: mlp, gpus_per_trial: 0}]",
        f"search.num_samples={samples}",
        "search.max_failures=3",
        "tracking.register_models=false",
        "spaces={mlp: {budget: {steps: 3, per_step: 400}, width: 32, depth: 1, batch_size: 32}}",
        wait=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    worker = next(n for n, role in cluster.nodes().items() if role == "worker")
    client, exp_id = MlflowClient(), None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:  # kill once trials run on the worker (the head has room for one)
        exp = client.get_experiment_by_name(name)
        running = (
            client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'trial' and attributes.status = 'RUNNING'")
            if exp
            else []
        )
        if len(running) > HEAD_CPUS:
            exp_id = exp.experiment_id
            break
        assert cluster.job(name)["status"] in ("PENDING", "RUNNING"), cluster.logs(name)[-3000:]
        time.sleep(POLL_S)
    assert exp_id is not None, "trials never ran on the worker"
    os.killpg(cluster.state["processes"]["worker"]["pgid"], signal.SIGKILL)

    info = cluster.wait_job(name)
    assert info["status"] == "SUCCEEDED", cluster.logs(name)[-5000:]
    assert worker not in cluster.nodes()
    trials = client.search_runs([exp_id], "tags.`tunelab.role` = 'trial'")
    assert len(trials) == samples  # exactly one run per trial, retried or not
    assert len({t.data.tags["tunelab.trial_id"] for t in trials}) == samples
    assert {t.info.status for t in trials} == {"FINISHED"}  # none left RUNNING
    retried = [t for t in trials if int(t.data.tags["tunelab.attempts"]) > 1]
    assert retried, "no trial was running on the worker when it died"
    assert all(t.data.tags["tunelab.node_id"] != worker for t in retried)
    assert {t.data.tags["tunelab.status"] for t in trials} == {"completed"}
    (cell,) = client.search_runs([exp_id], "tags.`tunelab.role` = 'cell'")
    assert cell.data.tags["tunelab.best_model"] == "trial"  # kept on the driver's node, so it outlived the worker

    from ray import tune

    analysis = tune.ExperimentAnalysis(str(cluster.storage / name))  # the study's one experiment
    assert len(analysis.trials) == samples
    assert {t.status for t in analysis.trials} == {"TERMINATED"}
    assert sum(t.num_failures for t in analysis.trials) >= len(retried)
