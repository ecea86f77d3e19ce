"""Known corruptions planted into training, so that a run can measure how well its scores find bad pairs.

A planted row takes every modality of a real row i except one, `kind`, which it takes from another row j
of the same fold: one modality exchanged between two rows, as a natural swap is. It trains like any row
(it is in the training set of every model but its fold's), is scored like any row, and is then set apart
(RUN/selfcheck.parquet): it never enters scores.parquet, the dashboard or an export.

i and j come from the same fold as the planted row, so the model that scores it as "the one that never saw
it" saw none of i, j and the plant, exactly as for a natural swap. What differs from a natural swap: the
models that trained on the plant also trained on i and j as themselves (the selfcheck module measures
and corrects that bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .config import SelfCheckConfig
from .names import HELDOUT

MIN_PER_KIND = 5  # fewer planted rows than this per kind measure nothing


@dataclass(frozen=True)
class PlantPlan:
    sources: dict[str, np.ndarray]  # modality -> [p] the real row each planted row takes that modality from
    roles: np.ndarray               # [p] the fold of each planted row
    kinds: np.ndarray               # [p] the exchanged modality
    donors: np.ndarray              # [p] row i (every other modality), for the record
    partners: np.ndarray            # [p] row j (the exchanged modality)

    def __len__(self) -> int:
        return len(self.roles)


def plant_kinds(modalities: Sequence[str]) -> list[str]:
    """With two modalities exchanging either is the same corruption: one kind (the second, e.g. the caption)."""
    mods = list(modalities)
    return mods[1:] if len(mods) == 2 else mods


def plan_planted(roles: np.ndarray, modalities: Sequence[str], cfg: SelfCheckConfig) -> PlantPlan:
    """A seeded plan of planted rows over real rows with the given roles (folds; H rows are never used)."""
    roles = np.asarray(roles).astype(str)
    mods = list(modalities)
    kinds = plant_kinds(mods)
    n = len(roles)
    per_kind = max(cfg.min_per_kind, int(round(cfg.share * n)))
    per_kind = min(per_kind, int(cfg.max_share * n) // max(1, len(kinds)))
    empty = PlantPlan({m: np.zeros(0, np.int64) for m in mods}, np.zeros(0, dtype=object).astype(str),
                      np.zeros(0, dtype=str), np.zeros(0, np.int64), np.zeros(0, np.int64))
    folds = sorted(set(roles) - {HELDOUT})
    if not cfg.enabled or per_kind < MIN_PER_KIND or not folds:
        return empty
    rng = np.random.default_rng(cfg.seed)
    members = {f: np.flatnonzero(roles == f) for f in folds}
    sizes = np.array([len(members[f]) for f in folds], dtype=float)
    out_roles, out_kinds, donors, partners = [], [], [], []
    for kind in kinds:
        fold_of = rng.choice(len(folds), size=per_kind, p=sizes / sizes.sum())
        for k in range(len(folds)):
            count = int((fold_of == k).sum())
            pool = members[folds[k]]
            if count == 0 or len(pool) < 2:
                continue
            pick = rng.choice(pool, size=min(2 * count, len(pool) - len(pool) % 2), replace=False)
            i, j = pick[0::2], pick[1::2]
            donors.append(i)
            partners.append(j)
            out_roles += [folds[k]] * len(i)
            out_kinds += [kind] * len(i)
    donors_a = np.concatenate(donors).astype(np.int64) if donors else np.zeros(0, np.int64)
    partners_a = np.concatenate(partners).astype(np.int64) if partners else np.zeros(0, np.int64)
    kinds_a = np.asarray(out_kinds, dtype=str)
    sources = {m: np.where(kinds_a == m, partners_a, donors_a) for m in mods}
    return PlantPlan(sources, np.asarray(out_roles, dtype=str), kinds_a, donors_a, partners_a)


def with_planted(data: dict, plan: PlantPlan) -> dict:
    """The prepared tensors with the planted rows appended after the real ones (rows n .. n + p − 1), as
    PlantedRows: nothing is copied, so memory-mapped features stay on disk."""
    if not len(plan):
        return data
    return {m: PlantedRows(x, plan.sources[m]) for m, x in data.items()}


class PlantedRows:
    """Rows of `base` followed by the rows `sources` of it again (a planted row is a copy of a real one's
    modality): row i < len(base) is base[i], row len(base) + k is base[sources[k]]. Indexed by a tensor of
    rows, as inputs.select reads it."""

    def __init__(self, base, sources: np.ndarray):
        import torch

        self.base = torch.as_tensor(base)
        self.source = torch.cat([torch.arange(len(self.base)), torch.as_tensor(np.asarray(sources, dtype=np.int64))])

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, rows):
        return self.base[self.source[rows]]
