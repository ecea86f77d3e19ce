"""How well a run's scores find bad pairs on its own data: measured on known corruptions, planted into training
(planting.py) or, for the rankings of the model that never saw a row, formed at scoring time (virtual.py).

Pure functions over score arrays (higher = more suspicious). For each candidate ranking:

- observed AUROC of planted (or virtual) rows against the real rows ("the rest");
- the rest holds natural bad pairs at an unknown rate π, which rank like planted ones, so
  AUROC_obs ≈ (1 − π)·A + π·0.5, and A = (AUROC_obs − π/2) / (1 − π). π comes from a two-component mixture
  fitted by EM to the real rows' scores, the bad component fixed to the planted rows' mean and spread; it is
  never above the tail bound (the real rows above a high planted quantile can only be that many bad ones:
  π ≤ P_rest(s > t) / P_planted(s > t)). The tail bound alone is reached wherever clean rows overlap the
  planted ones, the weak sets, and there it overstated π and the estimate with it. Where bootstrap resamples
  disagree on π, it shrinks toward 0 (a smaller π corrects less: the estimate errs low, not high);
- a planted row differs from a natural swap: the models that trained on it also trained on its two source
  rows as themselves. PLANT_BIAS (true AUROC − corrected planted AUROC, per candidate, measured on sets with
  known swaps: docs/REAL_DATA.md, "the self-check") is added;
- a bootstrap over planted and real rows gives the interval, widened by PLANT_SPREAD (how much that bias
  varies from set to set) and by the sampling error of an AUROC over this data's own π·N bad rows (what the
  user meets is their AUROC, not the expected one).

The ranking of the run is the candidate with the highest lower end of its interval among those measured on
virtual swaps; another replaces it only where it is better on the same trained planted rows (run_selfcheck).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

RANKING_COLUMN = "combo__meanrank"
# candidate rankings: a column of scores.parquet, with a leading '-' where lower is more suspicious
CANDIDATES = ("multimem", "-cmc_out", RANKING_COLUMN)
# the rankings of the model that never saw a row alone: measured on virtual swaps (virtual.py), hundreds of them
# at no training cost; the others need models that trained on the corruption, the trained planted rows
VIRTUAL_CANDIDATES = ("-cmc_out",)
VIRTUAL_FILE = "selfcheck_virtual.parquet"
LOW_AUROC = 0.70
QUANTILES = (0.5, 0.6, 0.7, 0.8)
MAX_CONTAMINATION = 0.3  # natural noise above this share is not what a ranking is for
EM_ITERS = 300  # at most; the fit stops earlier once π moves by less than EM_TOL in a step
EM_TOL = 1e-5
PI_START = 0.1
# true AUROC − corrected planted AUROC per ranking (the gap), measured on every set with known swaps that is not
# a validation set (benchmarks/selfcheck_bias.py, selfcheck_virtual.py; docs/REAL_DATA.md, "the self-check"): the
# mean, rounded toward 0, is added; the spread from set to set widens the interval. For multimem a planted row is
# easier to memorize on some sets and harder on others: a gap that changes sign, hence its wide spread. -cmc_out is
# measured on virtual swaps, which score like natural ones (same mean and spread on the tune sets); its gap comes
# from π: the mixture overstates it on real image+text sets (0.12-0.26 for a true 0.10), whose clean rows are not
# normal (mean gap over nine tune runs -0.030).
PLANT_BIAS = {"multimem": 0.0, "-cmc_out": -0.03, RANKING_COLUMN: 0.02}
PLANT_SPREAD = {"multimem": 0.08, "-cmc_out": 0.03, RANKING_COLUMN: 0.04}
PI_PRIOR_SD = 0.1
# a candidate replaces the one measured on virtual swaps only if better on the same planted rows by this much
# AUROC at the 5 % level: two nearly equal rankings differ consistently by a little on any rows
PAIRED_MARGIN = 0.01
PAIRED_REST_CAP = 10_000  # real rows in that comparison at most (its cost is bootstrap × AUROCs over them)
# below this share of bad rows the fit is not trusted to say how few there are (for the interval's sampling term)
SAMPLING_MIN_SHARE = 0.05


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


def tail_bound(planted: np.ndarray, rest: np.ndarray) -> float:
    """An upper bound on the share of bad pairs among `rest`: above a high planted quantile t, the real rows can
    hold at most P_rest(s > t) / P_planted(s > t) bad ones (tightest over several t)."""
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


def mixture_share(planted: np.ndarray, rest: np.ndarray, iters: int = EM_ITERS) -> np.ndarray:
    """π by EM on rest = (1 − π)·N(μ_c, σ_c²) + π·N(μ_b, σ_b²), the bad component fixed to the planted rows'
    mean and spread, the clean one free. Rows of 2-D inputs are fitted independently (the bootstrap at once).

    The tail bound alone is only an upper bound, reached wherever clean rows overlap the planted ones (weak
    sets): there it overstates π and with it the corrected AUROC. The mixture uses the whole shape of `rest`."""
    p = np.atleast_2d(np.asarray(planted, float))
    r = np.atleast_2d(np.asarray(rest, float))
    mb, sb = p.mean(1, keepdims=True), np.maximum(p.std(1, ddof=1, keepdims=True), 1e-6)
    pi = np.full((len(r), 1), PI_START)
    mc, sc = r.mean(1, keepdims=True), np.maximum(r.std(1, keepdims=True), 1e-6)

    def logpdf(x, m, s):
        return -0.5 * ((x - m) / s) ** 2 - np.log(s)

    for _ in range(iters):
        last = pi
        lb = np.log(pi + 1e-12) + logpdf(r, mb, sb)
        lc = np.log(1 - pi + 1e-12) + logpdf(r, mc, sc)
        w = 1.0 / (1.0 + np.exp(np.clip(lc - lb, -50, 50)))  # responsibility of the bad component
        pi = np.clip(w.mean(1, keepdims=True), 0.0, 1.0)
        wc = np.maximum((1 - w).sum(1, keepdims=True), 1e-9)
        mc = ((1 - w) * r).sum(1, keepdims=True) / wc
        sc = np.maximum(np.sqrt(((1 - w) * (r - mc) ** 2).sum(1, keepdims=True) / wc), 1e-6)
        if np.abs(pi - last).max() < EM_TOL:
            break
    return pi[:, 0]


def contamination(planted: np.ndarray, rest: np.ndarray, name: str = "") -> float:
    """Estimated share of bad pairs among `rest`, given the scores of known bad ones (`planted`)."""
    planted, rest = planted[np.isfinite(planted)], rest[np.isfinite(rest)]
    if len(planted) < 2 or not len(rest):
        return 0.0
    return float(_shares(planted[None], rest[None], name)[0])


def _shares(planted: np.ndarray, rest: np.ndarray, name: str) -> np.ndarray:
    """π per row of the 2-D inputs: the mixture's estimate, never above the tail bound or MAX_CONTAMINATION."""
    em = mixture_share(_fit_space(name, planted), _fit_space(name, rest))
    bound = np.array([tail_bound(p, r) for p, r in zip(planted, rest)])
    return np.clip(np.minimum(em, bound), 0.0, MAX_CONTAMINATION)


