"""Mitigation (`multimem mitigate RUN --strategy …`): memorize less, generalize better, and measure both.

Three strategies, each a folder RUN/mitigation/<name>/ with config.json and metrics.json (memorization
before and after, overall and per modality pair, downstream evaluation before and after, time):

remove   post-training: drop the top N samples by a ranking (MultiMem, the cosine or CLIPMem baselines,
         or random), fine-tune every model of the run on what is left of its training set, re-score,
         evaluate. `sweep` runs several N for every ranking (the paper's Figure 5 d–f); N = 0 is the
         control (the same fine-tuning with nothing removed).
regroup  in-training: train the run's models again from the same seed; every `every` epochs score the
         model's training samples (its CMC now minus the CMC of the run's model that never saw them),
         put the most memorized `top_frac` into mini-batches of their own and give those batches the
         targeted augmentations (multimem_core.targeted). The control is the run itself (same seed,
         epochs and data), or a plain training when `epochs` overrides the run's.
augment  the augmentation study (the paper's Table 3): train with the targeted augmentations on every
         sample, applied to one subset of modalities (or to every non-empty subset in turn).

After training, samples are re-scored the way the run scored them (same views, seed and protocol, with
every model replaced by its mitigated version), so before and after are measured alike.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .evaluate import EvalConfig, evaluate_model, evaluate_models, read_evaluation
from .metric import cmc_from_terms
from .run import RunDir, RunDirError, atomic_write_json, atomic_write_parquet
from .targeted import TargetedAugment, describe
from .inputs import select
from .train import TrainConfig, shuffled_batches, train_model

STRATEGIES = ("remove", "regroup", "augment")
# Removal rankings, each with the direction that means "remove first". CLIPMem is a memorization score
# (the image–text pair of MultiMem): high = memorized. The cosine baseline flags low agreement.
RANKINGS = {"multimem": "high", "base__cosine": "low", "base__clipmem": "high", "random": None}


class MitigationError(ValueError):
    """A user-facing problem with a mitigation request; the message says what to change."""


@dataclass
class MitigateConfig:
    strategy: str
    name: str | None = None                 # folder under RUN/mitigation/ (default: from the settings)
    # remove
    top: int = 100
    score: str = "multimem"
    sweep: tuple[int, ...] | None = None    # several N, every ranking
    rankings: tuple[str, ...] | None = None  # sweep rankings (default: all the run has)
    random_draws: int = 1                   # random removal repeated with this many seeds
    finetune_epochs: int = 5
    finetune_lr: float | None = None        # default: a quarter of the run's learning rate
    # regroup
    every: int = 5
    top_frac: float = 0.05
    score_views: int = 2                    # views per sample when re-scoring during training
    # regroup and augment
    augment: str = "noise=0.1"
    modalities: tuple[str, ...] | None = None  # modalities the targeted augmentations touch (None: all)
    all_subsets: bool = False               # augment: every non-empty subset of the run's modalities
    epochs: int | None = None               # regroup/augment: training epochs (default: the run's)
    # re-scoring and evaluation
    views: int | None = None                # views per sample in the final re-score (default: the run's)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0                           # random ranking
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise MitigationError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.strategy == "remove":
            for r in (self.score, *(self.rankings or ())):
                if r not in RANKINGS:
                    raise MitigationError(f"ranking {r!r}: choose from {', '.join(RANKINGS)}")
            if self.top < 0 or any(n < 0 for n in self.sweep or ()):
                raise MitigationError("the number of samples to remove cannot be negative")
            if self.finetune_epochs < 1:
                raise MitigationError("--finetune-epochs must be at least 1")
            if self.random_draws < 1:
                raise MitigationError("--random-draws must be at least 1")
        if self.strategy == "regroup":
            if self.every < 1:
                raise MitigationError("--every must be at least 1 epoch")
            if not 0 < self.top_frac < 1:
                raise MitigationError("--top-frac must lie in (0, 1), e.g. 0.05 for the top 5 %")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["evaluation"] = self.evaluation.to_dict()
        for k in ("sweep", "rankings", "modalities"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d

    def identity(self) -> dict:
        """The settings a folder's results depend on (not device or progress bars; for removal, not which
        points are asked for: points of the same fine-tuning accumulate in one folder)."""
        skip = {"device", "progress", "name"}
        if self.strategy == "remove":
            skip |= {"top", "score", "sweep", "rankings", "random_draws"}
        ident = {k: v for k, v in self.to_dict().items() if k not in skip}
        return json.loads(json.dumps(ident))  # as it reads back from config.json (tuples become lists)


def default_name(cfg: MitigateConfig) -> str:
    if cfg.strategy == "remove":
        name = f"remove-ft{cfg.finetune_epochs}" + (f"-lr{cfg.finetune_lr:g}" if cfg.finetune_lr else "")
    elif cfg.strategy == "regroup":
        name = f"regroup-every{cfg.every}-top{cfg.top_frac:g}-{cfg.augment}"
    else:
        mods = "all-subsets" if cfg.all_subsets else "+".join(cfg.modalities or ("all",))
        name = f"augment-{cfg.augment}-{mods}"
    if cfg.epochs and cfg.strategy != "remove":
        name += f"-e{cfg.epochs}"
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name.replace(",", "_"))


def list_mitigations(run: RunDir) -> list[dict]:
    """Every mitigation folder of a run with its config and metrics (for the dashboard and summary)."""
    out = []
    if not run.mitigation_dir.is_dir():
        return out
    for folder in sorted(run.mitigation_dir.iterdir()):
        cfg, met = folder / "config.json", folder / "metrics.json"
        if cfg.is_file():
            out.append({"name": folder.name, "path": str(folder), "config": json.loads(cfg.read_text()),
                        "metrics": json.loads(met.read_text()) if met.is_file() else None})
    return out


# --- measuring ---------------------------------------------------------------------------------------------

def memorization(scores: pd.DataFrame, injected: pd.Series | None = None) -> dict:
    """Mean MultiMem of the scored samples, per modality pair, and for injected vs clean samples."""
    out = {"mean": round(float(scores["multimem"].mean()), 5), "n": int(len(scores)),
           "pairs": {c[len("pair__"):].replace("__", "-"): round(float(scores[c].mean()), 5)
                     for c in scores.columns if c.startswith("pair__")}}
    if injected is not None and injected.any():
        inj = injected.to_numpy()
        out["injected"] = round(float(scores.loc[inj, "multimem"].mean()), 5)
        out["clean"] = round(float(scores.loc[~inj, "multimem"].mean()), 5)
    return out


def headline(ev: dict) -> dict:
    return {k: ev[k] for k in ("recall@1", "recall@5", "recall@10", "linear_probe", "zero_shot") if k in ev}


def change(before: dict, after: dict) -> dict:
    """Relative change of mean MultiMem and the change of each headline metric in points (×100)."""
    out = {}
    b, a = before["memorization"]["mean"], after["memorization"]["mean"]
    out["multimem_mean"] = round(a - b, 5)
    out["multimem_mean_relative"] = round((a - b) / abs(b), 4) if b else None
    for k, v in before["evaluation"].items():
        if k in after["evaluation"]:
            out[f"{k}_points"] = round(100 * (after["evaluation"][k] - v), 2)
    return out


class Session:
    """One mitigation request on one run: the run's inputs, base models and base numbers, loaded once."""

    def __init__(self, run: RunDir, cfg: MitigateConfig):
        from .restore import load_run_inputs, model_config_of
        from .score import resolve_device

        self.run, self.cfg = run, cfg
        unknown = set(cfg.modalities or ()) - set(run.modalities)
        if unknown:  # checked before the (slow) loading
            raise MitigationError(f"--modalities {','.join(cfg.modalities)}: the run has no "
                                  f"{', '.join(sorted(unknown))} (it has {', '.join(run.modalities)})")
        self.device = resolve_device(cfg.device)
        self.inputs = load_run_inputs(run, progress=cfg.progress)
        self.scfg = self.inputs.cfg
        self.model_cfg = model_config_of(self.scfg)
        scores = run.scores()
        if scores is None:
            raise RunDirError(f"{run.path} has no scores.parquet; score it first")
        self.base_scores = scores.assign(id=scores["id"].astype(str))
        self.position = {sid: i for i, sid in enumerate(self.inputs.ids)}
        self.injected_all = self.inputs.injected()
        self.views = int(cfg.views or self.scfg.views)
        self.folder = run.mitigation_dir / (cfg.name or default_name(cfg))
        self._base_models: dict | None = None

    # --- small helpers ---
    def injected_of(self, scores: pd.DataFrame) -> pd.Series:
        return pd.Series(self.injected_all[[self.position[i] for i in scores["id"]]], index=scores.index)

    def base_models(self) -> dict:
        from .restore import load_run_model, model_names

        if self._base_models is None:
            self._base_models = {n: load_run_model(self.run, n, device=self.device) for n in model_names(self.run)}
        return self._base_models

    def new_model(self):
        from .models.factory import create_model

        torch.manual_seed(self.scfg.train.seed)  # the same initial weights as the run's models
        return create_model(self.model_cfg).to(self.device)

    def evaluate(self, models: dict, *, retrieval_only: bool = False) -> dict:
        return evaluate_models(models, self.inputs.data, assignment=self.inputs.assignment,
                               labels=self.inputs.labels(), cfg=self.cfg.evaluation, progress=False,
                               retrieval_only=retrieval_only)

    def base_evaluation(self) -> dict:
        """RUN/evaluation.json when it was made with the same settings, else computed (and written)."""
        ev = read_evaluation(self.run)
        if ev is None or ev.get("config") != self.cfg.evaluation.to_dict():
            ev = {**self.evaluate(self.base_models()), "config": self.cfg.evaluation.to_dict()}
            atomic_write_json(self.run.path / "evaluation.json", ev)
        return ev

    def base_numbers(self) -> dict:
        return {"memorization": memorization(self.base_scores, self.injected_of(self.base_scores)),
                "evaluation": headline(self.base_evaluation())}

    def rescore(self, models: dict, *, desc: str) -> tuple[pd.DataFrame, dict]:
        """scores.parquet's table for `models` (same names as the run's), with the run's views and seed."""
        from .score import embed_terms, score_table

        inp, n = self.inputs, self.inputs.n
        terms, clean = {}, {}
        for name, model in models.items():
            clean[name] = {m: np.zeros((n, model.embed_dim), np.float16) for m in inp.modalities}
            terms[name] = embed_terms(model, inp.data, heldout=inp.assignment.heldout, n=n, views=self.views,
                                      aug=self.scfg.train.augment, seed=self.scfg.train.seed,
                                      chunk=self.scfg.chunk_size, device=self.device, clean_out=clean[name],
                                      progress=self.cfg.progress, desc=f"{desc}: embed {name} ×{self.views}")
        scales = {k: float(m.logit_scale.detach().exp().clamp(max=100)) for k, m in models.items()}
        scores, _, _ = score_table(inp.ids, inp.assignment, terms, clean, inp.modalities, logit_scales=scales)
        return scores, terms

    def numbers(self, models: dict, scores: pd.DataFrame, *, keep: np.ndarray | None = None) -> dict:
        sub = scores if keep is None else scores[keep]
        ev = self.evaluate(models)
        return {"memorization": memorization(sub, self.injected_of(sub)), "evaluation": headline(ev),
                "retrieval": ev["retrieval"]}

    # --- the folder ---
    def open_folder(self) -> dict:
        """Create RUN/mitigation/<name>/ (or reopen it for the same settings) and write config.json."""
        cfg_path = self.folder / "config.json"
        ident = self.cfg.identity()
        if cfg_path.is_file():
            old = json.loads(cfg_path.read_text())
            if old.get("settings") != ident:
                raise MitigationError(f"{self.folder} holds a mitigation with other settings; pass --name NEW "
                                      f"for this one, or delete that folder to replace it")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {"name": self.folder.name, "strategy": self.cfg.strategy, "settings": ident,
                  "run": str(self.run.path), "device": str(self.device),
                  "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_json(cfg_path, config)
        return config

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.folder / "metrics.json", metrics)

    def train_cfg(self, **override) -> TrainConfig:
        cfg = self.scfg.train
        if self.cfg.epochs and "epochs" not in override:
            override["epochs"] = self.cfg.epochs
        return replace(cfg, **override)


