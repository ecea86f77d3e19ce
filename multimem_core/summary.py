"""`multimem summary RUN`: what a run found, as a dict (for the app and tests) and as text (for people)."""

from __future__ import annotations

import pandas as pd

from .confidence import format_confidence
from .diagnose import auroc_table
from .names import BASE, CMC_OUT, HELDOUT, MULTIMEM, PAIR, score_columns
from .run import RunDir
from .tables import join_scores


def _auroc_columns(scores: pd.DataFrame) -> list[str]:
    """MultiMem, the consistency of the model that did not see the sample, the pair scores and baselines."""
    return [c for c in score_columns(scores.columns) if c in (MULTIMEM, CMC_OUT) or c.startswith((PAIR, BASE))]


def summarize(run: RunDir) -> dict:
    cfg = run.config()
    samples = run.samples()
    scores = run.scores()
    errors = run.errors()
    out: dict = {
        "run": str(run.path), "status": cfg.get("status"), "protocol": cfg.get("protocol", {}).get("name"),
        "modalities": cfg.get("modalities"), "n_samples": int(len(samples)),
        "n_skipped": int(errors["id"].nunique()) if len(errors) else 0,
        "skipped_reasons": errors["reason"].value_counts().head(10).to_dict() if len(errors) else {},
        "roles": samples["role"].value_counts().sort_index().to_dict(),
        "timings": run.timings(),
    }
    if scores is None:
        return out
    out["confidence"] = cfg.get("confidence") or scores.attrs.get("confidence") or {}
    merged = join_scores(samples, scores).scored()
    out["n_scored"] = int(len(scores))
    out["mean_by_role"] = merged.groupby("role")["multimem"].agg(["mean", "count"]).round(4).to_dict("index")
    kinds = merged["injected"].replace("", "clean")
    out["mean_by_injected"] = merged.groupby(kinds)["multimem"].agg(["mean", "count"]).round(4).to_dict("index")
    if (merged["injected"] != "").any():
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
    metrics = run.path / "evaluation.json"
    if metrics.is_file():
        import json

        out["evaluation"] = json.loads(metrics.read_text())
    return out


def _oriented(col: str) -> str:
    from .names import LOWER_IS_WORSE

    return f"-{col}" if col in LOWER_IS_WORSE else col


def format_summary(s: dict) -> str:
    lines = [f"run        {s['run']}  ({s.get('status')}, protocol {s.get('protocol')}, "
             f"modalities {', '.join(s.get('modalities') or [])})",
             f"samples    {s['n_samples']} loaded, {s.get('n_scored', 0)} scored, "
             f"{s.get('roles', {}).get(HELDOUT, 0)} held out (H: cmc_out only), {s['n_skipped']} skipped"]
    for reason, count in s.get("skipped_reasons", {}).items():
        lines.append(f"           skipped {count}× {reason}")
    lines.append("roles      " + ", ".join(f"{k}: {v}" for k, v in s["roles"].items()))
    if s.get("timings"):
        total = sum(s["timings"].values())
        lines.append(f"time       {total:.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
    lines += format_confidence(s.get("confidence") or {})
    if "mean_by_role" in s:
        lines.append("\nmean MultiMem by role")
        for role, v in s["mean_by_role"].items():
            lines.append(f"  {role:<22} {v['mean']:+.4f}  (n={v['count']})")
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
    if "evaluation" in s:
        from .evaluate import format_evaluation

        lines.append("\ndownstream evaluation (multimem evaluate)")
        lines += format_evaluation(s["evaluation"])
    return "\n".join(lines)