def _fit_space(name: str, x: np.ndarray) -> np.ndarray:
    """Where the mixture's normal components are fitted: percentile columns through the probit."""
    if name == RANKING_COLUMN:
        from scipy.stats import norm

        return norm.ppf(np.clip(x, 1e-3, 1 - 1e-3))
    return x


def corrected(observed: float, pi: float) -> float:
    """A from AUROC_obs = (1 − π)·A + π/2."""
    return float(np.clip((observed - 0.5 * pi) / (1.0 - pi), 0.0, 1.0))


def estimate(planted: np.ndarray, rest: np.ndarray, bias: float = 0.0, name: str = "", *, bootstrap: int = 200,
             seed: int = 0, spread: float = 0.0) -> dict:
    """The expected AUROC on natural bad pairs, with its interval.

    π is fitted on the data and on `bootstrap` resamples of planted and real rows at once. Where the resamples
    disagree (π poorly identified: few planted rows, clean and bad rows overlapping), π shrinks toward 0 by
    τ² / (τ² + var): a smaller π corrects less, so the estimate errs low rather than high. The interval is the
    resamples' 5–95 % range, widened by `spread` (how much the planted-vs-natural gap varies between sets)."""
    planted, rest = planted[np.isfinite(planted)], rest[np.isfinite(rest)]
    if len(planted) < 2 or not len(rest):
        nan = float("nan")
        return {"auroc_planted": auroc(planted, rest), "contamination": 0.0, "contamination_fit": 0.0,
                "expected_auroc": nan, "expected_auroc_low": nan, "expected_auroc_high": nan}
    rng = np.random.default_rng(seed)
    bp = np.vstack([planted, planted[rng.integers(0, len(planted), (bootstrap, len(planted)))]])
    br = np.vstack([rest, rest[rng.integers(0, len(rest), (bootstrap, len(rest)))]])
    obs = np.array([auroc(x, y) for x, y in zip(bp, br)])
    fit = _shares(bp, br, name)
    var = float(fit[1:].var()) if bootstrap > 1 else 0.0
    pi = fit * PI_PRIOR_SD ** 2 / (PI_PRIOR_SD ** 2 + var)
    est = np.clip((obs - 0.5 * pi) / (1.0 - pi) + bias, 0.0, 1.0)
    low, high = (np.quantile(est[1:], [0.05, 0.95]) if bootstrap > 1 else (est[0], est[0]))
    # the truth the user meets is the AUROC of this data's own bad rows, a sample of about π·N of them
    share = max(float(fit[0]), SAMPLING_MIN_SHARE)
    widen = np.hypot(1.645 * spread, 1.645 * sampling_se(est[0], share * len(rest), (1 - share) * len(rest)))
    low = est[0] - np.hypot(max(est[0] - low, 0.0), widen)
    high = est[0] + np.hypot(max(high - est[0], 0.0), widen)
    return {"auroc_planted": float(obs[0]), "contamination": float(pi[0]), "contamination_fit": float(fit[0]),
            "expected_auroc": float(est[0]), "expected_auroc_low": float(np.clip(low, 0.0, 1.0)),
            "expected_auroc_high": float(np.clip(high, 0.0, 1.0))}


