"""Downstream evaluation (`multimem evaluate RUN`): what a model is worth, on the rows it never trained on.

Each model is measured on its reference rows (assignment.reference: its own fold under crossfit, the
held-out set H under the paper protocol), called H below.
- retrieval: recall@1/5/10 for every ordered modality pair a→b (query a, gallery b, both over H; the
  true match of query i is gallery item i). The paper's T@5 is text retrieval at 5.
- linear probe: scikit-learn logistic regression on frozen embeddings, per modality, trained on the
  labelled rows the model trained on and tested on H (a fixed split: the protocol's own).
- zero-shot: every non-text embedding of H against the text embeddings of one prompt per label
  ("a {label}"), argmax of the cosine.

Headline numbers (`recall@k`, `linear_probe`, `zero_shot`) are means over pairs or modalities and over
the run's models; the per-pair and per-model tables sit beside them in RUN/evaluation.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from itertools import permutations
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .inputs import select
from .atomic import atomic_write_json
from .run import RunDir

EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (1, 5, 10)
    prompt: str = "a {label}"          # zero-shot text prompt, {label} is replaced by the class name
    probe_c: float = 1.0               # inverse regularisation of the logistic regression
    probe_max_train: int = 20000       # the probe trains on at most this many samples (seeded subset)
    seed: int = 0
    chunk: int = 256

    def to_dict(self) -> dict:
        return asdict(self)


# --- pure functions over embeddings ------------------------------------------------------------------

def recall_at_k(query: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = (1, 5, 10), *,
                chunk: int = 4096) -> dict[int, float]:
    """Share of queries whose own gallery item (same row) ranks within the top k by cosine.

    Rank = number of gallery items strictly more similar than the true one, so ties count in its favour.
    Both inputs are L2-normalised [N, d] with matching rows.
    """
    if query.shape != gallery.shape:
        raise ValueError(f"query {query.shape} and gallery {gallery.shape} must have the same shape")
    query, gallery = np.asarray(query, dtype=np.float32), np.asarray(gallery, dtype=np.float32)
    rank = np.empty(len(query), dtype=np.int64)
    for s in range(0, len(query), chunk):  # memory: chunk × N similarities, not N × N
        sims = query[s:s + chunk] @ gallery.T
        true = sims[np.arange(len(sims)), s + np.arange(len(sims))][:, None]
        rank[s:s + chunk] = (sims > true).sum(axis=1)
    return {k: float((rank < k).mean()) for k in ks}


def retrieval(emb: Mapping[str, np.ndarray], ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """recall@k for every ordered pair of modalities: {"image->text": {"R@1": .., "R@5": ..}, ...}."""
    out = {}
    for a, b in permutations(list(emb), 2):
        r = recall_at_k(emb[a], emb[b], ks)
        out[f"{a}->{b}"] = {f"R@{k}": round(v, 4) for k, v in r.items()}
    return out


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 c: float = 1.0, seed: int = 0) -> float:
    """Accuracy on the test set of a logistic regression fitted on the train set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        raise ValueError("the linear probe needs at least two classes among the training labels")
    # Standardised first: unit-norm embeddings have tiny coordinates, which C=1 would regularise to a constant.
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    clf.fit(np.asarray(train_x, dtype=np.float32), train_y)
    return float((clf.predict(np.asarray(test_x, dtype=np.float32)) == test_y).mean())


def zero_shot(emb: np.ndarray, labels: np.ndarray, class_names: Sequence[str], prompt_emb: np.ndarray) -> float:
    """Accuracy of argmax cosine between sample embeddings and one prompt embedding per class."""
    pred = np.asarray(class_names)[np.argmax(np.asarray(emb, dtype=np.float32) @ prompt_emb.T, axis=1)]
    return float((pred == labels).mean())


# --- models --------------------------------------------------------------------------------------------

@torch.no_grad()
def embed_clean(model, data: Mapping[str, torch.Tensor], idx: np.ndarray, *, chunk: int = 256) -> dict[str, np.ndarray]:
    """L2-normalised embeddings (no augmentation) of the rows `idx`, float32 [len(idx), d] per modality."""
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[np.ndarray]] = {m: [] for m in model.modalities}
    for s in range(0, len(idx), chunk):
        batch = select(dict(data), np.asarray(idx[s:s + chunk]))
        emb = model({m: x.to(device) for m, x in batch.items()})
        for m in model.modalities:
            parts[m].append(emb[m].float().cpu().numpy())
    d = model.embed_dim
    return {m: np.concatenate(p) if p else np.zeros((0, d), np.float32) for m, p in parts.items()}


@torch.no_grad()
def embed_prompts(model, class_names: Sequence[str], prompt: str) -> np.ndarray:
    """Text embeddings [C, d] of the prompt filled with each class name."""
    tower = model.towers["text"]
    tokens = tower.prepare([prompt.format(label=c) for c in class_names])
    device = next(model.parameters()).device
    return model({"text": tokens.to(device)})["text"].float().cpu().numpy()


