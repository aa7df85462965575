"""`make cluster-up` keeps secrets in its state directory (default under /tmp): it trusts only a directory, and a
secrets file, that are the user's own and closed to others."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = [sys.executable, str(ROOT / "scripts" / "cluster.py")]


def _env(state_dir):
    return subprocess.run([*SCRIPT, "env", "--dir", str(state_dir)], capture_output=True, text=True, timeout=60)


def test_a_directory_others_may_write_is_refused(tmp_path):
    state = tmp_path / "cl"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    out = _env(state)
    assert out.returncode != 0 and "is open to other users (mode 777)" in out.stderr


def test_a_symlinked_directory_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "cl").symlink_to(tmp_path / "elsewhere")
    out = _env(tmp_path / "cl")
    assert out.returncode != 0 and "is a symbolic link" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user takes root")
def test_a_directory_of_another_user_is_refused(tmp_path):
    state = tmp_path / "cl"
    state.mkdir(mode=0o700)
    os.chown(state, 12345, 12345)
    out = _env(state)
    assert out.returncode != 0 and "belongs to uid 12345" in out.stderr


def test_secrets_others_can_read_are_refused(tmp_path):
    spec = importlib.util.spec_from_file_location("tunelab_cluster_script", ROOT / "scripts" / "cluster.py")
    cluster = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cluster)
    state = tmp_path / "cl"
    state.mkdir(mode=0o700)
    (state / "secrets.json").write_text(json.dumps({"ray_token": "planted"}))
    (state / "secrets.json").chmod(0o644)
    with pytest.raises(SystemExit, match="secrets.json is open to other users"):
        cluster.Cluster(state)._secrets()
    (state / "secrets.json").chmod(0o600)
    assert cluster.Cluster(state)._secrets() == {"ray_token": "planted"}  # one's own, kept: the runs stay reachable


def test_env_makes_nothing_where_no_cluster_is_up(tmp_path):
    out = _env(tmp_path / "new")
    assert out.returncode == 2 and "no cluster is up" in out.stderr
    assert not (tmp_path / "new").exists()
