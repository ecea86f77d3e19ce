"""A thumbnail beside the pointer while it hovers a point of a Plotly chart (the Map).

Plotly's hover label holds text only. This component listens to the chart's hover events in the page, asks
Python for the hovered sample's thumbnail, and shows it in a small box that follows the pointer. The picture
travels as a data: URI made by the app from a file under the serving root (common.thumbnail_uri), so the
page never asks another host, and only the hovered sample is read: a map of 100k points costs nothing until
the pointer rests on one. Each answer reruns only the fragment that holds the component, not the page.
"""

from __future__ import annotations

import streamlit as st

from app import common
from app.run_data import RunData

SIZE = 160  # px, the longest side of a hover thumbnail

_JS = """
export default function (component) {
  const { data, setStateValue } = component;
  const state = window.__multimemHover = window.__multimemHover || { cache: new Map(), row: null };
  let box = document.getElementById("multimem-hover-thumb");
  if (!box) {
    box = document.createElement("div");
    box.id = "multimem-hover-thumb";
    box.style.cssText = "position:fixed;z-index:1000;pointer-events:none;display:none;padding:4px;" +
      "background:#fff;border:1px solid #bbb;border-radius:6px;box-shadow:0 2px 8px rgba(0,0,0,.25)";
    const img = document.createElement("img");
    img.style.cssText = "display:block;object-fit:contain;width:" + data.size + "px;height:" + data.size + "px";
    box.appendChild(img);
    document.body.appendChild(box);
  }
  const img = box.querySelector("img");
  const show = (row) => {
    const hit = state.cache.get(row);
    if (state.row !== row || !hit) return;
    // only a picture the app made itself: a PNG data URI, never a link to anywhere
    if (!hit.uri || !hit.uri.startsWith("data:image/png;base64,")) { box.style.display = "none"; return; }
    img.src = hit.uri;
    box.dataset.id = hit.id;
    box.style.display = "block";
  };
  if (data.row !== null && data.row !== undefined) {
    state.cache.set(data.row, { uri: data.uri, id: data.id });
    show(data.row);
  }
  const attach = (tries) => {
    const gd = document.querySelector(".st-key-" + data.chart + " .js-plotly-plot");
    if (!gd || !gd.on) { if (tries > 0) setTimeout(() => attach(tries - 1), 250); return; }
    if (gd.__multimemHover) return;
    gd.__multimemHover = true;
    gd.on("plotly_hover", (ev) => {
      const p = ev.points && ev.points[0];
      if (!p || p.customdata === undefined || p.customdata === null) return;
      const row = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      const e = ev.event || {};
      box.style.left = ((e.clientX || 0) + 18) + "px";
      box.style.top = ((e.clientY || 0) + 18) + "px";
      state.row = row;
      if (state.cache.has(row)) show(row); else setStateValue("row", row);
    });
    gd.on("plotly_unhover", () => { state.row = null; box.style.display = "none"; });
  };
  attach(40);
}
"""

_component = st.components.v2.component("multimem.map_hover", js=_JS)


@st.fragment
def hover_thumbnails(data: RunData, chart_key: str, key: str = "map_hover") -> None:
    """Mount the listener for the chart drawn with `chart_key` (its points' customdata: the table row)."""
    if "image" not in data.modalities or "image" not in data.table.columns:
        return
    row = (st.session_state.get(key) or {}).get("row")
    payload = {"chart": chart_key, "size": SIZE, "row": None, "uri": None, "id": None}
    if isinstance(row, int) and 0 <= row < len(data.table):
        value = data.table["image"].iloc[row]
        payload.update(row=row, id=str(data.table["id"].iloc[row]),
                       uri=common.thumbnail_uri(str(data.root), str(value), SIZE)
                       if isinstance(value, str) and value else None)
    _component(key=key, data=payload, on_row_change=lambda: None, height=0)