def mitigate(run: RunDir | str, cfg: MitigateConfig) -> dict:
    """Run one mitigation on a finished run; returns its metrics (also in RUN/mitigation/<name>/metrics.json)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    session = Session(run, cfg)
    session.open_folder()
    return {"remove": _remove, "regroup": _regroup, "augment": _augment}[cfg.strategy](session)


# --- remove: post-training removal and fine-tuning ---------------------------------------------------------

def removal_order(scores: pd.DataFrame, ranking: str, *, seed: int = 0) -> np.ndarray:
    """Scored ids, first to be removed first. Random is one fixed permutation, so sweep points nest."""
    if ranking not in RANKINGS:
        raise MitigationError(f"unknown ranking {ranking!r}: choose one of {', '.join(RANKINGS)}")
    ids = scores["id"].astype(str).to_numpy()
    if ranking == "random":
        return ids[np.random.default_rng(seed).permutation(len(ids))]
    if ranking not in scores.columns:
        raise MitigationError(f"the run has no {ranking} column (CLIPMem needs image and text)")
    v = scores[ranking].to_numpy(dtype=np.float64)
    v = np.nan_to_num(-v if RANKINGS[ranking] == "low" else v, nan=-np.inf)
    return ids[np.argsort(-v, kind="stable")]


def _point_key(p: dict) -> tuple:
    return p["ranking"], int(p["n_removed"]), int(p.get("draw", 0))


def _remove(s: Session) -> dict:
    """Every requested (ranking, N, draw) point not already in the folder: fine-tune, re-score, evaluate.

    Points of one folder share their fine-tuning settings, so later commands add points to the same
    curves (more N, more rankings, more random draws) instead of starting over."""
    cfg, inp = s.cfg, s.inputs
    counts = sorted(set(cfg.sweep)) if cfg.sweep else [cfg.top]
    rankings = list(cfg.rankings or ([r for r in RANKINGS if r == "random" or r in s.base_scores.columns]
                                     if cfg.sweep else [cfg.score]))
    lr = cfg.finetune_lr or s.scfg.train.lr / 4
    ft = s.train_cfg(epochs=cfg.finetune_epochs, lr=lr)
    n_scored = len(s.base_scores)
    if max(counts) > n_scored:
        raise MitigationError(f"cannot remove {max(counts)} samples: the run scored only {n_scored}")
    plan = [("none", 0, 0)] if 0 in counts else []
    plan += [(r, n, d) for r in rankings for n in counts if n > 0
             for d in (range(cfg.random_draws) if r == "random" else [0])]
    orders = {(r, d): removal_order(s.base_scores, r, seed=cfg.seed + d) for r, _, d in plan if r != "none"}
    metrics = _load_metrics(s) or {}
    metrics.pop("seconds", None)  # running again: "seconds" marks a finished command
    done = {_point_key(p): p for p in metrics.get("points", [])}
    t0 = time.perf_counter()
    metrics.update({"strategy": "remove", "before": s.base_numbers(),
                    "finetune": {"epochs": cfg.finetune_epochs, "lr": lr},
                    "n_injected": int(s.injected_of(s.base_scores).sum())})
    bar = tqdm(plan, desc="remove & fine-tune", unit="point", disable=not cfg.progress, dynamic_ncols=True)
    for ranking, n, draw in bar:
        bar.set_postfix(ranking=ranking, n=n, draw=draw)
        if (ranking, n, draw) in done:
            continue
        removed = orders[(ranking, draw)][:n] if n else np.array([], dtype=str)
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
        kept = ~scores["id"].isin(set(removed)).to_numpy()
        point = {"ranking": ranking, "n_removed": int(n), "draw": int(draw),
                 "injected_removed": int(s.injected_all[removed_idx].sum()) if n else 0,
                 **s.numbers(models, scores, keep=kept), "seconds": round(time.perf_counter() - t, 1)}
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


def removal_curves(points: list[dict], metric: str = "recall@5") -> pd.DataFrame:
    """One row per (ranking, N): the metric's mean and spread over random draws, N = 0 in every ranking."""
    rows = []
    for p in points:
        value = p["memorization"]["mean"] if metric == "multimem" else p["evaluation"].get(metric)
        rows.append({"ranking": p["ranking"], "removed": p["n_removed"], "draw": p.get("draw", 0), "value": value,
                     "injected_removed": p["injected_removed"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    zero = df[df["ranking"] == "none"]
    parts = [pd.concat([zero.assign(ranking=r), df[df["ranking"] == r]]) for r in df["ranking"].unique() if r != "none"]
    df = pd.concat(parts) if parts else zero
    out = df.groupby(["ranking", "removed"]).agg(value=("value", "mean"), spread=("value", "std"), draws=("draw", "size"),
                                                 injected_removed=("injected_removed", "mean")).reset_index()
    out["spread"] = out["spread"].fillna(0.0)
    return out


def _load_metrics(s: Session) -> dict | None:
    path = s.folder / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


# --- regroup: in-training mitigation ------------------------------------------------------------------------

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


class AllBatchesPlan:
    """train.BatchPlan: the plain batches, every one with the targeted augmentation (the augmentation study)."""

    def __init__(self, augment):
        self.augment = augment

    def __call__(self, epoch, indices, batch_size, gen):
        return [(b, self.augment) for b, _ in shuffled_batches(epoch, indices, batch_size, gen)]


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
        self.sub = select(inp.data, np.concatenate([self.candidates, a.heldout]))
        self.sub_heldout = np.arange(len(self.candidates), len(self.candidates) + len(a.heldout))
        self.history: list[dict] = []
        self.scoring_s = self.report_s = 0.0
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            self.history, self.scoring_s, self.report_s = state["history"], state["scoring_s"], state["report_s"]
            plan.selections.update({int(k): np.asarray(v, dtype=np.int64) for k, v in state["selections"].items()})

    def multimem(self, model) -> np.ndarray:
        from .score import embed_terms

        s = self.s
        n = len(self.candidates)
        terms = embed_terms(model, self.sub, heldout=self.sub_heldout, n=n + len(self.sub_heldout),
                            views=s.cfg.score_views, aug=s.scfg.train.augment, seed=s.scfg.train.seed,
                            chunk=s.scfg.chunk_size, device=s.device, clean_out=None, progress=False, desc="re-score")
        return cmc_from_terms(terms).numpy()[:n].astype(np.float64) - self.reference

    def measure(self, model, epoch: int, selected: np.ndarray | None) -> dict:
        mm = self.multimem(model)
        t = time.perf_counter()
        ev = evaluate_model(model, self.s.inputs.data, heldout=self.s.inputs.assignment.heldout,
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


def _control(s: Session, train_cfg: TrainConfig) -> tuple[dict, pd.DataFrame]:
    """Numbers of the same training without mitigation: the run itself when the settings match, else
    a plain training with `train_cfg` in the folder's control/."""
    if train_cfg == s.scfg.train:
        return {**s.base_numbers(), "source": "the run's own models (same seed, epochs and data)"}, s.base_scores
    models = {}
    for name, idx in s.inputs.assignment.train_sets.items():
        model = s.new_model()
        train_model(model, s.inputs.data, idx, train_cfg, s.folder / "models" / "control" / name,
                    name=f"{name} control", progress=s.cfg.progress)
        models[name] = model
    scores, _ = s.rescore(models, desc="control")
    return {**s.numbers(models, scores), "source": f"plain training, {train_cfg.epochs} epochs"}, scores


def _regroup(s: Session) -> dict:
    cfg, inp = s.cfg, s.inputs
    aug = TargetedAugment.parse(cfg.augment, cfg.modalities)
    train_cfg = s.train_cfg()
    t0 = time.perf_counter()
    control, control_scores = _control(s, train_cfg)
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


# --- augment: which modalities to augment (Table 3) ----------------------------------------------------------

def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    return [c for k in range(1, len(modalities) + 1) for c in combinations(modalities, k)]


def _augment(s: Session) -> dict:
    cfg, inp = s.cfg, s.inputs
    if cfg.all_subsets:
        subsets = modality_subsets(inp.modalities)
    else:
        subset = tuple(m for m in inp.modalities if m in (cfg.modalities or inp.modalities))  # the run's order
        subsets = [subset]
    train_cfg = s.train_cfg()
    t0 = time.perf_counter()
    metrics = _load_metrics(s) or {}
    metrics.pop("seconds", None)
    control, _ = _control(s, train_cfg)
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


def parse_sweep(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise MitigationError(f"--sweep {text!r}: give comma-separated counts, e.g. 0,50,100,200") from None
    if not values:
        raise MitigationError("--sweep is empty")
    return values


# --- reporting -----------------------------------------------------------------------------------------------

def _numbers_line(label: str, numbers: dict) -> str:
    mem, ev = numbers["memorization"], numbers["evaluation"]
    parts = [f"MultiMem {mem['mean']:+.4f}"]
    if "injected" in mem:
        parts.append(f"(injected {mem['injected']:+.4f}, clean {mem['clean']:+.4f})")
    parts += [f"{k} {v:.3f}" for k, v in ev.items()]
    return f"  {label:<10}" + "  ".join(parts)


def format_metrics(m: dict) -> str:
    """The text `multimem mitigate` prints: before, after, change, and the sweep / study / history tables."""
    lines = [f"mitigation: {m['strategy']}" + (f" ({m['augment']})" if m.get("augment") else "")]
    if m.get("before"):
        lines.append(_numbers_line("before", m["before"]))
    if m.get("after"):
        lines.append(_numbers_line("after", m["after"]))
    if m.get("change"):
        c = m["change"]
        rel = c.get("multimem_mean_relative")
        lines.append("  change    MultiMem " + (f"{100 * rel:+.1f} %" if rel is not None else f"{c['multimem_mean']:+.4f}")
                     + "".join(f", {k[:-7]} {v:+.2f} pt" for k, v in c.items() if k.endswith("_points")))
    if m.get("overhead"):
        o = m["overhead"]
        lines.append(f"  scoring overhead {o['scoring_s']:.1f} s of {o['training_s']:.1f} s training "
                     f"({100 * o['share']:.2f} %)")
    if m.get("points"):
        lines.append(f"\n  {'ranking':<15}{'draw':>5}{'removed':>8}{'injected':>9}{'MultiMem':>10}{'R@5':>8}{'probe':>8}"
                     f"{'0-shot':>8}")
        for p in sorted(m["points"], key=lambda p: (p["n_removed"], p["ranking"], p.get("draw", 0))):
            ev = p["evaluation"]
            lines.append(f"  {p['ranking']:<15}{p.get('draw', 0):>5}{p['n_removed']:>8}{p['injected_removed']:>9}"
                         f"{p['memorization']['mean']:>+10.4f}{ev.get('recall@5', float('nan')):>8.3f}"
                         f"{ev.get('linear_probe', float('nan')):>8.3f}{ev.get('zero_shot', float('nan')):>8.3f}")
    if m.get("rows"):
        lines.append(f"\n  {'augmented':<28}{'MultiMem':>10}{'R@5':>8}")
        for r in m["rows"]:
            lines.append(f"  {'+'.join(r['modalities']):<28}{r['memorization']['mean']:>+10.4f}"
                         f"{r['evaluation'].get('recall@5', float('nan')):>8.3f}")
    if m.get("seconds") is not None:
        lines.append(f"\n  {m['seconds']:.0f} s")
    return "\n".join(lines)
