"""How well a run's scores find bad pairs on its own data: measured on planted corruptions (planting.py).

Pure functions over score arrays (higher = more suspicious). For each candidate ranking:

- observed AUROC of planted rows against the real rows ("the rest");
- the rest holds natural bad pairs at an unknown rate π, which rank like planted ones, so
  AUROC_obs ≈ (1 − π)·A + π·0.5. π is estimated from the scores (the real rows above a high planted quantile
  can only be that many bad ones: π ≤ P_rest(s > t) / P_planted(s > t), tightest over several t) and
  A = (AUROC_obs − π/2) / (1 − π);
- a planted row differs from a natural swap: the models that trained on it also trained on its two source
  rows as themselves. PLANT_BIAS (true AUROC − corrected planted AUROC, per candidate, measured on sets with
  known swaps: docs/REAL_DATA.md, "the self-check") is added;
- a bootstrap over planted and real rows gives the interval.

The ranking of the run is the candidate with the highest estimate.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

RANKING_COLUMN = "combo__meanrank"
# candidate rankings: a column of scores.parquet, with a leading '-' where lower is more suspicious
CANDIDATES = ("multimem", "-cmc_out", RANKING_COLUMN)
LOW_AUROC = 0.70
QUANTILES = (0.5, 0.6, 0.7, 0.8)
MAX_CONTAMINATION = 0.3  # natural noise above this share is not what a ranking is for
# true AUROC − corrected planted AUROC per ranking, the mean over the built-in demos (emoji: −0.082, −0.020,
# −0.038; shapes: −0.026, +0.005, −0.005; benchmarks/selfcheck_bias.py, docs/REAL_DATA.md). A planted row looks
# more memorized than a natural swap (its in-models also saw its source rows), while the model that never saw
# it sees it as any swap: -cmc_out needs almost no correction.
PLANT_BIAS = {"multimem": -0.05, "-cmc_out": -0.01, RANKING_COLUMN: -0.02}


def oriented(scores: pd.DataFrame, ranking: str) -> np.ndarray:
    """The values of a ranking ('-col' negates col) as float64, higher = more suspicious."""
    col, sign = (ranking[1:], -1.0) if ranking.startswith("-") else (ranking, 1.0)
    return sign * scores[col].to_numpy(dtype=np.float64)


def percentile_of(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of each value among the finite reference values (NaN stays NaN)."""
    ref = np.sort(reference[np.isfinite(reference)])
    if not len(ref):
        return np.full(len(values), np.nan)
    lo = np.searchsorted(ref, values, side="left")
    hi = np.searchsorted(ref, values, side="right")
    out = (lo + hi) / (2.0 * len(ref))
    return np.where(np.isfinite(values), out, np.nan)


def mean_rank(scores: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """Mean of the percentiles of `multimem` and `-cmc_out` (among `reference`'s rows): both signals at once,
    memorization (in − out) and disagreement under the model that never saw the row."""
    parts = [percentile_of(oriented(scores, r), oriented(reference, r)) for r in ("multimem", "-cmc_out")]
    return (parts[0] + parts[1]) / 2


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half (Mann–Whitney)."""
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()[:len(pos)]
    return float((ranks.sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def contamination(planted: np.ndarray, rest: np.ndarray) -> float:
    """Estimated share of bad pairs among `rest`, given the scores of known bad ones (`planted`)."""
    planted, rest = planted[np.isfinite(planted)], rest[np.isfinite(rest)]
    if len(planted) < 2 or not len(rest):
        return 0.0
    ratios = []
    for q in QUANTILES:
        t = np.quantile(planted, q)
        above = float((planted > t).mean())
        if above > 0:
            ratios.append(float((rest > t).mean()) / above)
    return float(np.clip(min(ratios), 0.0, MAX_CONTAMINATION)) if ratios else 0.0


def corrected(observed: float, pi: float) -> float:
    """A from AUROC_obs = (1 − π)·A + π/2."""
    return float(np.clip((observed - 0.5 * pi) / (1.0 - pi), 0.0, 1.0))


def estimate(planted: np.ndarray, rest: np.ndarray, bias: float = 0.0) -> tuple[float, float, float]:
    """(observed AUROC, π, expected AUROC on natural bad pairs)."""
    obs = auroc(planted, rest)
    pi = contamination(planted, rest)
    return obs, pi, float(np.clip(corrected(obs, pi) + bias, 0.0, 1.0))


def expected_wrong_in_top(planted: np.ndarray, rest: np.ndarray, pi: float, k: int) -> float:
    """About how many of the k most suspicious real rows are bad: π·N·P_bad(score ≥ the k-th score)."""
    rest = rest[np.isfinite(rest)]
    k = min(k, len(rest))
    if k <= 0 or not len(planted):
        return 0.0
    t = np.sort(rest)[::-1][k - 1]
    return float(min(k, pi * len(rest) * float((planted >= t).mean())))


def precision_at_k(planted: np.ndarray, rest: np.ndarray) -> float:
    """Share of planted rows among the top k of planted ∪ rest, k = number planted."""
    k = len(planted)
    if not k:
        return float("nan")
    both = np.concatenate([planted, rest])
    top = np.argsort(-np.nan_to_num(both, nan=-np.inf), kind="stable")[:k]
    return float((top < k).mean())


def run_selfcheck(planted: Mapping[str, np.ndarray], rest: Mapping[str, np.ndarray], *, top: int = 50,
                  bootstrap: int = 300, seed: int = 0, bias: Mapping[str, float] | None = None) -> dict:
    """Per candidate ranking: the estimate with its bootstrap interval; the chosen ranking (highest estimate).

    planted / rest: candidate -> scores (higher = more suspicious) of the planted and the real rows."""
    bias = PLANT_BIAS if bias is None else bias
    rng = np.random.default_rng(seed)
    out: dict = {"n_planted": int(len(next(iter(planted.values())))), "top": int(top), "candidates": {}}
    for name in planted:
        p, r = np.asarray(planted[name], float), np.asarray(rest[name], float)
        obs, pi, est = estimate(p, r, bias.get(name, 0.0))
        boot = []
        for _ in range(bootstrap):
            bp = p[rng.integers(0, len(p), len(p))]
            br = r[rng.integers(0, len(r), len(r))]
            boot.append(estimate(bp, br, bias.get(name, 0.0))[2])
        low, high = (np.quantile(boot, [0.05, 0.95]) if boot else (est, est))
        out["candidates"][name] = {
            "auroc_planted": round(obs, 4), "contamination": round(pi, 4), "expected_auroc": round(est, 4),
            "expected_auroc_low": round(float(min(low, est)), 4), "expected_auroc_high": round(float(max(high, est)), 4),
            "precision_at_k": round(precision_at_k(p, r), 4),
            "expected_wrong_in_top": round(expected_wrong_in_top(p, r, pi, top), 1),
        }
    finite = {k: v for k, v in out["candidates"].items() if np.isfinite(v["expected_auroc"])}
    if finite:
        best = max(finite, key=lambda k: (finite[k]["expected_auroc"], -list(finite).index(k)))
        out["ranking"] = best
        out.update({k: finite[best][k] for k in ("expected_auroc", "expected_auroc_low", "expected_auroc_high",
                                                 "contamination", "expected_wrong_in_top")})
        out["low"] = bool(finite[best]["expected_auroc"] < LOW_AUROC)
    return out
