"""The ``tunelab`` command: run, validate, resume, sync, report, best, predict, replay, models, datasets."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tunelab.errors import StudyError

EXAMPLES = {
    "run": "examples:\n"
    "  tunelab run studies/demo.yaml\n"
    "  tunelab run studies/demo.yaml --set search.num_samples=4 --set search.scheduler=fifo\n"
    "  tunelab run studies/demo.yaml --quiet     # the leaderboard only, no line per trial\n"
    "  tunelab run studies/demo.yaml --resume    # continue after Ctrl-C or a killed driver\n"
    "  RAY_ADDRESS=ray://head:10001 tunelab run studies/demo.yaml   # on a cluster",
    "resume": "examples:\n"
    "  tunelab resume demo                       # finished cells are skipped, the others restored\n"
    "  tunelab resume demo --uri sqlite:///mlflow.db --quiet",
    "sync": "examples:\n"
    "  tunelab sync demo                         # after the MLflow store was unreachable mid-study\n"
    "  tunelab sync demo --uri http://127.0.0.1:5000",
    "validate": "examples:\n"
    "  tunelab validate studies/demo.yaml\n"
    "  tunelab validate studies/demo.yaml --set search.searcher=hyperopt\n"
    "  tunelab validate studies/demo.yaml --preview   # the values each search space really yields",
    "models": "example:\n  tunelab models",
    "datasets": "example:\n  tunelab datasets",
    "report": "examples:\n"
    "  tunelab report demo --out reports/demo   # HTML + PNG + CSV, logged to the study run\n"
    "  tunelab report demo --uri http://127.0.0.1:5000",
    "best": "examples:\n  tunelab best demo --dataset breast_cancer\n  tunelab best demo --uri sqlite:///mlflow.db",
    "rescore": "examples:\n  tunelab rescore demo --metric val_accuracy\n  tunelab rescore demo --metric val_roc_auc "
    "--out reports/auc --uri sqlite:///mlflow.db",
    "compare": "examples:\n  tunelab compare demo demo-v2\n  tunelab compare demo demo-v2 --out reports/v2 "
    "--uri sqlite:///mlflow.db",
    "importance": "examples:\n  tunelab importance demo\n  tunelab importance demo --uri sqlite:///mlflow.db",
    "predict": "examples:\n"
    "  tunelab predict loans loans new_rows.csv                # the champion; the table on stdout\n"
    "  tunelab predict loans loans new.parquet --family xgboost --out scored.csv --uri sqlite:///mlflow.db",
    "replay": "examples:\n"
    "  tunelab replay 3f2a...c1   # a trial's run id, as the MLflow UI shows it\n"
    "  tunelab replay 3f2a...c1 --uri sqlite:///mlflow.db",
}
OVERVIEW = (
    "examples:\n"
    "  tunelab validate studies/demo.yaml   # check a study in seconds; runs nothing\n"
    "  tunelab run studies/demo.yaml        # run it, then browse with: make ui\n"
    "  tunelab COMMAND --help               # each command's options, with examples"
)


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


EXIT_INTERRUPTED, EXIT_STORE_INCOMPLETE = 130, 3


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


def _store(uri: str | None) -> str:
    from tunelab.study import DEFAULT_TRACKING_URI

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def cmd_report(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.report import ARTIFACT_DIR, make_report

    uri = _store(args.uri)
    rep, page = make_report(MlflowClient(uri), args.name, Path(args.out or Path("reports") / args.name))
    print(rep.short_text())
    print(
        f"\nreport: {page} (with its PNGs and CSVs; also logged to study run {rep.record.study.info.run_id} "
        f"under {ARTIFACT_DIR}/)"
    )
    return 0


def cmd_rescore(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.report import build, rescore, write

    record, notes = rescore.load(MlflowClient(_store(args.uri)), args.name, args.metric)
    rep = build(record, tuple(notes))
    page = write(rep, Path(args.out or Path("reports") / f"{args.name}-{args.metric}"))
    print("\n".join(notes))
    print(rep.short_text())
    print(f"\nreport under {args.metric}: {page} (with its PNGs and CSVs; the store is left as it was)")
    return 0


def cmd_compare(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.report import compare

    c = compare.compare(MlflowClient(_store(args.uri)), args.a, args.b)
    page = compare.write(c, Path(args.out or Path("reports") / f"compare-{args.a}-{args.b}"))
    print(compare.to_text(c))
    print(f"\npage: {page} (with cells.csv, families.csv, changed.csv)")
    return 0


def cmd_importance(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.report import StudyRecord
    from tunelab.report.importance import family_importance

    table = family_importance(StudyRecord.load(MlflowClient(_store(args.uri)), args.name))
    if table.empty:
        print(f"study '{args.name}': no cell has enough trials with varied hyperparameters to tell")
        return 0
    print(f"hyperparameter importance in study '{args.name}': share of the validation score explained, mean over cells")
    for family, rows in table.groupby("family", sort=False):
        cells = int(rows["cells"].max())
        print(f"\n  {family} ({cells} cell{'s' if cells != 1 else ''})")
        for r in rows.itertuples():
            print(f"    {r.param:<28} {r.importance:6.3f} ± {r.std:.3f}  {'#' * round(40 * r.importance)}")
    return 0


def cmd_best(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.report import best_configs

    for r in best_configs(MlflowClient(_store(args.uri)), args.name, args.dataset):
        test = "—" if r["test"] is None else f"{r['test']:.4f}"
        print(
            f"{r['dataset']} · {r['family']}: best {r['metric']} {r['best_val']:.4f}, test {test}, "
            f"{r['steps']} budget steps"
        )
        print(f"  config: {r['config']}")
        print(
            f'  model:  mlflow.pyfunc.load_model("{r["model_uri"]}")'
            if r["model_uri"]
            else "  model:  none logged (tracking.register_models was false, or a later run took the alias)"
        )
    return 0


def cmd_predict(args) -> int:
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from tunelab.predict import CHAMPION, load_registered, predict_rows, read_rows

    rows = read_rows(Path(args.file))
    model = load_registered(MlflowClient(_store(args.uri)), args.name, args.dataset, args.family or CHAMPION)
    out = predict_rows(model, rows, args.file)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.out, index=False)
        print(f"{len(out)} rows predicted into {args.out}")
    else:
        print(out.to_csv(index=False), end="")
    return 0


def cmd_replay(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.replay import replay

    result = replay(MlflowClient(_store(args.uri)), args.run_id)
    print(result.text())
    return 0 if result.agrees else 1


def _plan_of(name: str, uri: str | None):
    """The plan of study ``name`` as its latest run recorded it: the study after ``--set``, with its Tune storage
    (older runs: the study file they name), whatever the directory this is run from."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from tunelab.run import plan_study
    from tunelab.study import EFFECTIVE_STUDY, load_study
    from tunelab.tracking import STUDY_FILE, find_study_run

    uri = _store(uri)
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


