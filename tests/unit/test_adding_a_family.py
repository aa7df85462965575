"""The documented worked example of a new model family (docs/models.md) works as written.

Its code blocks (``# trainables/sgd.py``, ``# searchspaces/sgd.yaml``, ``# studies/sgd.yaml``) are
copied out of docs/models.md into a fresh copy of the code, and the commands the page shows are run
against that copy: the registry finds the family, `validate` lays out its cells, it trains step by
step, a broken search space is a clear error, and (integration) `tunelab run` tunes and registers it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

#: the page that holds the worked example
PAGE = ROOT / "docs" / "models.md"
FAMILY = "sgd"
#: a fenced block whose first line names the file it holds
BLOCK = re.compile(r"^```\w*\n# ((?:trainables|searchspaces|studies)/[\w.-]+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
PACKAGES = ("tunelab", "trainables", "searchspaces")
TIMEOUT_S = 120
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The code as it is, plus the files of the page's example."""
    tmp = tmp_path_factory.mktemp("family")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp / package, ignore=shutil.ignore_patterns("__pycache__"))
    files = {name: text for name, text in BLOCK.findall(PAGE.read_text())}
    assert {f"trainables/{FAMILY}.py", f"searchspaces/{FAMILY}.yaml", f"studies/{FAMILY}.yaml"} <= set(files), files
    for name, text in files.items():
        assert not (ROOT / name).exists(), f"{name} ships with tunelab: the example must be a new family"
        (tmp / name).parent.mkdir(exist_ok=True)
        (tmp / name).write_text(text)
    return tmp


#: run in the checkout, in one process (imports are the slow part): the page's commands and a training check
SCRIPT = """
import contextlib, io, json, sys
from pathlib import Path

from tunelab.cli import main

def tunelab(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}

report = {"models": tunelab("models"), "validate": tunelab("validate", "studies/FAMILY.yaml")}

from trainables import FAMILIES
from trainables.base import Context, evaluate
from trainables.trial import refit
from tunelab.datasets import load_dataset
from tunelab.spaces import load_space
from tunelab.study import DatasetSpec, Split

report["epochs"], report["scores"] = {}, {}
for name, task in (("iris", "classification"), ("diabetes", "regression")):
    data = load_dataset(DatasetSpec(name=name), Split(), 0, name)
    space = load_space("FAMILY", task, {"budget": {"steps": 3, "per_step": 2}})
    sample = {"alpha": 1e-4, "penalty": "elasticnet", "l1_ratio": 0.5, "learning_rate": "adaptive", "eta0": 0.01}
    config = space.decode({k: v for k, v in sample.items() if k in space.params})
    ctx = Context(task=task, n_classes=data.n_classes, steps=space.steps, per_step=space.per_step)
    family = FAMILIES["FAMILY"](ctx)
    first = next(iter(family.fit(data.X_train, data.y_train, config)))
    epochs = [first.epochs_]
    epochs += [m.epochs_ for m in family.fit(data.X_train, data.y_train, config, model=first)]  # resumed
    report["epochs"][name] = epochs
    report["scores"][name] = {**evaluate(family, first, data.X_val, data.y_val),
                              **refit(FAMILIES["FAMILY"], data, config, ctx, steps=3)["test"]}

space = Path("searchspaces/FAMILY.yaml")
space.write_text(space.read_text().replace("1.0e-6, 1.0e-1", "1e-6, 0.1"))  # YAML reads 1e-6 as text
report["broken"] = tunelab("validate", "studies/FAMILY.yaml")
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(checkout, tmp_path_factory) -> dict:
    scratch = tmp_path_factory.mktemp("scratch-checkout")
    shutil.copytree(checkout, scratch, dirs_exist_ok=True)  # the script breaks its search space at the end
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("FAMILY", FAMILY)],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "PYTHONPATH": str(scratch)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_registry_finds_the_new_family(report):
    assert report["models"]["code"] == 0, report["models"]["err"]
    (line,) = [l for l in report["models"]["out"].splitlines() if l.startswith(f"{FAMILY} ")]
    assert "classification/regression" in line and "params: alpha, penalty, l1_ratio, learning_rate" in line


def test_validate_lays_out_its_cells(report):
    out = report["validate"]
    assert out["code"] == 0, out["err"]
    assert re.search(rf"cell\s+{FAMILY} · iris\s+metric val_logloss, budget 8 steps", out["out"]), out["out"]
    assert re.search(rf"cell\s+{FAMILY} · diabetes\s+metric val_rmse, budget 8 steps", out["out"]), out["out"]


def test_it_trains_step_by_step_and_resumes(report):
    assert report["epochs"] == {"iris": [2, 4, 6], "diabetes": [2, 4, 6]}
    assert report["scores"]["iris"]["val_accuracy"] > 0.5 and "test_logloss" in report["scores"]["iris"]
    assert report["scores"]["diabetes"]["val_r2"] > 0.2 and "test_rmse" in report["scores"]["diabetes"]


def test_a_broken_search_space_is_a_clear_error(report):
    out = report["broken"]
    assert out["code"] == 2
    assert (
        out["err"]
        .strip()
        .endswith(f"searchspaces/{FAMILY}.yaml: alpha: loguniform bounds must be numbers, got ['1e-6', 0.1]")
    ), out["err"]


@pytest.mark.integration
def test_tunelab_run_tunes_and_registers_it(checkout):
    from mlflow.tracking import MlflowClient

    out = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", "run", f"studies/{FAMILY}.yaml", "--quiet"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "PYTHONPATH": str(checkout)},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(rf"^\s+{FAMILY}\s+\d", out.stdout, re.MULTILINE), out.stdout
    client = MlflowClient(f"sqlite:///{checkout}/mlflow.db")
    for dataset in ("iris", "diabetes"):
        version = client.get_model_version_by_alias(f"sgd-demo-{dataset}", FAMILY)
        assert client.get_run(version.run_id).data.tags["tunelab.model"] == FAMILY
