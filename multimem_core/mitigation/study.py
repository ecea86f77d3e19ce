"""augment: the augmentation study (the paper's Table 3): targeted augmentations on every sample, per subset of modalities."""

from __future__ import annotations

import time
from itertools import combinations
from typing import Sequence

from tqdm.auto import tqdm

from ..targeted import TargetedAugment
from ..train import shuffled_batches, train_model
from .session import Session, change, control_numbers, load_metrics


class AllBatchesPlan:
    """train.BatchPlan: the plain batches, every one with the targeted augmentation (the augmentation study)."""

    def __init__(self, augment):
        self.augment = augment

    def __call__(self, epoch, indices, batch_size, gen):
        return [(b, self.augment) for b, _ in shuffled_batches(epoch, indices, batch_size, gen)]


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    return [c for k in range(1, len(modalities) + 1) for c in combinations(modalities, k)]


def run_augment(s: Session) -> dict:
    cfg, inp = s.cfg, s.inputs
    if cfg.all_subsets:
        subsets = modality_subsets(inp.modalities)
    else:
        subset = tuple(m for m in inp.modalities if m in (cfg.modalities or inp.modalities))  # the run's order
        subsets = [subset]
    train_cfg = s.train_cfg()
    t0 = time.perf_counter()
    metrics = load_metrics(s) or {}
    metrics.pop("seconds", None)
    control, _ = control_numbers(s, train_cfg)
    rows = {tuple(r["modalities"]): r for r in metrics.get("rows", [])}
    metrics.update({"strategy": "augment", "augment": cfg.augment, "epochs": train_cfg.epochs, "before": control})
    for subset in tqdm(subsets, desc="augmentation study", unit="subset", disable=not cfg.progress, dynamic_ncols=True):
        if subset in rows:
            continue
        aug = TargetedAugment.parse(cfg.augment, subset)
        t = time.perf_counter()
        models = {}
        for name, idx in inp.assignment.train_sets.items():
            model = s.new_model()
            train_model(model, inp.data, idx, train_cfg, s.folder / "models" / "+".join(subset) / name,
                        name=f"{name} aug {'+'.join(subset)}", plan=AllBatchesPlan(aug), progress=cfg.progress)
            models[name] = model
        scores, _ = s.rescore(models, desc="+".join(subset))
        row = {"modalities": list(subset), **s.numbers(models, scores), "seconds": round(time.perf_counter() - t, 1)}
        row["change"] = change(control, row)
        rows[subset] = row
        metrics["rows"] = list(rows.values())
        s.write_metrics(metrics)
    metrics["rows"] = [rows[t] for t in sorted(rows, key=lambda t: (len(t), t))]
    if len(subsets) == 1:
        metrics["after"] = rows[subsets[0]]
        metrics["change"] = rows[subsets[0]]["change"]
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    s.write_metrics(metrics)
    return metrics