def cmd_models(args) -> int:
    from trainables import FAMILIES
    from tunelab.spaces import load_space

    for name, cls in FAMILIES.items():
        task = sorted(cls.tasks)[0]
        space = load_space(name, task)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<24} {'/'.join(sorted(cls.tasks)):<26} {cls.flavor:<8} params: {', '.join(space.params) or '—'}")
        print(f"{'':<24} {doc}")
    return 0


def cmd_datasets(args) -> int:
    from tunelab.datasets import BUILTIN, FILE_READERS

    for name in BUILTIN:
        print(name)
    print(
        f"\nor a file: {{name: NAME, path: FILE{'|'.join(FILE_READERS)}, target: COLUMN, "
        "task: classification|regression}"
    )
    print("or OpenML by id: {openml: 61}   (cache: data/openml, ~/.cache/tunelab/openml; else downloaded)")
    return 0


STORE_HELP = "the MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"


def _command(sub: Any, name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
    """A subcommand: its help, its examples (``EXAMPLES``), the function it runs."""
    sp = sub.add_parser(
        name, help=help_, description=help_, epilog=EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sp.set_defaults(fn=fn)
    return sp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tunelab",
        description="Hyperparameter studies on Ray Tune, tracked in MLflow.",
        epilog=OVERVIEW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (
        ("run", cmd_run, "run a study (local Ray, or the cluster in RAY_ADDRESS)"),
        ("validate", cmd_validate, "check a study and its datasets without running it"),
    ):
        sp = _command(sub, name, fn, help_)
        sp.add_argument("study", help="the study YAML file, e.g. studies/demo.yaml")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a study field (value read as YAML), e.g. --set search.num_samples=4; repeatable",
        )
        if name == "validate":
            sp.add_argument(
                "--preview",
                action="store_true",
                help="sample each cell's search space (no training) and show the values drawn",
            )
        if name == "run":
            sp.add_argument("--quiet", action="store_true", help="no line per finished trial; the leaderboard only")
            sp.add_argument(
                "--resume",
                action="store_true",
                help="continue the study's latest run: finished cells skipped, the others restored from Tune's storage",
            )
    for name, fn, help_ in (
        ("resume", cmd_resume, "continue a study cut off by Ctrl-C or a killed driver"),
        ("sync", cmd_sync, "write into MLflow what Tune's storage holds of a study"),
    ):
        sp = _command(sub, name, fn, help_)
        sp.add_argument("name", help="the study's name (its `name:` field), e.g. demo")
        sp.add_argument(
            "--uri",
            help="the MLflow store holding the study's runs, e.g. sqlite:///mlflow.db or "
            "http://127.0.0.1:5000 (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
        )
        if name == "resume":
            sp.add_argument("--quiet", action="store_true", help="no line per finished trial; the leaderboard only")
    for name, fn, help_, target in (
        ("report", cmd_report, "write the study report (HTML, PNG, CSV)", "name"),
        ("best", cmd_best, "the best configuration per cell and its model URI", "name"),
        ("importance", cmd_importance, "which hyperparameters mattered, per family, pooled over its cells", "name"),
        (
            "rescore",
            cmd_rescore,
            "the study report under another metric, from the stored predictions (no training)",
            "name",
        ),
        ("replay", cmd_replay, "re-run one trial from its MLflow run and compare", "run_id"),
    ):
        sp = _command(sub, name, fn, help_)
        sp.add_argument(target, help="the study's name" if target == "name" else "the trial's MLflow run id")
        sp.add_argument("--uri", help=STORE_HELP)
        if name == "report":
            sp.add_argument("--out", help="directory to write into (default: reports/NAME)")
        if name == "best":
            sp.add_argument("--dataset", help="only this dataset's cells")
        if name == "rescore":
            sp.add_argument("--metric", required=True, help="a validation metric of the task, e.g. val_accuracy")
            sp.add_argument("--out", help="directory to write into (default: reports/NAME-METRIC)")
    sp = _command(sub, "compare", cmd_compare, "two studies side by side: their shared cells, what changed")
    sp.add_argument("a", help="the study to compare against, by name")
    sp.add_argument("b", help="the study compared, by name")
    sp.add_argument("--out", help="directory to write into (default: reports/compare-A-B)")
    sp.add_argument("--uri", help=STORE_HELP)
    sp = _command(sub, "predict", cmd_predict, "a registered model of a study on new raw rows (CSV or Parquet)")
    sp.add_argument("name", help="the study's name")
    sp.add_argument("dataset", help="the dataset the model was tuned on, as the study names it")
    sp.add_argument(
        "file", help="the rows to predict: the dataset's columns, as in its file (the target may be left in)"
    )
    sp.add_argument("--family", help="this family's best model instead of the dataset's champion")
    sp.add_argument("--out", help="write the rows and their predictions here (CSV) instead of to stdout")
    sp.add_argument("--uri", help=STORE_HELP)
    _command(sub, "models", cmd_models, "list the model families and their search spaces")
    _command(sub, "datasets", cmd_datasets, "list the bundled and synthetic datasets")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        _shutdown_ray()


def _shutdown_ray() -> None:
    """Leave Ray (stop the local one, or disconnect from the cluster) before the interpreter tears down the
    libraries Ray's own exit hook would still call into."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
