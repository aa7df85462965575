"""OpenML datasets by id, from a local cache first, else downloaded from OpenML's REST API into it.

A cached dataset is a folder ``<cache>/<id>/`` holding ``description.json`` (OpenML's
``data/{id}`` JSON answer: name, default target, ignored and row-id attributes, md5 of the file)
and ``dataset.arff``. Caches are searched in order: ``TUNELAB_OPENML_CACHE`` (when set), the
repository's ``data/openml`` (a small copy ships with tunelab), then ``~/.cache/tunelab/openml``,
which is also where downloads go.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import arff
import pandas as pd
import requests

from tunelab.errors import StudyError

DEFAULT_API = "https://api.openml.org"
SHIPPED_CACHE = Path(__file__).resolve().parent.parent / "data" / "openml"
USER_CACHE = Path.home() / ".cache" / "tunelab" / "openml"
DOWNLOAD_TIMEOUT_S = 60
DESCRIPTION, DATA = "description.json", "dataset.arff"


def caches() -> list[Path]:
    env = os.environ.get("TUNELAB_OPENML_CACHE")
    return [*([Path(env)] if env else []), SHIPPED_CACHE, USER_CACHE]


def _download(dataset_id: int, where: str) -> Path:
    """Fetch the description and ARFF file of ``dataset_id`` into the user cache (md5 checked)."""
    folder = USER_CACHE / str(dataset_id)
    api = os.environ.get("TUNELAB_OPENML_API", DEFAULT_API)
    try:
        r = requests.get(f"{api}/api/v1/json/data/{dataset_id}", timeout=DOWNLOAD_TIMEOUT_S)
        r.raise_for_status()
        desc = r.json()["data_set_description"]
        data = requests.get(desc["url"], timeout=DOWNLOAD_TIMEOUT_S)
        data.raise_for_status()
    except (requests.RequestException, KeyError, ValueError) as e:
        searched = ", ".join(str(c / str(dataset_id)) for c in caches())
        raise StudyError(
            where,
            f"OpenML dataset {dataset_id} is in no cache ({searched}) and OpenML "
            f"({api}) could not be reached: {type(e).__name__}: {e}",
        ) from None
    if desc.get("md5_checksum") and hashlib.md5(data.content).hexdigest() != desc["md5_checksum"]:
        raise StudyError(where, f"OpenML dataset {dataset_id}: the downloaded file does not match its md5 checksum")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DATA).write_bytes(data.content)
    (folder / DESCRIPTION).write_text(json.dumps({"data_set_description": desc}, indent=1))
    return folder


def find(dataset_id: int, where: str) -> Path:
    """The cache folder of ``dataset_id``, downloading it when no cache holds it."""
    for cache in caches():
        if (cache / str(dataset_id) / DATA).is_file() and (cache / str(dataset_id) / DESCRIPTION).is_file():
            return cache / str(dataset_id)
    return _download(dataset_id, where)


def _names(value) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def load(dataset_id: int, target: str | None, where: str) -> tuple[pd.DataFrame, pd.Series, str]:
    """Features, target and OpenML's name of the dataset; the target defaults to OpenML's default target."""
    folder = find(dataset_id, where)
    desc = json.loads((folder / DESCRIPTION).read_text())["data_set_description"]
    try:
        with open(folder / DATA) as f:
            raw = arff.load(f)
    except (arff.ArffException, OSError) as e:
        raise StudyError(where, f"cannot read {folder / DATA} as ARFF: {e}") from None
    columns = [name for name, _ in raw["attributes"]]
    df = pd.DataFrame(raw["data"], columns=columns)
    for name, kind in raw["attributes"]:
        if isinstance(kind, str) and kind.upper() in ("REAL", "NUMERIC", "INTEGER"):
            df[name] = pd.to_numeric(df[name])
    target = target or desc.get("default_target_attribute")
    if not target or target not in df.columns:
        raise StudyError(
            f"{where}.target",
            f"OpenML dataset {dataset_id} has no column '{target}' (columns: {', '.join(columns[:12])})",
        )
    drop = [c for c in (*_names(desc.get("ignore_attribute")), *_names(desc.get("row_id_attribute"))) if c in df]
    return df.drop(columns=[target, *drop]), df[target], desc.get("name", f"openml_{dataset_id}")


SUITES = "suites"


def suite(suite_id: int, where: str) -> list[int]:
    """The dataset ids of OpenML suite (study) ``suite_id``: ``<cache>/suites/<id>.json`` holds OpenML's
    ``study/{id}`` JSON answer; without one, it is downloaded into the user cache."""
    for cache in caches():
        path = cache / SUITES / f"{suite_id}.json"
        if path.is_file():
            return _suite_ids(json.loads(path.read_text()), suite_id, where)
    api = os.environ.get("TUNELAB_OPENML_API", DEFAULT_API)
    try:
        r = requests.get(f"{api}/api/v1/json/study/{suite_id}", timeout=DOWNLOAD_TIMEOUT_S)
        r.raise_for_status()
        answer = r.json()
    except (requests.RequestException, ValueError) as e:
        raise StudyError(
            where,
            f"OpenML suite {suite_id} is in no cache and OpenML ({api}) could not be reached: {type(e).__name__}: {e}",
        ) from None
    (USER_CACHE / SUITES).mkdir(parents=True, exist_ok=True)
    (USER_CACHE / SUITES / f"{suite_id}.json").write_text(json.dumps(answer))
    return _suite_ids(answer, suite_id, where)


def _suite_ids(answer: dict, suite_id: int, where: str) -> list[int]:
    try:
        return [int(i) for i in answer["study"]["data"]["data_id"]]
    except (KeyError, TypeError, ValueError):
        raise StudyError(where, f"OpenML suite {suite_id}: no dataset ids in its description") from None
