"""`multimem score` with default options on real sets (pictures, clip art, icons, product renders, sounds),
10 % of one modality swapped among the rows, the truth kept apart.

The sets (benchmarks/real_sets.py, real_sources.py; docs/REAL_SETS.md) are built once from Debian and npm
packages into ~/.cache/multimem/real. Each set is scored by a `multimem score` subprocess (timed; peak
memory of its whole process tree, as proportional set size sampled with psutil). Per set the table shows:
rows, rows scored (finite `multimem`), time, peak memory, the AUROC of swapped vs clean for every score
column (over the rows that have it; '-' in front of a column: lower is more suspicious), precision at k
(k = swapped rows) of the best column, the run's confidence, and, where `multimem summary RUN --json`
names a `ranking` with `expected_auroc`, the true AUROC of that ranking beside the estimate.

    python benchmarks/bench_real.py --list
    python benchmarks/bench_real.py --sets tune                  # or validate, all, NAME,NAME
    python benchmarks/bench_real.py --sets stamps --json /tmp/r.jsonl -- --epochs 60
    python benchmarks/bench_real.py --table /tmp/r.jsonl          # the tables again, from saved results

Options after `--` go to `multimem score` unchanged. Validation sets are for measuring only: choose
defaults on the tune sets.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_sets import CACHE, build, describe, select  # noqa: E402

MAIN_COLUMNS = ("multimem", "-cmc_out", "-cmc_in", "base__clipmem", "-base__cosine", "base__loss")


# --- measures (pure) --------------------------------------------------------------------------------

def oriented(scores: pd.DataFrame, column: str) -> np.ndarray:
    """A column as 'higher = more suspicious': '-name' is the negated column 'name'."""
    name = column[1:] if column.startswith("-") else column
    v = scores[name].to_numpy(dtype=np.float64)
    return -v if column.startswith("-") else v


def auroc(positive: np.ndarray, suspicion: np.ndarray) -> float:
    """AUROC of `suspicion` at ranking positives above negatives (ties count half); NaN rows left out;
    NaN when either class is empty."""
    from scipy.stats import rankdata

    ok = np.isfinite(suspicion)
    y, s = np.asarray(positive, dtype=bool)[ok], suspicion[ok]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(positive: np.ndarray, suspicion: np.ndarray, k: int | None = None) -> float:
    """Share of positives among the k most suspicious rows (k = the positives among rows with a score)."""
    ok = np.isfinite(suspicion)
    y, s = np.asarray(positive, dtype=bool)[ok], suspicion[ok]
    k = int(y.sum()) if k is None else k
    if k <= 0:
        return float("nan")
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean())


def score_columns(scores: pd.DataFrame) -> list[str]:
    """Every score column of a run, oriented: '-' where lower is more suspicious."""
    from multimem_core.names import LOWER_IS_WORSE, score_columns as engine_columns

    return [f"-{c}" if c in LOWER_IS_WORSE else c for c in engine_columns(scores)]


def measure(scores: pd.DataFrame, positive: np.ndarray, ranking: str | None = None) -> dict:
    """AUROC and rows-with-a-value per column, the best column and its precision at k, and the same for
    `ranking` (a column name as `multimem summary` gives it) when the run names one."""
    out: dict = {"auroc": {}, "rows_with": {}}
    for c in score_columns(scores):
        s = oriented(scores, c)
        out["auroc"][c] = round(auroc(positive, s), 4)
        out["rows_with"][c] = int(np.isfinite(s).sum())
    finite = {c: v for c, v in out["auroc"].items() if np.isfinite(v)}
    if finite:
        best = max(finite, key=finite.get)
        out["best"] = best
        out["precision_at_k"] = round(precision_at_k(positive, oriented(scores, best)), 4)
    if ranking:
        name = ranking.lstrip("-")
        if name in scores.columns:
            s = oriented(scores, ranking)
            out["ranking_auroc"] = round(auroc(positive, s), 4)
            out["ranking_precision_at_k"] = round(precision_at_k(positive, s), 4)
    return out


# --- running ----------------------------------------------------------------------------------------

def run_tree_peak(cmd: list[str]) -> tuple[int, float, float]:
    """Run cmd; return (exit status, wall seconds, peak memory (PSS) of its process tree in GiB)."""
    import psutil

    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [parent, *parent.children(recursive=True)]
                # PSS: shared pages (torch's libraries in every worker) count once, split among sharers
                peak = max(peak, sum(p.memory_full_info().pss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.5)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    rc = proc.wait()
    done.set()
    watcher.join()
    return rc, time.perf_counter() - t, peak / 2 ** 30


def run_summary(out: Path) -> dict:
    """`multimem summary RUN --json` as a dict; {} when it fails or prints no JSON."""
    r = subprocess.run([sys.executable, "-m", "multimem_core.cli", "summary", str(out), "--json"],
                       capture_output=True, text=True)
    try:
        return json.loads(r.stdout) if r.returncode == 0 else {}
    except json.JSONDecodeError:
        return {}


def score_set(s, manifest: Path, out: Path, extra: list[str]) -> dict:
    from multimem_core.run import RunDir

    cmd = [sys.executable, "-m", "multimem_core.cli", "score", str(manifest), "--out", str(out),
           "--modalities", ",".join(s.modalities), "--quiet", *extra]
    if out.exists():
        shutil.rmtree(out)  # a fresh run: the time is that of the whole command
    rc, wall, peak = run_tree_peak(cmd)
    if rc != 0:
        raise SystemExit(f"bench_real: {' '.join(cmd)} failed with status {rc}")
    run = RunDir(out)
    scores = pd.read_parquet(out / "scores.parquet")  # every row the run wrote, held-out ones included
    truth = pd.read_csv(manifest.parent / "truth.csv", keep_default_na=False).set_index("id")["injected"]
    positive = scores["id"].astype(str).map(truth).fillna("").to_numpy() != ""
    summary = run_summary(out)
    result = {"set": s.name, "split": s.split, "kind": s.kind, "modalities": list(s.modalities),
              "rows": int(len(truth)), "swapped": int((truth != "").sum()), "rows_in_scores": int(len(scores)),
              "rows_scored": int(np.isfinite(scores["multimem"].to_numpy(dtype=float)).sum()),
              "options": extra, "seconds": round(wall, 1), "peak_gib": round(peak, 2), "run": str(out),
              "confidence": run.config().get("confidence", {})}
    result.update(measure(scores, positive, summary.get("ranking")))
    for key in ("ranking", "expected_auroc", "expected_auroc_low", "expected_auroc_high"):
        if key in summary:
            result[key] = summary[key]
    return result


# --- the table --------------------------------------------------------------------------------------

def _num(v, fmt: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def confidence_text(conf: dict) -> str:
    pairs = conf.get("pairs") or {}
    if not pairs:
        return "-"
    text = ", ".join(f"{k} {v['recall_at_5']:.2f}" for k, v in pairs.items())
    chance = conf.get("chance")
    return text + (f" (chance {chance:.3f})" if chance is not None else "") + (" **low**" if conf.get("low") else "")


def ranking_text(r: dict) -> str:
    """'-cmc_out: true 0.861, est. 0.84 (0.80–0.88)' or '-' when the run names no ranking."""
    if "ranking" not in r or "expected_auroc" not in r:
        return "-"
    est = f"est. {_num(r['expected_auroc'], '.2f')} ({_num(r.get('expected_auroc_low'), '.2f')}–" \
          f"{_num(r.get('expected_auroc_high'), '.2f')})"
    return f"`{r['ranking']}`: true {_num(r.get('ranking_auroc'))}, {est}"


def format_table(results: list[dict]) -> str:
    head = ["set", "split", "rows", "scored", "swapped", "time", "peak", *[f"`{c}`" for c in MAIN_COLUMNS],
            "best column", "p@k (best)", "ranking: true vs estimate", "confidence (recall@5)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["set"], r["split"], str(r["rows"]), str(r["rows_scored"]), str(r["swapped"]),
                 f"{r['seconds']:.0f} s", f"{r['peak_gib']:.2f} GiB",
                 *[_num(r["auroc"].get(c)) for c in MAIN_COLUMNS],
                 f"`{r['best']}` {_num(r['auroc'][r['best']])}" if r.get("best") else "-",
                 _num(r.get("precision_at_k"), ".2f"), ranking_text(r), confidence_text(r.get("confidence", {}))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_columns(results: list[dict]) -> str:
    """Every column's AUROC per set, with the rows it covers where that is fewer than the rows."""
    lines = []
    for r in results:
        parts = []
        for c, v in r["auroc"].items():
            n = r["rows_with"].get(c, r["rows_in_scores"])
            parts.append(f"`{c}` {_num(v)}" + (f" ({n} of {r['rows']} rows)" if n < r["rows"] else ""))
        lines.append(f"- {r['set']}: " + ", ".join(parts))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the sets and exit")
    p.add_argument("--sets", default="all", help="all, tune, validate, or comma-separated set names")
    p.add_argument("--cache", type=Path, default=CACHE, help="where the built sets and runs are kept")
    p.add_argument("--json", type=Path, help="append one JSON line per scored set to this file")
    p.add_argument("--build-only", action="store_true", help="build (and cache) the sets, score nothing")
    p.add_argument("--table", type=Path, metavar="JSONL", help="print the tables of results saved with --json, run nothing")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- then options for `multimem score`")
    args = p.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    if args.table:
        saved = [json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]
        print(format_table(saved) + "\n\nAUROC of every column:\n" + format_columns(saved))
        return
    sets = select(args.sets)
    if args.list:
        print("\n".join(describe(s) for s in sets))
        return
    results = []
    for s in sets:
        t = time.perf_counter()
        manifest = build(s, args.cache)
        print(f"{s.name}: {manifest} ({time.perf_counter() - t:.1f} s to build or find)", flush=True)
        if args.build_only:
            continue
        tag = re.sub(r"[^A-Za-z0-9]+", "_", " ".join(extra)).strip("_") or "defaults"
        r = score_set(s, manifest, args.cache / "runs" / f"{s.name}__{tag}", extra)
        results.append(r)
        print(format_table([r]).splitlines()[-1], flush=True)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(r, default=str) + "\n")
    if results:
        print("\n" + format_table(results) + "\n\nAUROC of every column:\n" + format_columns(results))


if __name__ == "__main__":
    main()
