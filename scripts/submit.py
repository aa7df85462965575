"""Submit a study to a Ray cluster with `ray job submit`, carrying the provenance of this checkout.

    RAY_ADDRESS=http://HEAD:8265 python scripts/submit.py studies/demo.yaml [--set KEY=VALUE ...] [--no-wait]

The study is validated here first (a bad study stops with exit status 2, nothing is submitted). The job
runs ``python scripts/search.py STUDY`` in this directory as uploaded by ``--working-dir .`` (which
leaves ``.git`` and ignored files behind), so the git commit, dirty flag and diff are taken here and
travel in the job's runtime env (``TUNELAB_GIT_*``), with ``MLFLOW_TRACKING_URI`` when it is set.
Secrets never go into the runtime env, which anyone who can reach the job API can read
(``ray job list``): the tracking credentials (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``) come from
the environment of the cluster's nodes. ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` in this
environment authenticate the submission to a token cluster. Exits with ``ray job submit``'s status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tunelab import provenance  # noqa: E402
from tunelab.errors import StudyError  # noqa: E402
from tunelab.tracking import GIT_COMMIT  # noqa: E402

#: passed on to the job when set here; never a secret
FORWARDED = ("MLFLOW_TRACKING_URI", "TUNELAB_FINAL_FLUSH_TIMEOUT_S")
#: left out of the upload besides what .gitignore names (a symlinked .venv is not a directory to gitignore)
EXCLUDES = [".venv", ".git", "tune_results", "mlruns", "mlartifacts", "mlflow.db*"]
ENTRYPOINT = "scripts/search.py"


def runtime_env() -> dict:
    env = {k: os.environ[k] for k in FORWARDED if os.environ.get(k)}
    env.update(provenance.submission_env())
    return {"env_vars": env, "excludes": EXCLUDES}


def build_command(study: str, overrides: list[str], submission_id: str, wait: bool) -> list[str]:
    """The `ray job submit` command line (the ray CLI of this environment)."""
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--working-dir",
        ".",
        "--submission-id",
        submission_id,
        "--runtime-env-json",
        json.dumps(runtime_env()),
    ]
    if not wait:
        cmd.append("--no-wait")
    sets = [a for s in overrides for a in ("--set", s)]
    return [*cmd, "--", "python", ENTRYPOINT, study, *sets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="study YAML, a path inside this directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a study field")
    parser.add_argument("--submission-id", help="the job's id (default: tunelab-<study>-<time>)")
    parser.add_argument("--no-wait", action="store_true", help="submit and return; follow with `ray job logs -f`")
    args = parser.parse_args(argv)
    if not os.environ.get("RAY_ADDRESS") and not os.environ.get("RAY_API_SERVER_ADDRESS"):
        print(
            "error: RAY_ADDRESS: not set (expected the cluster's job API, e.g. http://127.0.0.1:8265)", file=sys.stderr
        )
        return 2
    from tunelab.run import plan_study
    from tunelab.study import load_study

    try:
        study_path = Path(args.study).resolve().relative_to(ROOT)
        plan = plan_study(load_study(study_path, args.set), study_path)
    except ValueError:
        print(f"error: {args.study}: the study must be inside {ROOT}, which is what the job uploads", file=sys.stderr)
        return 2
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    submission_id = args.submission_id or f"tunelab-{plan.study.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(
        f"submitting study '{plan.study.name}' as job {submission_id} "
        f"(commit {provenance.git_state()[GIT_COMMIT][:12]})",
        flush=True,
    )
    command = build_command(str(study_path), args.set, submission_id, not args.no_wait)  # the git state, then
    with provenance.submission_diff(ROOT):  # the diff beside it, uploaded with the working directory
        return subprocess.call(command, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
