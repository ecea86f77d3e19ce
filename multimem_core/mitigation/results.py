"""Read-only views of a run's mitigations: what the dashboard and `multimem mitigate` show.

Nothing here trains or loads a model (no torch): the dashboard imports this module, never the training code.
"""

from __future__ import annotations

import json

import pandas as pd

from ..run import RunDir


def list_mitigations(run: RunDir) -> list[dict]:
    """Every mitigation folder of a run with its config and metrics (for the dashboard and summary)."""
    out = []
    if not run.mitigation_dir.is_dir():
        return out
    for folder in sorted(run.mitigation_dir.iterdir()):
        cfg, met = folder / "config.json", folder / "metrics.json"
        if cfg.is_file():
            out.append({"name": folder.name, "path": str(folder), "config": json.loads(cfg.read_text()),
                        "metrics": json.loads(met.read_text()) if met.is_file() else None})
    return out


def removal_curves(points: list[dict], metric: str = "recall@5") -> pd.DataFrame:
    """One row per (ranking, N): the metric's mean and spread over random draws, N = 0 in every ranking."""
    rows = []
    for p in points:
        value = p["memorization"]["mean"] if metric == "multimem" else p["evaluation"].get(metric)
        rows.append({"ranking": p["ranking"], "removed": p["n_removed"], "draw": p.get("draw", 0), "value": value,
                     "injected_removed": p["injected_removed"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    zero = df[df["ranking"] == "none"]
    parts = [pd.concat([zero.assign(ranking=r), df[df["ranking"] == r]]) for r in df["ranking"].unique() if r != "none"]
    df = pd.concat(parts) if parts else zero
    out = df.groupby(["ranking", "removed"]).agg(value=("value", "mean"), spread=("value", "std"), draws=("draw", "size"),
                                                 injected_removed=("injected_removed", "mean")).reset_index()
    out["spread"] = out["spread"].fillna(0.0)
    return out


def _numbers_line(label: str, numbers: dict) -> str:
    mem, ev = numbers["memorization"], numbers["evaluation"]
    parts = [f"MultiMem {mem['mean']:+.4f}"]
    if "injected" in mem:
        parts.append(f"(injected {mem['injected']:+.4f}, clean {mem['clean']:+.4f})")
    parts += [f"{k} {v:.3f}" for k, v in ev.items()]
    return f"  {label:<10}" + "  ".join(parts)


def format_metrics(m: dict) -> str:
    """The text `multimem mitigate` prints: before, after, change, and the sweep / study / history tables."""
    lines = [f"mitigation: {m['strategy']}" + (f" ({m['augment']})" if m.get("augment") else "")]
    if m.get("before"):
        lines.append(_numbers_line("before", m["before"]))
    if m.get("after"):
        lines.append(_numbers_line("after", m["after"]))
    if m.get("change"):
        c = m["change"]
        rel = c.get("multimem_mean_relative")
        lines.append("  change    MultiMem " + (f"{100 * rel:+.1f} %" if rel is not None else f"{c['multimem_mean']:+.4f}")
                     + "".join(f", {k[:-7]} {v:+.2f} pt" for k, v in c.items() if k.endswith("_points")))
    if m.get("overhead"):
        o = m["overhead"]
        lines.append(f"  scoring overhead {o['scoring_s']:.1f} s of {o['training_s']:.1f} s training "
                     f"({100 * o['share']:.2f} %)")
    if m.get("points"):
        lines.append(f"\n  {'ranking':<15}{'draw':>5}{'removed':>8}{'injected':>9}{'MultiMem':>10}{'R@5':>8}{'probe':>8}"
                     f"{'0-shot':>8}")
        for p in sorted(m["points"], key=lambda p: (p["n_removed"], p["ranking"], p.get("draw", 0))):
            ev = p["evaluation"]
            lines.append(f"  {p['ranking']:<15}{p.get('draw', 0):>5}{p['n_removed']:>8}{p['injected_removed']:>9}"
                         f"{p['memorization']['mean']:>+10.4f}{ev.get('recall@5', float('nan')):>8.3f}"
                         f"{ev.get('linear_probe', float('nan')):>8.3f}{ev.get('zero_shot', float('nan')):>8.3f}")
    if m.get("rows"):
        lines.append(f"\n  {'augmented':<28}{'MultiMem':>10}{'R@5':>8}")
        for r in m["rows"]:
            lines.append(f"  {'+'.join(r['modalities']):<28}{r['memorization']['mean']:>+10.4f}"
                         f"{r['evaluation'].get('recall@5', float('nan')):>8.3f}")
    if m.get("seconds") is not None:
        lines.append(f"\n  {m['seconds']:.0f} s")
    return "\n".join(lines)
