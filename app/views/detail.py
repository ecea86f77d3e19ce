"""Sample detail: every modality, why it scores as it does, what it should have been, and a flag."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import common, run_data
from multimem_core import diagnose, names
from multimem_core.repairs import current_repairs
from multimem_core.review import LABELS

data = run_data.current_run()
t = data.table


def default_id() -> str:
    if "multimem" in t.columns and t["scored"].any():
        return str(t.loc[t["multimem"].idxmax(), "id"])
    return str(t["id"].iloc[0])


def go_to(sample_id: str) -> None:
    """Callback of every link to another sample on this page: the state and the form move to it before the page
    redraws, and the page body puts it in the URL. (Set from a callback, the URL would be overridden by the
    browser's own address when the new run starts.) The target was bound when the link was drawn, so a link
    moves relative to the sample it was drawn for."""
    st.session_state["detail_id"] = str(sample_id)


def walk_list() -> tuple[list[str], str]:
    """The list prev/next walks: the Samples page's filtered set in its order, else every sample, most memorized
    first (the Samples default)."""
    filtered = st.session_state.get(common.FILTERED)
    if filtered is not None:
        return list(filtered), st.session_state.get(common.FILTER_NOTE) or "no filter"
    column = "multimem" if "multimem" in data.score_cols else "id"
    rows = run_data.sorted_rows(str(data.run.path), data.stamp, column, column == "id")
    return t["id"].to_numpy()[rows].tolist(), "every sample, most memorized first"


# The sample: a new ?id=... (a card's link, a reload, a typed address), else the one this session shows (moved
# by a neighbour link or previous/next, which the URL follows), else the most memorized.
# The address counts as new when it is neither the one the last run received nor the one this page wrote: an
# address the browser did not update yet must not pull the page back to the previous sample.
url_id = st.query_params.get("id")
received, written = st.session_state.get("_url_seen_detail") or (None, None)
if url_id and url_id not in (received, written):
    wanted = url_id
else:
    wanted = st.session_state.get("detail_id") or url_id or default_id()
st.title("Sample detail")
c1, c2, c3 = st.columns([3, 3.4, 5])
sid = c1.text_input("Sample id", value=str(wanted), key=f"detail_id_input_{wanted}").strip()
row_i = data.row_of(sid)
if row_i is None:
    st.error(f"No sample with id {common.inert(repr(sid))} in this run. Pick one on the Samples page or paste an id "
             "from it.")
    st.stop()
# `sid` is the one sample this run draws: every element below, the flag form and the URL take it from here
st.session_state["detail_id"] = sid
st.session_state["_url_seen_detail"] = (url_id, sid)
row = t.iloc[row_i]

walk, walk_note = walk_list()
at = walk.index(sid) if sid in walk else None
p1, p2, p3 = c2.columns([1, 1, 1.6], vertical_alignment="bottom")
p1.button("Previous", key="detail_prev", icon=":material/arrow_back:", shortcut="left", width="stretch",
          disabled=not at, on_click=go_to, args=(walk[at - 1] if at else sid,))
p2.button("Next", key="detail_next", icon=":material/arrow_forward:", shortcut="right", width="stretch",
          disabled=at is None or at + 1 >= len(walk), on_click=go_to,
          args=(walk[at + 1] if at is not None and at + 1 < len(walk) else sid,))
p3.markdown(f"**{at + 1:,} of {len(walk):,}**" if at is not None else f"not in the list ({len(walk):,})",
            help=f"Previous / next (← →) walk the Samples list: {common.inert(walk_note)}")

labels = run_data.store(data).labels()
state = labels.get(sid)
facts = [f"role **{common.plain(names.role_label(str(row['role'])))}**"]
if row.get("label"):
    facts.append(f"label **{common.plain(row['label'])}**")
if row.get("injected"):
    facts.append(f"injected **{common.plain(row['injected'])}**")
facts.append(f"flag **{common.FLAG_ICONS[state]} {state}**" if state else "not reviewed")
c3.markdown("<div style='padding-top:2.1rem'></div>", unsafe_allow_html=True)
c3.markdown(" · ".join(facts))

if bool(row["scored"]):
    m = st.columns(5)
    for col, c in zip(m[:3], ("multimem", "cmc_in", "cmc_out")):
        col.metric(diagnose.score_label(c), common.fmt(row.get(c)), help=diagnose.score_help(c))
    if "multimem" in t.columns:
        pct = float((t["multimem"] < row["multimem"]).sum() / max(1, t["scored"].sum()))
        m[3].metric("Percentile", f"{pct:.1%}", help="Share of scored samples that are less memorized")
    if "base__cosine" in row.index:
        m[4].metric(diagnose.score_label("base__cosine"), common.fmt(row.get("base__cosine")),
                    help=diagnose.score_help("base__cosine"))
else:
    st.info("This sample has no score: it is held out, or it could not be loaded. Its media are shown below.")

# --- every modality at full size ------------------------------------------------------------------------
st.subheader("What the sample contains")
# pictures side by side; caption and sound share one wider column, where the audio player has room for its
# seek bar (Chromium hides it in a player narrower than about 300 px)
visual = [m for m in data.modalities if m in ("image", "video")]
other = [m for m in data.modalities if m not in visual]
cols = st.columns([3] * len(visual) + ([4] if other else []), gap="medium")
for col, m in zip(cols, visual):
    with col:
        st.markdown(f"**{m}**")
        common.show_media(data, row, m, compact=False)
if other:
    with cols[-1]:
        for m in other:
            st.markdown(f"**{m}**")
            common.show_media(data, row, m, compact=False)

# --- similarity matrices ----------------------------------------------------------------------------------
sims = run_data.similarity_matrices(str(data.run.path), data.stamp)
k = int(data.score_row[row_i])
if sims is None and not data.run.embedding_models():
    st.caption("This run has no embeddings or similarity matrices (scores imported from a table), so the "
               "per-modality agreement and the nearest neighbours are absent.")
if sims is not None and k >= 0:
    sim_in, sim_out = np.asarray(sims[0][k], dtype=float), np.asarray(sims[1][k], dtype=float)
    st.subheader("How the modalities agree")
    sentence = row.get("reason") or diagnose.weakest_pair_sentence(sim_out, data.modalities)  # cached per run
    st.info(f"Under the model that never trained on it, **{common.plain(sentence)}**.", icon=":material/explore:")
    off = ~np.eye(len(data.modalities), dtype=bool)
    gain = float(sim_in[off].mean() - sim_out[off].mean())
    if gain > 0.05:
        st.caption(f"The models that trained on it pull its modalities together (mean pairwise similarity "
                   f"{gain:+.2f} higher): they memorized this pairing.")
    hm = st.columns(2, gap="large")
    for col, (title, mat) in zip(hm, [("In: the models that trained on it", sim_in),
                                         ("Out: the model that did not", sim_out)]):
        fig = go.Figure(go.Heatmap(z=mat, x=data.modalities, y=data.modalities, zmin=-1, zmax=1,
                                   colorscale="RdBu", text=np.round(mat, 2), texttemplate="%{text:.2f}",
                                   colorbar=dict(title="cosine"),
                                   hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(title=dict(text=title, x=0, font=dict(size=14),
                                     subtitle=dict(text="cosine similarity, mean over augmented views")),
                          height=380, margin=dict(l=10, r=10, t=64, b=10),
                          template="plotly_white")
        col.plotly_chart(fig, width="stretch", key=f"heat_{title}")

contrib_cols = [f"contrib__{m}" for m in data.modalities if f"contrib__{m}" in t.columns]
if bool(row["scored"]) and contrib_cols:
    st.subheader("Which modality drives its score")
    means = t[contrib_cols].mean()
    fig = go.Figure()
    fig.add_bar(x=[c[9:] for c in contrib_cols], y=[row[c] for c in contrib_cols], name="this sample",
                marker_color="#E45756", hovertemplate="%{x}: %{y:+.4f}<extra>this sample</extra>")
    fig.add_bar(x=[c[9:] for c in contrib_cols], y=means.to_numpy(), name="run mean", marker_color="#9EB9D4",
                hovertemplate="%{x}: %{y:+.4f}<extra>run mean</extra>")
    fig.update_layout(barmode="group", height=300, template="plotly_white", margin=dict(l=10, r=10, t=44, b=10),
                      title=dict(text="Contribution: drop in MultiMem when the modality is left out", x=0,
                                 font=dict(size=14)), yaxis_title="Δ MultiMem", xaxis_title="modality left out",
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    st.plotly_chart(fig, width="stretch", key="contrib_sample")

# --- neighbours: what the model expected ---------------------------------------------------------------------
models = data.run.embedding_models()
model = names.unseen_model(str(row["role"]), models, data.protocol) or (models[0] if models else None)
if model:
    st.subheader("What the model would expect")
    st.caption(f"Nearest neighbours under model **{common.plain(model)}**, which did not train on this sample "
               "(faiss, exact cosine). For a wrong caption, the captions its image is closest to are the "
               "suggested fix.")
    index = run_data.neighbour_index(str(data.run.path), data.stamp, model)
    if sid not in index:
        st.caption("This sample has no embedding under that model (it was skipped).")
    else:
        kn = st.columns([1, 3])[0].slider("Neighbours per modality", 1, 8, 3, key="detail_k")
        tabs = st.tabs([f"From its {m}" for m in data.modalities])
        for tab, q in zip(tabs, data.modalities):
            with tab:
                targets = [m for m in data.modalities if m != q]
                # an audio player needs about 300 px for Chromium to draw its seek bar: its column is wider
                tcols = st.columns([1.35 if m == "audio" else 1 for m in targets], gap="medium")
                for tcol, target in zip(tcols, targets):
                    with tcol:
                        st.markdown(f"**nearest {target}**")
                        nb = index.neighbours(sid, query=q, target=target, k=kn)
                        for _, n in nb.iterrows():
                            r = data.row_of(n["id"])
                            if r is None:
                                continue
                            other = t.iloc[r]
                            st.button(f"{int(n['rank'])}. {common.plain(n['id'])} · similarity "
                                      f"{n['similarity']:.2f}", key=f"nb_{q}_{target}_{n['id']}", type="tertiary",
                                      icon=":material/open_in_new:", on_click=go_to, args=(str(n["id"]),))
                            common.show_media(data, other, target, compact=True)
                            st.button(f"Use this {target} for {common.plain(sid)}", key=f"fix_{q}_{target}_{n['id']}",
                                      icon=":material/build:", on_click=common.repair,
                                      args=(data, sid, target, str(n["id"])), kwargs={"source": "detail"})

# --- flag ----------------------------------------------------------------------------------------------------
st.subheader("Your decision")
fixes = current_repairs(run_data.store(data))
for fix in fixes[fixes["sample_id"] == sid].itertuples():
    f1, f2 = st.columns([5, 1])
    f1.info(f"Repaired: its **{fix.modality}** is replaced by {common.plain(fix.from_id)}'s in an export with "
            f"repairs ({common.plain(fix.reviewer)}).", icon=":material/build:")
    f2.button("Undo repair", key=f"unfix_{fix.seq}", on_click=common.unrepair, args=(data, int(fix.seq)))


def save_decision(sample_id: str) -> None:
    """Form callback: runs before the page redraws, so the badge above shows the new state at once."""
    label = st.session_state.get(f"detail_label_{sample_id}") or "noisy"
    reason = st.session_state.get(f"detail_reason_{sample_id}") or ""
    common.flag_ids(data, [sample_id], label, source="detail", reason=reason)


# The form, its widgets and its callback are bound to `sid` when drawn, and the form names it: a Save lands on
# the sample this form was drawn for, even when a click reaches the server after the page moved on.
with st.form(f"flag_form_{sid}", clear_on_submit=True, border=True):
    fc1, fc2, fc3 = st.columns([2, 5, 1])
    fc1.radio(f"Label for {common.plain(sid)}", LABELS, horizontal=True, key=f"detail_label_{sid}")
    fc2.text_input("Reason", key=f"detail_reason_{sid}", placeholder="e.g. the caption names another colour")
    fc3.markdown("<div style='padding-top:1.7rem'></div>", unsafe_allow_html=True)
    fc3.form_submit_button("Save", type="primary", width="stretch", on_click=save_decision, args=(sid,))
history = run_data.store(data).history(sid)
if len(history):
    st.dataframe(history[["seq", "action", "label", "reason", "reviewer", "created_at", "undone_by"]],
                 hide_index=True, width="stretch")
else:
    st.caption("No decisions on this sample yet.")

# The URL names the sample last, once everything above (the flag form, previous / next) is drawn for it: when the
# address bar shows an id, every control on the page acts on that sample.
if st.query_params.get("id") != sid:
    st.query_params["id"] = sid
