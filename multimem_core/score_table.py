"""The scores table of a run from its models' CMC terms: the step `multimem score`, its self-check and
mitigation's re-scoring share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .metric import CMCTerms, cmc_from_terms, contrastive_loss_per_sample, mean_pair_cosine, scores_from_terms
from .names import HELDOUT
from .protocol import Assignment, sampled_reference


def _rows_of(t: CMCTerms, idx: np.ndarray) -> CMCTerms:
    return CMCTerms(t.gram[idx], t.cross[idx])


def split_terms(split: Assignment, terms: dict[str, CMCTerms], rows: np.ndarray, *, clean, modalities,
                logit_scales: dict[str, float] | None) -> tuple[CMCTerms, CMCTerms, torch.Tensor | None]:
    """The in and out terms of `rows` under one split (the models that saw each row, averaged, and the one
    that did not), and the loss baseline's per-row loss under the in-models (None without logit_scales)."""
    like = terms[next(iter(split.train_sets))].gram
    shape = (len(rows), *like.shape[1:])
    t_in = CMCTerms(torch.zeros(shape, dtype=like.dtype), torch.zeros(shape, dtype=like.dtype))
    t_out = CMCTerms(torch.zeros(shape, dtype=like.dtype), torch.zeros(shape, dtype=like.dtype))
    loss = torch.zeros(len(rows)) if logit_scales is not None else None
    for role, in_models in split.in_models.items():
        pos = np.flatnonzero(split.roles[rows] == role)
        if len(pos) == 0:
            continue
        idx = rows[pos]
        mean_in = sum((_rows_of(terms[m], idx) for m in in_models[1:]), _rows_of(terms[in_models[0]], idx))
        mean_in = mean_in / len(in_models)
        out = _rows_of(terms[split.out_model[role]], idx)
        t_in.gram[pos], t_in.cross[pos] = mean_in.gram, mean_in.cross
        t_out.gram[pos], t_out.cross[pos] = out.gram, out.cross
        if loss is not None:
            losses = []
            for name in in_models:
                emb = torch.stack([torch.from_numpy(np.asarray(clean[name][m][idx], dtype=np.float32))
                                   for m in modalities], 1)
                negatives = sampled_reference(split.reference(name))
                ref = torch.stack([torch.from_numpy(np.asarray(clean[name][m][negatives], dtype=np.float32))
                                   for m in modalities], 1)
                losses.append(contrastive_loss_per_sample(emb, ref, logit_scale=logit_scales[name]))
            loss[pos] = torch.stack(losses).mean(0).float()
    return t_in, t_out, loss


def score_table(ids, assignment: Assignment, terms: dict[str, CMCTerms], clean, modalities, *,
                logit_scales: dict[str, float] | None, heldout_rows: bool = False):
    """Scores of every scored sample; the models that saw it and the one that did not depend on its role.

    A repeated crossfit (assignment.repeats) averages each row's in and out terms over the splits, and its
    loss baseline: the terms are linear, so the scores are the mean of each split's scores (the loss's
    mean of per-split losses). `terms` then holds every split's models.
    heldout_rows: also one row per H sample, after the scored rows, with role "H" and only `cmc_out`
    (its mean CMC under every model, none of which saw it): H has no memorization score, but a user
    auditing a dataset still learns how consistent each of its samples is. sim_in/sim_out cover the
    scored rows only.
    """
    rows = assignment.scored
    parts = [split_terms(split, terms, rows, clean=clean, modalities=modalities, logit_scales=logit_scales)
             for split in assignment.splits]
    t_in = sum((p[0] for p in parts[1:]), parts[0][0]) / len(parts)
    t_out = sum((p[1] for p in parts[1:]), parts[0][1]) / len(parts)
    cols = scores_from_terms(t_in, t_out, modalities=modalities)
    cols["base__cosine"] = mean_pair_cosine(t_in.gram)
    if "image" in modalities and "text" in modalities:
        cols["base__clipmem"] = cols["pair__image__text"]
    if logit_scales is not None:
        cols["base__loss"] = torch.stack([p[2] for p in parts]).mean(0)
    scores = pd.DataFrame({k: v.numpy().astype(np.float64) for k, v in cols.items()})
    scores.insert(0, "role", assignment.roles[rows].astype(str))
    scores.insert(0, "id", [ids[i] for i in rows])
    h = assignment.heldout
    if heldout_rows and len(h):
        t_h = CMCTerms(sum(t.gram[h] for t in terms.values()), sum(t.cross[h] for t in terms.values()))
        held = pd.DataFrame({c: np.nan for c in scores.columns if c not in ("id", "role")}, index=range(len(h)))
        held["cmc_out"] = cmc_from_terms(t_h / len(terms)).numpy().astype(np.float64)
        held.insert(0, "role", HELDOUT)
        held.insert(0, "id", [ids[i] for i in h])
        scores = pd.concat([scores, held], ignore_index=True)
    return scores, t_in.gram.numpy().astype(np.float32), t_out.gram.numpy().astype(np.float32)
