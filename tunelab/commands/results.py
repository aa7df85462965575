"""The commands that read a study from the store: report, rescore, compare, importance, best, predict, replay; and
the catalogue: models, datasets."""

from __future__ import annotations

from pathlib import Path

from tunelab.commands import store_uri


def cmd_report(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.report import ARTIFACT_DIR, make_report

    uri = store_uri(args.uri)
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

    record, notes = rescore.load(MlflowClient(store_uri(args.uri)), args.name, args.metric)
    rep = build(record, tuple(notes))
    page = write(rep, Path(args.out or Path("reports") / f"{args.name}-{args.metric}"))
    print("\n".join(notes))
    print(rep.short_text())
    print(f"\nreport under {args.metric}: {page} (with its PNGs and CSVs; the store is left as it was)")
    return 0


def cmd_compare(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.report import compare

    c = compare.compare(MlflowClient(store_uri(args.uri)), args.a, args.b)
    page = compare.write(c, Path(args.out or Path("reports") / f"compare-{args.a}-{args.b}"))
    print(compare.to_text(c))
    print(f"\npage: {page} (with cells.csv, families.csv, changed.csv)")
    return 0


def cmd_importance(args) -> int:
    from mlflow.tracking import MlflowClient

    from tunelab.report import StudyRecord
    from tunelab.report.importance import family_importance

    table = family_importance(StudyRecord.load(MlflowClient(store_uri(args.uri)), args.name))
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

    for r in best_configs(MlflowClient(store_uri(args.uri)), args.name, args.dataset):
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
    model = load_registered(MlflowClient(store_uri(args.uri)), args.name, args.dataset, args.family or CHAMPION)
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

    result = replay(MlflowClient(store_uri(args.uri)), args.run_id)
    print(result.text())
    return 0 if result.agrees else 1


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
