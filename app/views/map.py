"""Map: the UMAP of the joint embedding (or of one modality), coloured by a score; select with lasso or box."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import common
from multimem_core import diagnose

HOVER_CAPTIONS_UP_TO = 30_000  # above this, hover shows id and score only: captions would bloat the page
CATEGORIES = {"injected kind": "injected", "role": "role", "flag": "_flag"}
PALETTE = ["#B0B0B0", "#E45756", "#4C78A8", "#F58518", "#54A24B", "#B279A2", "#72B7B2", "#FF9DA6", "#9D755D"]


@st.cache_data(max_entries=6, show_spinner="Preparing the map…")
def map_frame(path: str, stamp: tuple, space: str) -> pd.DataFrame:
    """Projection rows joined to table rows: row (into the table), x, y, hover; built once per run and space."""
    data = common.load_run(path)
    proj = common.projection(path, stamp)
    xc, yc = ("x", "y") if space == "joint" else (f"x__{space}", f"y__{space}")
    pos = proj["id"].map(data.position)
    keep = pos.notna().to_numpy() & np.isfinite(proj[xc].to_numpy(dtype=float))
    frame = pd.DataFrame({"row": pos[keep].astype(np.int64).to_numpy(), "x": proj.loc[keep, xc].to_numpy(),
                          "y": proj.loc[keep, yc].to_numpy()})
    ids = data.table["id"].to_numpy()[frame["row"]]
    hover = pd.Series(ids).map(html.escape)
    if "text" in data.table.columns and len(frame) <= HOVER_CAPTIONS_UP_TO:
        caps = data.table["text"].fillna("").astype(str).to_numpy()[frame["row"]]
        # escaped: plotly renders a few HTML tags in hover labels, and a caption must stay text
        hover = hover + "<br>" + pd.Series(caps).str.slice(0, 90).map(html.escape)
    frame["hover"] = hover.to_numpy()
    return frame


data = common.current_run()
st.title("Map")
proj = common.projection(str(data.run.path), data.stamp)
if proj is None or len(proj) == 0:
    st.info("This run has no projection yet (projection.parquet). The engine writes it after scoring; rerun "
            "`multimem score` to finish, then reload this page.", icon=":material/scatter_plot:")
    st.stop()

spaces = ["joint"] + [m for m in data.modalities if f"x__{m}" in proj.columns]
c1, c2, c3 = st.columns([1.4, 2, 3])
space = c1.selectbox("Embedding", spaces, key="map_space", format_func=lambda s: "joint (all modalities)"
                     if s == "joint" else s)
colour_opts = common.score_options(data) + [k for k, v in CATEGORIES.items() if v != "injected" or data.has_injected]
colour = c2.selectbox("Colour by", colour_opts, key="map_colour",
                      format_func=lambda c: diagnose.score_label(c) if c in data.score_cols else c)
c3.markdown("<div style='padding-top:2.1rem'>Drag a <b>box</b> or <b>lasso</b> to select; click a point for "
            "its thumbnail.</div>", unsafe_allow_html=True)

frame = map_frame(str(data.run.path), data.stamp, space)
labels = common.store(data).labels()
t = data.table
fig = go.Figure()
if colour in data.score_cols:
    v = t[colour].to_numpy(dtype=np.float64)[frame["row"].to_numpy()]
    # draw the most suspicious last, on top, so that they stay visible in a dense map
    draw = np.argsort(np.nan_to_num(-v if colour in diagnose.LOWER_IS_WORSE else v, nan=-np.inf), kind="stable")
    frame, v = frame.iloc[draw], v[draw]
    finite = v[np.isfinite(v)]
    lo, hi = (np.percentile(finite, [1, 99]) if len(finite) else (0, 1))
    fig.add_trace(go.Scattergl(
        x=frame["x"], y=frame["y"], mode="markers", customdata=frame["row"], text=frame["hover"],
        marker=dict(size=5 if len(frame) < 20_000 else 3, color=np.nan_to_num(v, nan=lo), colorscale="Plasma",
                    cmin=lo, cmax=hi, colorbar=dict(title=diagnose.score_label(colour)), opacity=0.8),
        hovertemplate="%{text}<br>" + diagnose.score_label(colour) + " %{marker.color:+.3f}<extra></extra>"))
else:
    col = CATEGORIES[colour]
    if col == "_flag":
        cats = t["id"].map(labels).fillna("unreviewed").to_numpy()[frame["row"].to_numpy()]
    else:
        cats = t[col].replace("", "clean").astype(str).to_numpy()[frame["row"].to_numpy()]
    for i, cat in enumerate(sorted(set(cats), key=lambda c: (c not in ("clean", "unreviewed"), c))):
        sel = cats == cat
        fig.add_trace(go.Scattergl(
            x=frame["x"][sel], y=frame["y"][sel], mode="markers", name=f"{cat} ({int(sel.sum()):,})",
            customdata=frame["row"][sel], text=frame["hover"][sel],
            marker=dict(size=5 if len(frame) < 20_000 else 3, color=PALETTE[i % len(PALETTE)], opacity=0.8),
            hovertemplate="%{text}<br>" + cat + "<extra></extra>"))
fig.update_layout(height=620, template="plotly_white", margin=dict(l=10, r=10, t=40, b=10), dragmode="lasso",
                  title=dict(text=f"UMAP of the {space if space != 'joint' else 'joint'} embedding "
                                  f"({len(frame):,} samples)", x=0, font=dict(size=15)),
                  xaxis_title="UMAP 1 (no unit)", yaxis_title="UMAP 2 (no unit)",
                  legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))

left, right = st.columns([4, 1], gap="medium")
with left:
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", key="map_chart",
                            selection_mode=("points", "box", "lasso"))

points = (event or {}).get("selection", {}).get("points", []) if event else []
rows = sorted({int(p["customdata"][0] if isinstance(p.get("customdata"), list) else p["customdata"])
               for p in points if p.get("customdata") is not None})
signature = (space, colour, len(rows), rows[0] if rows else None, rows[-1] if rows else None)
if st.session_state.get("map_last_event") != signature:
    # a new selection on the chart replaces the session's selection; an unchanged one leaves it alone,
    # so that "Clear selection" in the sidebar sticks
    st.session_state["map_last_event"] = signature
    if rows:
        st.session_state[common.SELECTION] = t["id"].to_numpy()[rows].tolist()

selection = st.session_state.get(common.SELECTION) or []
with right:
    if not selection:
        st.info("Nothing selected yet. Use the lasso or box tool on the map, or click a point.", icon=":material/touch_app:")
    elif len(selection) == 1:
        r = data.row_of(selection[0])
        if r is not None:
            common.sample_card(data, t.iloc[r], labels=labels, score=colour if colour in data.score_cols else
                               "multimem", source="map", key="map_preview")
    if selection:
        st.metric("Selected", f"{len(selection):,}")
        st.button(f"Flag all {len(selection):,} as noisy", icon=":material/flag:", key="map_flag_all", type="primary",
                  on_click=common.flag_ids, args=(data, list(selection), "noisy"), kwargs={"source": "map"},
                  width="stretch")
        st.page_link("pages/review_export.py", label="Export the selection", icon=":material/ios_share:")
        if st.button("Show it on Samples", icon=":material/grid_view:", key="map_to_samples", width="stretch"):
            st.session_state["samples_only_sel"] = True
            st.switch_page("pages/samples.py")

if selection:
    st.subheader(f"Selected samples ({len(selection):,}), most memorized first")
    pos = np.fromiter((data.position.get(s, -1) for s in selection), dtype=np.int64, count=len(selection))
    pos = pos[pos >= 0]
    score = colour if colour in data.score_cols else ("multimem" if "multimem" in t.columns else None)
    if score:
        v = t[score].to_numpy(dtype=np.float64)[pos]
        pos = pos[np.argsort(np.where(np.isfinite(v), -v, np.inf), kind="stable")]
    page = t.iloc[pos[common.paged(len(pos), key="map_grid")]]
    common.card_grid(data, page, labels=labels, score=score or "multimem", source="map", key="mapgrid")