def evaluate_model(model, data: Mapping[str, torch.Tensor], *, heldout: np.ndarray, train: np.ndarray,
                   labels: np.ndarray | None, cfg: EvalConfig = EvalConfig(), retrieval_only: bool = False) -> dict:
    """Retrieval on `heldout` (rows the model never trained on), and (when labels exist) linear probe and zero-shot, for one model."""
    h = embed_clean(model, data, heldout, chunk=cfg.chunk)
    ret = retrieval(h, cfg.ks)
    out: dict = {"retrieval": ret,
                 **{f"recall@{k}": round(float(np.mean([v[f"R@{k}"] for v in ret.values()])), 4) for k in cfg.ks}}
    if retrieval_only or labels is None:
        return out
    lab_h, keep_h = labels[heldout], labels[heldout] != ""
    pool = train[labels[train] != ""]
    if len(pool) > cfg.probe_max_train:
        pool = np.sort(np.random.default_rng(cfg.seed).choice(pool, cfg.probe_max_train, replace=False))
    classes = sorted(set(labels[pool]) | set(lab_h[keep_h]))
    if keep_h.sum() == 0 or len(set(labels[pool])) < 2:
        return out
    tr = embed_clean(model, data, pool, chunk=cfg.chunk)
    probe = {m: round(linear_probe(tr[m], labels[pool], h[m][keep_h], lab_h[keep_h], c=cfg.probe_c, seed=cfg.seed), 4)
             for m in model.modalities}
    out["linear_probe_by_modality"] = probe
    out["linear_probe"] = round(float(np.mean(list(probe.values()))), 4)
    if "text" in model.modalities and len(model.modalities) > 1:
        prompts = embed_prompts(model, classes, cfg.prompt)
        zs = {m: round(zero_shot(h[m][keep_h], lab_h[keep_h], classes, prompts), 4)
              for m in model.modalities if m != "text"}
        out["zero_shot_by_modality"] = zs
        out["zero_shot"] = round(float(np.mean(list(zs.values()))), 4)
        out["zero_shot_classes"] = len(classes)
    return out


HEADLINE = ("recall@1", "recall@5", "recall@10", "linear_probe", "zero_shot")


def combine(per_model: Mapping[str, dict]) -> dict:
    """Means over models: headline numbers, retrieval per pair, probe and zero-shot per modality."""
    first = next(iter(per_model.values()))
    out: dict = {}
    for key in HEADLINE:
        vals = [r[key] for r in per_model.values() if key in r]
        if vals:
            out[key] = round(float(np.mean(vals)), 4)
    out["retrieval"] = {pair: {k: round(float(np.mean([r["retrieval"][pair][k] for r in per_model.values()])), 4)
                               for k in first["retrieval"][pair]} for pair in first["retrieval"]}
    for key in ("linear_probe_by_modality", "zero_shot_by_modality"):
        if key in first:
            out[key] = {m: round(float(np.mean([r[key][m] for r in per_model.values()])), 4) for m in first[key]}
    return out


def evaluate_models(models: Mapping[str, object], data: Mapping[str, torch.Tensor], *, assignment,
                    labels: np.ndarray | None, cfg: EvalConfig = EvalConfig(), progress: bool = False,
                    retrieval_only: bool = False) -> dict:
    """Every model on the rows it never trained on (assignment.reference: its own fold under crossfit, H under
    paper); the probe of each model trains on the rows it trained on."""
    per_model, sizes = {}, []
    for name, model in tqdm(models.items(), desc="evaluate", unit="model", disable=not progress, dynamic_ncols=True):
        heldout = assignment.reference(name)
        sizes.append(len(heldout))
        per_model[name] = evaluate_model(model, data, heldout=heldout, train=assignment.train_sets[name],
                                         labels=labels, cfg=cfg, retrieval_only=retrieval_only)
    return {**combine(per_model), "per_model": per_model, "n_heldout": int(min(sizes, default=0))}


def evaluate_run(run: RunDir, *, cfg: EvalConfig = EvalConfig(), device: str = "cpu", progress: bool = True,
                 write: bool = True) -> dict:
    """Evaluate every saved model of a run; writes RUN/evaluation.json (which `multimem summary` prints)."""
    from .restore import load_run_inputs, load_run_model, model_names

    t0 = time.perf_counter()
    inputs = load_run_inputs(run, progress=progress)
    models = {name: load_run_model(run, name, device=device) for name in model_names(run)}
    result = evaluate_models(models, inputs.data, assignment=inputs.assignment, labels=inputs.labels(), cfg=cfg,
                             progress=progress)
    result["config"] = cfg.to_dict()
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if write:
        atomic_write_json(run.path / EVALUATION_FILE, result)
    return result


def read_evaluation(run: RunDir) -> dict | None:
    path = run.path / EVALUATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def format_evaluation(ev: Mapping) -> list[str]:
    """Lines for `multimem summary`: headline numbers, then recall@k per modality pair."""
    lines = ["  " + ", ".join(f"{k} {ev[k]:.3f}" for k in HEADLINE if k in ev)
             + (f"  (on the ≥ {ev['n_heldout']} rows each model never trained on, mean over {len(ev.get('per_model', {}))} models)"
                if "n_heldout" in ev else "")]
    ret = ev.get("retrieval") or {}
    if ret:
        ks = list(next(iter(ret.values())))
        lines.append(f"  {'retrieval':<18}" + "".join(f"{k:>8}" for k in ks))
        for pair, vals in ret.items():
            lines.append(f"  {pair:<18}" + "".join(f"{vals[k]:>8.3f}" for k in ks))
    for key, title in (("linear_probe_by_modality", "linear probe"), ("zero_shot_by_modality", "zero-shot")):
        if ev.get(key):
            lines.append(f"  {title:<18}" + ", ".join(f"{m} {v:.3f}" for m, v in ev[key].items()))
    return lines
