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

from .config import (FROZEN_AUDIO_TOWERS, FROZEN_TEXT_TOWERS, FROZEN_VIDEO_TOWERS, IMAGE_TOWER,
                     towers_from_scratch)
from .run import made_by_importer


K = 5
LIFT_THRESHOLD = 3.0
# What to try per modality whose tower this run trained from scratch.
PRETRAINED_HINTS = {
    "image": f"a pretrained image tower (--image-tower {IMAGE_TOWER}, or --image-tower ARCH --pretrained CHECKPOINT "
             "--freeze-image)",
    "text": f"a pretrained text tower (--text-tower {FROZEN_TEXT_TOWERS[0]})",
    "audio": f"the pretrained audio tower (--audio-tower {FROZEN_AUDIO_TOWERS[0]})",
    "video": f"the pretrained video tower (--video-tower {FROZEN_VIDEO_TOWERS[0]})",
}


def advice(run_config: Mapping) -> str:
    """What to try when a run's scores are weak, for this run (its config.json): a pretrained tower only where it
    trained one from scratch, since naming the tower it already uses helps nobody, then what helps every run."""
    if made_by_importer(run_config):
        return ("These embeddings come from your own models: models that align a row's modalities on rows they "
                "never trained on (a pretrained backbone, more rows) would score better; or let `multimem score` "
                "train proxy models on its pretrained towers.")
    model, modalities = run_config.get("model") or {}, run_config.get("modalities") or []
    scratch = towers_from_scratch(dict(model), modalities)
    if scratch:
        tries = [PRETRAINED_HINTS[m] for m in scratch] + ["more epochs (--epochs)"]
        said = "Try: "
    else:
        pretrained = ", ".join(f"{m} {model.get(f'{m}_tower') or model.get('pretrained')}" for m in modalities)
        tries = []
        said = f"Every tower of this run starts from pretrained weights already ({pretrained}); try: "
    tries += ["more rows", "scoring your own model's embeddings (`multimem import-embeddings`)"]
    return said + ", ".join(tries[:-1]) + " or " + tries[-1] + "."


def heldout_confidence(clean: Mapping[str, Mapping[str, np.ndarray]], references: Mapping[str, np.ndarray], *,
                       modalities: list[str], k: int = K, threshold: float = LIFT_THRESHOLD) -> dict:
    """Retrieval under every model (model -> modality -> embeddings [N, d], rows of all samples) among the rows
    it never trained on (model -> row indices).

    Returns {"k", "n_heldout", "chance", "pairs": {"a-b": {"recall_at_5", "chance", "lift"}}, "lift" (the
    weakest pair's), "threshold", "low"}; where a reference set holds k · threshold rows or fewer, even perfect
    retrieval would sit at or under the threshold, so the figure is undefined ("lift": None, "low": False)
    rather than a warning that no run could avoid.
    """
    from .evaluate import recall_at_k  # here, not at the top: evaluate imports torch, seconds the dashboard
    # (which only formats a run's confidence) would pay on its first page

    n = int(min((len(r) for r in references.values()), default=0))
    chance = min(1.0, k / n) if n else 1.0
    out: dict = {"k": k, "n_heldout": n, "chance": round(chance, 4), "threshold": threshold, "pairs": {}}
    if n <= k * threshold:  # recall@k is at most 1, so the lift at most n / k: it could never clear the threshold
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


def format_confidence(conf: dict, *, advice: str = "") -> list[str]:
    """Lines for `multimem summary`: the figure per pair and, when low, the warning and `advice` (what to try)."""
    if not conf:
        return []
    if conf.get("lift") is None:
        threshold = conf.get("threshold", LIFT_THRESHOLD)
        need = int(conf["k"] * threshold)
        return [f"confidence undefined: {conf.get('n_heldout', 0)} rows a model never trained on (it needs more than "
                f"{need}: among {need} or fewer, even perfect recall@{conf['k']} is at most {threshold:g}× chance, the "
                "threshold)"]
    k = conf["k"]
    pairs = ", ".join(f"{name} {p[f'recall_at_{k}']:.2f} ({p['lift']:.1f}× chance)" for name, p in conf["pairs"].items())
    lines = [f"confidence recall@{k} among the rows each model never trained on (≥ {conf['n_heldout']}) (chance {conf['chance']:.3f}): {pairs}"]
    if conf["low"]:
        weakest = min(conf["pairs"], key=lambda name: conf["pairs"][name]["lift"])
        lines.append(f"WARNING: low confidence ({weakest}: {conf['lift']:.1f}× chance < {conf['threshold']:.1f}×): the "
                     "proxy models do not generalize to samples they never saw, so MultiMem cannot tell memorized "
                     f"from clean samples well. {advice}".rstrip())
    return lines
