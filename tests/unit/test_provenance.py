"""Provenance travels from the submitting checkout to a job that has no .git."""

import json
import subprocess
import sys

from tunelab import provenance

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "scripts"))
import submit  # noqa: E402


def _git(cwd, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_a_dirty_checkout_reaches_a_job_without_git(tmp_path, monkeypatch):
    repo, job = tmp_path / "repo", tmp_path / "job"
    repo.mkdir(), job.mkdir()
    _git(repo, "init", "-q")
    (repo / "f.py").write_text("a = 1\n")
    _git(repo, "add", "f.py")
    _git(repo, "commit", "-qm", "first")
    (repo / "f.py").write_text("a = 2  # token=s3cret\n")
    for k in (provenance.ENV_COMMIT, provenance.ENV_DIRTY):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(repo)
    shipped = provenance.submission_env()
    assert shipped[provenance.ENV_COMMIT] == _git(repo, "rev-parse", "HEAD")
    assert shipped[provenance.ENV_DIRTY] == "true"
    assert "s3cret" not in json.dumps(submit.runtime_env())  # what `ray job list` and `ps` would show
    with provenance.submission_diff(repo):
        uploaded = repo / provenance.DIFF_FILE
        assert uploaded.stat().st_mode & 0o777 == 0o600
        (job / provenance.DIFF_FILE).write_text(uploaded.read_text())  # what the upload carries
    assert not uploaded.exists()

    monkeypatch.chdir(job)  # what `ray job submit --working-dir` leaves: no .git
    assert provenance.git_state() == {"git.commit": "unknown", "git.dirty": "unknown"}
    for k, v in shipped.items():
        monkeypatch.setenv(k, v)
    assert provenance.git_state() == {"git.commit": shipped[provenance.ENV_COMMIT], "git.dirty": "true"}
    assert "-a = 1\n+a = 2  # token=s3cret" in provenance.git_diff()


def test_untracked_files_count_as_changes_and_are_in_the_diff(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("mlflow.db\n")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "-qm", "first")
    monkeypatch.chdir(repo)
    (repo / "mlflow.db").write_text("ignored")
    assert provenance.git_state()["git.dirty"] == "false"  # ignored files are not changes
    (repo / "trainables").mkdir()
    (repo / "trainables" / "sgd.py").write_text("class SGD:\n    name = 'sgd'\n")  # a family added as docs show
    (repo / "big.csv").write_text("x\n" * provenance.MAX_UNTRACKED_BYTES)
    assert provenance.git_state()["git.dirty"] == "true"
    diff = provenance.git_diff()
    assert "+++ b/trainables/sgd.py" in diff and "+    name = 'sgd'" in diff
    assert f"untracked file big.csv: {2 * provenance.MAX_UNTRACKED_BYTES} bytes, not shown" in diff
    assert "ignored" not in diff
    assert provenance.versions()["tunelab"] == "0.1.0"


def test_the_job_runtime_env_carries_no_secret(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-value")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken-value")
    cmd = submit.build_command("studies/tiny.yaml", ["search.num_samples=1"], "job-1", wait=False)
    env = json.loads(cmd[cmd.index("--runtime-env-json") + 1])
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert provenance.ENV_COMMIT in env["env_vars"] and ".git" in env["excludes"]
    assert "s3cret-value" not in " ".join(cmd) and "t0ken-value" not in " ".join(cmd)
    assert cmd[cmd.index("--") + 1 :] == [
        "python",
        "scripts/search.py",
        "studies/tiny.yaml",
        "--set",
        "search.num_samples=1",
    ]
    assert "--no-wait" in cmd and cmd[cmd.index("--working-dir") + 1] == "."
