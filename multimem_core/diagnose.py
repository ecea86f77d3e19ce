"""Diagnostics that explain a score: projections, cross-modal neighbours, the weakest modality pair,
and the run-level summaries the dashboard shows (AUROC per score, precision at k, contribution ranking).

Pure functions over numpy / pandas; no Streamlit import here (the app caches what it calls).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

# UMAP needs enough points for a neighbour graph; below this a linear projection is the honest choice.
UMAP_MIN_POINTS = 20


# --- projection ------------------------------------------------------------------------------------

def pca_projection(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components, [N, 2] float32 (zero-padded when there are fewer)."""
    x = np.asarray(vectors, dtype=np.float32)
    out = np.zeros((x.shape[0], 2), dtype=np.float32)
    if x.shape[0] < 2:
        return out
    centered = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    k = min(2, s.shape[0])
    out[:, :k] = (u[:, :k] * s[:k]).astype(np.float32)
    return out


def umap_projection(vectors: np.ndarray, *, seed: int = 0, n_neighbors: int = 15,
                    min_dist: float = 0.1, metric: str = "euclidean") -> np.ndarray:
    """A 2-D UMAP of `vectors` [N, d] -> [N, 2] float32, deterministic for a given seed.

    Below UMAP_MIN_POINTS points UMAP's neighbour graph is meaningless, so this falls back to PCA and
    says so with a warning. Embeddings are L2-normalised, so euclidean distance orders neighbours as
    cosine does, without cosine's NaN on an all-zero row.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"umap_projection expects a 2-D array [N, d], got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"umap_projection: {int(bad.sum())} of {len(x)} rows contain NaN or inf "
                         f"(first at row {int(np.flatnonzero(bad)[0])}); drop or fix those embeddings first")
    n = x.shape[0]
    if n < UMAP_MIN_POINTS:
        warnings.warn(f"umap_projection: {n} points are too few for UMAP (needs at least {UMAP_MIN_POINTS}); "
                      f"using PCA instead", UserWarning, stacklevel=2)
        return pca_projection(x)
    import umap  # heavy (numba): imported only when a projection is actually computed

    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, n - 1)), min_dist=min_dist,
                        metric=metric, random_state=seed, n_jobs=1)
    with warnings.catch_warnings():
        # random_state disables parallelism; umap warns about that every call, which is expected here.
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
