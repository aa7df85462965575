"""The MLflow UI as a user sees a study: a real study, a real `mlflow server`, a real Chromium.

A tiny study runs on a local Ray into a sqlite store; `mlflow server` serves it on loopback; Playwright
drives Debian's Chromium through it like a person would, and every step saves a screenshot that must
not be blank. ``TUNELAB_UI_SCREENSHOTS=docs/img`` keeps the README's (as small palette PNGs).
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from playwright import sync_api as playwright
from playwright.sync_api import expect

from tests.cli import tunelab_ok
from tests.servers import TrackingServer

pytestmark = [pytest.mark.integration, pytest.mark.ui]

STUDY = "tour"
FAMILIES = ("dummy", "knn", "random_forest")
DATASETS = ("iris", "breast_cancer")
SAMPLES = 4  # the fewest trials a cell needs for the report's hyperparameter importance
STEPS = 4  # random_forest's budget steps: a trial's chart has several points
STUDY_YAML = """
name: {name}
seed: 0
datasets: [{datasets}]
models: [{families}]
search: {{searcher: optuna, scheduler: asha, num_samples: {samples}, max_concurrent_trials: 2}}
tracking: {{uri: "{uri}"}}
storage_path: {tmp}/tune
spaces: {{random_forest: {{budget: {{steps: {steps}, per_step: 5}}}}}}
"""
STUDY_TIMEOUT_S = 600

CHROMIUM = "/usr/bin/chromium"  # Debian's; scripts/system-deps.sh installs it (`playwright install` needs the web)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}
UI_TIMEOUT_MS = 60_000  # the first page of a cold server on a busy machine
QUIET_S, SETTLE_MAX_S, POLL_MS = 0.5, 10, 100  # the network counts as idle after QUIET_S without a request
SUMMARY_COLUMNS = ("best_val_logloss", "test_accuracy", "trials")
HIDDEN_COLUMNS = ("Source",)  # empty for tunelab's runs: room for the metrics

#: MLflow's first-visit announcements that cover the page: the new registry UI (with aliases), a tip
ANNOUNCEMENTS = ("Try it now", "Got it")

SCREENSHOTS_ENV = "TUNELAB_UI_SCREENSHOTS"
#: the README's and the tour's
DOC_SHOTS = ("ui-cells", "ui-trial", "ui-model", "ui-artifacts", "report-tuning", "report-importance")
#: the study report's sections shown in the docs: heading -> screenshot
REPORT_SECTIONS = {"What tuning bought": "report-tuning", "Hyperparameter importance": "report-importance"}
PALETTE_COLOURS = 128  # screenshots kept for the docs: palette PNGs, a fraction of the size
MIN_COLOURS = 16  # a rendered page has text, icons, links; a blank or failed one has a handful
MIN_INK = 0.01  # fraction of pixels clearly darker than the white background
INK_LEVEL = 200


# --- fixtures: a study, a server on its store, a browser --------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[MlflowClient, str, Path]:
    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp}/mlflow.db"
    path = tmp / f"{STUDY}.yaml"
    path.write_text(
        STUDY_YAML.format(
            name=STUDY,
            datasets=", ".join(DATASETS),
            families=", ".join(FAMILIES),
            samples=SAMPLES,
            steps=STEPS,
            uri=uri,
            tmp=tmp,
        )
    )
    out = tunelab_ok("run", path, "--quiet", cwd=tmp, timeout=STUDY_TIMEOUT_S)
    (tmp / "stdout.txt").write_text(out.stdout)  # it ends with the link to the study's runs in the UI
    return MlflowClient(uri), uri, tmp


@pytest.fixture(scope="module")
def ui(store) -> str:
    _, uri, tmp = store
    server = TrackingServer(tmp, store=uri)
    try:
        server.start()
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, started once; Playwright gives it a fresh profile directory of its own."""
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, ui):
    """A page in a new browser context: each test starts as a first-time visitor (nothing stored)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield _visitor_page(context, ui)
    finally:
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shots")


# --- what a user does -----------------------------------------------------------------------
def _settle(page) -> None:
    """Wait until no request has started or ended for a moment (the network gone idle).

    MLflow keeps one connection open for good, so Playwright's own "networkidle" never comes.
    """
    last = [time.monotonic()]

    def seen(_) -> None:
        last[0] = time.monotonic()

    events = ("request", "requestfinished", "requestfailed")
    for event in events:
        page.on(event, seen)
    deadline = time.monotonic() + SETTLE_MAX_S
    while time.monotonic() - last[0] < QUIET_S and time.monotonic() < deadline:
        page.wait_for_timeout(POLL_MS)
    for event in events:
        page.remove_listener(event, seen)


def _visitor_page(context, ui: str):
    """A first-time visitor, who clicks nothing but the study: its experiment opens on the training runs."""
    page = context.new_page()
    for button in ANNOUNCEMENTS:  # whenever one covers the page, it is clicked away first
        page.add_locator_handler(page.get_by_role("button", name=button, exact=True), lambda b: b.click())
    return page


def _close_assistant(page) -> None:
    """MLflow opens its assistant panel beside the page for a first-time visitor: close it to make room."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count() and close.first.is_visible():
        close.first.click()


