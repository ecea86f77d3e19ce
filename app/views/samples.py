"""Samples: a grid of sample cards, most memorized first, with filters and one-click flags."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import common
from multimem_core import diagnose

FLAG_STATES = ["any", "unreviewed", "flagged (any label)", "noisy", "ok", "unsure"]


@st.cache_data(max_entries=8, show_spinner=False)
def score_range(path: str, stamp: tuple, column: str) -> tuple[float, float]:
    v = common.load_run(path).table[column].to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return (float(v.min()), float(v.max())) if len(v) else (0.0, 0.0)


@st.cache_data(max_entries=16, show_spinner=False)
def sort_order(path: str, stamp: tuple, column: str, ascending: bool) -> np.ndarray:
    """Row order of the whole table by a score (unscored last): sorted once, reused by every filter."""
    v = common.load_run(path).table[column].to_numpy(dtype=np.float64)
    key = np.where(np.isfinite(v), v if ascending else -v, np.inf)
    return np.argsort(key, kind="stable")


def filtered_rows(data: common.RunData, labels: dict[str, str]) -> tuple[np.ndarray, str]:
    """Filter widgets -> the matching table rows in display order, and the chosen sort score."""
    t = data.table
    options = common.score_options(data)
    c1, c2, c3, c4 = st.columns([2, 1.3, 2, 2])
    sort_col = c1.selectbox("Sort by", options, index=options.index("multimem") if "multimem" in options else 0,
                            format_func=diagnose.score_label, key="samples_sort")
    # most suspicious first by default: highest for memorization scores, lowest for cosine and CMC
    orders = ["lowest first", "highest first"] if sort_col in diagnose.LOWER_IS_WORSE else ["highest first",
                                                                                            "lowest first"]
    ascending = c2.selectbox("Order", orders, key=f"samples_order_{sort_col}") == "lowest first"
    roles = sorted(t["role"].astype(str).unique(), key=lambda r: (r == "H", r))
    role_pick = c3.multiselect("Role", roles, format_func=common.role_label, key="samples_roles",
                               placeholder="all roles")
    query = c4.text_input("Caption contains", key="samples_query", placeholder="search captions")

    c1, c2, c3, c4 = st.columns([2, 1.3, 2, 2])
    filter_col = c1.selectbox("Score filter", options, index=options.index(sort_col),
                              format_func=diagnose.score_label, key="samples_filter_col",
                              help="Any score, e.g. one modality pair")
    lo, hi = score_range(str(data.run.path), data.stamp, filter_col)
    if hi > lo:
        rng = c3.slider(f"{diagnose.score_label(filter_col)} range", lo, hi, (lo, hi), key=f"samples_range_{filter_col}",
                        format="%.3f")
    else:
        rng = (lo, hi)
    kinds = sorted(k for k in t["injected"].unique() if k) if data.has_injected else []
    kind_pick = c4.multiselect("Injected kind", ["clean", *kinds], key="samples_kinds", placeholder="any",
                               disabled=not kinds, help=None if kinds else "No injected misalignments known")
    flag_state = c2.selectbox("Flag", FLAG_STATES, key="samples_flag")

    mask = np.ones(len(t), dtype=bool)
    if role_pick:
        mask &= t["role"].isin(role_pick).to_numpy()
    if rng != (lo, hi):
        v = t[filter_col].to_numpy(dtype=np.float64)
        mask &= (v >= rng[0]) & (v <= rng[1])
    if kind_pick:
        mask &= t["injected"].replace("", "clean").isin(kind_pick).to_numpy()
    if query.strip():
        mask &= data.search_text.str.contains(query.strip().lower(), regex=False).to_numpy()
    if flag_state != "any":
        flagged = t["id"].map(labels).fillna("").to_numpy() if labels else np.full(len(t), "")
        if flag_state == "unreviewed":
            mask &= flagged == ""
        elif flag_state == "flagged (any label)":
            mask &= flagged != ""
        else:
            mask &= flagged == flag_state
    selection = st.session_state.get(common.SELECTION) or []
    if selection and st.toggle(f"Only the map selection ({len(selection):,} samples)", key="samples_only_sel"):
        mask &= t["id"].isin(set(selection)).to_numpy()
    order = sort_order(str(data.run.path), data.stamp, sort_col, ascending)
    return order[mask[order]], sort_col


data = common.current_run()
st.title("Samples")
st.caption("Most memorized first. Flag a noisy pair with one click; every click is saved at once to "
           "`review.sqlite`.")
if not data.score_cols:
    st.info("This run has no scores yet, so samples are listed in manifest order.", icon=":material/hourglass_empty:")
labels = common.store(data).labels()
if data.score_cols:
    rows, sort_col = filtered_rows(data, labels)
else:
    rows, sort_col = np.arange(len(data.table)), "multimem"

if len(rows) == 0:
    st.info("No sample matches these filters. Widen the score range, clear the caption search or pick "
            "another flag state.", icon=":material/search_off:")
    st.stop()
page = data.table.iloc[rows[common.paged(len(rows), key="samples")]]
common.card_grid(data, page, labels=labels, score=sort_col, source="samples", key="grid")
