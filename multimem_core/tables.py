"""A run's samples with their scores joined: the one join the dashboard and `multimem summary` read.

Pure pandas, no Streamlit and no training code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .names import score_columns


@dataclass(frozen=True)
class Joined:
    table: pd.DataFrame    # every sample (samples.parquet order) with its scores; NaN where unscored
    score_cols: list[str]  # multimem, cmc_in, cmc_out, pair__*, contrib__*, base__* present in scores.parquet
    score_row: np.ndarray  # per table row, its row in scores.parquet (and the sim matrices); -1 if unscored

    def scored(self) -> pd.DataFrame:
        """The scored rows in scores.parquet's order."""
        keep = np.flatnonzero(self.score_row >= 0)
        return self.table.iloc[keep[np.argsort(self.score_row[keep], kind="stable")]].reset_index(drop=True)


def join_scores(samples: pd.DataFrame, scores: pd.DataFrame | None) -> Joined:
    """samples.parquet left-joined with scores.parquet on `id` (ids as text); `injected` is "" for clean."""
    samples = samples.copy()
    samples["id"] = samples["id"].astype(str)
    scores = pd.DataFrame({"id": pd.Series(dtype=str)}) if scores is None else scores.copy()
    scores["id"] = scores["id"].astype(str)
    cols = score_columns(scores.columns)
    scores["_score_row"] = np.arange(len(scores))
    table = samples.merge(scores[["id", "_score_row", *cols]], on="id", how="left")
    score_row = table.pop("_score_row").fillna(-1).astype(np.int64).to_numpy()
    table["scored"] = score_row >= 0
    if "injected" not in table.columns:
        table["injected"] = ""
    table["injected"] = table["injected"].fillna("").astype(str)
    return Joined(table, cols, score_row)