def _experiment_id(store) -> str:
    client, _, _ = store
    return client.get_experiment_by_name(STUDY).experiment_id


def _visit(page, url: str, ready) -> None:
    """Open ``url`` and wait for ``ready`` to show."""
    page.goto(url)
    ready.wait_for()
    _close_assistant(page)


def _open_runs(page, ui: str, store) -> None:
    """The experiment's runs table."""
    _visit(page, f"{ui}/#/experiments/{_experiment_id(store)}/runs", _grid_link(page, STUDY))


def _grid_link(page, name: str):
    return page.get_by_role("grid").get_by_role("link", name=name, exact=True)


def _expand(page, run_name: str, child_name: str) -> None:
    """Show a run's nested runs (MLflow remembers which runs were expanded, so only when hidden)."""
    _grid_link(page, run_name).wait_for()
    if not _grid_link(page, child_name).count():
        link = page.get_by_role("link", name=run_name, exact=True)
        page.get_by_role("grid").get_by_role("row").filter(has=link).get_by_role("button").first.click()
    _grid_link(page, child_name).wait_for()


def _shot(page, shots: Path, name: str) -> None:
    """Save a screenshot, and check that it shows something."""
    page.evaluate("document.activeElement?.blur()")  # no tooltip shown for a focused button
    page.mouse.move(VIEWPORT["width"] // 2, VIEWPORT["height"] - 1)  # nor for a hovered one
    _settle(page)
    png = page.screenshot()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) >= MIN_COLOURS, f"{name}: only {len(colours)} colours: a blank page?"
    grey = image.convert("L")
    ink = sum(grey.histogram()[:INK_LEVEL]) / (grey.width * grey.height)
    assert ink >= MIN_INK, f"{name}: {ink:.3%} of the pixels are not white: a blank page?"
    image.save(shots / f"{name}.png")
    if os.environ.get(SCREENSHOTS_ENV) and name in DOC_SHOTS:
        image.quantize(PALETTE_COLOURS).save(Path(os.environ[SCREENSHOTS_ENV]) / f"{name}.png", optimize=True)


# --- the tour ---------------------------------------------------------------------------------
def test_experiment_reads_as_study_cells_and_trials(page, ui, store, shots):
    _, _, tmp = store
    (link,) = re.findall(r"then open http://127\.0\.0\.1:5000(\S+)", (tmp / "stdout.txt").read_text())
    _visit(page, f"{ui}{link}", _grid_link(page, STUDY))  # the link the study printed: no view to pick first
    for family in FAMILIES:
        for dataset in DATASETS:
            assert _grid_link(page, f"{family} · {dataset}").count() == 0  # nested: hidden until expanded
    _expand(page, STUDY, "knn · iris")
    for family in FAMILIES:
        for dataset in DATASETS:
            _grid_link(page, f"{family} · {dataset}").wait_for()
    assert _grid_link(page, "knn · iris · 1").count() == 0
    _expand(page, "knn · iris", "knn · iris · 1")
    for n in range(1, SAMPLES + 1):
        _grid_link(page, f"knn · iris · {n}").wait_for()
    assert _grid_link(page, "knn · breast_cancer · 1").count() == 0  # only the expanded cell shows its trials
    _shot(page, shots, "ui-runs")


def test_cell_runs_compare_at_a_glance(page, ui, store, shots):
    _open_runs(page, ui, store)
    page.get_by_role("button", name="Columns", exact=True).click()
    chooser = page.get_by_role("dialog")
    for column in (*HIDDEN_COLUMNS, *SUMMARY_COLUMNS):  # a click toggles a column
        chooser.get_by_text(column, exact=True).click()
    page.keyboard.press("Escape")
    _expand(page, STUDY, "knn · iris")
    grid = page.get_by_role("grid")
    for column in SUMMARY_COLUMNS:
        grid.get_by_role("columnheader", name=column, exact=True).first.wait_for()
    # each cell run shows its trial count (trial runs show "-" there), and the dataset it used
    assert grid.get_by_role("gridcell", name=str(SAMPLES), exact=True).count() == len(FAMILIES) * len(DATASETS)
    assert grid.get_by_role("gridcell", name=re.compile(rf"^{DATASETS[0]}\b")).count() >= len(FAMILIES)
    _expand(page, "knn · iris", "knn · iris · 1")
    _shot(page, shots, "ui-cells")