def sampling_se(a: float, n_bad: float, n_clean: float) -> float:
    """Standard error of an AUROC `a` measured on n_bad bad and n_clean clean rows (Hanley & McNeil, 1982):
    how far the AUROC of this data's own bad rows may lie from the one expected of bad rows like them."""
    n_bad, n_clean = max(n_bad, 2.0), max(n_clean, 2.0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_bad - 1) * (q1 - a * a) + (n_clean - 1) * (q2 - a * a)) / (n_bad * n_clean)
    return float(np.sqrt(max(var, 0.0)))


def expected_wrong_in_top(planted: np.ndarray, rest: np.ndarray, pi: float, k: int) -> float:
    """About how many of the k most suspicious real rows are bad: π·N·P_bad(score ≥ the k-th score)."""
    rest = rest[np.isfinite(rest)]
    k = min(k, len(rest))
    if k <= 0 or not len(planted):
        return 0.0
    t = np.sort(rest)[::-1][k - 1]
    return float(min(k, pi * len(rest) * float((planted >= t).mean())))


def paired_gain(planted: np.ndarray, rest: np.ndarray, ref_planted: np.ndarray, ref_rest: np.ndarray, *,
                bootstrap: int = 200, seed: int = 0, level: float = 0.05) -> float:
    """The `level` quantile of the bootstrap of AUROC(planted, rest) − AUROC(ref_planted, ref_rest), the same rows
    scored two ways (planted and rest aligned with ref_planted and ref_rest): > 0 where the first ranking is
    better on these rows beyond their resampling noise."""
    ok_p = np.isfinite(planted) & np.isfinite(ref_planted)
    ok_r = np.isfinite(rest) & np.isfinite(ref_rest)
    rng = np.random.default_rng(seed)
    if ok_r.sum() > PAIRED_REST_CAP:  # the few planted rows set the noise: a sample of the real ones is as good
        ok_r[rng.choice(np.flatnonzero(ok_r), int(ok_r.sum()) - PAIRED_REST_CAP, replace=False)] = False
    a, b, c, d = planted[ok_p], rest[ok_r], ref_planted[ok_p], ref_rest[ok_r]
    if len(a) < 2 or not len(b):
        return float("nan")
    gains = []
    for _ in range(bootstrap):
        i, j = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        gains.append(auroc(a[i], b[j]) - auroc(c[i], d[j]))
    return float(np.quantile(gains, level))


