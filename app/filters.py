"""The Samples filters as pure functions over the loaded table (no Streamlit import, so they are unit-tested).

The page draws the widgets and keeps the choices in a `Filters`; `matching_rows` turns them into the table
rows to show, in display order. Map and Triage reuse the result through the session (common.FILTERED).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

FLAG_STATES = ("any", "unreviewed", "flagged (any label)", "noisy", "ok", "unsure")
TEXT_MODES = ("all words", "regex")
# columns other than scores that the table sorts by: the column, and its name in the sort picker
SORT_COLUMNS = {"id": "id", "label": "dataset label", "text": "caption", "_flag": "flag", "reason": "reason"}


class FilterError(ValueError):
    """A filter that cannot be applied (a regex that does not compile); the message says why."""


@dataclass
class Filters:
    sort: str = "multimem"
    ascending: bool = False
    roles: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)      # the dataset's `label` column
    kinds: list[str] = field(default_factory=list)       # injected kinds ("clean" for none)
    flag: str = "any"
    tags: list[str] = field(default_factory=list)        # any of these tags
    score: str | None = None                              # score column of the range filter
    score_range: tuple[float, float] | None = None
    text: str = ""
    text_mode: str = "all words"
    only_ids: set[str] | None = None                      # e.g. the map selection

    def describe(self) -> str:
        """The active filters in words, for the Map and Triage pages."""
        parts = []
        if self.labels:
            parts.append("label " + ", ".join(self.labels))
        if self.roles:
            parts.append("role " + ", ".join(self.roles))
        if self.kinds:
            parts.append("injected " + ", ".join(self.kinds))
        if self.flag != "any":
            parts.append(self.flag)
        if self.tags:
            parts.append("tag " + ", ".join(self.tags))
        if self.score_range is not None:
            parts.append(f"{self.score} in [{self.score_range[0]:.3f}, {self.score_range[1]:.3f}]")
        if self.text.strip():
            parts.append(f"caption {'matches' if self.text_mode == 'regex' else 'has'} {self.text.strip()!r}")
        if self.only_ids is not None:
            parts.append(f"the selection ({len(self.only_ids):,})")
        return ", ".join(parts) or "no filter"


def caption_mask(captions: pd.Series, query: str, mode: str) -> np.ndarray:
    """Captions (lower-cased) that contain every word of `query`, or match it as a regular expression."""
    query = query.strip()
    if not query:
        return np.ones(len(captions), dtype=bool)
    if mode == "regex":
        try:
            pattern = re.compile(query, re.IGNORECASE)
        except re.error as e:
            raise FilterError(f"the caption pattern {query!r} is not a regular expression: {e}") from e
        with warnings.catch_warnings():  # pandas warns about groups in a pattern; a user's regex may have them
            warnings.simplefilter("ignore", UserWarning)
            return captions.str.contains(pattern, regex=True).to_numpy(dtype=bool)
    mask = np.ones(len(captions), dtype=bool)
    for word in query.lower().split():
        mask &= captions.str.contains(word, regex=False).to_numpy(dtype=bool)
    return mask


def flag_column(ids: pd.Series, labels: dict[str, str]) -> np.ndarray:
    """Per row, its current flag label ('' when unreviewed)."""
    return ids.map(labels).fillna("").to_numpy(dtype=object) if labels else np.full(len(ids), "", dtype=object)


def sort_order(table: pd.DataFrame, column: str, ascending: bool, *, flags: np.ndarray | None = None) -> np.ndarray:
    """Row order by any column: a score (missing last either way), or id, label, caption, flag, reason."""
    if column == "_flag":
        values = pd.Series(flags if flags is not None else np.full(len(table), ""), dtype=object)
    else:
        values = table[column]
    if pd.api.types.is_numeric_dtype(values):
        v = values.to_numpy(dtype=np.float64)
        key = np.where(np.isfinite(v), v if ascending else -v, np.inf)
        return np.argsort(key, kind="stable")
    # Arrow sorts a million strings in place, several times faster than numpy's fixed-width copy of them
    text = pa.array(values.fillna("").astype(str), type=pa.large_string())
    order = pc.array_sort_indices(text).to_numpy().astype(np.int64)  # stable, as the rest of the page
    if not ascending:
        order = order[::-1]
    empty = pc.equal(text, "").to_numpy(zero_copy_only=False)[order]
    return np.concatenate([order[~empty], order[empty]])  # empty cells last either way


def matching_rows(table: pd.DataFrame, captions: pd.Series, f: Filters, *, labels: dict[str, str],
                  tags: dict[str, tuple[str, ...]], order: np.ndarray | None = None) -> np.ndarray:
    """Table rows that pass every filter, in display order (`order`, or sorted by f.sort)."""
    mask = np.ones(len(table), dtype=bool)
    if f.roles:
        mask &= table["role"].astype(str).isin(f.roles).to_numpy()
    if f.labels:
        mask &= table["label"].astype(str).isin(f.labels).to_numpy()
    if f.kinds:
        mask &= table["injected"].replace("", "clean").isin(f.kinds).to_numpy()
    if f.score and f.score_range is not None:
        v = table[f.score].to_numpy(dtype=np.float64)
        mask &= (v >= f.score_range[0]) & (v <= f.score_range[1])
    mask &= caption_mask(captions, f.text, f.text_mode)
    flags = flag_column(table["id"], labels)
    if f.flag == "unreviewed":
        mask &= flags == ""
    elif f.flag == "flagged (any label)":
        mask &= flags != ""
    elif f.flag != "any":
        mask &= flags == f.flag
    if f.tags:
        wanted = set(f.tags)
        mask &= table["id"].isin({i for i, have in tags.items() if wanted & set(have)}).to_numpy()
    if f.only_ids is not None:
        mask &= table["id"].isin(f.only_ids).to_numpy()
    if order is None:
        order = sort_order(table, f.sort, f.ascending, flags=flags)
    return order[mask[order]]
