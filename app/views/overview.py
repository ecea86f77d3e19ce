"""Overview: what the run measured, at a glance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import common, run_data
from multimem_core import diagnose, names
from multimem_core.confidence import advice, format_confidence
from multimem_core.summary import verdict

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D"]
PAPER_ORDER = {"contrib__text": 0, "contrib__video": 1, "contrib__image": 2, "contrib__audio": 3}
SCORE_UNIT = "cosine-similarity units"


def layout(fig: go.Figure, title: str, x: str, y: str, *, height: int = 380, subtitle: str = "") -> go.Figure:
    """One look for every chart: title (and subtitle) top-left, legend at the right outside the plot."""
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", font=dict(size=15),
                                 subtitle=dict(text=subtitle, font=dict(size=12, color="#666"))),
                      height=height, margin=dict(l=10, r=10, t=64 if subtitle else 48, b=10),
                      xaxis_title=x, yaxis_title=y,
                      legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top", font=dict(size=12)),
                      template="plotly_white", barmode="overlay", bargap=0.02)
    return fig


@st.cache_data(max_entries=4, show_spinner=False)
def summaries(path: str, stamp: tuple) -> dict:
    """Everything Overview plots, computed once per run version (AUROC on 100k samples takes a moment)."""
    data = run_data.load_run(path)
    t = data.table.loc[data.table["scored"].to_numpy(), ["role", "injected", *data.score_cols]]  # no media columns
    out: dict = {"n_scored": len(t)}
    if len(t) == 0:
        return out
    groups = {}
    if data.protocol == "paper":
        for role in ("S_C", "S_I", "S_S"):  # the paper's Figure 1 order
            sel = t["role"] == role
            if sel.any():
                groups[names.role_label(role)] = t.loc[sel, "multimem"].to_numpy()
        out["by_role"] = ("MultiMem by set", "the paper's Figure 1: S_C high, S_I low, S_S near 0", "MultiMem", groups)
    elif {"cmc_in", "cmc_out"} <= set(t.columns):
        out["by_role"] = ("CMC in vs out", "in: the models that trained on a sample; out: the one that did not",
                          "CMC", {"in": t["cmc_in"].to_numpy(), "out": t["cmc_out"].to_numpy()})
    else:  # scores imported from a table: no CMC terms, so MultiMem by the roles the table gave
        groups = {names.role_label(r): part["multimem"].to_numpy() for r, part in t.groupby("role")}
        out["by_role"] = ("MultiMem by role", "imported scores (no CMC terms in the table)", "MultiMem", groups)
    kinds = {}
    if data.has_injected:
        for kind, part in t.groupby(t["injected"].replace("", "clean")):
            kinds[kind] = part["multimem"].to_numpy()
    else:
        kinds["all scored samples"] = t["multimem"].to_numpy()
    out["by_kind"] = kinds
    out["contrib"] = diagnose.contribution_ranking(t, data.modalities)
    out["pairs_all"] = diagnose.pair_vs_all(t)
    if data.has_injected:
        inj = (t["injected"] != "").to_numpy()
        out["pairs_inj"] = diagnose.pair_vs_all(t, mask=inj)
        cols = [c for c in data.score_cols if not c.startswith("contrib__")]
        out["auroc"] = diagnose.auroc_table(t, t["injected"], cols)
        best_pair = next((c for c in out["auroc"]["score"] if c.startswith("pair__")), None)
        curve_cols = [c for c in ["multimem", best_pair, "cmc_out", "base__cosine", "base__clipmem", "base__loss"]
                      if c and c in t.columns]
        out["pak"] = diagnose.precision_at_k(t, t["injected"], curve_cols, points=120)
        out["base_rate"] = float(inj.mean())
    return out


def overlay_hist(groups: dict[str, np.ndarray], title: str, xlabel: str, subtitle: str = "") -> go.Figure:
    finite = [v[np.isfinite(v)] for v in groups.values() if len(v)]
    allv = np.concatenate(finite) if finite else np.array([0.0])
    lo, hi = np.percentile(allv, [0.2, 99.8]) if len(allv) else (0, 1)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    fig = go.Figure()
    bins = int(np.clip(len(allv) // 8, 10, 60))
    for i, (name, values) in enumerate(groups.items()):
        centres, counts = diagnose.histogram(values, bins=bins, range_=(lo, hi))
        mean = float(np.nanmean(values)) if len(values) else float("nan")
        # shares, not counts: a group of 40 injected samples stays visible next to 90,000 clean ones
        share = counts / max(1, counts.sum())
        fig.add_bar(x=centres, y=share, name=f"{name}<br><sup>n={len(values):,}, mean {mean:+.3f}</sup>",
                    marker_color=PALETTE[i % len(PALETTE)], opacity=0.6, customdata=counts,
                    hovertemplate="%{x:.3f}: %{customdata:,} samples (%{y:.1%})<extra>" + name + "</extra>")
    fig = layout(fig, title, f"{xlabel} ({SCORE_UNIT})", "share of the group's samples", subtitle=subtitle)
    fig.update_yaxes(tickformat=".0%")
    return fig


data = run_data.current_run()
cfg = data.config
ds = cfg.get("dataset") or {}
st.title(f"Overview · {common.inert(data.name)}")
st.caption(f"Dataset **{common.plain(ds.get('name') or cfg.get('manifest', {}).get('path', '?'))}** · "
           f"protocol **{common.inert(data.protocol)}**" + (f" with {run_data.protocol_folds(cfg)} folds" if data.protocol == "crossfit"
                                             else "")
           + f" · modalities **{', '.join(data.modalities)}** · {common.code(data.run.path)}")
options = run_data.scored_with(cfg)
if options is None:
    st.caption(f"Imported ({common.plain(cfg.get('source', 'not scored here'))}): no towers were trained here.")
else:
    given = {o["dest"]: o["value"] for o in options}
    st.caption(f"Towers: image **{common.plain(str(given['image_tower']))}** · text "
               f"**{common.plain(str(given['text_tower']))}** · " + common.inert(
                   f"{given['epochs']} epochs, batch {given['batch_size']}, {given['views']} views"))

t = data.table
n_scored = int(t["scored"].sum())
labels = run_data.store(data).labels()
c = st.columns(6)
c[0].metric("Samples", f"{len(t):,}")
c[1].metric("Scored", f"{n_scored:,}")
c[2].metric("Held out", f"{int((t['role'] == names.HELDOUT).sum()):,}")
c[3].metric("Skipped", f"{data.errors['id'].nunique():,}", help="Samples whose media could not be loaded")
c[4].metric("Injected", f"{int((t['injected'] != '').sum()):,}" if data.has_injected else "unknown",
            help="Known misalignments (built-in datasets only)")
c[5].metric("Flagged noisy", f"{sum(1 for v in labels.values() if v == 'noisy'):,}")

said = verdict(cfg)
if said.get("expected_auroc") is not None:
    st.markdown(f"#### {common.inert(said['verdict'])}")
    if said.get("warning"):
        st.warning(common.inert(said["warning"].removeprefix("WARNING: ")), icon=":material/warning:")
    virtual = (f" and {common.inert(said['n_virtual'])} wrong pairs formed from rows the scoring model never trained on"
               if said.get("n_virtual") else "")
    st.caption(f"Measured by the run's self-check: {common.inert(said.get('n_planted'))} known corruptions planted into training"
               f"{virtual} (never shown here or exported), ranked among the real rows, corrected for the wrong pairs "
               "the data already holds. The Samples page, Triage and Export rank by this column unless you pick "
               "another.")
else:
    st.caption(common.inert(said["verdict"]))
confidence_lines = format_confidence(cfg.get("confidence") or {}, advice=advice(cfg))
if said.get("expected_auroc") is not None:
    confidence_lines = confidence_lines[:1]  # the self-check's warning is the one that predicts quality
if len(confidence_lines) > 1:  # the figure is below its threshold: say so before any score is read
    st.warning(common.inert(confidence_lines[1].removeprefix("WARNING: ")), icon=":material/warning:")
if confidence_lines:
    st.caption(common.inert(confidence_lines[0].replace("confidence ", "Confidence: ", 1)))

if n_scored == 0:
    st.info("This run has no scores yet. When the engine finishes scoring, this page fills in by itself on "
            "the next reload.", icon=":material/hourglass_empty:")
    st.stop()

s = summaries(str(data.run.path), data.stamp)

left, right = st.columns(2, gap="large")
with left:
    title, subtitle, xlabel, groups = s["by_role"]
    st.plotly_chart(overlay_hist(groups, title, xlabel, subtitle), width="stretch", key="hist_role")
with right:
    st.plotly_chart(overlay_hist(s["by_kind"], "MultiMem by injected kind" if data.has_injected else
                                 "MultiMem of all scored samples", "MultiMem",
                                 "memorization = CMC in − CMC out; higher = more memorized"), width="stretch",
                    key="hist_kind")

left, right = st.columns(2, gap="large")
with left:
    contrib = s["contrib"]
    if len(contrib) == 0:
        st.caption("No per-modality contributions in this run (imported scores without `contrib__<modality>` "
                   "columns), so the chart of which modality drives memorization is absent.")
    fig = go.Figure(go.Bar(x=contrib["mean"], y=contrib["modality"], orientation="h",
                           error_x=dict(type="data", array=contrib["sem"]), marker_color=PALETTE[0],
                           hovertemplate="%{y}: %{x:+.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    st.plotly_chart(layout(fig, "Which modality drives memorization",
                           "drop in MultiMem when the modality is left out", "", height=380,
                           subtitle="mean contribution per modality ± standard error"), width="stretch",
                    key="contrib")
    order = " > ".join(contrib["modality"])
    if order:
        st.caption(f"This run: **{common.inert(order)}**. The paper found text > video > image > audio.")
with right:
    fig = go.Figure()
    for i, (name, frame) in enumerate([("all scored", s["pairs_all"])] +
                                      ([("injected only", s["pairs_inj"])] if "pairs_inj" in s else [])):
        fig.add_bar(x=frame["name"], y=frame["mean"], error_y=dict(type="data", array=frame["sem"]), name=name,
                    marker_color=PALETTE[i + 2], hovertemplate="%{x}: %{y:+.4f}<extra>" + name + "</extra>")
    fig = layout(fig, "Pairwise vs all-modality MultiMem", "modalities scored", "mean MultiMem", height=380,
                 subtitle="mean ± standard error; the paper: all modalities together score highest")
    fig.update_layout(barmode="group")
    st.plotly_chart(fig, width="stretch", key="pairs")

if "auroc" in s:
    st.subheader("How well each score finds the injected misalignments")
    left, right = st.columns([2, 3], gap="large")
    with left:
        auroc = s["auroc"]
        st.dataframe(auroc.assign(bar=auroc["auroc"])[["name", "auroc", "bar"]], hide_index=True, width="stretch",
                     height=38 + 35 * len(auroc),
                     column_config={
                         "name": st.column_config.TextColumn("score"),
                         "auroc": st.column_config.NumberColumn("AUROC", format="%.3f"),
                         "bar": st.column_config.ProgressColumn(" ", min_value=0.0, max_value=1.0, format=" ")})
        st.caption(f"AUROC over {int(auroc['injected'].iloc[0]):,} injected and {int(auroc['clean'].iloc[0]):,} "
                   "clean scored samples: the chance that a random injected sample looks more suspicious than a "
                   "random clean one (0.5 = chance). Cosine and CMC count low values as suspicious.")
    with right:
        fig = go.Figure()
        for i, (col, part) in enumerate(s["pak"].groupby("score", sort=False)):
            fig.add_scatter(x=part["k"], y=part["precision"], mode="lines", name=diagnose.score_label(col),
                            line=dict(color=PALETTE[i % len(PALETTE)], width=3 if col == "multimem" else 1.6),
                            hovertemplate="top %{x:,}: %{y:.1%}<extra>" + diagnose.score_label(col) + "</extra>")
        fig.add_hline(y=s["base_rate"], line_dash="dot", line_color="grey",
                      annotation_text=f"base rate {s['base_rate']:.1%}", annotation_position="bottom right")
        fig = layout(fig, "Precision at k", "k (samples removed, most suspicious first)", "precision",
                     height=440, subtitle="share of injected samples among the k most suspicious by each score")
        fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
        # small k is where a cleaning budget lives: a log axis shows it; the legend sits in the empty corner
        fig.update_xaxes(type="log")
        fig.update_layout(legend=dict(x=0.99, xanchor="right", y=0.98, yanchor="top", bgcolor="rgba(255,255,255,0.85)"))
        st.plotly_chart(fig, width="stretch", key="pak")
else:
    st.caption("No injected misalignments are known for this dataset, so AUROC and precision-at-k are not shown "
               "(they need the ground truth of the built-in datasets).")

if len(data.errors):
    st.subheader(f"Skipped samples ({data.errors['id'].nunique():,})")
    by = data.errors.groupby(["modality", "reason"]).size().reset_index(name="samples").sort_values("samples",
                                                                                                    ascending=False)
    left, right = st.columns([2, 3], gap="large")
    left.dataframe(by, hide_index=True, width="stretch")
    with right.expander("All skipped samples"):
        st.dataframe(data.errors.head(5000), hide_index=True, width="stretch")

timings = data.run.timings()
if timings:
    with st.expander("Where the time went"):
        st.dataframe(pd.DataFrame({"stage": list(timings), "seconds": list(timings.values())}), hide_index=True,
                     column_config={"seconds": st.column_config.NumberColumn(format="%.1f s")})

if options is not None:  # last, below the findings: how the run was made, for whoever reproduces it
    with st.expander("Every option it was scored with"):
        st.dataframe(pd.DataFrame([{"option": o["option"], "value": str(o["value"]),
                                    "changed": "yes" if o["value"] != o["default"] else "",
                                    "meaning": o["help"]} for o in options]), hide_index=True, width="stretch")
