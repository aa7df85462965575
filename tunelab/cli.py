"""The ``tunelab`` command: run, validate, models, datasets."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tunelab.errors import StudyError

EXAMPLES = {
    "run": "example:\n  tunelab run studies/demo.yaml --set search.num_samples=4\n"
           "  RAY_ADDRESS=ray://head:10001 tunelab run studies/demo.yaml   # on a cluster",
    "validate": "example:\n  tunelab validate studies/demo.yaml",
    "models": "example:\n  tunelab models",
    "datasets": "example:\n  tunelab datasets",
}


def _plan(args):
    from tunelab.driver import plan_study
    from tunelab.study import load_study

    source = Path(args.study)
    return plan_study(load_study(source, args.set), source)


def cmd_validate(args) -> int:
    plan = _plan(args)
    s = plan.study.search
    print(f"{plan.source}: OK — study '{plan.study.name}', {len(plan.cells)} cells "
          f"({s.searcher} + {s.scheduler}, {s.num_samples} trials each)")
    for name, d in plan.datasets.items():
        print(f"  dataset {name:<26} {d.task:<15} {len(d.y_train)}/{len(d.y_val)}/{len(d.y_test)} rows "
              f"(train/val/test), {len(d.feature_names)} features, sha256 {d.content_hash[:12]}")
    for c in plan.cells:
        print(f"  cell    {c.label:<40} metric {c.metric}, budget {c.space.steps} steps, "
              f"{c.resources.cpus_per_trial:g} CPU / {c.resources.gpus_per_trial:g} GPU per trial")
    for s in plan.skipped:
        print(f"  skipped {s}")
    return 0


def cmd_run(args) -> int:
    from tunelab.driver import leaderboard, run_study

    plan = _plan(args)
    study = plan.study
    print(f"study '{study.name}': {len(plan.cells)} cells × {study.search.num_samples} trials "
          f"({study.search.searcher} + {study.search.scheduler}); tracking {study.tracking.resolved_uri()}", flush=True)
    for s in plan.skipped:
        print(f"  skipped {s}")
    t0 = time.time()
    results = run_study(plan, progress=not args.quiet)
    print(leaderboard(results))
    failed = [r for r in results if r.status != "FINISHED"]
    for r in failed:
        print(f"\ncell {r.cell.label} FAILED: {r.error or 'every trial failed'}", file=sys.stderr)
    uri = study.tracking.resolved_uri()
    print(f"\nfinished in {time.time() - t0:.0f}s. Browse the runs: mlflow ui --backend-store-uri {uri}"
          f"   (or: make ui)")
    return 1 if failed else 0


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
    print(f"\nor a file: {{name: NAME, path: FILE{'|'.join(FILE_READERS)}, target: COLUMN, task: classification|regression}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunelab", description="Hyperparameter studies on Ray Tune, tracked in MLflow.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("run", cmd_run, "run a study (local Ray, or the cluster in RAY_ADDRESS)"),
                            ("validate", cmd_validate, "check a study and its datasets without running it")):
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES[name],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("study", help="the study YAML file")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study field, e.g. search.num_samples=4 (repeatable)")
        if name == "run":
            sp.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
        sp.set_defaults(fn=fn)
    for name, fn, help_ in (("models", cmd_models, "list the model families and their search spaces"),
                            ("datasets", cmd_datasets, "list the bundled and synthetic datasets")):
        sp = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES[name],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(fn=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
