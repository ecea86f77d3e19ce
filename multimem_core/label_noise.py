"""cleanlab beside MultiMem (`multimem evaluate`): where a dataset has labels, cleanlab's label-issue finder on
the run's frozen embeddings, and how its finds overlap with MultiMem's most memorized samples.

The two look for different things: cleanlab for a label that disagrees with the features (a class error),
MultiMem for a sample whose modalities disagree and that the model memorized anyway. The overlap says how much
of one the other also catches; the ids found by one only are where to look next.

Features: each scored sample's embeddings (every modality, concatenated) from a model that never trained on it
(the run's own out-of-sample view). Predicted probabilities: out-of-fold logistic regression on those features.
Needs `cleanlab` (pip install -e ".[cleanlab]").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .run import RunDir

MIN_PER_CLASS = 2  # a class with fewer labelled samples has no out-of-fold prediction: left out
FOLDS = 5
SHOWN = 10  # ids listed per side


def frozen_features(run: RunDir, ids: list[str]) -> np.ndarray:
    """[len(ids), sum of d] embeddings of every modality, each sample's from a model that did not train on it."""
    cfg = run.config()
    models = cfg.get("models") or {}
    samples = run.samples().astype({"id": str}).set_index("id")
    roles = samples.loc[ids, "role"].astype(str).to_numpy()
    names = sorted(models) or sorted(p.name for p in run.embeddings_dir.iterdir() if p.is_dir())
    unseen = {}
    for role in set(roles):
        fresh = [n for n in names if role not in (models.get(n, {}).get("trained_on") or [])]
        unseen[role] = (fresh or names)[0]
    out = None
    for m in run.modalities:
        cols = None
        for name in sorted(set(unseen.values())):
            emb_ids, emb = run.embeddings(name, m)
            pos = pd.Series(np.arange(len(emb_ids)), index=[str(i) for i in emb_ids])
            rows = np.flatnonzero(np.array([unseen[r] == name for r in roles]))
            block = np.asarray(emb[pos.loc[[ids[i] for i in rows]].to_numpy()], dtype=np.float32)
            if cols is None:
                cols = np.zeros((len(ids), block.shape[1]), dtype=np.float32)
            cols[rows] = block
        out = cols if out is None else np.hstack([out, cols])
    return out


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Out-of-fold class probabilities [N, classes] from logistic regression (classes = sorted label codes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = int(min(FOLDS, np.bincount(labels).min()))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(LogisticRegression(max_iter=2000), features, labels, cv=cv, method="predict_proba")


def compare(run: RunDir, *, score: str = "multimem") -> dict:
    """cleanlab's label issues on the scored samples vs MultiMem's top rows (as many as cleanlab found).
    {"skipped": why} when the run has no labels or too few per class, or cleanlab is not installed."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return {"skipped": "cleanlab is not installed (pip install -e '.[cleanlab]')"}
    scores = run.scores()
    samples = run.samples().astype({"id": str})
    if scores is None or "label" not in samples or not samples["label"].astype(str).str.strip().any():
        return {"skipped": "the dataset has no labels"}
    table = scores[["id", score]].astype({"id": str}).merge(samples[["id", "label", "injected"]], on="id")
    table = table[table["label"].astype(str).str.strip() != ""]
    counts = table["label"].value_counts()
    table = table[table["label"].isin(counts[counts >= MIN_PER_CLASS].index)].reset_index(drop=True)
    if table["label"].nunique() < 2:
        return {"skipped": f"fewer than two classes with {MIN_PER_CLASS}+ labelled scored samples"}
    ids = table["id"].tolist()
    codes = pd.Categorical(table["label"]).codes.astype(np.int64)
    probs = out_of_fold_probs(frozen_features(run, ids), codes)
    issues = find_label_issues(codes, probs, return_indices_ranked_by="self_confidence")
    found = [ids[i] for i in issues]
    n = max(len(found), 1)
    top = table.sort_values(score, ascending=False)["id"].head(n).tolist()
    both = set(found) & set(top)
    result = {
        "n_samples": len(ids), "n_classes": int(table["label"].nunique()), "n_cleanlab": len(found),
        "n_top": len(top), "overlap": len(both),
        "jaccard": round(len(both) / max(len(set(found) | set(top)), 1), 4),
        "only_cleanlab": [i for i in found if i not in both][:SHOWN],
        "only_multimem": [i for i in top if i not in both][:SHOWN],
    }
    injected = table.set_index("id")["injected"].fillna("").astype(str)
    if (injected != "").any():  # built-in data: how many of each side's finds are truly injected
        result["injected_share"] = {"cleanlab": _share(injected, found), score: _share(injected, top)}
    return result


def _share(injected: pd.Series, ids: list[str]) -> float | None:
    return round(float((injected.loc[ids] != "").mean()), 4) if ids else None


def format_comparison(result: dict, score: str = "multimem") -> list[str]:
    if "skipped" in result:
        return [f"  cleanlab: skipped ({result['skipped']})"]
    lines = [f"  cleanlab found {result['n_cleanlab']} label issues among {result['n_samples']} scored samples "
             f"({result['n_classes']} classes); {result['overlap']} of them are also in MultiMem's top "
             f"{result['n_top']} (Jaccard {result['jaccard']:.2f})"]
    if result.get("injected_share"):
        lines.append("  injected among the finds: " + ", ".join(
            f"{k} {v:.2f}" for k, v in result["injected_share"].items() if v is not None))
    lines.append(f"  only cleanlab: {', '.join(result['only_cleanlab']) or '-'}")
    lines.append(f"  only {score}: {', '.join(result['only_multimem']) or '-'}")
    return lines
