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
