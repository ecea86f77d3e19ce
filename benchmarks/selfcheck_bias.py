"""How far the self-check's planted corruptions stand from natural swaps: the bias of multimem_core.selfcheck.

For runs of sets with known swaps (bench_real.py's runs, or the demos), per candidate ranking: the true
AUROC (swapped vs the other rows), the AUROC of the planted rows against the real ones, the run's
contamination π (shrunk where poorly identified) beside the true share, the planted AUROC corrected with that π
(no bias term), and the gaps true − corrected, with the run's π and with the true one. The mean gap over the tune sets is selfcheck.PLANT_BIAS
(choose it on tune sets only). With --estimate, also what the run's self-check gives with today's estimator
(bias and bootstrap interval included) beside the truth: the figures bench_real.py prints, recomputed from a
run's scores.parquet and selfcheck.parquet without training again.

    python benchmarks/selfcheck_bias.py RUN[:TRUTH.csv] ... [--estimate]

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
from multimem_core.selfcheck import (CANDIDATES, auroc, corrected, estimate, oriented,  # noqa: E402
                                     run_selfcheck)


def truth_of(run: RunDir, given: str | None) -> pd.Series:
    path = Path(given) if given else Path(run.config()["manifest"]["path"]).parent / "truth.csv"
    if path.is_file():
        t = pd.read_csv(path, keep_default_na=False, dtype=str)
    else:
        t = run.samples()[["id", "injected"]].fillna("")
    return t.set_index(t["id"].astype(str))["injected"].astype(str)


def measure(run: RunDir, truth: pd.Series, with_estimate: bool = False) -> list[dict]:
    scores = run.scores()
    scores = scores[np.isfinite(scores["multimem"].to_numpy(dtype=float))]
    planted = pd.read_parquet(run.path / "selfcheck.parquet")
    bad = scores["id"].astype(str).map(truth).fillna("").to_numpy() != ""
    check = (run_selfcheck({c: oriented(planted, c) for c in CANDIDATES}, {c: oriented(scores, c) for c in CANDIDATES})
             if with_estimate else {})
    rows = []
    for c in CANDIDATES:
        s, p = oriented(scores, c), oriented(planted, c)
        plain = estimate(p, s, 0.0, c)  # the run's π (shrunk where poorly identified), no bias term
        obs, pi = plain["auroc_planted"], plain["contamination"]
        true = auroc(s[bad], s[~bad])
        row = {"run": run.path.name, "ranking": c, "true": true, "planted": obs, "pi": pi, "pi_true": float(bad.mean()),
               "corrected": plain["expected_auroc"], "gap": true - plain["expected_auroc"],
               "gap_true_pi": true - corrected(obs, float(bad.mean())), "n_planted": len(p)}
        if check:
            e = check["candidates"][c]
            row.update({"estimate": e["expected_auroc"], "low": e["expected_auroc_low"],
                        "high": e["expected_auroc_high"], "delta": e["expected_auroc"] - true,
                        "chosen": c == check.get("ranking")})
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="RUN or RUN:TRUTH.csv")
    p.add_argument("--estimate", action="store_true", help="also the self-check's estimate and interval vs the truth")
    args = p.parse_args()
    rows = []
    for spec in args.runs:
        path, _, given = spec.partition(":")
        rows += measure(RunDir(path), truth_of(RunDir(path), given or None), args.estimate)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(3).to_string(index=False))
        print("\nmean gap (true − corrected) per ranking:")
        print(table.groupby("ranking")[["gap", "gap_true_pi", "true", "corrected"]].agg(["mean", "std"])
              .round(3).to_string())
        if args.estimate:
            chosen = table[table["chosen"]]
            print(f"\nthe run's ranking: |estimate − true| mean {chosen['delta'].abs().mean():.3f}, "
                  f"max {chosen['delta'].abs().max():.3f}; truth inside the interval "
                  f"{int(((chosen['low'] <= chosen['true']) & (chosen['true'] <= chosen['high'])).sum())} of {len(chosen)}")


if __name__ == "__main__":
    main()
