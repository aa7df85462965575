"""The documented study file reference (docs/study-file.md) is a valid study, and names every field a study file can
hold."""

import re
import shutil

from tests.conftest import ROOT
from tunelab.run import plan_study
from tunelab.study import DatasetSpec, ModelSpec, Resources, Search, Split, Study, Tracking, WarmStart, load_study

#: the page that holds the study file reference, and its section
PAGE = ROOT / "docs" / "study-file.md"
SECTION = "## The study file"


def _reference() -> str:
    text = PAGE.read_text()
    return re.search(r"```yaml\n(.*?)```", text[text.index(SECTION) :], re.DOTALL).group(1)


def test_the_reference_study_is_valid(tmp_path):
    (tmp_path / "studies").mkdir()
    shutil.copytree(ROOT / "data", tmp_path / "data")  # the reference reads ../data/loans.csv
    path = tmp_path / "studies" / "reference.yaml"
    path.write_text(_reference())
    plan = plan_study(load_study(path), path)
    assert len(plan.cells) == len(plan.datasets) * len(plan.study.models)


def test_the_reference_names_every_field():
    keys = set(re.findall(r"^\s*(?:- )?\{?([a-z_]+):", _reference(), re.MULTILINE))
    keys |= set(re.findall(r"[{,]\s*([a-z_]+):", _reference()))
    for model in (Study, Search, Resources, Tracking, Split, DatasetSpec, ModelSpec, WarmStart):
        missing = {f.alias or name for name, f in model.model_fields.items()} - keys
        assert not missing, f"{PAGE.name}'s study file reference lacks {model.__name__} fields {sorted(missing)}"
