"""Study files: what is accepted, and what is rejected with a message naming file and field."""

import os

import pytest

from tests.cli import tunelab
from tunelab.errors import StudyError
from tunelab.run import plan_study
from tunelab.study import load_study

GOOD = """
name: t
datasets: [iris]
models: [dummy]
"""


def test_defaults_fill_in(write_study):
    s = load_study(write_study(GOOD))
    assert (s.search.searcher, s.search.scheduler, s.search.num_samples) == ("optuna", "asha", 8)
    assert s.experiment == "t"


def test_set_overrides_parse_yaml_values(write_study):
    s = load_study(write_study(GOOD), ["search.num_samples=3", "resources.gpus_per_trial=0.25"])
    assert s.search.num_samples == 3 and s.resources.gpus_per_trial == 0.25


@pytest.mark.parametrize(
    "text, where, says",
    [
        (GOOD + "serch: {}\n", "study.yaml", "did you mean 'search'"),
        (GOOD + "search: {scheduler: ashaa}\n", "search.scheduler", "did you mean 'asha'"),
        (GOOD + "search: {searcher: optuna, scheduler: bohb}\n", "search", "only work together"),
        (GOOD + "search: {num_samples: 0}\n", "search.num_samples", "greater than 0"),
        (GOOD + "search: {metric: val_auc}\n", "search.metric", "did you mean 'val_roc_auc'"),
        (GOOD.replace("[dummy]", "[xgboots]"), "models", "did you mean 'xgboost'"),
        (GOOD + "resources: {cpus_per_trial: 0}\n", "resources.cpus_per_trial", "greater than 0"),
        (GOOD + "spaces: {xgboost: {}}\n", "spaces", "not one of the study's models"),
        ("name: t\nmodels: [dummy]\n", "datasets", "required field is missing"),
        (GOOD + "search: {num_samples: true}\n", "search.num_samples", "valid integer"),
        (GOOD + "search: {num_samples: 1.0e+15}\n", "search.num_samples", "valid integer"),
        (GOOD + "search: {num_samples: 1000000000000000}\n", "search.num_samples", "less than or equal to 1000000"),
        (GOOD + "splits: true\n", "splits", "valid integer"),
        (GOOD + "seed: -1\n", "seed", "greater than or equal to 0"),
        (GOOD + "tracking: {register_models: 1}\n", "tracking.register_models", "valid boolean"),
        (GOOD + "search: {searcher: random}\nsearch: {num_samples: 3}\n", "study.yaml", "'search' is given twice"),
        (GOOD + "search: {num_samples: 3, num_samples: 4}\n", "study.yaml", "'num_samples' is given twice"),
        (GOOD + "search:\n\tnum_samples: 3\n", "study.yaml", "not valid YAML"),
        (GOOD + "tracking: {uri: 'mlfow://x'}\n", "tracking.uri", "unknown scheme 'mlfow'"),
        (GOOD + "tracking: {uri: 'sqlite://m.db'}\n", "tracking.uri", "three slashes"),
        (GOOD + "search: {trial_timeout_s: .inf}\n", "search.trial_timeout_s", "finite number"),
        (GOOD.replace("[iris]", "[{name: ../x, path: x.csv, target: y}]"), "datasets", "letters, digits"),
        (
            GOOD.replace("[iris]", "[iris, {name: iris-split1, path: x.csv, target: y}]") + "splits: 2\n",
            "datasets[1].name",
            "'iris-split1' is what splits: 2 names a repeat of 'iris'",
        ),
    ],
)
def test_bad_fields_name_the_field(write_study, text, where, says):
    with pytest.raises(StudyError) as e:
        load_study(write_study(text))
    assert where in str(e.value) and says in str(e.value)
    assert str(e.value).startswith(str(write_study(text)))


@pytest.mark.parametrize(
    "text, where, says",
    [
        (GOOD.replace("[iris]", "[irsi]"), "datasets[0]", "did you mean 'iris'"),
        (GOOD.replace("[dummy]", "[ridge]"), "models", "supports regression only"),
        (GOOD + "search: {metric: val_rmse}\n", "search.metric", "does not fit classification"),
        (
            GOOD.replace("[dummy]", "[xgboost]") + "spaces: {xgboost: {max_depth: {randint: [6, 2]}}}\n",
            "spaces.xgboost: max_depth",
            "low < high",
        ),
        (
            GOOD.replace("[dummy]", "[xgboost]") + "spaces: {xgboost: {learning_rate: {loguniform: [0, 1]}}}\n",
            "learning_rate",
            "bounds > 0",
        ),
        (
            GOOD.replace("[dummy]", "[xgboost]") + "spaces: {xgboost: {depth: {randint: [2, 6]}}}\n",
            "spaces.xgboost.depth",
            "has no parameter 'depth'",
        ),
        (GOOD.replace("[dummy]", "[knn]") + "spaces: {knn: {weights: {choice: []}}}\n", "weights", "at least one"),
        (GOOD.replace("[dummy]", "[knn]") + "spaces: {knn: {p: {normal: [0, 1]}}}\n", "p", "unknown distribution"),
        (
            GOOD.replace("[dummy]", "[knn]") + "spaces: {knn: {weights: {choice: [[1, 2], 3]}}}\n",
            "weights",
            "options must be single values",
        ),
        (GOOD + "spaces: {dummy: {budget: {step: 3}}}\n", "spaces.dummy.budget.step", "did you mean 'steps'"),
        (
            GOOD.replace("[dummy]", "[xgboost]") + "search: {grace_period: 500}\n",
            "search.grace_period",
            "more than the",
        ),
    ],
)
def test_bad_plans_name_the_field(write_study, text, where, says):
    path = write_study(text)
    with pytest.raises(StudyError) as e:
        plan_study(load_study(path), path)
    assert where in str(e.value) and says in str(e.value), str(e.value)


