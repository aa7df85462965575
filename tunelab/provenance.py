"""What a reviewer asks of a study: code version, packages, hardware. Captured on the submitting side."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

PACKAGES = ("ray", "mlflow", "xgboost", "torch", "scikit-learn", "optuna", "numpy", "pandas")
#: set by `make submit` / scripts: `ray job submit` ships no .git, so the submitter passes these on
ENV_COMMIT, ENV_DIRTY = "TUNELAB_GIT_COMMIT", "TUNELAB_GIT_DIRTY"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> dict[str, str]:
    """Commit and dirty flag of the working tree, or what the submitter recorded in the environment."""
    if os.environ.get(ENV_COMMIT):
        return {"git.commit": os.environ[ENV_COMMIT], "git.dirty": os.environ.get(ENV_DIRTY, "unknown")}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = _git("status", "--porcelain", "--untracked-files=no") or ""
    return {"git.commit": commit.strip(), "git.dirty": str(bool(status.strip())).lower()}


def git_diff() -> str:
    return _git("diff", "HEAD") or ""


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def _gpus() -> str:
    """The GPUs of this machine as nvidia-smi names them, or "none"."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    return "; ".join(names) or "none"


def hardware() -> dict[str, str]:
    return {"platform": platform.platform(), "cpu": _cpu_model() or platform.processor() or platform.machine(),
            "cpus": str(os.cpu_count()), "gpus": _gpus()}
