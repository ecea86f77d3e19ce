"""Protocols (DESIGN §3): who trains on what, and which models score whom.

paper:    S_S (shared), S_C (candidates), S_I (independent), H (held out).
          f trains on S_S ∪ S_C, g on S_S ∪ S_I. S_C is scored f − g, S_I g − f, S_S raw f − g.
crossfit: K folds plus H. Model "fold{k}" trains on every fold but k; a sample of fold k is scored with
          CMC_in = mean over the K − 1 models that saw it and CMC_out = the model that did not.
H is in no training set and is never scored: it is the unrelated set of the CMC's second term.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .run import HELDOUT, fold_role

PROTOCOLS = ("crossfit", "paper")


@dataclass(frozen=True)
class ProtocolConfig:
    name: str = "crossfit"
    folds: int = 4  # 4 beat 2 on real photos (MultiMem AUROC 0.849 vs 0.824, same time: README, "Real data")
    heldout_frac: float = 0.1
    # paper: shares of S_S, S_C, S_I (H takes heldout_frac first)
    paper_shares: tuple[float, float, float] = (0.5, 0.25, 0.25)
    seed: int = 0

    def __post_init__(self):
        if self.name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.name!r}: choose one of {', '.join(PROTOCOLS)}")
        if self.name == "crossfit" and self.folds < 2:
            raise ValueError("crossfit needs --folds 2 or more (each sample needs a model that did not see it)")
        if not 0 < self.heldout_frac < 0.5:
            raise ValueError("heldout_frac must lie in (0, 0.5)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Assignment:
    """One protocol applied to N samples."""

    roles: np.ndarray                    # [N] str: fold{k} | S_S | S_C | S_I | H
    train_sets: dict[str, np.ndarray]    # model name -> sample indices it trains on
    in_models: dict[str, list[str]]      # role -> models that saw samples of that role
    out_model: dict[str, str]            # role -> the model that did not

    @property
    def heldout(self) -> np.ndarray:
        return np.flatnonzero(self.roles == HELDOUT)

    @property
    def scored(self) -> np.ndarray:
        return np.flatnonzero(self.roles != HELDOUT)


def heldout_size(n: int, frac: float) -> int:
    # Enough unrelated samples for a stable mean, never more than a fifth of a small set.
    return int(min(max(round(frac * n), min(32, n // 5)), n // 2))


def assign(n: int, cfg: ProtocolConfig) -> Assignment:
    if n < 10:
        raise ValueError(f"{n} loadable samples are too few to train and score (need at least 10)")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    n_h = heldout_size(n, cfg.heldout_frac)
    roles = np.empty(n, dtype=object)
    roles[order[:n_h]] = HELDOUT
    rest = order[n_h:]
    if cfg.name == "crossfit":
        for k, part in enumerate(np.array_split(rest, cfg.folds)):
            roles[part] = fold_role(k)
        folds = [fold_role(k) for k in range(cfg.folds)]
        train_sets = {f: np.flatnonzero(np.isin(roles, [g for g in folds if g != f])) for f in folds}
        in_models = {f: [g for g in folds if g != f] for f in folds}
        out_model = {f: f for f in folds}
    else:
        shares = np.asarray(cfg.paper_shares, dtype=float)
        cuts = np.round(np.cumsum(shares / shares.sum()) * len(rest)).astype(int)[:-1]
        s_s, s_c, s_i = np.split(rest, cuts)
        roles[s_s], roles[s_c], roles[s_i] = "S_S", "S_C", "S_I"
        train_sets = {"f": np.sort(np.concatenate([s_s, s_c])), "g": np.sort(np.concatenate([s_s, s_i]))}
        in_models = {"S_C": ["f"], "S_I": ["g"], "S_S": ["f"]}
        out_model = {"S_C": "g", "S_I": "f", "S_S": "g"}
    return Assignment(roles.astype(str), train_sets, in_models, out_model)
