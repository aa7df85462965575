"""What a reviewer asks of a study: code version, packages, hardware. Captured on the submitting side."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Iterator

from tunelab.tracking.schema import GIT_COMMIT, GIT_DIRTY

#: the code a study runs: its digest is the same from a checkout, a wheel, or a job shipped without .git
CODE_PACKAGES = ("tunelab", "trainables", "searchspaces")
CODE_SUFFIXES = (".py", ".yaml")
PACKAGES = ("tunelab", "ray", "mlflow", "xgboost", "torch", "scikit-learn", "optuna", "numpy", "pandas")
#: set by `make submit` (scripts/submit.py): `ray job submit` ships no .git, so the submitter passes these on
ENV_COMMIT, ENV_DIRTY = "TUNELAB_GIT_COMMIT", "TUNELAB_GIT_DIRTY"
#: the diff, which may hold anything, travels as this file (mode 0600) in the uploaded working directory: never in
#: the job's environment or on a command line, which `ray job list` and `ps` show
DIFF_FILE = ".tunelab-submission.diff"
#: an untracked file larger than this is named in the diff, not shown (a dataset, a model)
MAX_UNTRACKED_BYTES = 200_000


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> dict[str, str]:
    """Commit and dirty flag of the working tree, or what the submitter recorded in the environment."""
    if os.environ.get(ENV_COMMIT):
        return {GIT_COMMIT: os.environ[ENV_COMMIT], GIT_DIRTY: os.environ.get(ENV_DIRTY, "unknown")}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {GIT_COMMIT: "unknown", GIT_DIRTY: "unknown"}
    status = _git("status", "--porcelain") or ""  # untracked files too (not ignored ones): a new family is code
    return {GIT_COMMIT: commit.strip(), GIT_DIRTY: str(bool(status.strip())).lower()}


def git_diff() -> str:
    """The uncommitted changes of the working tree, or the ones the submitter recorded."""
    if os.environ.get(ENV_COMMIT):
        shipped = Path(DIFF_FILE)
        return shipped.read_text() if shipped.is_file() else ""
    return (_git("diff", "HEAD") or "") + "".join(_untracked_diff(path) for path in _untracked())


def _untracked() -> list[str]:
    return [p for p in (_git("ls-files", "--others", "--exclude-standard", "-z") or "").split("\0") if p]


def _untracked_diff(path: str) -> str:
    """An untracked file as a diff that adds it; a large or binary one by its name and size only."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return ""
    if size > MAX_UNTRACKED_BYTES:
        return f"untracked file {path}: {size} bytes, not shown\n"
    out = subprocess.run(["git", "diff", "--no-index", "--", "/dev/null", path], capture_output=True, text=True)
    return out.stdout or f"untracked file {path}: {size} bytes, binary\n"


def submission_env() -> dict[str, str]:
    """The submitting checkout's commit and dirty flag, as environment variables for a Ray job's runtime env."""
    state = git_state()
    return {ENV_COMMIT: state[GIT_COMMIT], ENV_DIRTY: state[GIT_DIRTY]}


@contextlib.contextmanager
def submission_diff(root: Path) -> Iterator[None]:
    """The checkout's diff as ``root/DIFF_FILE`` (mode 0600) while a job that uploads ``root`` is submitted."""
    diff = git_diff() if git_state()[GIT_DIRTY] == "true" else ""
    path = root / DIFF_FILE
    if diff:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(diff)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def code_digest() -> str:
    """sha256 over the source files (path and content) of tunelab, its model families and its search spaces."""
    h = hashlib.sha256()
    for package in CODE_PACKAGES:
        root = Path(importlib.import_module(package).__file__).parent
        files = [p for p in root.rglob("*") if p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts]
        for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
            h.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


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
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    return "; ".join(names) or "none"


def hardware() -> dict[str, str]:
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "cpus": str(os.cpu_count()),
        "gpus": _gpus(),
    }


class NodeHardware:
    """Each Ray node's hardware as Ray describes it, by node id: looked up (``ray.nodes()``) once per node."""

    def __init__(self) -> None:
        self._known: dict[str, dict[str, str]] = {}

    def of(self, node_id: str) -> dict[str, str]:
        import ray

        if node_id and node_id not in self._known and ray.is_initialized():
            for node in ray.nodes():
                r = node.get("Resources", {})
                accelerators = [k.split(":", 1)[1] for k in r if k.startswith("accelerator_type:")]
                self._known[node["NodeID"]] = {
                    "host": node.get("NodeManagerHostname", ""),
                    "cpus": f"{r.get('CPU', 0):g}",
                    "gpus": f"{r.get('GPU', 0):g}" + (f" {','.join(accelerators)}" if accelerators else ""),
                    "memory_gb": f"{r.get('memory', 0) / 2**30:.1f}",
                }
        return self._known.get(node_id, {})
