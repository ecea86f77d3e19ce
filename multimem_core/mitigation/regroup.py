"""regroup: in training, re-score every few epochs and give the most memorized samples batches of their own."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..evaluate import evaluate_model
from ..inputs import select
from ..metric import cmc_from_terms
from ..atomic import atomic_write_parquet, atomic_write_json
from ..targeted import TargetedAugment, describe
from ..train import shuffled_batches, train_model
from .session import Session, change, control_numbers, memorization


class RegroupPlan:
    """train.BatchPlan: plain shuffled batches until a re-scoring selects samples; from then on the
    selected samples form mini-batches of their own, which get the targeted augmentation, and the rest
    are batched as before.

    The rest keep their full number of steps (the regrouped batches are extra steps; train_model holds
    the learning rate at the end of its schedule past the planned total): folding the selected samples
    into fewer plain batches would take whole steps from the clean data of a small dataset, which costs
    accuracy that has nothing to do with memorization.

    `selections` maps the epoch from which a selection applies to the sample indices; the plan of
    epoch e uses the latest selection at or before e, so a resumed training replays the same batches.
    """

    def __init__(self, augment, selections: dict[int, np.ndarray] | None = None):
        self.augment = augment
        self.selections = {int(k): np.asarray(v, dtype=np.int64) for k, v in (selections or {}).items()}

    def selected_for(self, epoch: int) -> np.ndarray:
        past = [e for e in self.selections if e <= epoch]
        return self.selections[max(past)] if past else np.array([], dtype=np.int64)

    def __call__(self, epoch: int, indices: np.ndarray, batch_size: int, gen: torch.Generator):
        chosen_mask = np.isin(indices, self.selected_for(epoch))
        if not chosen_mask.any():
            return shuffled_batches(epoch, indices, batch_size, gen)
        chosen, rest = indices[chosen_mask], indices[~chosen_mask]
        batches = shuffled_batches(epoch, rest, batch_size, gen) if len(rest) else []
        chosen = chosen[torch.randperm(len(chosen), generator=gen).numpy()]
        batches += [(b, self.augment) for b in np.array_split(chosen, -(-len(chosen) // batch_size))]
        order = torch.randperm(len(batches), generator=gen).numpy()  # selected batches anywhere in the epoch
        return [batches[i] for i in order]


class Rescorer:
    """on_epoch_end for RegroupPlan: every `every` epochs, MultiMem of the model's training samples
    (its CMC now minus the reference CMC of the run's model that never saw them), top fraction selected.

    The time spent choosing (`scoring_s`) is the overhead mitigation adds; the retrieval measured on H
    for the curve is reported apart (`report_s`)."""

    def __init__(self, s: Session, *, name: str, plan: RegroupPlan, epochs: int, state_path: Path):
        inp = s.inputs
        self.s, self.name, self.plan, self.epochs, self.state_path = s, name, plan, epochs, state_path
        a = inp.assignment
        train = a.train_sets[name]
        roles = a.roles[train]
        # candidates: the training samples this model is an in-model for (all of them under crossfit)
        self.candidates = train[np.array([name in a.in_models.get(r, []) for r in roles], dtype=bool)]
        ref = s.base_scores.set_index("id")["cmc_out"]
        self.reference = ref.loc[[inp.ids[i] for i in self.candidates]].to_numpy(dtype=np.float64)
        self.heldout = a.reference(name)  # the rows this model never trains on
        self.sub = select(inp.data, np.concatenate([self.candidates, self.heldout]))
        self.sub_heldout = np.arange(len(self.candidates), len(self.candidates) + len(self.heldout))
        self.history: list[dict] = []
        self.scoring_s = self.report_s = 0.0
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            self.history, self.scoring_s, self.report_s = state["history"], state["scoring_s"], state["report_s"]
            plan.selections.update({int(k): np.asarray(v, dtype=np.int64) for k, v in state["selections"].items()})

    def multimem(self, model) -> np.ndarray:
        from ..score import embed_terms

        s = self.s
        n = len(self.candidates)
        terms = embed_terms(model, self.sub, heldout=self.sub_heldout, n=n + len(self.sub_heldout),
                            views=s.cfg.score_views, aug=s.scfg.train.augment, seed=s.scfg.train.seed,
                            chunk=s.scfg.chunk_size, device=s.device, clean_out=None, progress=False, desc="re-score")
        return cmc_from_terms(terms).numpy()[:n].astype(np.float64) - self.reference

    def measure(self, model, epoch: int, selected: np.ndarray | None) -> dict:
        mm = self.multimem(model)
        t = time.perf_counter()
        ev = evaluate_model(model, self.s.inputs.data, heldout=self.heldout,
                            train=self.candidates, labels=None, cfg=self.s.cfg.evaluation, retrieval_only=True)
        self.report_s += time.perf_counter() - t
        inj = self.s.injected_all[self.candidates]
        point = {"epoch": epoch, "multimem_vs_reference": round(float(mm.mean()), 5),
                 "recall@5": ev["recall@5"], "recall@1": ev["recall@1"]}
        if inj.any():
            point["injected"] = round(float(mm[inj].mean()), 5)
            point["clean"] = round(float(mm[~inj].mean()), 5)
        if selected is not None:
            point["selected"] = int(len(selected))
            if inj.any():
                point["selected_injected_share"] = round(float(self.s.injected_all[selected].mean()), 4)
        return point, mm

    def __call__(self, epoch: int, model) -> None:
        done = epoch + 1
        if done % self.s.cfg.every or done >= self.epochs:
            return
        t = time.perf_counter()
        mm = self.multimem(model)
        k = max(1, math.ceil(self.s.cfg.top_frac * len(self.candidates)))
        selected = np.sort(self.candidates[np.argsort(-mm, kind="stable")[:k]])
        self.plan.selections[done] = selected
        self.scoring_s += time.perf_counter() - t
        point, _ = self.measure(model, done, selected)
        self.history = [h for h in self.history if h["epoch"] != done] + [point]
        self.save()

    def save(self) -> None:
        atomic_write_json(self.state_path, {
            "history": self.history, "scoring_s": self.scoring_s, "report_s": self.report_s,
            "selections": {str(k): v.tolist() for k, v in self.plan.selections.items()}})


def run_regroup(s: Session) -> dict:
    cfg, inp = s.cfg, s.inputs
    aug = TargetedAugment.parse(cfg.augment, cfg.modalities)
    train_cfg = s.train_cfg()
    t0 = time.perf_counter()
    control, control_scores = control_numbers(s, train_cfg)
    models, rescorers, stats = {}, {}, {}
    for name, idx in inp.assignment.train_sets.items():
        plan = RegroupPlan(aug)
        folder = s.folder / "models" / "regroup" / name
        folder.mkdir(parents=True, exist_ok=True)
        rescorer = Rescorer(s, name=name, plan=plan, epochs=train_cfg.epochs, state_path=folder / "regroup.json")
        model = s.new_model()
        stats[name] = train_model(model, inp.data, idx, train_cfg, folder, name=f"{name} regroup", plan=plan,
                                  on_epoch_end=rescorer, progress=cfg.progress)
        final, _ = rescorer.measure(model, train_cfg.epochs, None)
        rescorer.history = [h for h in rescorer.history if h["epoch"] != train_cfg.epochs] + [final]
        rescorer.save()
        models[name], rescorers[name] = model, rescorer
    scores, terms = s.rescore(models, desc="regroup")
    atomic_write_parquet(s.folder / "scores.parquet", scores)
    after = s.numbers(models, scores)
    if control_scores is s.base_scores and s.views == s.scfg.views:
        # The mitigated models that saw each sample against the run's model that never did, the view the
        # re-scoring during training takes (same views and seed as the run, so the reference is exact).
        ref = control_scores.set_index("id").loc[scores["id"], "cmc_out"].to_numpy()
        vs_ref = pd.DataFrame({"id": scores["id"], "multimem": scores["cmc_in"].to_numpy() - ref})
        after["memorization_vs_reference"] = memorization(vs_ref, s.injected_of(vs_ref))
    train_s = sum(float(st["seconds"]) for st in stats.values())
    scoring_s = sum(r.scoring_s for r in rescorers.values())
    report_s = sum(r.report_s for r in rescorers.values())
    metrics = {
        "strategy": "regroup", "augment": describe(aug), "every": cfg.every, "top_frac": cfg.top_frac,
        "epochs": train_cfg.epochs, "before": control, "after": after, "change": change(control, after),
        "history": {n: r.history for n, r in rescorers.items()},
        "overhead": {"scoring_s": round(scoring_s, 2), "training_s": round(train_s - report_s, 2),
                     "share": round(scoring_s / max(1e-9, train_s - report_s), 4)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    s.write_metrics(metrics)
    return metrics
