"""Fractional GPUs on a Ray that declares a logical GPU: GPU trials see their device, others see none."""

import pytest
import ray
from mlflow.tracking import MlflowClient

from tunelab.run import plan_study, run_study
from tunelab.study import load_study

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def ray_with_logical_gpu():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_gpu_trials_get_a_device_and_cpu_families_none(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    path = tmp_path / "g.yaml"
    path.write_text(f"""
name: gpus
datasets: [iris]
models: [{{name: mlp, gpus_per_trial: 0.5}}, dummy]
search: {{searcher: random, scheduler: fifo, num_samples: 2, max_concurrent_trials: 2}}
tracking: {{uri: "{uri}", register_models: false}}
storage_path: {tmp_path}/tune
spaces: {{mlp: {{budget: {{steps: 2, per_step: 1}}}}}}
""")
    results = run_study(plan_study(load_study(path), path), progress=False)
    assert all(r.status == "FINISHED" for r in results)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gpus")
    trials = client.search_runs([exp.experiment_id], "tags.`tunelab.role` = 'trial'")
    by_family = {}
    for t in trials:
        by_family.setdefault(t.data.tags["tunelab.model"], []).append(t.data.tags)
    assert {tags["tunelab.cuda_visible_devices"] for tags in by_family["mlp"]} == {"0"}
    assert {tags["tunelab.device"] for tags in by_family["mlp"]} == {"cpu"}  # logical GPU: runs on CPU
    assert {tags["tunelab.cuda_visible_devices"] for tags in by_family["dummy"]} == {""}
