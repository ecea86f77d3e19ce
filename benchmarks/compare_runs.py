"""Compare the scores of two run directories, id by id: `python benchmarks/compare_runs.py RUN_A RUN_B`.

Reads RUN/scores.parquet straight (H rows included: RunDir.scores() drops them) and prints, for every
score column, the largest absolute difference between the two runs. Exits 1 when a difference exceeds
--tolerance (default 1e-6), when the runs score different ids, or when a column is in one run only.
Used to show that a restructuring changed no score (same dataset, same seed, before and after).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def read_scores(run: Path) -> pd.DataFrame:
    path = Path(run) / "scores.parquet"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (is {run} a run directory?)")
    table = pd.read_parquet(path)
    table["id"] = table["id"].astype(str)
    return table.set_index("id")


def max_differences(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """Per numeric column of both tables: the max |a - b| over ids (NaN in both counts as equal)."""
    out = {}
    for col in a.columns:
        if col not in b.columns or not pd.api.types.is_numeric_dtype(a[col]):
            continue
        x = a[col].to_numpy(np.float64)
        y = b.loc[a.index, col].to_numpy(np.float64)
        both_nan = np.isnan(x) & np.isnan(y)
        diff = np.abs(x - y)
        diff[both_nan] = 0.0
        out[col] = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))) if len(diff) else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args(argv)
    a, b = read_scores(args.a), read_scores(args.b)
    ok = True
    if set(a.index) != set(b.index):
        print(f"different ids: {len(set(a.index) - set(b.index))} only in A, {len(set(b.index) - set(a.index))} only in B")
        return 1
    if not (a["role"].astype(str) == b.loc[a.index, "role"].astype(str)).all():
        print("different roles for some ids")
        ok = False
    only = sorted(set(a.columns) ^ set(b.columns))
    if only:
        print(f"columns in one run only: {', '.join(only)}")
        ok = False
    held = a["role"].astype(str) == "H"
    print(f"{len(a)} rows ({int(held.sum())} H), tolerance {args.tolerance:g}; max |A - B| per column")
    for label, rows in (("scored rows", a[~held]), ("H rows", a[held])):
        diffs = max_differences(rows, b)
        diffs = {c: d for c, d in diffs.items() if rows[c].notna().any()}  # H rows have cmc_out only
        print(f" {label} ({len(rows)}):")
        for col, d in diffs.items():
            flag = "" if d <= args.tolerance else "   <-- above tolerance"
            ok &= d <= args.tolerance
            print(f"  {col:<28} {d:.3g}{flag}")
    print("same scores" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
