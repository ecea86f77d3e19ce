"""Read-only views of a run's mitigations: what the dashboard and `multimem mitigate` show.

Nothing here trains or loads a model (no torch): the dashboard imports this module, never the training code.
"""

from __future__ import annotations

import re

import pandas as pd

from ..run import RunDir
from ..run_files import read_run_json


def list_mitigations(run: RunDir) -> list[dict]:
    """Every mitigation folder of a run with its config and metrics (for the dashboard and summary)."""
    out = []
    if not run.mitigation_dir.is_dir():
        return out
    for folder in sorted(run.mitigation_dir.iterdir()):
        cfg, met = folder / "config.json", folder / "metrics.json"
        if cfg.is_file():
            # bounded reads of regular files: a FIFO or a giant file there stops nothing but this run's page
            out.append({"name": folder.name, "path": str(folder), "config": read_run_json(cfg, "mitigation settings"),
                        "metrics": read_run_json(met, "mitigation results") if met.is_file() else None})
    return out


def baseline(before: dict, after: dict) -> dict | None:
    """What `after`'s memorization is compared with: the run's own scores on the SAME rows.

    A removal point scores only the rows it kept, so it carries the run's scores on those rows
    (`memorization_before`); regrouping and the augmentation study score every row before and after, so there
    the baseline is `before`'s. None: the two cover different rows (a removal point recorded before points
    carried their baseline; running the same `multimem mitigate` command again adds it without retraining)."""
    if after.get("memorization_before"):
        return after["memorization_before"]
    if before.get("memorization", {}).get("n") == after["memorization"].get("n"):
        return before["memorization"]
    return None


def memorization_change(point: dict) -> float | None:
    """A removal point's change of mean MultiMem on the rows it kept (fine-tuned − the run's own), or None."""
    base, mean = (point.get("memorization_before") or {}).get("mean"), point["memorization"].get("mean")
    return None if base is None or mean is None else round(mean - base, 5)


def removal_curves(points: list[dict], metric: str = "recall@5") -> pd.DataFrame:
    """One row per (ranking, N): the metric's mean and spread over random draws, N = 0 in every ranking.
    metric "multimem": the change of mean MultiMem on each point's own kept rows (`memorization_change`;
    the points of a sweep keep different rows, so their plain means are not comparable)."""
    rows = []
    for p in points:
        value = memorization_change(p) if metric == "multimem" else p["evaluation"].get(metric)
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


def _f(v, spec: str) -> str:
    """A number as `spec` formats it; a missing one (None, NaN) as '–' of the same width."""
    if v is None or pd.isna(v):
        width = re.match(r"^>?[+-]?(\d*)", spec).group(1)
        return format("–", f">{width}") if width else "–"
    return format(v, spec)


def _numbers_line(label: str, numbers: dict, mem: dict | None = None) -> str:
    mem, ev = mem or numbers["memorization"], numbers["evaluation"]
    parts = [f"MultiMem {_f(mem['mean'], '+.4f')}"]
    if "injected" in mem:
        parts.append(f"(injected {_f(mem['injected'], '+.4f')}, clean {_f(mem['clean'], '+.4f')})")
    parts += [f"{k} {_f(v, '.3f')}" for k, v in ev.items()]
    return f"  {label:<10}" + "  ".join(parts)


def format_metrics(m: dict) -> str:
    """The text `multimem mitigate` prints: before, after, change, and the sweep / study / history tables."""
    lines = [f"mitigation: {m['strategy']}" + (f" ({m['augment']})" if m.get("augment") else "")]
    before, after = m.get("before"), m.get("after")
    base = baseline(before, after) if before and after else None
    if before:
        lines.append(_numbers_line("before", before, base))
    if after:
        lines.append(_numbers_line("after", after))
    if after and base is not None and base is not before["memorization"]:
        lines.append(f"            MultiMem on the same {base['n']} kept rows before and after (the run's mean over "
                     f"all {before['memorization']['n']} scored rows: {_f(before['memorization']['mean'], '+.4f')})")
    if m.get("change"):
        c = m["change"]
        rel = c.get("multimem_mean_relative")
        if before and after and base is None:
            mem = "MultiMem not comparable (before: every scored row, after: the kept rows; run the command again)"
        else:
            mem = "MultiMem " + (f"{100 * rel:+.1f} %" if rel is not None else _f(c.get("multimem_mean"), "+.4f"))
        lines.append("  change    " + mem
                     + "".join(f", {k[:-7]} {v:+.2f} pt" for k, v in c.items() if k.endswith("_points")))
    if m.get("overhead"):
        o = m["overhead"]
        lines.append(f"  scoring overhead {o['scoring_s']:.1f} s of {o['training_s']:.1f} s training "
                     f"({100 * o['share']:.2f} %)")
    if m.get("points"):
        lines.append("\n  MultiMem of each point on the rows it kept: the run's own scores (run), fine-tuned (after)")
        lines.append(f"  {'ranking':<15}{'draw':>5}{'removed':>8}{'injected':>9}{'run':>10}{'after':>10}{'change':>10}"
                     f"{'R@5':>8}{'probe':>8}{'0-shot':>8}")
        for p in sorted(m["points"], key=lambda p: (p["n_removed"], p["ranking"], p.get("draw", 0))):
            ev = p["evaluation"]
            lines.append(f"  {p['ranking']:<15}{p.get('draw', 0):>5}{p['n_removed']:>8}{p['injected_removed']:>9}"
                         f"{_f((p.get('memorization_before') or {}).get('mean'), '>+10.4f')}"
                         f"{_f(p['memorization']['mean'], '>+10.4f')}{_f(memorization_change(p), '>+10.4f')}"
                         f"{_f(ev.get('recall@5'), '>8.3f')}{_f(ev.get('linear_probe'), '>8.3f')}"
                         f"{_f(ev.get('zero_shot'), '>8.3f')}")
    if m.get("rows"):
        lines.append(f"\n  {'augmented':<28}{'MultiMem':>10}{'R@5':>8}")
        for r in m["rows"]:
            lines.append(f"  {'+'.join(r['modalities']):<28}{_f(r['memorization']['mean'], '>+10.4f')}"
                         f"{_f(r['evaluation'].get('recall@5'), '>8.3f')}")
    if m.get("seconds") is not None:
        lines.append(f"\n  {m['seconds']:.0f} s")
    return "\n".join(lines)
