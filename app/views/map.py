"""Map: the UMAP of the joint embedding (or of one modality), coloured by a score; select with lasso or box."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import common, run_data, url_state
from app.hover import hover_thumbnails
from app.selection import drawn_sample, selected_rows, window_around, window_mask
from multimem_core import diagnose, names

MAX_POINTS = 20_000  # drawn at most: a browser redraws 100k WebGL points slowly; selections still cover all
ALWAYS_DRAWN = 2_000  # the most memorized samples are always among the drawn points
WINDOW = "map_window"  # session key: (space, x0, x1, y0, y1) the map is zoomed to; absent = the whole map
URL_KEYS = ("space", "colour", "sel")  # what a link to the map carries (app.url_state)
CATEGORIES = {"injected kind": "injected", "role": "role", "flag": "_flag"}
PALETTE = ["#B0B0B0", "#E45756", "#4C78A8", "#F58518", "#54A24B", "#B279A2", "#72B7B2", "#FF9DA6", "#9D755D"]


@st.cache_resource(max_entries=6, show_spinner="Preparing the map…")
def map_frame(path: str, stamp: tuple, space: str) -> pd.DataFrame:
    """Every projected sample: row (into the table), x, y. Shared by every session without a copy per rerun:
    read-only. A box or lasso selects among all of these, drawn or not."""
    data = run_data.load_run(path)
    proj = run_data.projection(path, stamp)
    xc, yc = ("x", "y") if space == "joint" else (f"x__{space}", f"y__{space}")
    pos = data.rows_of(proj["id"])
    keep = (pos >= 0) & np.isfinite(proj[xc].to_numpy(dtype=float))
    return pd.DataFrame({"row": pos[keep], "x": proj.loc[keep, xc].to_numpy(), "y": proj.loc[keep, yc].to_numpy()})


@st.cache_data(max_entries=32, show_spinner=False)
def drawn_points(path: str, stamp: tuple, space: str, window: tuple | None) -> tuple[pd.DataFrame, int]:
    """The points drawn inside `window` (x0, x1, y0, y1; None = the whole map): every one up to MAX_POINTS,
    else the ALWAYS_DRAWN most memorized there and a fixed random sample of the rest (row, x, y, hover);
    and how many samples the window holds."""
    data = run_data.load_run(path)
    frame = map_frame(path, stamp, space)
    inside = np.flatnonzero(window_mask(frame["x"].to_numpy(), frame["y"].to_numpy(), window))
    rows = frame["row"].to_numpy()[inside]
    mm = data.table["multimem"].to_numpy(dtype=np.float64)[rows] if "multimem" in data.table else np.zeros(len(rows))
    drawn = frame.iloc[inside[drawn_sample(mm, MAX_POINTS, ALWAYS_DRAWN)]].reset_index(drop=True)
    rows = drawn["row"].to_numpy()
    text = pd.Series(data.ids[rows]).map(html.escape)
    if "text" in data.table.columns:
        caps = pd.Series(data.table["text"].fillna("").astype(str).to_numpy()[rows])
        # escaped: plotly renders a few HTML tags in hover labels, and a caption must stay text
        text = text + "<br>" + caps.str.slice(0, 90).map(html.escape)
    drawn["hover"] = text.to_numpy()
    return drawn, len(inside)


def zoom_to_selection(space: str) -> None:
    """Button callback: the map zooms to the selection's extent and draws every sample there (or a sample of
    them when more than MAX_POINTS)."""
    run = run_data.load_run(st.session_state["run_path"])
    frame = map_frame(str(run.run.path), run.stamp, space)
    picked = np.zeros(len(run.table), dtype=bool)
    picked[(at := run.rows_of(st.session_state.get(common.SELECTION) or []))[at >= 0]] = True
    inside = picked[frame["row"].to_numpy()]
    window = window_around(frame["x"].to_numpy()[inside], frame["y"].to_numpy()[inside])
    if window is not None:
        st.session_state[WINDOW] = (space, *window)


def take_chart_selection() -> None:
    """on_select callback: it runs before the page (and the sidebar) redraws, so the selection count in the
    sidebar, the rings and the panel all show the new selection in the same run. A new chart selection
    replaces the session's; "Clear selection" in the sidebar sticks, since this only runs on a chart event."""
    event = st.session_state.get("map_chart") or {}
    chart_selection = dict(event.get("selection") or {})
    run = run_data.load_run(st.session_state["run_path"])
    frame = map_frame(str(run.run.path), run.stamp, st.session_state.get("map_space") or "joint")
    rows = selected_rows(chart_selection, frame)
    if len(rows):
        common.set_selection(run.table["id"].to_numpy()[rows].tolist(), "map")


data = run_data.current_run()
st.title("Map")
proj = run_data.projection(str(data.run.path), data.stamp)
if proj is None or len(proj) == 0:
    if data.config.get("source") == "import-scores":
        st.info("This run was imported from a score table: it has no embeddings, so there is no map "
                "(projection.parquet is absent). `multimem import-embeddings` brings the embeddings and the map.",
                icon=":material/scatter_plot:")
    else:
        st.info("This run has no projection yet (projection.parquet). The engine writes it after scoring; rerun "
                "`multimem score` to finish, then reload this page.", icon=":material/scatter_plot:")
    st.stop()

