"""`multimem summary RUN`: what a run found, as a dict (for the app and tests) and as text (for people)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .confidence import advice, format_confidence
from .diagnose import auroc_table, score_label
from .names import BASE, CMC_OUT, COMBO, HELDOUT, MULTIMEM, PAIR, score_columns
from .planting import PAPER_PLANTS_NONE
from .run import RunDir, made_by_importer
from .selfcheck import LOW_AUROC
from .tables import join_scores



def _auroc_columns(scores: pd.DataFrame) -> list[str]:
    """MultiMem, the consistency of the model that did not see the sample, the pair scores and baselines."""
    return [c for c in score_columns(scores.columns) if c in (MULTIMEM, CMC_OUT) or c.startswith((PAIR, BASE, COMBO))]


def summarize(run: RunDir) -> dict:
    cfg = run.config()
    samples = run.samples()
    scores = run.scores()
    errors = run.errors()
    out: dict = {
        "run": str(run.path), "status": cfg.get("status"), "protocol": cfg.get("protocol", {}).get("name"),
        "modalities": cfg.get("modalities"), "rows": int(len(samples)), "rows_scored": 0, "n_samples": int(len(samples)),
        "n_skipped": int(errors["id"].nunique()) if len(errors) else 0,
        "skipped_reasons": errors["reason"].value_counts().head(10).to_dict() if len(errors) else {},
        "roles": samples["role"].value_counts().sort_index().to_dict(),
        "timings": run.timings(),
    }
    out.update(verdict(cfg), advice=advice(cfg))
    if scores is None:
        return out
    out["confidence"] = cfg.get("confidence") or scores.attrs.get("confidence") or {}
    has_injected = "injected" in samples.columns and (samples["injected"].fillna("").astype(str) != "").any()
    merged = join_scores(samples, scores).scored()
    out["n_scored"] = out["rows_scored"] = int(np.isfinite(scores["multimem"].to_numpy(dtype=np.float64)).sum())
    out["mean_by_role"] = merged.groupby("role")["multimem"].agg(["mean", "count"]).round(4).to_dict("index")
    if not has_injected:
        return _with_evaluation(run, out)
    merged["injected"] = merged["injected"].fillna("").astype(str)
    kinds = merged["injected"].replace("", "clean")
    out["mean_by_injected"] = merged.groupby(kinds)["multimem"].agg(["mean", "count"]).round(4).to_dict("index")
    cols = _auroc_columns(scores)
    table = auroc_table(merged, merged["injected"], cols)
    out["auroc"] = {r.score: round(r.auroc, 4) for r in table.itertuples()}
    per_kind = {}
    clean = merged["injected"] == ""
    for kind in sorted(set(merged["injected"]) - {""}):
        sub = merged[clean | (merged["injected"] == kind)]
        t = auroc_table(sub, sub["injected"], cols)
        per_kind[kind] = {r.score: round(r.auroc, 4) for r in t.itertuples()}
    out["auroc_by_kind"] = per_kind
    ranking = out.get("ranking")
    if ranking and ranking.lstrip("-") in scores.columns:
        out["auroc_of_ranking"] = round(float(auroc_table(merged, merged["injected"], [ranking.lstrip("-")])
                                              ["auroc"].iloc[0]), 4)
    return _with_evaluation(run, out)


def _with_evaluation(run: RunDir, out: dict) -> dict:
    metrics = run.path / "evaluation.json"
    if metrics.is_file():
        import json

        out["evaluation"] = json.loads(metrics.read_text())
    return out


def _wrong_thing(kinds: list[str], modalities: list[str]) -> str:
    """What a planted corruption is, in words: 'a wrong caption' for image+text, else 'a wrong <kind>'."""
    words = {"text": "caption", "image": "picture", "audio": "sound", "video": "video"}
    if len(kinds) == 1:
        return f"a wrong {words.get(kinds[0], kinds[0])}"
    return "a wrong pairing"


def _why_no_selfcheck(cfg: dict) -> str:
    sc = cfg.get("selfcheck") or {}
    if sc.get("skipped"):
        return sc["skipped"]
    if "expected_auroc" in sc:  # run, but its planted rows gave no estimate (fewer than two of them scored)
        return "its planted corruptions could not be scored"
    if cfg.get("status") not in (None, "complete"):
        return f"the run has not finished (status: {cfg['status']}); its self-check comes with its scores"
    if made_by_importer(cfg):
        return "its embeddings or scores were imported, so no proxy models were trained here to plant in"
    if (cfg.get("protocol") or {}).get("name") == "paper":
        return PAPER_PLANTS_NONE
    return "the paper protocol, imported embeddings, too few rows, or a run made before self-checks"


def verdict(cfg: dict) -> dict:
    """The self-check's figures and the sentences a newcomer reads first (empty figures when the run has none)."""
    sc = cfg.get("selfcheck") or {}
    if not _finite(sc.get("expected_auroc")):  # absent, or null (NaN in runs written before strict JSON)
        return {"ranking": cfg.get("ranking") or "multimem", "expected_auroc": None, "expected_auroc_low": None,
                "expected_auroc_high": None,
                "verdict": f"No self-check in this run: {_why_no_selfcheck(cfg)}; how well its scores find bad "
                           "pairs was not measured."}
    wrong = _wrong_thing(sc.get("kinds") or [], cfg.get("modalities") or [])
    est, lo, hi = sc["expected_auroc"], sc["expected_auroc_low"], sc["expected_auroc_high"]
    top = sc.get("top", 50)
    out = {"ranking": sc["ranking"], "expected_auroc": est, "expected_auroc_low": lo, "expected_auroc_high": hi,
           "contamination": sc.get("contamination"), "expected_wrong_in_top": sc.get("expected_wrong_in_top"),
           "top": top, "n_planted": sc.get("n_planted"), "n_virtual": sc.get("n_virtual", 0),
           "selfcheck": sc.get("candidates", {}),
           "verdict": (f"On this data, {wrong} ranks above a right one {100 * est:.0f} % of the time "
                       f"({100 * lo:.0f}–{100 * hi:.0f} %); among the top {top}, expect about "
                       f"{sc.get('expected_wrong_in_top', 0):.0f} wrong pairs. About {100 * sc.get('contamination', 0):.0f} % "
                       f"of all rows look wrong. Ranked by {score_label(sc['ranking'].lstrip('-'))} "
                       f"({sc['ranking']}).")}
    # the interval's lower end too: the data's own bad rows are a sample, and their AUROC may lie below 0.70
    # while the estimate does not (a few dozen bad rows move it by about 0.05)
    if est < LOW_AUROC or lo < LOW_AUROC:
        said = (f"tell wrong pairs from right ones poorly (estimate {est:.2f} < {LOW_AUROC:.2f})" if est < LOW_AUROC
                else f"may tell wrong pairs from right ones poorly (estimate {est:.2f}, but its interval reaches "
                     f"{lo:.2f} < {LOW_AUROC:.2f})")
        out["warning"] = (f"WARNING: on this data the scores {said}: treat the top of the ranking as hints to "
                          f"review, not as a list to delete. {advice(cfg)} Then check this estimate again.")
    return out


