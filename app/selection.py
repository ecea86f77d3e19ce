"""Which samples a chart selection covers (pure numpy; no Streamlit import, so it is unit-tested).

The Map draws at most a sample of the points, but a box or lasso means "everything inside this shape":
the selection is recomputed here over every projected sample from the shape's geometry, which Streamlit
passes along with the points that were drawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def inside_polygon(x: np.ndarray, y: np.ndarray, px, py) -> np.ndarray:
    """Even-odd rule, vectorised over the points (a lasso has a few hundred vertices at most)."""
    px, py = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    inside = np.zeros(len(x), dtype=bool)
    for i in range(len(px)):
        x1, y1, x2, y2 = px[i - 1], py[i - 1], px[i], py[i]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < at)
    return inside


def selected_rows(selection: dict, frame: pd.DataFrame) -> np.ndarray:
    """Table rows a chart selection covers: every sample inside a box or lasso (drawn or not), else the
    clicked points."""
    x, y = frame["x"].to_numpy(dtype=np.float64), frame["y"].to_numpy(dtype=np.float64)
    mask = np.zeros(len(frame), dtype=bool)
    for box in selection.get("box") or []:
        (x0, x1), (y0, y1) = sorted(box["x"][:2]), sorted(box["y"][:2])
        mask |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    for lasso in selection.get("lasso") or []:
        mask |= inside_polygon(x, y, lasso["x"], lasso["y"])
    rows = frame["row"].to_numpy()[mask]
    if not (selection.get("box") or selection.get("lasso")):
        rows = np.array(sorted({int(p["customdata"][0] if isinstance(p.get("customdata"), list) else p["customdata"])
                                for p in selection.get("points") or [] if p.get("customdata") is not None}),
                        dtype=np.int64)
    return rows


def drawn_sample(suspicion: np.ndarray, budget: int, top: int, *, seed: int = 0) -> np.ndarray:
    """Which of n points to draw when only `budget` fit: the `top` most suspicious (NaN counts as least),
    then a fixed random sample of the rest, so that the picture stays honest about density while the
    suspicious end stays visible and clickable. Sorted indices; all of them when n <= budget."""
    n = len(suspicion)
    if n <= budget:
        return np.arange(n)
    key = np.nan_to_num(-np.asarray(suspicion, dtype=np.float64), nan=np.inf)
    top = min(top, budget)
    first = np.argpartition(key, top - 1)[:top] if top else np.array([], dtype=np.int64)
    chosen = np.zeros(n, dtype=bool)
    chosen[first] = True
    rest = np.flatnonzero(~chosen)
    chosen[np.random.default_rng(seed).choice(rest, size=budget - top, replace=False)] = True
    return np.flatnonzero(chosen)


def window_mask(x: np.ndarray, y: np.ndarray, window) -> np.ndarray:
    """Points inside a zoom window (x0, x1, y0, y1); every point for None."""
    if window is None:
        return np.ones(len(x), dtype=bool)
    x0, x1, y0, y1 = window
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def window_around(x: np.ndarray, y: np.ndarray, margin: float = 0.05) -> tuple[float, float, float, float] | None:
    """A zoom window around some points, with a margin (a share of its size) on every side."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    x0, x1, y0, y1 = float(x[ok].min()), float(x[ok].max()), float(y[ok].min()), float(y[ok].max())
    dx, dy = max(x1 - x0, 1e-6) * margin, max(y1 - y0, 1e-6) * margin
    return (x0 - dx, x1 + dx, y0 - dy, y1 + dy)
