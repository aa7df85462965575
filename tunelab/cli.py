"""The ``tunelab`` command line: its subcommands, their options and examples; what each does is in
``tunelab.commands``."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from tunelab.commands.results import (
    cmd_best,
    cmd_compare,
    cmd_datasets,
    cmd_importance,
    cmd_models,
    cmd_predict,
    cmd_replay,
    cmd_report,
    cmd_rescore,
)
from tunelab.commands.study import cmd_resume, cmd_run, cmd_sync, cmd_validate
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
