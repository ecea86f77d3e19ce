"""Do the proxy models generalize? Retrieval on the rows each model never trained on, against chance.

MultiMem separates memorized from clean samples only when a model that did not train on a sample still
aligns its modalities, that is, when the proxy models generalize. How well each model retrieves a row's
other modality among the rows it never trained on (its reference set: its own fold under crossfit, H under
paper) measures exactly that: recall@5 per modality pair (both directions, mean over the models), next to
its chance level 5/|set|. The self-check (selfcheck.py) is what predicts detection quality; this figure
says why a run is weak.

The figure is `lift`, recall@5 over chance, of the weakest pair. Calibrated on measured runs
(docs/REAL_DATA.md, "How far to trust a run"): runs whose best score column reached AUROC ≥ 0.8 had a lift of at least
LIFT_THRESHOLD, runs near chance AUROC had less.
"""

from __future__ import annotations

from itertools import combinations
from typing import Mapping

import numpy as np


K = 5
LIFT_THRESHOLD = 3.0
ADVICE = ("the proxy models do not generalize to samples they never saw, so MultiMem cannot tell memorized "
          "from clean samples well. Try: a pretrained image tower (the default efficientnet-lite2, or "
          "--image-tower ARCH --pretrained CHECKPOINT --freeze-image), a pretrained text tower "
          "(--text-tower minilm), the pretrained audio tower (--audio-tower aisfx), more epochs, more data, or score your own model's embeddings with "
          "`multimem import-embeddings`.")


def heldout_confidence(clean: Mapping[str, Mapping[str, np.ndarray]], references: Mapping[str, np.ndarray], *,
                       modalities: list[str], k: int = K, threshold: float = LIFT_THRESHOLD) -> dict:
    """Retrieval under every model (model -> modality -> embeddings [N, d], rows of all samples) among the rows
    it never trained on (model -> row indices).

    Returns {"k", "n_heldout", "chance", "pairs": {"a-b": {"recall_at_5", "chance", "lift"}}, "lift" (the
    weakest pair's), "threshold", "low"}; with fewer than k + 1 H samples the figure is undefined
    ("lift": None, "low": False) rather than a number that means nothing.
    """
    from .evaluate import recall_at_k  # here, not at the top: evaluate imports torch, seconds the dashboard
    # (which only formats a run's confidence) would pay on its first page

    n = int(min((len(r) for r in references.values()), default=0))
    chance = min(1.0, k / n) if n else 1.0
    out: dict = {"k": k, "n_heldout": n, "chance": round(chance, 4), "threshold": threshold, "pairs": {}}
    if n <= k:
        return {**out, "lift": None, "low": False}
    for a, b in combinations(modalities, 2):
        recalls = []
        for name, emb in clean.items():
            ea, eb = (_unit(np.asarray(emb[m][references[name]], dtype=np.float32)) for m in (a, b))
            recalls += [recall_at_k(ea, eb, (k,))[k], recall_at_k(eb, ea, (k,))[k]]
        r = float(np.mean(recalls))
        chance = float(np.mean([min(1.0, k / len(references[name])) for name in clean]))
        out["pairs"][f"{a}-{b}"] = {f"recall_at_{k}": round(r, 4), "chance": round(chance, 4),
                                   "lift": round(r / chance, 2)}
    lift = min(p["lift"] for p in out["pairs"].values())
    return {**out, "lift": lift, "low": bool(lift < threshold)}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)


def format_confidence(conf: dict) -> list[str]:
    """Lines for `multimem summary`: the figure per pair and, when low, the warning and what to do."""
    if not conf:
        return []
    if conf.get("lift") is None:
        return [f"confidence undefined: {conf.get('n_heldout', 0)} rows a model never trained on (need more than {conf['k']})"]
    k = conf["k"]
    pairs = ", ".join(f"{name} {p[f'recall_at_{k}']:.2f} ({p['lift']:.1f}× chance)" for name, p in conf["pairs"].items())
    lines = [f"confidence recall@{k} among the rows each model never trained on (≥ {conf['n_heldout']}) (chance {conf['chance']:.3f}): {pairs}"]
    if conf["low"]:
        lines.append(f"WARNING: low confidence ({conf['lift']:.1f}× chance < {conf['threshold']:.1f}×): {ADVICE}")
    return lines