def test_tags_filter_by_family(page, ui, store, shots):
    _open_runs(page, ui, store)
    search = page.get_by_role("combobox").first
    search.fill("tags.tunelab.model = 'knn'")
    search.press("Enter")
    _expand(page, STUDY, f"knn · {DATASETS[0]}")
    grid = page.get_by_role("grid")
    for family in FAMILIES:  # retried until the filtered search has come back
        expect(grid.get_by_role("link", name=re.compile(rf"^{family} · [^·]+$"))).to_have_count(
            len(DATASETS) if family == "knn" else 0
        )
    _shot(page, shots, "ui-filter")


def test_trial_shows_its_metric_chart(page, ui, store, shots):
    client, _, _ = store
    trial = "random_forest · iris · 1"
    (run,) = client.search_runs([_experiment_id(store)], f"attributes.run_name = '{trial}'")
    _open_runs(page, ui, store)
    _expand(page, STUDY, "random_forest · iris")
    _expand(page, "random_forest · iris", trial)
    _grid_link(page, trial).click()
    page.get_by_role("heading", name=trial, exact=True).wait_for()
    page.get_by_role("tab", name="Model metrics").click()
    chart = page.get_by_test_id("experiment-view-compare-runs-card").filter(
        has=page.get_by_role("heading", name="val_logloss", exact=True)
    )
    # one point per budget step the trial reported
    expect(chart.locator(".js-plotly-plot .scatterlayer .points path")).to_have_count(
        int(run.data.tags["tunelab.steps"])
    )
    _shot(page, shots, "ui-trial")


def test_registered_model_has_champion_and_links_to_its_run(page, ui, store, shots):
    client, _, _ = store
    name = f"{STUDY}-{DATASETS[0]}"
    champion = client.get_model_version_by_alias(name, "champion")
    source = client.get_run(champion.run_id)
    _visit(page, f"{ui}/#/models", page.get_by_role("link", name=name, exact=True))
    page.get_by_role("link", name=name, exact=True).click()
    row = page.get_by_role("row").filter(has=page.get_by_role("status", name="champion"))
    row.get_by_role("link", name=f"Version {champion.version}").wait_for()
    for family in FAMILIES:
        page.get_by_role("status", name=family, exact=True).wait_for()
    page.get_by_text(f"Alias champion: {source.data.tags['tunelab.model']}, the best val_logloss").wait_for()
    _shot(page, shots, "ui-model")
    row.get_by_role("link", name=f"Version {champion.version}").click()
    page.get_by_text(f"{source.info.run_name}: val_logloss ").wait_for()  # the version's description
    page.get_by_role("link", name=source.info.run_name, exact=True).click()
    page.get_by_role("heading", name=source.info.run_name, exact=True).wait_for()
    assert source.data.tags["tunelab.role"] == "cell"


def test_study_and_cell_runs_carry_their_files(page, ui, store, shots):
    client, _, _ = store
    experiment = _experiment_id(store)
    (study_run,) = client.search_runs([experiment], "tags.`tunelab.role` = 'study'")
    (cell_run,) = client.search_runs([experiment], "attributes.run_name = 'random_forest · iris'")
    for run, artifact, line in (
        (study_run, "study.yaml", f"name: {STUDY}"),
        (cell_run, "searchspace.yaml", f"budget: {{steps: {STEPS}, per_step: 5}}"),
    ):
        artifacts = page.get_by_text(artifact, exact=True).first
        _visit(page, f"{ui}/#/experiments/{experiment}/runs/{run.info.run_id}/artifacts", artifacts)
        artifacts.click()
        page.get_by_text(line).first.wait_for()  # the search space as the cell searched it: the study's budget
    _shot(page, shots, "ui-artifacts")


def test_report_page_shows_what_tuning_bought_and_importance(page, store, shots):
    """The study report ``tunelab run`` wrote, as a browser shows it: each section's table and figure on screen."""
    _, _, tmp = store
    page.goto((tmp / "reports" / STUDY / "report.html").as_uri())
    for heading, name in REPORT_SECTIONS.items():
        title = page.get_by_role("heading", name=heading)
        title.evaluate("e => e.scrollIntoView({block: 'start'})")
        figure, table = (
            title.locator("xpath=following-sibling::img[1]"),
            title.locator("xpath=following-sibling::table[1]"),
        )
        expect(figure).to_be_visible()
        expect(table).to_be_visible()
        assert figure.evaluate("i => i.naturalWidth") > 300, f"{heading}: no figure drawn"
        _shot(page, shots, name)
