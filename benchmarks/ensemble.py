"""The ensemble across families against the single families: studies/compare.yaml run once per seed, each into a
store of its own, and per dataset (splits averaged) the ensemble's test score beside two bars, as the report's
*Ensemble across families* section computes them (``tunelab.report.ensemble``):

- **selected**: the family the study selects (best on validation; what one deploys without the ensemble);
- **best**: the family best on test (an oracle bar: no selection on validation is sure to reach it).

Prints, per seed and dataset, the three test scores, then on how many (dataset, seed) pairs the ensemble is at
least as good as each bar. The issue's target: at least the best family's on 70 % of the datasets.

    python benchmarks/ensemble.py              # seeds 0-4: about 8 minutes on a 2-CPU machine
    python benchmarks/ensemble.py --seeds 1    # the study as committed (seed 0)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlflow.tracking import MlflowClient  # noqa: E402

from tunelab.report.ensemble import at_least, ensembles  # noqa: E402
from tunelab.report.record import StudyRecord  # noqa: E402

STUDY = ROOT / "studies" / "compare.yaml"
TARGET = 0.70


def run_study(seed: int, where: Path) -> str:
    uri = f"sqlite:///{where / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "tunelab.cli", "run", str(STUDY), "--quiet", "--set", f"seed={seed}"]
    res = subprocess.run([*cmd, "--set", f"tracking.uri={uri}"], cwd=where, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(
            f"seed {seed}: the study failed (exit {res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
        )
    return uri


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 of the study")
    args = ap.parse_args()
    started, wins, pairs = time.monotonic(), {"selected": 0, "best": 0}, 0
    print(f"{'seed':<5}{'dataset':<16}{'metric':<14}{'ensemble':>10}{'selected':>10}{'best':>10}")
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory(prefix="tunelab-ensemble-bench-") as tmp:
            uri = run_study(seed, Path(tmp))
            table = ensembles(StudyRecord.load(MlflowClient(uri), "compare"))
        by_dataset = table.groupby("dataset").agg(
            metric=("metric", "first"),
            test=("test", "mean"),
            selected=("selected_family_test", "mean"),
            best=("best_family_test", "mean"),
        )
        pairs += len(by_dataset)
        for bar in wins:  # the report's own share, as a count of this seed's datasets
            wins[bar] += round(at_least(table, f"{bar}_family") * len(by_dataset))
        for dataset, r in by_dataset.iterrows():
            print(f"{seed:<5}{dataset:<16}{r['metric']:<14}{r['test']:>10.4f}{r['selected']:>10.4f}{r['best']:>10.4f}")
    print(f"\n{args.seeds} seeds of {STUDY.name}, {time.monotonic() - started:.0f} s")
    for bar, n in wins.items():
        print(f"ensemble at least the {bar} family on test: {n} of {pairs} (dataset, seed) pairs ({n / pairs:.0%})")
    share = wins["best"] / pairs
    print(f"target: at least the best family on {TARGET:.0%}: {'MET' if share >= TARGET else 'NOT MET'}")


if __name__ == "__main__":
    main()