def test_cli_exits_2_with_one_line_and_writes_nothing(write_study, tmp_path):
    path = write_study(GOOD.replace("[dummy]", "[xgboots]") + f"tracking: {{uri: sqlite:///{tmp_path}/m.db}}\n")
    out = tunelab("run", path, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "models" in out.stderr and "xgboost" in out.stderr
    assert not (tmp_path / "m.db").exists()


def test_a_study_file_not_in_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("name: t", "name: t  # caf\xe9").encode("latin-1"))
    with pytest.raises(StudyError, match=r"latin1.yaml: not UTF-8 text \(byte \d+: b'\\xe9'\)"):
        load_study(path)


def test_a_job_api_ray_address_is_named_with_the_two_a_driver_takes(write_study, tmp_path):
    path = write_study(GOOD + f"tracking: {{uri: sqlite:///{tmp_path}/m.db}}\n")
    out = tunelab("run", path, timeout=120, env={**os.environ, "RAY_ADDRESS": "http://10.0.0.5:8265"})
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("error: RAY_ADDRESS: http://10.0.0.5:8265 is the address of Ray's job API")
    assert "ray://10.0.0.5:10001" in out.stderr and "10.0.0.5:6379" in out.stderr
    assert not (tmp_path / "m.db").exists()


def test_splits_repeat_every_dataset_with_its_own_split_seed(write_study):
    path = write_study("name: s\ndatasets: [iris, diabetes]\nmodels: [knn, logistic_regression]\nsplits: 3\n")
    plan = plan_study(load_study(path), path)
    assert list(plan.datasets) == [
        "iris",
        "iris-split1",
        "iris-split2",
        "diabetes",
        "diabetes-split1",
        "diabetes-split2",
    ]
    assert len(plan.cells) == 3 * 2 + 3  # logistic_regression: iris only
    assert plan.skipped == ["logistic_regression · diabetes (no regression)"]
    knn = [c for c in plan.cells if c.family == "knn" and c.dataset_name == "iris"]
    assert [c.split for c in knn] == [0, 1, 2] and [c.key for c in knn] == [
        "knn.iris",
        "knn.iris-split1",
        "knn.iris-split2",
    ]
    assert len({c.seed for c in knn}) == 3
    a, b = plan.datasets["iris"], plan.datasets["iris-split1"]
    assert a.content_hash == b.content_hash and (a.X_test != b.X_test).any()  # same data, other rows in test


def test_a_trial_bigger_than_any_node_is_refused_by_validate_and_run_alike(write_study, tmp_path):
    """Run locally, the node is this machine: a trial asking for more CPUs than it has would wait forever."""
    cpus = (os.cpu_count() or 1) + 1
    path = write_study(
        GOOD.replace("[dummy]", f"[{{name: dummy, cpus_per_trial: {cpus}}}]")
        + f"tracking: {{uri: sqlite:///{tmp_path}/m.db}}\nstorage_path: {tmp_path}/tune\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for command in ("validate", "run"):
        out = tunelab(command, path, timeout=120, env=env)
        assert out.returncode == 2, out.stderr[-2000:]
        assert f"resources (model dummy): a trial asks for {cpus} CPU and 0 GPU, but no node (this machine)" in (
            out.stderr
        )
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "tune").exists()


def test_a_store_that_does_not_answer_or_storage_that_cannot_be_written_stop_validate_and_run_alike(
    write_study, tmp_path
):
    """Checked before any work, waiting on the network a few seconds at most; nothing is created."""
    from tests.servers import free_port

    (tmp_path / "a-file").write_text("")
    cases = [
        (f"tracking: {{uri: 'http://127.0.0.1:{free_port()}'}}\n", "tracking.uri: no MLflow server at http://"),
        (f"storage_path: {tmp_path}/a-file/tune\n", "storage_path: Tune's storage"),
    ]
    for extra, says in cases:
        path = write_study(GOOD + extra)
        for command in ("validate", "run"):
            out = tunelab(command, path, cwd=tmp_path, timeout=120)
            assert out.returncode == 2 and f"study.yaml: {says}" in out.stderr, out.stderr[-2000:]
            assert "Traceback" not in out.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "tune_results").exists()


def test_a_validation_split_too_small_to_select_on_is_noted_before_the_work(write_study):
    """iris keeps 30 of its 150 rows for validation: the plan says so, naming the dataset and split.folds; the same
    with folds, or breast_cancer's 114 validation rows, says nothing."""
    path = write_study("name: s\ndatasets: [iris, breast_cancer]\nmodels: [dummy]\n")
    notes = plan_study(load_study(path), path).notes()
    assert len(notes) == 1 and notes[0].startswith("dataset iris: 30 validation rows") and "split.folds" in notes[0]
    assert plan_study(load_study(path, ["split.folds=5"]), path).notes() == []