def precision_at_k(planted: np.ndarray, rest: np.ndarray) -> float:
    """Share of planted rows among the top k of planted ∪ rest, k = number planted."""
    k = len(planted)
    if not k:
        return float("nan")
    both = np.concatenate([planted, rest])
    top = np.argsort(-np.nan_to_num(both, nan=-np.inf), kind="stable")[:k]
    return float((top < k).mean())


def run_selfcheck(planted: Mapping[str, np.ndarray], rest: Mapping[str, np.ndarray], *, top: int = 50,
                  bootstrap: int = 200, seed: int = 0, bias: Mapping[str, float] | None = None,
                  spread: Mapping[str, float] | None = None, paired: Mapping[str, np.ndarray] | None = None) -> dict:
    """Per candidate ranking: the estimate with its interval; the chosen ranking.

    planted / rest: candidate -> scores (higher = more suspicious) of the planted and the real rows.
    The ranking is the candidate with the highest lower end of its interval (one whose estimate is high only by
    chance or by an uncertain correction is not chosen) among those measured on virtual swaps, the best measured
    ones. With `paired` (candidate -> scores of the same trained planted rows, every candidate) another candidate
    can take its place only where it ranks those same rows above the same real rows significantly more often
    (paired_gain above PAIRED_MARGIN): otherwise the noisier estimate of a few dozen planted rows would win
    whenever it errs high."""
    bias = PLANT_BIAS if bias is None else bias
    spread = PLANT_SPREAD if spread is None else spread
    counts = {name: int(np.isfinite(np.asarray(v, float)).sum()) for name, v in planted.items()}
    trained = [counts[c] for c in counts if c not in VIRTUAL_CANDIDATES]
    out: dict = {"n_planted": trained[0] if trained else 0, "top": int(top), "candidates": {},
                 "n_virtual": max([counts[c] for c in counts if c in VIRTUAL_CANDIDATES], default=0)}
    for name in planted:
        p, r = np.asarray(planted[name], float), np.asarray(rest[name], float)
        p, r = p[np.isfinite(p)], r[np.isfinite(r)]
        e = estimate(p, r, bias.get(name, 0.0), name, bootstrap=bootstrap, seed=seed, spread=spread.get(name, 0.0))
        out["candidates"][name] = {k: round(v, 4) for k, v in e.items()} | {"n_planted": counts[name],
            "precision_at_k": round(precision_at_k(p, r), 4),
            "expected_wrong_in_top": round(expected_wrong_in_top(p, r, e["contamination"], top), 1)}
    finite = {k: v for k, v in out["candidates"].items() if np.isfinite(v["expected_auroc"])}
    if finite:
        def lower_end(k):
            return finite[k]["expected_auroc_low"], -list(finite).index(k)

        best = max([k for k in finite if k in VIRTUAL_CANDIDATES and counts[k] > max(trained, default=0)] or finite,
                   key=lower_end)
        if paired is not None:
            better = [k for k in finite if k != best and k in paired and best in paired
                      and paired_gain(paired[k], rest[k], paired[best], rest[best], bootstrap=bootstrap,
                                      seed=seed) > PAIRED_MARGIN]
            best = max([best, *better], key=lower_end)
        out["ranking"] = best
        out.update({k: finite[best][k] for k in ("expected_auroc", "expected_auroc_low", "expected_auroc_high",
                                                 "contamination", "expected_wrong_in_top")})
        out["low"] = bool(finite[best]["expected_auroc"] < LOW_AUROC)
    return out
