"""How far the self-check's planted corruptions stand from natural swaps: the bias of multimem_core.selfcheck.

For runs of sets with known swaps (bench_real.py's runs, or the demos), per candidate ranking: the true
AUROC (swapped vs the other rows), the AUROC of the planted rows against the real ones, the estimated
contamination π and the true share, the corrected planted AUROC (no bias term), and the gap
true − corrected. The mean gap over the tune sets is selfcheck.PLANT_BIAS (choose it on tune sets only).

    python benchmarks/selfcheck_bias.py RUN[:TRUTH.csv] ...

TRUTH.csv: id, injected (non-empty = swapped); default: truth.csv beside the run's input manifest, else the
run's samples.parquet `injected` column (the demos).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from multimem_core.run import RunDir  # noqa: E402
from multimem_core.selfcheck import CANDIDATES, auroc, contamination, corrected, oriented  # noqa: E402


def truth_of(run: RunDir, given: str | None) -> pd.Series:
    path = Path(given) if given else Path(run.config()["manifest"]["path"]).parent / "truth.csv"
    if path.is_file():
        t = pd.read_csv(path, keep_default_na=False, dtype=str)
    else:
        t = run.samples()[["id", "injected"]].fillna("")
    return t.set_index(t["id"].astype(str))["injected"].astype(str)


def measure(run: RunDir, truth: pd.Series) -> list[dict]:
    scores = run.scores()
    scores = scores[np.isfinite(scores["multimem"].to_numpy(dtype=float))]
    planted = pd.read_parquet(run.path / "selfcheck.parquet")
    bad = scores["id"].astype(str).map(truth).fillna("").to_numpy() != ""
    rows = []
    for c in CANDIDATES:
        s, p = oriented(scores, c), oriented(planted, c)
        obs, pi = auroc(p, s), contamination(p, s)
        true = auroc(s[bad], s[~bad])
        rows.append({"run": run.path.name, "ranking": c, "true": true, "planted": obs, "pi": pi,
                     "pi_true": float(bad.mean()), "corrected": corrected(obs, pi),
                     "gap": true - corrected(obs, pi), "n_planted": len(p)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="RUN or RUN:TRUTH.csv")
    args = p.parse_args()
    rows = []
    for spec in args.runs:
        path, _, given = spec.partition(":")
        rows += measure(RunDir(path), truth_of(RunDir(path), given or None))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
        print("\nmean gap (true − corrected) per ranking:")
        print(table.groupby("ranking")[["gap", "true", "corrected"]].agg(["mean", "std"]).round(3).to_string())


if __name__ == "__main__":
    main()