def _finite(x) -> bool:
    return x is not None and bool(np.isfinite(x))


def _number(x, spec: str) -> str:
    """A figure as `spec` formats it, or "-" where the run stored none (null in strict JSON)."""
    return format(x, spec) if _finite(x) else "-"


def _oriented(col: str) -> str:
    from .names import LOWER_IS_WORSE

    return f"-{col}" if col in LOWER_IS_WORSE else col


def format_summary(s: dict) -> str:
    lines = [s["verdict"]]
    if s.get("warning"):
        lines.append(s["warning"])
    lines.append("")
    lines += [f"run        {s['run']}  ({s.get('status')}, protocol {s.get('protocol')}, "
              f"modalities {', '.join(s.get('modalities') or [])})",
              f"samples    {s['rows']} loaded, {s.get('rows_scored', 0)} scored"
              + (f", {s['roles'][HELDOUT]} held out (H: cmc_out only)" if s.get("roles", {}).get(HELDOUT) else "")
              + f", {s['n_skipped']} skipped"]
    for reason, count in s.get("skipped_reasons", {}).items():
        lines.append(f"           skipped {count}× {reason}")
    lines.append("roles      " + ", ".join(f"{k}: {v}" for k, v in s["roles"].items()))
    if s.get("timings"):
        total = sum(s["timings"].values())
        lines.append(f"time       {total:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
    if s.get("selfcheck"):
        virtual = f", {s['n_virtual']} virtual swaps for the rankings of the model that never saw a row" \
            if s.get("n_virtual") else ""
        lines.append(f"\nself-check ({s.get('n_planted')} planted corruptions{virtual}): estimated AUROC per ranking")
        for name, c in s["selfcheck"].items():
            est, lo, hi, planted = (_number(c.get(k), f) for k, f in (
                ("expected_auroc", ".3f"), ("expected_auroc_low", ".2f"), ("expected_auroc_high", ".2f"),
                ("auroc_planted", ".3f")))
            lines.append(f"  {name:<26}{est}  ({lo}–{hi}; planted {planted})")
    conf = dict(s.get("confidence") or {})
    if s.get("expected_auroc") is not None:
        conf["low"] = False  # the self-check's warning is the one that predicts quality
    lines += format_confidence(conf, advice=s.get("advice", ""))
    if "mean_by_role" in s:
        lines.append("\nmean MultiMem by role")
        for role, v in s["mean_by_role"].items():
            lines.append(f"  {role:<22} {v['mean']:+.4f}  (n={v['count']})")
    if "mean_by_injected" in s:
        lines.append("mean MultiMem by injected kind")
        for kind, v in s["mean_by_injected"].items():
            lines.append(f"  {kind:<22} {v['mean']:+.4f}  (n={v['count']})")
    if "auroc" in s:
        cols = list(s["auroc"])
        kinds = list(s["auroc_by_kind"])
        lines.append("\nAUROC, injected vs clean (higher is better; '-' means lower score = more suspicious)")
        header = f"  {'score':<26}{'all':>8}" + "".join(f"{k[:16]:>18}" for k in kinds)
        lines.append(header)
        for c in cols:
            row = f"  {_oriented(c):<26}{s['auroc'][c]:>8.3f}"
            row += "".join(f"{s['auroc_by_kind'][k].get(c, float('nan')):>18.3f}" for k in kinds)
            lines.append(row)
        if "auroc_of_ranking" in s:
            estimate = (f", self-check estimate {s['expected_auroc']:.3f}" if s.get("expected_auroc") is not None
                        else "")
            lines.append(f"  the run's ranking ({s['ranking']}): true AUROC {s['auroc_of_ranking']:.3f}{estimate}")
    if "evaluation" in s:
        from .evaluate import format_evaluation

        lines.append("\ndownstream evaluation (multimem evaluate)")
        lines += format_evaluation(s["evaluation"])
    return "\n".join(lines)
