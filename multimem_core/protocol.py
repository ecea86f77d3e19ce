"""Protocols (DESIGN §3): who trains on what, and which models score whom.

paper:    S_S (shared), S_C (candidates), S_I (independent), H (held out).
          f trains on S_S ∪ S_C, g on S_S ∪ S_I. S_C is scored f − g, S_I g − f, S_S raw f − g.
crossfit: K folds (plus H only when asked). Model "fold{k}" trains on every fold but k; a sample of fold k
          is scored with CMC_in = mean over the K − 1 models that saw it and CMC_out = the model that did not.
          On a small set the split is repeated (ProtocolConfig.repeats_for): split r > 0 re-deals the same rows
          (H kept) into folds whose models are "r{r}-fold{k}", and a row's terms are averaged over the splits.
          The terms are linear, so this is the mean of R crossfit scores; samples.parquet keeps split 0's roles.
Each model's reference set (the unrelated samples of the CMC's second term) is what it never trained on:
H under paper, its own fold (and H, if any) under crossfit, so that crossfit scores every row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .config import PROTOCOLS, ProtocolConfig
from .names import HELDOUT, PAPER_IN_MODEL, PAPER_MODELS, PAPER_OUT_MODEL, PAPER_ROLES, PAPER_TRAINS_ON, fold_role


@dataclass(frozen=True)
class Assignment:
    """One protocol applied to N samples."""

    roles: np.ndarray                    # [N] str: fold{k} | S_S | S_C | S_I | H
    train_sets: dict[str, np.ndarray]    # model name -> sample indices it trains on
    in_models: dict[str, list[str]]      # role -> models that saw samples of that role
    out_model: dict[str, str]            # role -> the model that did not
    name: str = "crossfit"               # the protocol
    # crossfit on a small set: the same rows split again (own roles and model names); scores average the splits
    repeats: tuple["Assignment", ...] = ()

    @property
    def splits(self) -> tuple["Assignment", ...]:
        """This split and its repeats: what a row's terms are averaged over."""
        return (self, *self.repeats)

    def split_of(self, model: str) -> int:
        """Which split `model` belongs to (0: this one)."""
        return next(r for r, a in enumerate(self.splits) if model in a.train_sets)

    def seed_of(self, model: str, seed: int) -> int:
        """The training seed of `model` in a run seeded `seed`: split r trains from weights, shuffles and views of
        its own (seed + r), so that the splits' errors are independent and their mean is that of R runs."""
        return seed + self.split_of(model)

    @property
    def all_train_sets(self) -> dict[str, np.ndarray]:
        """Every model the run trains, the repeats' after this split's."""
        return {name: idx for a in self.splits for name, idx in a.train_sets.items()}

    @property
    def heldout(self) -> np.ndarray:
        return np.flatnonzero(self.roles == HELDOUT)

    @property
    def scored(self) -> np.ndarray:
        return np.flatnonzero(self.roles != HELDOUT)

    def reference(self, model: str) -> np.ndarray:
        """The unrelated set of `model`'s CMC second term, and where it is evaluated: H under paper; under
        crossfit every row it never trained on (its fold, and H if any). A row of the set is compared with the
        rest of it (metric's held-out rule), so the fold is scored too."""
        if self.name == "paper":
            return self.heldout
        seen = np.zeros(len(self.roles), dtype=bool)
        seen[self.all_train_sets[model]] = True   # a repeat's model too: every split deals the same rows
        return np.flatnonzero(~seen)


# Reference rows that the all-against-all figures (the loss baseline's negatives, the confidence's retrieval)
# use at most: a seeded sample keeps their cost linear in the rows (N × this, not N × N / K). Sets whose
# reference sets are smaller (folds of up to this many rows) are not sampled at all.
REFERENCE_SAMPLE = 4096


def sampled_reference(rows: np.ndarray, *, cap: int = REFERENCE_SAMPLE, seed: int = 0) -> np.ndarray:
    """`rows` when there are at most `cap` of them, else `cap` of them drawn with `seed` (in their order)."""
    if len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, cap, replace=False))


