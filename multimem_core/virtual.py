"""Virtual swaps: wrong pairs formed at scoring time from rows a model never trained on.

The model that scores a row as "the one that never saw it" (crossfit: the model of the row's fold) trained on
no row of that fold. A row made of one modality (`kind`) of a fold row and every other modality of another
fold row is, to that model, what a natural swap is: a pair it never saw, of content it never saw. Such a row
needs no training: its views are its source rows' views under that model, its CMC is the metric's
(metric.terms_against), and its unrelated set is the model's reference set without its two source rows (the
held-out rule). Hundreds of them cost a gather and two einsums, where every trained planted row costs
training; the self-check measures `-cmc_out` on them. They stand in for nothing that needs the models that
trained on a row (`multimem`, its combinations): no model trained on a virtual row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .metric import cmc_from_terms, terms_against
from .planting import PlantPlan


class SourceViews:
    """What one model's embedding pass shows of the rows virtual swaps are made from (metric.streamed_cmc_terms'
    on_chunk): their views in the pass over every row, and the reference pass's view means (their sum over
    the whole reference set, and each source row's own)."""

    def __init__(self, rows: np.ndarray):
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.views: Tensor | None = None     # [A, R, n, d]
        self.own: Tensor | None = None       # [R, n, d]
        self.ref_sum: Tensor | None = None   # [n, d]
        self.ref_count = 0

    @classmethod
    def of(cls, plan: PlantPlan, model: str) -> "SourceViews":
        """For the virtual swaps of `plan` that `model` scores (those whose role is the model's name)."""
        mine = plan.roles == model
        return cls(np.concatenate([plan.donors[mine], plan.partners[mine]]))

    def positions(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.rows, rows)

    def __call__(self, idx: np.ndarray, v: Tensor, reference_pass: bool) -> None:
        hit = np.isin(idx, self.rows)
        if reference_pass:
            means = v.mean(0)
            self.ref_sum = means.sum(0) if self.ref_sum is None else self.ref_sum + means.sum(0)
            self.ref_count += len(idx)
            if self.own is None:
                self.own = torch.zeros(len(self.rows), *v.shape[-2:])
            self.own[self.positions(idx[hit])] = means[hit]
            return
        if self.views is None:
            self.views = torch.zeros(v.shape[0], len(self.rows), *v.shape[-2:])
        self.views[:, self.positions(idx[hit])] = v[:, hit]


def virtual_cmc(plan: PlantPlan, modalities: list[str], sources: dict[str, SourceViews]) -> np.ndarray:
    """CMC of every virtual row of `plan` under the model named by its role, which never trained on its sources."""
    out = np.full(len(plan), np.nan)
    for model, src in sources.items():
        rows = np.flatnonzero(plan.roles == model)
        if not len(rows) or src.views is None or src.ref_count < 3:
            continue
        views = torch.stack([src.views[:, src.positions(plan.sources[m][rows]), j] for j, m in enumerate(modalities)],
                            dim=2)                                        # [A, P, n, d]
        left_out = src.own[src.positions(plan.donors[rows])] + src.own[src.positions(plan.partners[rows])]
        reference = (src.ref_sum - left_out) / (src.ref_count - 2)      # [P, n, d]
        out[rows] = cmc_from_terms(terms_against(views, reference)).numpy().astype(np.float64)
    return out


def virtual_table(plan: PlantPlan, ids: list[str], cmc_out: np.ndarray) -> pd.DataFrame:
    """RUN/selfcheck_virtual.parquet: id "virtual-<k>", role (the model that scored it), kind, donor, partner,
    cmc_out."""
    return pd.DataFrame({"id": [f"virtual-{k}" for k in range(len(plan))], "role": plan.roles, "kind": plan.kinds,
                         "donor": [ids[i] for i in plan.donors], "partner": [ids[i] for i in plan.partners],
                         "cmc_out": cmc_out})
