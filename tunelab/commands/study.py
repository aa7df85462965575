"""The commands that run a study: validate, run, resume, sync."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tunelab.commands import EXIT_INTERRUPTED, EXIT_STORE_INCOMPLETE, store_uri
from tunelab.errors import StudyError


def _plan(args):
    from tunelab.run import plan_study
    from tunelab.study import load_study

    source = Path(args.study)
    return plan_study(load_study(source, args.set), source)


def cmd_validate(args) -> int:
    plan = _plan(args)
    from tunelab.run.preflight import preflight

    preflight(plan, local=not os.environ.get("RAY_ADDRESS"))  # as `run` checks (a local run: this machine)
    s = plan.study.search
    print(
        f"{plan.source}: OK — study '{plan.study.name}', {len(plan.cells)} cells "
        f"({s.searcher} + {s.scheduler}, {s.num_samples} trials each)"
    )
    for name, d in plan.datasets.items():
        rows = (
            f"{len(d.y_train)}/{len(d.y_test)} rows (train in {len(d.folds)} folds/test)"
            if d.folds
            else f"{len(d.y_train)}/{len(d.y_val)}/{len(d.y_test)} rows (train/val/test)"
        )
        print(
            f"  dataset {name:<26} {d.task:<15} {rows}, {len(d.feature_names)} features, sha256 {d.content_hash[:12]}"
        )
    for c in plan.cells:
        print(
            f"  cell    {c.label:<40} metric {c.metric}, budget {c.space.steps} steps, "
            f"{c.resources.cpus_per_trial:g} CPU / {c.resources.gpus_per_trial:g} GPU per trial"
        )
    for s in plan.skipped:
        print(f"  skipped {s}")
    for note in plan.notes():
        print(f"  note: {note}")
    if args.preview:
        _preview(plan)
    return 0


def _preview(plan) -> None:
    from tunelab.preview import PREVIEW_DRAWS, preview_lines
    from tunelab.search import CONTINUOUS_ONLY

    encoded = plan.study.search.searcher in CONTINUOUS_ONLY
    print(f"\nsearch spaces, {PREVIEW_DRAWS} draws per cell (values as trials receive them; no training):")
    for c in plan.cells:
        print(f"  {c.label}")
        for line in preview_lines(c.space, PREVIEW_DRAWS, c.seed, encoded) or ["      (nothing tuned)"]:
            print(line)


def cmd_run(args) -> int:
    return _run(_plan(args), args.quiet, args.resume)


def _run(plan, quiet: bool, resume: bool) -> int:
    from tunelab.run import StudyRunner, leaderboard
    from tunelab.tracking import ui_runs_path

    study = plan.study
    print(
        f"study '{study.name}': {len(plan.cells)} cells × {study.search.num_samples} trials "
        f"({study.search.searcher} + {study.search.scheduler}); tracking {study.tracking.resolved_uri()}"
        f"{' — resuming' if resume else ''}",
        flush=True,
    )
    for s in plan.skipped:
        print(f"  skipped {s}")
    for note in plan.notes():
        print(f"  note: {note}")
    t0 = time.time()
    runner = StudyRunner(plan, progress=not quiet, resume=resume)
    results = runner.run()
    if runner.interrupted.is_set():
        print(
            f"\nstopped after {time.time() - t0:.0f}s; every cell's state is saved. "
            f"Continue with: tunelab resume {study.name}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(leaderboard(results))
    failed = [r for r in results if r.status != "FINISHED"]
    for r in failed:
        print(f"\ncell {r.cell.label} {r.status}: {r.error or 'every trial failed'}", file=sys.stderr)
    uri = study.tracking.resolved_uri()
    if not runner.store_complete:
        lost = runner.tracker.lost
        first = lost.first or "unreachable at the end"
        print(
            f"\nthe MLflow store {uri} did not take {lost.count} writes (first: {first}): some runs are incomplete."
            f" Once it takes writes again: tunelab sync {study.name}",
            file=sys.stderr,
        )
        return EXIT_STORE_INCOMPLETE
    _print_report(study.name, uri)
    print(
        f"\nfinished in {time.time() - t0:.0f}s. Browse the runs: mlflow ui --backend-store-uri {uri}   (or: make ui)\n"
        f"  then open http://127.0.0.1:5000{ui_runs_path(runner.tracker.experiment_id)}"
    )
    return 1 if failed else 0


def _print_report(name: str, uri: str) -> None:
    """The short report at the end of a run; a report that cannot be built does not fail the run."""
    try:
        from tunelab.report import short_report

        print(short_report(uri, name))
    except Exception as e:
        print(f"\nno report: {type(e).__name__}: {e} (try: tunelab report {name} --uri {uri})", file=sys.stderr)


def _plan_of(name: str, uri: str | None):
    """The plan of study ``name`` as its latest run recorded it: the study after ``--set``, with its Tune storage
    (older runs: the study file they name), whatever the directory this is run from."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from tunelab.run import plan_study
    from tunelab.study import EFFECTIVE_STUDY, load_study
    from tunelab.tracking import STUDY_FILE, find_study_run

    uri = store_uri(uri)
    hint = " (give --uri, or the study file to `tunelab run STUDY.yaml --resume`)"
    client = MlflowClient(uri)
    run = find_study_run(client, name, hint)
    source = Path(run.data.tags.get(STUDY_FILE, ""))  # relative data paths are read from its directory
    with tempfile.TemporaryDirectory(prefix="tunelab-study-") as tmp:
        try:
            recorded = Path(client.download_artifacts(run.info.run_id, EFFECTIVE_STUDY, tmp))
        except Exception:  # a run of an older tunelab: the study file it names
            recorded = source
            if not source.is_file():
                raise StudyError(
                    name,
                    f"the study file '{source}' recorded by its run is gone; "
                    f"use `tunelab run STUDY.yaml --resume` with the study file",
                ) from None
        study = load_study(recorded, [f"tracking.uri={uri}"])
    return plan_study(study, source)


def cmd_resume(args) -> int:
    return _run(_plan_of(args.name, args.uri), args.quiet, resume=True)


def cmd_sync(args) -> int:
    from tunelab.run import sync_study

    plan = _plan_of(args.name, args.uri)
    written, lost = sync_study(plan)
    for key, n in written.items():
        print(f"  {key:<40} {n} trial runs written")
    if lost.count:
        print(
            f"the MLflow store {plan.study.tracking.resolved_uri()} did not take {lost.count} writes (first: "
            f"{lost.first}); run `tunelab sync {args.name}` again once it does",
            file=sys.stderr,
        )
        return EXIT_STORE_INCOMPLETE
    print(f"{plan.study.tracking.resolved_uri()} now holds every trial Tune's storage holds for '{args.name}'")
    return 0