def heldout_size(n: int, frac: float) -> int:
    # Enough unrelated samples for a stable mean, never more than a fifth of a small set; none when none asked.
    if frac <= 0:
        return 0
    return int(min(max(round(frac * n), min(32, n // 5)), n // 2))


def assign(n: int, cfg: ProtocolConfig) -> Assignment:
    if n < 10:
        raise ValueError(f"{n} loadable samples are too few to train and score (need at least 10)")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    n_h = heldout_size(n, cfg.heldout)
    roles = np.empty(n, dtype=object)
    roles[order[:n_h]] = HELDOUT
    rest = order[n_h:]
    if cfg.name == "crossfit":
        for k, part in enumerate(np.array_split(rest, cfg.folds)):
            roles[part] = fold_role(k)
        first = assignment_from_roles(roles, "crossfit", models=[fold_role(k) for k in range(cfg.folds)])
        return replace(first, repeats=tuple(_repeat(roles, rest, cfg, r) for r in range(1, cfg.repeats_for(n))))
    shares = np.asarray(cfg.paper_shares, dtype=float)
    cuts = np.round(np.cumsum(shares / shares.sum()) * len(rest)).astype(int)[:-1]
    s_s, s_c, s_i = np.split(rest, cuts)
    for role, part in zip(PAPER_ROLES, (s_s, s_c, s_i)):
        roles[part] = role
    return assignment_from_roles(roles, "paper")


def repeat_model(r: int, k: int) -> str:
    """The model of split r > 0 that trains on every fold of that split but k."""
    return f"r{r}-{fold_role(k)}"


def _repeat(roles: np.ndarray, rest: np.ndarray, cfg: ProtocolConfig, r: int) -> Assignment:
    """Split r of a repeated crossfit: the rows outside H dealt into folds again, with a seed of their own."""
    out = roles.copy()
    order = np.random.default_rng([cfg.seed, r]).permutation(rest)
    names = [repeat_model(r, k) for k in range(cfg.folds)]
    for name, part in zip(names, np.array_split(order, cfg.folds)):
        out[part] = name
    return assignment_from_roles(out, "crossfit", models=names)


def assignment_from_roles(roles: np.ndarray, name: str, *, models: Sequence[str] = PAPER_MODELS) -> Assignment:
    """Who trains on what and which models score whom, from each sample's role (the protocol's rules).

    paper: f trains on S_S ∪ S_C, g on S_S ∪ S_I; S_C and S_S are scored f − g, S_I g − f.
    crossfit: a sample's role is the name of the one model in `models` that did not train on it.
    `assign` splits a dataset this way; the importers apply the same rules to roles given in a file.
    """
    roles = np.asarray(roles).astype(str)
    if name == "paper":
        train_sets = {m: np.flatnonzero(np.isin(roles, PAPER_TRAINS_ON[m])) for m in PAPER_MODELS}
        in_models = {role: [m] for role, m in PAPER_IN_MODEL.items()}
        out_model = dict(PAPER_OUT_MODEL)
    elif name == "crossfit":
        models = list(models)
        train_sets = {f: np.flatnonzero(~np.isin(roles, [f, HELDOUT])) for f in models}
        in_models = {f: [g for g in models if g != f] for f in models}
        out_model = {f: f for f in models}
    else:
        raise ValueError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    return Assignment(roles, train_sets, in_models, out_model, name)


def training_assignment(assignment: Assignment, planted) -> Assignment:
    """Who trains on what once planted rows (planting.PlantPlan, each with a fold as its role) follow the
    real ones: the same rules over the longer list of roles. Scoring keeps the real rows' assignment."""
    if not len(planted):
        return assignment
    roles = np.concatenate([assignment.roles, np.asarray(planted.roles).astype(str)])
    # a repeat's models do not train on planted rows: the self-check scores them with split 0's models
    return replace(assignment_from_roles(roles, assignment.name, models=list(assignment.train_sets)),
                   repeats=assignment.repeats)
