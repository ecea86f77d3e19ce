"""What-if preview: what an augmentation would do to chosen samples' memorization, without retraining.

For each chosen sample, and for a random sample of clean ones beside it, the CMC under the run's models
that saw it and under the one that did not is measured twice on the same random views: with the run's
ordinary augmentation (before) and with the targeted augmentation added (after). MultiMem before/after
is their difference, as in the run's scores. An augmentation worth training with lowers the MultiMem of
memorized samples more than that of clean ones (it breaks what the model that saw them memorized, while
what generalizes survives it).

No Streamlit here: the Mitigation page calls `PreviewModels.load` once (cached) and `preview` per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .inputs import select
from .metric import cmc_from_terms, cmc_terms, heldout_pass
from .names import HELDOUT
from .run import RunDir
from .targeted import TargetedAugment, embed_views, view_generator


@dataclass
class PreviewModels:
    """A run's saved models, inputs and per-model mean held-out embedding, loaded once."""

    run: RunDir
    inputs: object                        # restore.RunInputs
    models: dict                          # name -> model (eval mode)
    heldout_mean: dict[str, torch.Tensor]  # name -> [n, d]: E_h Φ_h under the run's augmentation
    views: int
    seed: int

    @classmethod
    def load(cls, run: RunDir, *, device: str = "cpu", views: int = 4, chunk: int = 256) -> "PreviewModels":
        from .restore import load_run_inputs, load_run_model, model_names

        inputs = load_run_inputs(run)
        models = {n: load_run_model(run, n, device=device) for n in model_names(run)}
        seed = inputs.cfg.train.seed
        means = {}
        for name, model in models.items():
            def views_of(idx, key, model=model):
                return embed_views(model, select(inputs.data, idx), base=inputs.cfg.train.augment, views=views,
                                   gen=view_generator(seed, key))

            means[name] = heldout_pass(views_of, inputs.assignment.reference(name), chunk=chunk).mean
        return cls(run, inputs, models, means, views, seed)

    def index_of(self, ids: Sequence[str]) -> np.ndarray:
        pos = {sid: i for i, sid in enumerate(self.inputs.ids)}
        missing = [i for i in ids if str(i) not in pos]
        if missing:
            raise KeyError(f"not in the run: {', '.join(map(str, missing[:5]))}")
        return np.array([pos[str(i)] for i in ids], dtype=np.int64)

    def cmc(self, name: str, idx: np.ndarray, targeted: TargetedAugment | None) -> np.ndarray:
        """CMC of the rows `idx` under model `name`, on views seeded per sample set (paired before/after)."""
        gen = view_generator(self.seed, 12345)
        v = embed_views(self.models[name], select(self.inputs.data, idx), base=self.inputs.cfg.train.augment,
                        views=self.views, gen=gen, targeted=targeted)
        return cmc_from_terms(cmc_terms(v, self.heldout_mean[name][None])).numpy().astype(np.float64)


def clean_reference(pm: PreviewModels, exclude: Sequence[str], *, n: int = 32, seed: int = 0) -> list[str]:
    """A random sample of scored samples that carry no injected misalignment and are not in `exclude`."""
    a = pm.inputs.assignment
    ok = (a.roles != HELDOUT) & ~pm.inputs.injected()
    ok[pm.index_of([i for i in exclude if i in set(pm.inputs.ids)])] = False
    pool = np.flatnonzero(ok)
    pick = np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False)
    return [pm.inputs.ids[i] for i in np.sort(pick)]


def preview(pm: PreviewModels, ids: Sequence[str], augment: TargetedAugment, *, n_clean: int = 32,
            seed: int = 0) -> pd.DataFrame:
    """One row per sample (the chosen ones, then the clean reference): CMC in/out and MultiMem before and
    after the augmentation, and the change of MultiMem."""
    ids = [str(i) for i in dict.fromkeys(ids)]
    if not ids:
        raise ValueError("choose at least one sample to preview")
    groups = {"selected": ids, "clean (random)": clean_reference(pm, ids, n=n_clean, seed=seed)}
    a = pm.inputs.assignment
    frames = []
    for group, members in groups.items():
        idx = pm.index_of(members)
        roles = a.roles[idx]
        if (roles == HELDOUT).any():
            raise ValueError("held-out samples have no MultiMem (no model trained on them): "
                             + ", ".join(np.asarray(members)[roles == HELDOUT][:5]))
        cols = {k: np.zeros(len(idx)) for k in ("cmc_in_before", "cmc_in_after", "cmc_out_before", "cmc_out_after")}
        for role in np.unique(roles):
            sel = roles == role
            ins, out = a.in_models[role], a.out_model[role]
            for when, tgt in (("before", None), ("after", augment)):
                cols[f"cmc_in_{when}"][sel] = np.mean([pm.cmc(m, idx[sel], tgt) for m in ins], axis=0)
                cols[f"cmc_out_{when}"][sel] = pm.cmc(out, idx[sel], tgt)
        frame = pd.DataFrame({"id": members, "group": group, "role": roles,
                              "injected": pm.inputs.samples["injected"].fillna("").astype(str).to_numpy()[idx]
                              if "injected" in pm.inputs.samples.columns else "", **cols})
        frame["multimem_before"] = frame["cmc_in_before"] - frame["cmc_out_before"]
        frame["multimem_after"] = frame["cmc_in_after"] - frame["cmc_out_after"]
        frame["multimem_change"] = frame["multimem_after"] - frame["multimem_before"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def preview_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean before, after and change per group (selected vs clean)."""
    cols = ["cmc_in_before", "cmc_in_after", "cmc_out_before", "cmc_out_after", "multimem_before",
            "multimem_after", "multimem_change"]
    out = table.groupby("group", sort=False)[cols].mean()
    out.insert(0, "n", table.groupby("group", sort=False).size())
    return out.reset_index()
