"""tunelab installs as a package: a wheel built from the sources carries all a study reads at run time.

The wheel is built from a copy of what ``cluster/Dockerfile`` copies, installed into a fresh target outside the
repository, and run from an empty directory, where nothing of the source tree can be found.
"""

import os
import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT
from tunelab import provenance

pytestmark = pytest.mark.integration

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "tunelab", "trainables", "searchspaces")
STUDY = """
name: wheel
datasets: [iris]
models: [dummy, knn]
search: {searcher: random, scheduler: fifo, num_samples: 2}
"""


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)])
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("tunelab-*.whl")
    target = tmp / "site"
    done = _run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)])
    assert done.returncode == 0, done.stderr[-2000:]
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {"target": target, "work": work, "env": {**env, "PYTHONPATH": str(target)}}


def test_the_installed_package_is_the_one_that_runs(installed):
    code = "import searchspaces, trainables, tunelab.run, tunelab.predictor; print(tunelab.run.__file__)"
    out = _run([sys.executable, "-c", code], cwd=installed["work"], env=installed["env"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith(str(installed["target"]))


def test_its_console_script_lists_the_families_and_runs_a_study(installed):
    tunelab = str(installed["target"] / "bin" / "tunelab")
    models = _run([tunelab, "models"], cwd=installed["work"], env=installed["env"])
    assert models.returncode == 0, models.stderr[-2000:]
    assert "xgboost" in models.stdout and "params: n_neighbors" in models.stdout
    (installed["work"] / "wheel.yaml").write_text(STUDY)
    run = _run([tunelab, "run", "wheel.yaml", "--quiet"], cwd=installed["work"], env=installed["env"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{installed['work']}/mlflow.db")
    assert {"dummy", "knn", "champion"} <= set(client.get_registered_model("wheel-iris").aliases)
    # the code that ran, by digest: the same as this checkout's, though no .git came with the wheel
    (study,) = client.search_runs([client.get_experiment_by_name("wheel").experiment_id], "tags.`tunelab.role`='study'")
    assert study.data.tags["code.sha256"] == provenance.code_digest()
    assert study.data.tags["git.commit"] == "unknown" and study.data.tags["version.tunelab"] != "absent"
    trial = client.search_runs([study.info.experiment_id], "tags.`tunelab.role`='trial'", max_results=1)[0]
    assert trial.data.tags["hardware.node.cpus"] == str(os.cpu_count())  # the node that ran it