spaces = ["joint"] + [m for m in data.modalities if f"x__{m}" in proj.columns]
colour_opts = common.score_options(data) + [k for k, v in CATEGORIES.items() if v != "injected" or data.has_injected]
if (shared := url_state.incoming("map", URL_KEYS)) is not None:  # a shared link or a saved view
    st.session_state["map_space"] = url_state.one(shared, "space") if url_state.one(shared, "space") in spaces \
        else "joint"
    st.session_state["map_colour"] = url_state.one(shared, "colour") if url_state.one(shared, "colour") in \
        colour_opts else colour_opts[0]
    if picked := [i for i in shared.get("sel", []) if data.row_of(i) is not None]:
        common.set_selection(picked, "map")
c1, c2, c3 = st.columns([1.4, 2, 3])
space = c1.selectbox("Embedding", spaces, key="map_space", format_func=lambda s: "joint (all modalities)"
                     if s == "joint" else s)
colour = c2.selectbox("Colour by", colour_opts, key="map_colour",
                      format_func=lambda c: diagnose.score_label(c) if c in data.score_cols else c)
# Streamlit turns point clicks off while the lasso or box tool is active, so the mouse mode is a choice
MOUSE = {"click": "click a point", "lasso": "lasso", "box": "box"}
st.session_state.setdefault("map_mouse", "click")
mouse = c3.segmented_control("Mouse", list(MOUSE), format_func=MOUSE.get, key="map_mouse",
                             help="Hover: a point's thumbnail. Click: its thumbnail and a link to its detail. Lasso "
                                  "or box: select every sample inside the shape.") or "click"

frame = map_frame(str(data.run.path), data.stamp, space)
zoom = st.session_state.get(WINDOW)
window = tuple(zoom[1:]) if zoom and zoom[0] == space else None
drawn, in_window = drawn_points(str(data.run.path), data.stamp, space, window)
labels = run_data.store(data).labels()
t = data.table
size = 5 if len(drawn) < 10_000 else 3
fig = go.Figure()
# the Samples page's filters (label, flag, caption, ...): the matching samples in colour, the rest grey
filtered, note = st.session_state.get(common.FILTERED), st.session_state.get(common.FILTER_NOTE, "no filter")
if filtered is not None and note != "no filter" and st.toggle(f"Show the Samples filters: {common.inert(note)} "
                                                              f"({len(filtered):,} samples)", value=True,
                                                              key="map_use_filters"):
    inside = t["id"].iloc[drawn["row"].to_numpy()].isin(set(filtered)).to_numpy()
    rest = drawn[~inside]
    fig.add_trace(go.Scattergl(
        x=rest["x"], y=rest["y"], mode="markers", customdata=rest["row"], text=rest["hover"],
        name=f"outside the Samples filters ({len(rest):,})", marker=dict(size=size, color="#D0D0D0", opacity=0.5),
        hovertemplate="%{text}<extra>outside the filters</extra>"))
    drawn = drawn[inside]
if colour in data.score_cols:
    v = t[colour].to_numpy(dtype=np.float64)[drawn["row"].to_numpy()]
    # draw the most suspicious last, on top, so that they stay visible in a dense map
    draw = np.argsort(np.nan_to_num(-v if colour in names.LOWER_IS_WORSE else v, nan=-np.inf), kind="stable")
    drawn, v = drawn.iloc[draw], v[draw]
    finite = v[np.isfinite(v)]
    lo, hi = (np.percentile(finite, [1, 99]) if len(finite) else (0, 1))
    fig.add_trace(go.Scattergl(
        x=drawn["x"], y=drawn["y"], mode="markers", customdata=drawn["row"], text=drawn["hover"],
        name=f"in the Samples filters ({len(drawn):,})", showlegend=len(fig.data) > 0,
        marker=dict(size=size, color=np.nan_to_num(v, nan=lo), colorscale="Plasma",
                    cmin=lo, cmax=hi, colorbar=dict(title=diagnose.score_label(colour)), opacity=0.8),
        hovertemplate="%{text}<br>" + diagnose.score_label(colour) + " %{marker.color:+.3f}<extra></extra>"))
else:
    col = CATEGORIES[colour]
    rows_drawn = drawn["row"].to_numpy()
    if col == "_flag":
        cats = t["id"].map(labels).fillna("unreviewed").to_numpy()[rows_drawn]
    else:
        cats = t[col].replace("", "clean").astype(str).to_numpy()[rows_drawn]
    for i, cat in enumerate(sorted(set(cats), key=lambda c: (c not in ("clean", "unreviewed"), c))):
        sel = cats == cat
        fig.add_trace(go.Scattergl(
            x=drawn["x"][sel], y=drawn["y"][sel], mode="markers", name=f"{html.escape(cat)} ({int(sel.sum()):,})",
            customdata=drawn["row"][sel], text=drawn["hover"][sel],
            marker=dict(size=size, color=PALETTE[i % len(PALETTE)], opacity=0.8),
            hovertemplate="%{text}<br>" + html.escape(cat) + "<extra></extra>"))  # a label is text, not markup
