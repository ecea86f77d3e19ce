"""remove: drop the top N samples by a ranking, fine-tune every model on the rest, re-score, evaluate."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..atomic import atomic_write_parquet
from ..train import train_model
from .session import Session, change, load_metrics
from .settings import RANKINGS, SWEEP_RANKINGS, MitigationError


def removal_order(scores: pd.DataFrame, ranking: str, *, seed: int = 0) -> np.ndarray:
    """Scored ids, first to be removed first. Random is one fixed permutation, so sweep points nest."""
    if ranking not in RANKINGS:
        raise MitigationError(f"unknown ranking {ranking!r}: choose one of {', '.join(RANKINGS)}")
    ids = scores["id"].astype(str).to_numpy()
    if ranking == "random":
        return ids[np.random.default_rng(seed).permutation(len(ids))]
    column = ranking.removeprefix("-")  # -cmc_out ranks the column cmc_out, its direction in RANKINGS
    if column not in scores.columns:
        raise MitigationError(f"the run has no {column} column (CLIPMem needs image and text)")
    v = scores[column].to_numpy(dtype=np.float64)
    v = np.nan_to_num(-v if RANKINGS[ranking] == "low" else v, nan=-np.inf)
    return ids[np.argsort(-v, kind="stable")]


def _point_key(p: dict) -> tuple:
    return p["ranking"], int(p["n_removed"]), int(p.get("draw", 0))


def _check_training_left(s: Session, plan: list[tuple], removed_of: dict) -> None:
    """Refuse, before any training, a point that would leave a model nothing to fine-tune on."""
    for key in plan:
        removed_idx = np.array([s.position[i] for i in removed_of[key]], dtype=np.int64)
        for name, idx in s.inputs.assignment.train_sets.items():
            if len(np.setdiff1d(idx, removed_idx)) == 0:
                ranking, n, _ = key
                raise MitigationError(f"removing the top {n} by {ranking} leaves model {name} nothing to fine-tune "
                                      f"on (all {len(idx)} rows it trained on are removed); remove fewer")


def run_remove(s: Session) -> dict:
    """Every requested (ranking, N, draw) point not already in the folder: fine-tune, re-score, evaluate.

    Points of one folder share their fine-tuning settings, so later commands add points to the same
    curves (more N, more rankings, more random draws) instead of starting over."""
    cfg, inp = s.cfg, s.inputs
    counts = sorted(set(cfg.sweep)) if cfg.sweep else [cfg.top]
    rankings = list(cfg.rankings or ([r for r in SWEEP_RANKINGS if r == "random" or r in s.base_scores.columns]
                                     if cfg.sweep else [cfg.score]))
    lr = cfg.finetune_lr or s.scfg.train.lr / 4
    ft = s.train_cfg(epochs=cfg.finetune_epochs, lr=lr)
    n_scored = len(s.base_scores)
    if max(counts) >= n_scored:
        raise MitigationError(f"cannot remove {max(counts)} samples: the run scored {n_scored}, and memorization "
                              f"after the removal is measured on the scored rows left; remove fewer than {n_scored}")
    plan = [("none", 0, 0)] if 0 in counts else []
    plan += [(r, n, d) for r in rankings for n in counts if n > 0
             for d in (range(cfg.random_draws) if r == "random" else [0])]
    metrics = load_metrics(s) or {}
    metrics.pop("seconds", None)  # running again: "seconds" marks a finished command
    done = {_point_key(p): p for p in metrics.get("points", [])}
    orders = {(r, d): removal_order(s.base_scores, r, seed=cfg.seed + d)
              for r, _, d in [*plan, *done] if r != "none"}
    removed_of = {(r, n, d): orders[(r, d)][:n] if n else np.array([], dtype=str) for r, n, d in [*plan, *done]}
    _check_training_left(s, [k for k in plan if k not in done], removed_of)
    for key, p in done.items():  # points recorded before they carried the run's scores on their kept rows
        p.pop("rows", None)  # an older file's sentence naming those rows: derived from n_removed, not stored
        if "memorization_before" not in p:
            p.update(s.kept_baseline(set(removed_of[key])))
    t0 = time.perf_counter()
    metrics.update({"strategy": "remove", "before": s.base_numbers(),
                    "finetune": {"epochs": cfg.finetune_epochs, "lr": lr},
                    "n_injected": int(s.injected_of(s.base_scores).sum())})
    bar = tqdm(plan, desc="remove & fine-tune", unit="point", disable=not cfg.progress, dynamic_ncols=True)
    for ranking, n, draw in bar:
        bar.set_postfix(ranking=ranking, n=n, draw=draw)
        if (ranking, n, draw) in done:
            continue
        removed = removed_of[(ranking, n, draw)]
        removed_idx = np.array([s.position[i] for i in removed], dtype=np.int64)
        tag = f"{ranking}-{n}" + (f"-d{draw}" if draw else "")
        t = time.perf_counter()
        models = {}
        for name, base in s.base_models().items():
            model = s.new_model()
            model.load_state_dict(base.state_dict())
            keep = np.setdiff1d(inp.assignment.train_sets[name], removed_idx)
            train_model(model, inp.data, keep, ft, s.folder / "models" / tag / name,
                        name=f"{name} −{n} by {ranking}" + (f" #{draw}" if draw else ""), progress=cfg.progress)
            models[name] = model
        scores, _ = s.rescore(models, desc=f"−{n} by {ranking}")
        point = {"ranking": ranking, "n_removed": int(n), "draw": int(draw),
                 "injected_removed": int(s.injected_all[removed_idx].sum()) if n else 0,
                 **s.numbers(models, scores, removed=set(removed)), "seconds": round(time.perf_counter() - t, 1)}
        atomic_write_parquet(s.folder / f"scores_{tag}.parquet", scores)
        done[(ranking, n, draw)] = point
        metrics["points"] = sorted(done.values(), key=_point_key)
        s.write_metrics(metrics)
    metrics["after"] = done.get((cfg.score if cfg.score in rankings else "multimem", max(counts), 0))
    if metrics["after"] is not None:
        metrics["change"] = change(metrics["before"], metrics["after"])
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    s.write_metrics(metrics)
    return metrics
