"""One mitigation request on one run: its inputs, base models and numbers (loaded once), re-scoring, the control."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from ..evaluate import evaluate_models, read_evaluation
from ..atomic import atomic_write_json
from ..run import RunDir, RunDirError
from ..config import TrainConfig
from ..train import train_model
from .results import baseline
from .settings import MitigateConfig, MitigationError, default_name


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
    """Change of mean MultiMem on the same rows (results.baseline), absolute and relative, and the change of
    each headline metric in points (×100)."""
    out = {}
    base = baseline(before, after)
    b, a = (None if base is None else base["mean"]), after["memorization"]["mean"]
    known = b is not None and a is not None
    out["multimem_mean"] = round(a - b, 5) if known else None
    out["multimem_mean_relative"] = round((a - b) / abs(b), 4) if known and b else None
    for k, v in before["evaluation"].items():
        if k in after["evaluation"]:
            out[f"{k}_points"] = round(100 * (after["evaluation"][k] - v), 2)
    return out


class Session:
    """One mitigation request on one run: the run's inputs, base models and base numbers, loaded once."""

    def __init__(self, run: RunDir, cfg: MitigateConfig):
        from ..restore import load_run_inputs
        from ..train import resolve_device

        self.run, self.cfg = run, cfg
        unknown = set(cfg.modalities or ()) - set(run.modalities)
        if unknown:  # checked before the (slow) loading
            raise MitigationError(f"--modalities {','.join(cfg.modalities)}: the run has no "
                                  f"{', '.join(sorted(unknown))} (it has {', '.join(run.modalities)})")
        self.device = resolve_device(cfg.device)
        self.inputs = load_run_inputs(run, progress=cfg.progress)
        self.scfg = self.inputs.cfg
        self.model_cfg = self.scfg.model_config(self.scfg.modalities)
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
        from ..restore import load_run_model, model_names

        if self._base_models is None:
            self._base_models = {n: load_run_model(self.run, n, device=self.device) for n in model_names(self.run)}
        return self._base_models

    def new_model(self):
        from ..models.factory import create_model

        torch.manual_seed(self.scfg.train.seed)  # the same initial weights as the run's models
        return create_model(self.model_cfg).to(self.device)

    def evaluate(self, models: dict, *, retrieval_only: bool = False) -> dict:
        return evaluate_models(models, self.inputs.data, assignment=self.inputs.assignment,
                               labels=self.inputs.labels(), cfg=self.cfg.evaluation, progress=False,
                               retrieval_only=retrieval_only)

    def base_evaluation(self) -> dict:
        """The run's models evaluated with this request's settings: RUN/evaluation.json when it was made with
        them, else computed. Written to RUN/evaluation.json only where there is none (`multimem summary`
        prints it): `multimem evaluate`'s file, made with other settings (its --prompt), is never replaced;
        this one is kept in the mitigation's folder instead (base_evaluation.json)."""
        want = json.loads(json.dumps(self.cfg.evaluation.to_dict()))  # as it reads back (tuples become lists)
        own = self.folder / "base_evaluation.json"
        for ev in (read_evaluation(self.run), json.loads(own.read_text()) if own.is_file() else None):
            if ev is not None and ev.get("config") == want:
                return ev
        ev = {**self.evaluate(self.base_models()), "config": want}
        path = self.run.path / "evaluation.json"
        atomic_write_json(own if path.exists() else path, ev)
        return ev

    def base_numbers(self) -> dict:
        return {"memorization": memorization(self.base_scores, self.injected_of(self.base_scores)),
                "evaluation": headline(self.base_evaluation())}

    def rescore(self, models: dict, *, desc: str) -> tuple[pd.DataFrame, dict]:
        """scores.parquet's table for `models` (same names as the run's), with the run's views and seed."""
        from ..score import embed_terms
        from ..score_table import score_table

        inp, n = self.inputs, self.inputs.n
        terms, clean = {}, {}
        for name, model in models.items():
            clean[name] = {m: np.zeros((n, model.embed_dim), np.float16) for m in inp.modalities}
            terms[name] = embed_terms(model, inp.data, heldout=inp.assignment.reference(name), n=n, views=self.views,
                                      aug=self.scfg.train.augment, seed=self.scfg.train.seed,
                                      chunk=self.scfg.chunk_size, device=self.device, clean_out=clean[name],
                                      progress=self.cfg.progress, desc=f"{desc}: embed {name} ×{self.views}")
        scales = {k: float(m.logit_scale.detach().exp().clamp(max=100)) for k, m in models.items()}
        scores, _, _ = score_table(inp.ids, inp.assignment, terms, clean, inp.modalities, logit_scales=scales)
        return scores, terms

    def numbers(self, models: dict, scores: pd.DataFrame, *, removed: set[str] | None = None) -> dict:
        """Memorization of `scores` and the evaluation of `models`. With `removed`: memorization on the rows
        left (the removed rows are not trained on, so not scored as memorized), next to the run's own scores
        on the same rows (`memorization_before`, what it is compared with)."""
        ev = self.evaluate(models)
        out = {"memorization": memorization(scores, self.injected_of(scores)) if removed is None
               else self.kept_memorization(scores, removed), "evaluation": headline(ev), "retrieval": ev["retrieval"]}
        if removed is not None:
            out.update(self.kept_baseline(removed))
        return out

    def kept_baseline(self, removed: set[str]) -> dict:
        """The run's own memorization on the rows a removal kept: what the fine-tuned scores there compare with.
        Which rows those are is not stored: the scored rows less the point's n_removed, memorization_before.n of
        them (results.format_metrics and the dashboard say so)."""
        return {"memorization_before": self.kept_memorization(self.base_scores, removed)}

    def kept_memorization(self, scores: pd.DataFrame, removed: set[str]) -> dict:
        kept = scores[~scores["id"].astype(str).isin(removed)]
        return memorization(kept, self.injected_of(kept))

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


def load_metrics(s: Session) -> dict | None:
    path = s.folder / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def control_numbers(s: Session, train_cfg: TrainConfig) -> tuple[dict, pd.DataFrame]:
    """Numbers of the same training without mitigation: the run itself when the settings match (and it has
    one crossfit split), else a plain training with `train_cfg` in the folder's control/."""
    # a run scored over several splits is compared with its split 0 retrained, the models mitigation trains
    if train_cfg == s.scfg.train and s.inputs.splits == 1:
        return {**s.base_numbers(), "source": "the run's own models (same seed, epochs and data)"}, s.base_scores
    models = {}
    for name, idx in s.inputs.assignment.train_sets.items():
        model = s.new_model()
        train_model(model, s.inputs.data, idx, train_cfg, s.folder / "models" / "control" / name,
                    name=f"{name} control", progress=s.cfg.progress)
        models[name] = model
    scores, _ = s.rescore(models, desc="control")
    return {**s.numbers(models, scores), "source": f"plain training, {train_cfg.epochs} epochs"}, scores
