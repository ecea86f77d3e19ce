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

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .config import SelfCheckConfig
from .names import HELDOUT

MIN_PER_KIND = 5  # fewer planted rows than this per kind measure nothing
PAPER_PLANTS_NONE = "the paper protocol plants none (only crossfit does)"


@dataclass(frozen=True)
class PlantPlan:
    sources: dict[str, np.ndarray]  # modality -> [p] the real row each planted row takes that modality from
    roles: np.ndarray               # [p] the fold of each planted row
    kinds: np.ndarray               # [p] the exchanged modality
    donors: np.ndarray              # [p] row i (every other modality), for the record
    partners: np.ndarray            # [p] row j (the exchanged modality)
    skipped: str = ""               # an empty plan: why this run plants nothing (its summary says it)

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
    folds = sorted(set(roles) - {HELDOUT})
    if not cfg.enabled or per_kind < MIN_PER_KIND or not folds:
        need = math.ceil(MIN_PER_KIND * len(kinds) / cfg.max_share) if cfg.max_share else 0
        why = ("--no-selfcheck was given" if not cfg.enabled else
               PAPER_PLANTS_NONE if not folds else
               f"{n} rows are too few to plant {MIN_PER_KIND} corruptions of each kind within {cfg.max_share:.0%} "
               f"more training (about {need} are needed with {len(mods)} modalities)")
        return replace(_plan(mods, [], [], [], []), skipped=why)
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
    return _plan(mods, out_roles, out_kinds, donors, partners)


def plan_virtual(roles: np.ndarray, modalities: Sequence[str], cfg: SelfCheckConfig) -> PlantPlan:
    """A seeded plan of virtual swaps (virtual.py): per kind, up to cfg.virtual rows spread over the folds by
    size, never more than a fold's rows. In a fold, a row is the donor of at most one of a kind's swaps and
    the partner of about one (never both of one swap), so the swaps share few sources."""
    roles = np.asarray(roles).astype(str)
    mods = list(modalities)
    folds = sorted(set(roles) - {HELDOUT})
    if not cfg.enabled or cfg.virtual <= 0 or not folds:
        return _plan(mods, [], [], [], [])
    rng = np.random.default_rng([cfg.seed, 1])
    members = {f: np.flatnonzero(roles == f) for f in folds}
    total = sum(len(v) for v in members.values())
    out_roles, out_kinds, donors, partners = [], [], [], []
    for kind in plant_kinds(mods):
        for f in folds:
            pool = members[f]
            count = min(len(pool), int(round(cfg.virtual * len(pool) / max(total, 1))))
            if len(pool) < 2 or count < 1:
                continue
            i = rng.permutation(pool)[:count]
            j = rng.permutation(pool)[:count]
            while (same := np.flatnonzero(i == j)).size:  # a row with itself is no swap: draw its partner again
                j[same] = rng.choice(pool, size=same.size)
            donors.append(i)
            partners.append(j)
            out_roles += [f] * count
            out_kinds += [kind] * count
    return _plan(mods, out_roles, out_kinds, donors, partners)


def _plan(mods: list[str], roles: list, kinds: list, donors: list, partners: list) -> PlantPlan:
    """The plan of rows that take every modality from their donor except `kind`, from their partner."""
    donors_a = np.concatenate(donors).astype(np.int64) if donors else np.zeros(0, np.int64)
    partners_a = np.concatenate(partners).astype(np.int64) if partners else np.zeros(0, np.int64)
    kinds_a = np.asarray(kinds, dtype=str)
    sources = {m: np.where(kinds_a == m, partners_a, donors_a) for m in mods}
    return PlantPlan(sources, np.asarray(roles, dtype=str), kinds_a, donors_a, partners_a)


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