selection_now = st.session_state.get(common.SELECTION) or []
if selection_now:
    # the selection (from the map, or rows picked in the Samples table) ringed, so it shows in both directions
    picked = np.zeros(len(t), dtype=bool)
    picked[(at := data.rows_of(selection_now))[at >= 0]] = True
    ring = drawn[picked[drawn["row"].to_numpy()]]
    fig.add_trace(go.Scattergl(x=ring["x"], y=ring["y"], mode="markers", customdata=ring["row"], text=ring["hover"],
                               name=f"selection ({len(selection_now):,})", hovertemplate="%{text}<extra>selected</extra>",
                               marker=dict(size=size + 7, color="rgba(0,0,0,0)", line=dict(width=1.5, color="#111"))))
fig.update_layout(height=620, template="plotly_white", margin=dict(l=10, r=10, t=64, b=10),
                  dragmode={"click": "pan", "lasso": "lasso", "box": "select"}[mouse],
                  title=dict(text=f"Map of the {'joint (all modalities)' if space == 'joint' else space} embedding "
                             f"({len(frame):,} samples): nearby points are samples the model embeds alike", x=0,
                             font=dict(size=15),
                             subtitle=dict(text=("" if window is None else f"zoomed in: {in_window:,} samples here, ")
                                           + (("every one drawn" if window else "") if len(drawn) == in_window else
                                              f"{len(drawn):,} drawn: the {ALWAYS_DRAWN:,} most memorized and a random "
                                              "sample of the rest; a box or lasso selects every sample inside it"),
                                           font=dict(size=12, color="#666"))),
                  xaxis=dict(showticklabels=False, title=None, range=None if window is None else list(window[:2])),
                  yaxis=dict(showticklabels=False, title=None, range=None if window is None else list(window[2:])),
                  legend=dict(orientation="h", y=-0.02, yanchor="top", x=0, xanchor="left"))

left, right = st.columns([4, 1], gap="medium")
with left:
    st.plotly_chart(fig, width="stretch", on_select=take_chart_selection, key="map_chart",
                    selection_mode=("points", "box", "lasso"))
    hover_thumbnails(data, "map_chart")  # the hovered point's picture beside the pointer

selection = st.session_state.get(common.SELECTION) or []
url_state.write("map", URL_KEYS, {"space": [space] if space != "joint" else [],
                                  "colour": [colour] if colour != colour_opts[0] else [],
                                  "sel": url_state.selection_param(selection)})
with right:
    if not selection:
        st.info("Nothing selected yet. Use the lasso or box tool on the map, or click a point.", icon=":material/touch_app:")
    elif len(selection) == 1 and (r := data.row_of(selection[0])) is not None:
        point = t.iloc[r]  # the clicked point: its thumbnail and a link to its detail
        st.page_link(common.DETAIL_PAGE, label=f"Open {common.plain(point['id'])}", icon=":material/open_in_new:",
                     query_params={"id": str(point["id"])})
        for m in ("image", "text"):
            if m in data.modalities:
                common.show_media(data, point, m, compact=True)
        if point.get("reason"):
            st.caption(f":material/explore: {common.plain(point['reason'])}")
    if window is not None:
        st.button("Whole map", key="map_unzoom", icon=":material/zoom_out_map:", width="stretch",
                  on_click=lambda: st.session_state.pop(WINDOW, None))
    if selection:
        st.metric("Selected", f"{len(selection):,}")
        st.button("Zoom in on it", key="map_zoom", icon=":material/zoom_in:", width="stretch",
                  on_click=zoom_to_selection, args=(space,),
                  help="Draw every sample in the selection's area (the whole map draws a sample of them)")
        with st.popover("Flag all as noisy", icon=":material/flag:", width="stretch"):
            st.markdown(f"Write **{len(selection):,}** decisions, one per selected sample, each as *noisy*?")
            st.button(f"Yes, flag {len(selection):,} as noisy", key="map_flag_all", type="primary",
                      on_click=common.flag_ids, args=(data, list(selection), "noisy"), kwargs={"source": "map"},
                      width="stretch")
        st.page_link("views/review_export.py", label="Export the selection", icon=":material/ios_share:")
        if st.button("Show it on Samples", icon=":material/grid_view:", key="map_to_samples", width="stretch"):
            st.session_state["samples_only_sel"] = True
            st.switch_page("views/samples.py")

if selection:
    st.subheader(f"Selected samples ({len(selection):,}), most memorized first")
    pos = data.rows_of(selection)
    pos = pos[pos >= 0]
    score = colour if colour in data.score_cols else ("multimem" if "multimem" in t.columns else None)
    if score:
        v = t[score].to_numpy(dtype=np.float64)[pos]
        pos = pos[np.argsort(np.where(np.isfinite(v), -v, np.inf), kind="stable")]
    page = t.iloc[pos[common.paged(len(pos), key="map_grid")]]
    common.card_grid(data, page, labels=labels, score=score or "multimem", source="map", key="mapgrid")
