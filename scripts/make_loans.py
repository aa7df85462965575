"""Writes data/loans.csv: a small loan-default table as people really have them.

String categoricals, missing values, a yes/no target. Seeded, so the file is reproducible.
"""

from pathlib import Path

import numpy as np
import pandas as pd

ROWS, SEED = 1500, 7


def make(rows: int = ROWS, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.5, 0.5, rows).round(-2)
    amount = (income * rng.uniform(0.05, 0.8, rows)).round(-1)
    term = rng.choice(["36 months", "60 months"], rows, p=[0.7, 0.3])
    purpose = rng.choice(["car", "home", "education", "debt consolidation", "medical", "other"], rows)
    grade = rng.choice(list("ABCDEFG"), rows, p=[0.2, 0.25, 0.2, 0.15, 0.1, 0.06, 0.04])
    years = rng.integers(0, 30, rows).astype(float)
    score = 5 * (amount / income) + (term == "60 months") + 0.4 * (np.array([ord(g) - 65 for g in grade]))
    score += rng.normal(0, 0.8, rows) - 0.03 * years
    defaulted = np.where(score > np.quantile(score, 0.75), "yes", "no")
    df = pd.DataFrame(
        {
            "income": income,
            "amount": amount,
            "term": term,
            "purpose": purpose,
            "grade": grade,
            "years_employed": years,
            "defaulted": defaulted,
        }
    )
    for col, frac in (("income", 0.05), ("years_employed", 0.1), ("purpose", 0.08)):
        df.loc[rng.random(rows) < frac, col] = np.nan
    return df


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "data" / "loans.csv"
    make().to_csv(out, index=False)
    print(f"wrote {out}")
