"""Triage: one sample at a time, large, with its reason; keys j / k move, n / o / u decide, and it advances.

The queue is any set the other pages made: the Samples filters, the map or table selection, the top N by a
score, or one dataset label. Progress and decisions come from review.sqlite, so another reviewer who opens
the same queue resumes at its first unreviewed sample.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import common, run_data
from multimem_core import diagnose, names
from multimem_core.review import LABELS

SOURCES = {"filters": "the Samples filters", "selection": "the selection (map or table)", "top": "the top N by a score",
           "label": "one dataset label"}
KEYS = {"noisy": "N", "ok": "O", "unsure": "U"}
NEIGHBOURS = 4


def queue(data: run_data.RunData) -> tuple[list[str], str]:
    """The ids to triage, in order, and what they are in words."""
    t = data.table
    filtered = st.session_state.get(common.FILTERED)
    selection = st.session_state.get(common.SELECTION) or []
    labels = run_data.distinct(str(data.run.path), data.stamp, "label")
    offered = [s for s in SOURCES if (s != "filters" or filtered is not None) and (s != "selection" or selection)
               and (s != "top" or data.score_cols) and (s != "label" or labels)]
    if st.session_state.get("triage_source") not in offered:
        st.session_state["triage_source"] = offered[0]
    c1, c2, c3 = st.columns([2.2, 2, 1.2])
    source = c1.selectbox("Samples to triage", offered, format_func=SOURCES.get, key="triage_source")
    if source == "filters":
        return list(filtered), f"Samples filters: {st.session_state.get(common.FILTER_NOTE, '')}"
    if source == "selection":
        return list(selection), "the selection"
    if source == "label":
        label = c2.selectbox("Dataset label", labels, key="triage_label")
        rows = order(data)
        rows = rows[(t["label"].to_numpy()[rows] == label)]
        return t["id"].to_numpy()[rows].tolist(), f"label {label}"
    options = common.score_options(data)
    score = c2.selectbox("Score", options, format_func=diagnose.score_label, key="triage_score",
                         index=options.index(data.ranking) if data.ranking in options else 0)
    scored = int((data.score_row >= 0).sum())
    n = int(c3.number_input("N", min_value=1, max_value=max(1, scored), value=min(500, max(1, scored)), step=50,
                            key="triage_n", help=f"Up to the {scored:,} scored samples"))
    rows = run_data.sorted_rows(str(data.run.path), data.stamp, score, score in names.LOWER_IS_WORSE)
    rows = rows[data.score_row[rows] >= 0][:n]
    return t["id"].to_numpy()[rows].tolist(), f"the {len(rows):,} most suspicious by {diagnose.score_label(score)}"


def order(data: run_data.RunData) -> np.ndarray:
    column = data.ranking
    return run_data.sorted_rows(str(data.run.path), data.stamp, column, column == "id" or column in names.LOWER_IS_WORSE)


def move(step: int, size: int) -> None:
    st.session_state["triage_pos"] = int(np.clip(st.session_state.get("triage_pos", 0) + step, 0, size))


def decide(data: run_data.RunData, sid: str, label: str, size: int) -> None:
    """Button callback: save the decision with the optional reason, clear the reason, go to the next sample."""
    common.flag_ids(data, [sid], label, source="triage", reason=st.session_state.get("triage_reason", "").strip())
    st.session_state["triage_reason"] = ""
    move(1, size)


def suggestions(data: run_data.RunData, index, sid: str) -> None:
    """Repair instead of drop: per modality, the nearest one to the sample's other content (its image, else
    its caption) under the model that never saw it, one click to use it."""
    cols = st.columns(len(data.modalities), gap="medium")
    for col, m in zip(cols, data.modalities):
        query = next((q for q in ("image", "text", "video", "audio") if q != m and q in data.modalities), None)
        nb = index.neighbours(sid, query=query, target=m, k=1) if query else None
        if nb is None or not len(nb):
            continue
        donor = str(nb["id"].iloc[0])
        with col:
            st.caption(f"Suggested {m} (nearest to its {query}, from {common.plain(donor)})")
            if m == "text" and (r := data.row_of(donor)) is not None:
                st.text(str(data.table.iloc[r].get("text") or "")[:common.MAX_CARD_TEXT])
            st.button(f"Replace the {'caption' if m == 'text' else m} with it", key=f"triage_fix_{m}",
                      icon=":material/build:", on_click=common.repair, args=(data, sid, m, donor),
                      kwargs={"source": "triage"})


def neighbour_links(data: run_data.RunData, row, sid: str) -> None:
    models = data.run.embedding_models()
    model = names.unseen_model(str(row["role"]), models, data.protocol) or (models[0] if models else None)
    if not model:
        return
    index = run_data.neighbour_index(str(data.run.path), data.stamp, model)
    if sid not in index:
        return
    suggestions(data, index, sid)
    st.markdown(f"**Nearest samples** under the model that never saw it ({common.plain(model)})")
    for m in data.modalities[:2]:
        nb = index.neighbours(sid, query=m, target=m, k=NEIGHBOURS)
        cols = st.columns([1.2] + [2] * NEIGHBOURS)
        cols[0].caption(f"by {m}")
        for col, (_, n) in zip(cols[1:], nb.iterrows()):
            col.page_link(common.DETAIL_PAGE, label=f"{n['id']} ({n['similarity']:.2f})", query_params={"id": n["id"]},
                          icon=":material/link:")


data = run_data.current_run()
st.title("Triage")
st.caption("One sample at a time. Keys: **j** next, **k** previous, **n** noisy, **o** OK, **u** unsure (then it "
           "moves on by itself). Type an optional reason first; decisions are saved at once with your name.")
ids, described = queue(data)
if not ids:
    st.info("This set is empty. Pick another set, or filter on the Samples page first.", icon=":material/inbox:")
    st.stop()
store = run_data.store(data)
labels = store.labels()
signature = (described, len(ids), ids[0], ids[-1])
if st.session_state.get("triage_signature") != signature:
    # a new queue (or another reviewer's session): start at its first sample nobody has decided yet
    st.session_state["triage_signature"] = signature
    st.session_state["triage_pos"] = next((i for i, s in enumerate(ids) if s not in labels), len(ids))
pos = int(min(st.session_state.get("triage_pos", 0), len(ids)))
reviewed = sum(1 for s in ids if s in labels)
st.progress(reviewed / len(ids), text=f"**{reviewed:,} of {len(ids):,} reviewed** · {common.plain(described)}")

size = len(ids)
nav = st.columns([1.4, 1.1, 1.3, 1.1, 1.5, 3.4])
nav[0].button("Previous", key="triage_prev", shortcut="K", on_click=move, args=(-1, size), width="stretch",
              disabled=pos == 0)
nav[1].button("Next", key="triage_next", shortcut="J", on_click=move, args=(1, size), width="stretch",
              disabled=pos >= size)
if pos >= size:
    st.success(f"End of the set: {reviewed:,} of {size:,} reviewed.", icon=":material/done_all:")
    first_open = next((i for i, s in enumerate(ids) if s not in labels), None)
    if first_open is not None:
        st.button("Go to the first unreviewed", on_click=lambda: st.session_state.update(triage_pos=first_open))
    st.stop()
sid = ids[pos]
for col, label in zip(nav[2:5], LABELS):
    col.button(label.capitalize() if label != "ok" else "OK", key=f"triage_{label}", shortcut=KEYS[label],
               icon=common.FLAG_ICONS[label], type="primary" if label == "noisy" else "secondary", width="stretch",
               on_click=decide, args=(data, sid, label, size))
nav[5].text_input("Reason (optional)", key="triage_reason", placeholder="optional reason, e.g. caption names "
                  "another animal", label_visibility="collapsed")

row_i = data.row_of(sid)
if row_i is None:
    st.warning(f"{common.inert(repr(sid))} is not in this run any more; press j to skip it.")
    st.stop()
row = data.table.iloc[row_i]
state = labels.get(sid)
facts = [f"**{pos + 1:,}** of {size:,}", common.plain(names.role_label(str(row["role"])))]
if row.get("label"):
    facts.append(f"label **{common.plain(row['label'])}**")
if row.get("injected"):
    facts.append(f"injected **{common.plain(row['injected'])}**")
facts.append(f"{common.FLAG_ICONS[state]} **{state}**" if state else "not reviewed")
head = st.columns([3, 5])
head[0].page_link(common.DETAIL_PAGE, label=f"**{common.plain(sid)}**", icon=":material/open_in_new:",
                  query_params={"id": sid}, help="Everything about this sample")
head[1].markdown(" · ".join(facts))
if row.get("reason"):
    st.info(f"Under the model that never trained on it, **{common.plain(row['reason'])}**.", icon=":material/explore:")
if bool(row.get("scored")):
    shown = [c for c in ("multimem", "cmc_out", "cmc_in") if c in data.score_cols]
    for col, c in zip(st.columns(len(shown) + 2), shown):
        col.metric(diagnose.score_label(c), common.fmt(row.get(c)), help=diagnose.score_help(c))

visual = [m for m in ("image", "video") if m in data.modalities]
other = [m for m in ("text", "audio") if m in data.modalities]
cols = st.columns([3] * len(visual) + [4], gap="large")
for col, m in zip(cols, visual):
    with col:
        common.show_media(data, row, m, compact=True)
with cols[-1]:
    for m in other:
        st.markdown(f"**{m}**")
        common.show_media(data, row, m, compact=False)
neighbour_links(data, row, sid)
