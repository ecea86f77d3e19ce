"""Mitigation: the runs of `multimem mitigate` as tables and plots, and a what-if preview of an
augmentation on chosen samples, computed with the run's saved models (no retraining)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import common, run_data
from multimem_core.mitigation.results import baseline, list_mitigations, memorization_change, removal_curves
from multimem_core.run import RunDirError
from multimem_core.targeted import DEFAULTS, TargetedAugment

PALETTE = {"multimem": "#E45756", "base__cosine": "#4C78A8", "base__clipmem": "#F58518", "random": "#9D9D9D",
           "-cmc_out": "#B279A2", "combo__meanrank": "#72B7B2", "none": "#54A24B"}
RANKING_LABEL = {"multimem": "MultiMem", "base__cosine": "cosine", "base__clipmem": "CLIPMem", "random": "random",
                 "-cmc_out": "-cmc_out (the model that never saw it)", "combo__meanrank": "mean rank",
                 "none": "nothing removed"}
AUG_HELP = {"noise": "Gaussian noise σ on the representations (paper: 0.1)", "caption": "token dropout and word order",
            "crop": "image/video crops down to 1 − strength of the side", "jitter": "brightness/contrast ±",
            "audio_noise": "additive noise σ", "audio_shift": "circular shift, share of the clip",
            "frame_drop": "share of video frames replaced by the previous one"}
AUG_MAX = {"noise": 1.0}
METRICS = {"recall@5": "retrieval recall@5 on H", "recall@1": "retrieval recall@1 on H",
           "recall@10": "retrieval recall@10 on H", "linear_probe": "linear probe accuracy",
           "zero_shot": "zero-shot accuracy",
           "multimem": "change of mean MultiMem on the kept rows (fine-tuned − the run's own scores there)"}
DIFFERENT_ROWS = ("recorded before mitigation compared memorization on the same rows: before is the mean over every "
                  "scored row, after over the rows the removal kept, so the two are not comparable. Run the same "
                  "`multimem mitigate` command again: it adds the run's scores on the kept rows without retraining.")


def layout(fig: go.Figure, title: str, x: str, y: str, *, height: int = 360) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0, xanchor="left", font=dict(size=15)), height=height,
                      margin=dict(l=10, r=10, t=48, b=10), xaxis_title=x, yaxis_title=y, template="plotly_white",
                      legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top"))
    return fig


def pct(v) -> str:
    return "–" if v is None or pd.isna(v) else f"{100 * v:+.1f} %"


def overview_table(mits: list[dict]) -> pd.DataFrame:
    rows = []
    for m in mits:
        met = m["metrics"] or {}
        before, after, ch = met.get("before") or {}, met.get("after") or {}, met.get("change") or {}
        base = baseline(before, after) if before and after else before.get("memorization")
        rows.append({
            "name": m["name"], "strategy": m["config"]["strategy"],
            "MultiMem change": pct(ch.get("multimem_mean_relative")) if base is not None else "– (different rows)",
            "R@5 change (pt)": ch.get("recall@5_points"),
            "MultiMem before": (base or {}).get("mean"), "MultiMem rows": (base or {}).get("n"),
            "MultiMem after": (after.get("memorization") or {}).get("mean"),
            "R@5 before": (before.get("evaluation") or {}).get("recall@5"),
            "R@5 after": (after.get("evaluation") or {}).get("recall@5"),
            "overhead": pct((met.get("overhead") or {}).get("share")).lstrip("+"),
            "seconds": met.get("seconds"), "status": "done" if met.get("seconds") is not None else "running",
            "augmentation": met.get("augment", ""),
        })
    return pd.DataFrame(rows)


def before_after(met: dict) -> None:
    """MultiMem and the headline metrics before (the control) and after, as st.metric with the change."""
    before, after = met.get("before"), met.get("after")
    if not before or not after:
        return
    cols = st.columns(5)
    base, a = baseline(before, after), after["memorization"]["mean"]
    if base is None:
        cols[0].metric("Mean MultiMem (kept rows)", f"{a:+.4f}", help="No change shown: this result was "
                       + DIFFERENT_ROWS)
    else:
        b = base["mean"]
        rows = (f"the run's own scores on the same {base['n']} kept rows (all {before['memorization']['n']} scored "
                f"rows: {before['memorization']['mean']:+.4f})" if base is not before["memorization"]
                else before.get("source", "the run"))
        cols[0].metric("Mean MultiMem", f"{a:+.4f}", delta=pct((a - b) / abs(b)) if b else None,
                       delta_color="inverse", help=f"before: {b:+.4f} ({common.inert(rows)})")
    for col, key in zip(cols[1:], ("recall@5", "recall@1", "linear_probe", "zero_shot")):
        if key in after["evaluation"] and key in before["evaluation"]:
            d = 100 * (after["evaluation"][key] - before["evaluation"][key])
            col.metric(METRICS[key], f"{after['evaluation'][key]:.3f}", delta=f"{d:+.2f} pt",
                       help=f"before: {before['evaluation'][key]:.3f}")


def regroup_section(met: dict) -> None:
    before_after(met)
    if met.get("overhead"):
        o = met["overhead"]
        st.caption(f"Re-scoring every {common.inert(met.get('every'))} epochs took {o['scoring_s']:.0f} s of "
                   f"{o['training_s']:.0f} s of training ({100 * o['share']:.1f} %). Before: the same training "
                   f"without mitigation ({common.inert(met['before'].get('source', 'the run'))}); after: every model "
                   "trained with mitigation and re-scored the way the run was.")
    hist = pd.DataFrame([{**h, "model": name} for name, hs in met.get("history", {}).items() for h in hs])
    if hist.empty:
        return
    mean = hist.groupby("epoch").mean(numeric_only=True).reset_index()
    c1, c2 = st.columns(2)
    fig = go.Figure()
    fig.add_scatter(x=mean["epoch"], y=mean["multimem_vs_reference"], mode="lines+markers", name="all training samples",
                    line=dict(color="#E45756"))
    for col, name, colour in (("injected", "injected", "#B279A2"), ("clean", "clean", "#54A24B")):
        if col in mean:
            fig.add_scatter(x=mean["epoch"], y=mean[col], mode="lines+markers", name=name, line=dict(color=colour))
    c1.plotly_chart(layout(fig, "Memorization while training", f"epoch (re-scored every {met.get('every', 1)})",
                           "MultiMem vs the run's g"), width="stretch", key="regroup_mem")
    c1.caption("During training each model is scored against the run's own never-saw-it models (a fixed "
               "reference): the curves show the trend and the gap between injected and clean samples; their level "
               "is not the re-scored MultiMem above.")
    fig = go.Figure()
    fig.add_scatter(x=mean["epoch"], y=mean["recall@5"], mode="lines+markers", name="with mitigation",
                    line=dict(color="#4C78A8"))
    if "recall@5" in met["before"]["evaluation"]:
        fig.add_hline(y=met["before"]["evaluation"]["recall@5"], line_dash="dash", line_color="#666",
                      annotation_text="without mitigation (end)", annotation_position="bottom left")
    c2.plotly_chart(layout(fig, "Retrieval while training", "epoch", "recall@5 on H"), width="stretch",
                    key="regroup_acc")
    if "selected_injected_share" in hist:
        share = hist.dropna(subset=["selected_injected_share"]).groupby("epoch")["selected_injected_share"].mean()
        c2.caption("Injected samples among the regrouped: "
                   + ", ".join(f"epoch {e}: {v:.0%}" for e, v in share.items()))


def sweep_section(met: dict) -> None:
    before_after(met)
    points = met.get("points", [])
    if not points:
        st.caption("No fine-tuned point yet.")
        return
    have = ["multimem"] + [k for k in METRICS if k != "multimem" and k in points[0]["evaluation"]]
    metric = st.selectbox("Plot", [m for m in METRICS if m in have], format_func=METRICS.get, key="sweep_metric")
    curves = removal_curves(points, metric)
    fig = go.Figure()
    for ranking in [r for r in PALETTE if r in set(curves["ranking"])]:
        part = curves[curves["ranking"] == ranking].sort_values("removed")
        many = int(part["draws"].max()) > 1
        fig.add_scatter(x=part["removed"], y=part["value"], mode="lines+markers",
                        name=RANKING_LABEL[ranking] + (f" (mean of {int(part['draws'].max())} draws)" if many else ""),
                        line=dict(color=PALETTE[ranking]),
                        error_y=dict(type="data", array=part["spread"], visible=True) if many else None)
    if met.get("n_injected"):
        fig.add_vline(x=met["n_injected"], line_dash="dot", line_color="#888",
                      annotation_text=f"{met['n_injected']} injected", annotation_position="top")
    st.plotly_chart(layout(fig, f"{METRICS[metric]} after removing the top N and fine-tuning "
                                f"{met.get('finetune', {}).get('epochs', '?')} epochs", "samples removed", metric),
                    width="stretch", key="sweep_plot")
    if metric == "multimem":
        st.caption("Each point keeps different rows, so its plain mean MultiMem is not comparable with another "
                   "point's; plotted is its change on its own kept rows, fine-tuned minus the run's own scores there.")
    if any("memorization_before" not in p for p in points):
        st.warning("Some points were " + DIFFERENT_ROWS, icon=":material/warning:")
    table = pd.DataFrame([{"ranking": RANKING_LABEL.get(p["ranking"], p["ranking"]), "draw": p.get("draw", 0),
                           "removed": p["n_removed"], "injected removed": p["injected_removed"],
                           "kept rows": p["memorization"].get("n"),
                           "MultiMem, run (kept rows)": (p.get("memorization_before") or {}).get("mean"),
                           "MultiMem, fine-tuned (kept rows)": p["memorization"]["mean"],
                           "MultiMem change": memorization_change(p), **p["evaluation"]} for p in points])
    st.dataframe(table.sort_values(["removed", "ranking", "draw"]), hide_index=True, width="stretch")


def augment_section(met: dict) -> None:
    rows = []
    before = met["before"]
    rows.append({"augmented": "none (control)", "MultiMem": before["memorization"]["mean"],
                 **{f"pair {k}": v for k, v in before["memorization"].get("pairs", {}).items()},
                 **before["evaluation"]})
    for r in met.get("rows", []):
        rows.append({"augmented": "+".join(r["modalities"]), "MultiMem": r["memorization"]["mean"],
                     **{f"pair {k}": v for k, v in r["memorization"].get("pairs", {}).items()}, **r["evaluation"],
                     "MultiMem change": pct(r["change"].get("multimem_mean_relative"))})
    st.caption("Memorization per modality pair and overall, and downstream accuracy, for each augmented subset "
               "(the paper's Table 3).")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


# --- what-if preview ---------------------------------------------------------------------------------------

@st.cache_resource(max_entries=1, show_spinner="Loading the run's models and data…")
def preview_models(path: str, stamp: tuple):
    from multimem_core.run import RunDir
    from multimem_core.whatif import PreviewModels

    return PreviewModels.load(RunDir(path), views=4)


@st.cache_data(max_entries=32, show_spinner="Embedding augmented views under every model…")
def preview_table(path: str, stamp: tuple, ids: tuple[str, ...], spec: str, modalities: tuple[str, ...],
                  n_clean: int) -> pd.DataFrame:
    from multimem_core.whatif import preview

    pm = preview_models(path, stamp)
    return preview(pm, list(ids), TargetedAugment.parse(spec, modalities or None), n_clean=n_clean)


def can_preview(data) -> str | None:
    run = data.run
    if not list(run.models_dir.glob("*/model.safetensors")):
        return "The run has no saved models (RUN/models/*/model.safetensors), so there is nothing to preview with."
    return outside_served_folder(data)


def outside_served_folder(data) -> str | None:
    """Why the preview may not read what the run's config.json names, or None.

    The preview decodes the run's dataset and loads its encoders from the paths config.json gives, and a run
    folder may come from someone else: like the New-run page, it reads only under the folder the app serves
    (its command line's --data-root), never media "outside the dataset folder", and downloads no hub weights."""
    from multimem_core.config import FROZEN_TEXT_TOWERS
    from multimem_core.data.paths import BadPathError, resolve_under

    root, model = run_data.serving_root(), data.config.get("model") or {}
    named = {"dataset": str(data.run.input_path)}
    if model.get("pretrained"):
        named["pretrained checkpoint"] = str(model["pretrained"])
    text = str(model.get("text_tower") or "")
    if text and text not in FROZEN_TEXT_TOWERS and ("/" in text or Path(text).exists()):
        named["text tower"] = text
    for what, path in named.items():
        try:
            if not resolve_under(root, path).is_file() and what == "pretrained checkpoint":
                return f"The run's pretrained weights ({path}) are no file under {root}, which the app reads " \
                       "from; an open_clip tag would be downloaded, and the dashboard fetches nothing."
        except BadPathError:
            return f"The run's {what} ({path}) lies outside {root}, the folder the app reads from (its " \
                   "--data-root): the preview reads nothing else. Start the app with --data-root on it to preview."
    if (data.config.get("media") or {}).get("allow_outside_root"):
        return "The run was scored with --allow-outside-root (media outside its dataset folder): the preview " \
               "reads no media there. Use `multimem mitigate` on it instead."
    return None


N_CLEAN = 32  # random clean samples the chosen ones are compared with


def preview_cost(data, n_chosen: int) -> str:
    """What the preview will cost, said before it runs: from this run's own scoring times (timings.json)."""
    models = len(list(data.run.models_dir.glob("*/model.safetensors")))
    views = 4
    per_view = None
    try:
        timings = data.run.timings()  # a bounded read of a regular file (a FIFO there would hang the page)
        scored_views = max(1, len(data.table)) * max(1, models) * int(data.config.get("views") or views)
        per_view = float(timings["embed"]) / scored_views
        load = float(timings.get("decode", 0)) + float(timings.get("prepare", 0))
    except (OSError, ValueError, KeyError, TypeError, RunDirError):
        pass
    held = int((data.table["role"].astype(str) == "H").sum())
    work = f"loads {models} models, decodes the dataset and embeds {n_chosen + N_CLEAN + held:,} samples × {views} views " \
           f"under each (the chosen, {N_CLEAN} clean ones and the held-out set)"
    if per_view is None:
        return f"The preview {work}."
    seconds = load + per_view * models * views * (held + 2 * (n_chosen + N_CLEAN))
    return f"The preview {work}: about {seconds:,.0f} s on this machine, judged from this run's scoring times. " \
           "Later previews on this run reuse the loaded models and take seconds."


def preview_section(data) -> None:
    t = data.table
    scored = t[t["scored"]] if "scored" in t else t.iloc[:0]
    why_not = can_preview(data)
    if why_not or scored.empty:
        st.info(common.inert(why_not) if why_not else "No scored samples.", icon=":material/info:")
        return
    order = scored.sort_values("multimem", ascending=False)["id"].astype(str).tolist()
    chosen_default = [str(i) for i in (st.session_state.get(common.SELECTION) or []) if str(i) in set(order)][:20]
    wanted = st.query_params.get("id")
    if wanted and str(wanted) in set(order):
        chosen_default = [str(wanted)]
    if not chosen_default:
        chosen_default = order[:3]
    source = "from the Map selection" if st.session_state.get(common.SELECTION) else "most memorized"
    c1, c2, c3, c4 = st.columns([4, 2, 2, 2])
    options = list(dict.fromkeys(chosen_default + order[:500]))
    ids = c1.multiselect("Samples", options, default=chosen_default, key="whatif_ids",
                         help=f"Preselected: {source}. Any scored sample; the list offers the 500 most memorized.")
    aug = c2.selectbox("Augmentation", list(DEFAULTS), key="whatif_aug", help="; ".join(f"{k}: {v}" for k, v in AUG_HELP.items()))
    strength = c3.slider("Strength", 0.0, AUG_MAX.get(aug, 1.0), float(DEFAULTS[aug]), step=0.01, key=f"whatif_s_{aug}",
                         help=AUG_HELP[aug])
    mods = c4.multiselect("Modalities", data.modalities, default=data.modalities, key="whatif_mods")
    if not ids:
        st.caption("Choose at least one sample.")
        return
    if not mods:
        st.caption("Choose at least one modality.")
        return
    args = (str(data.run.path), data.stamp, tuple(ids), f"{aug}={strength:g}",
            tuple(m for m in data.modalities if m in mods), N_CLEAN)
    # nothing heavy runs until asked: the first preview loads every model and decodes the dataset; once the
    # reviewer started it for this run, changed choices recompute at once (the models stay loaded)
    if st.session_state.get("whatif_started") != args[:2]:
        st.caption(f":material/schedule: {preview_cost(data, len(ids))}")
        if not st.button("Run the preview", key="whatif_run", icon=":material/play_arrow:", type="primary"):
            return
        st.session_state["whatif_started"] = args[:2]
    try:
        table = preview_table(*args)
    except (ValueError, KeyError, OSError, RunDirError) as e:
        st.error(f"Cannot preview: {common.inert(e)}")
        return
    from multimem_core.whatif import preview_summary

    summary = preview_summary(table)
    sel, clean = summary.iloc[0], summary.iloc[-1]
    m1, m2, m3 = st.columns(3)
    m1.metric(f"MultiMem of the chosen ({int(sel['n'])}), before → after",
              f"{sel['multimem_before']:+.4f} → {sel['multimem_after']:+.4f}",
              delta=f"{sel['multimem_change']:+.4f}", delta_color="inverse")
    m2.metric(f"Random clean samples ({int(clean['n'])}), before → after",
              f"{clean['multimem_before']:+.4f} → {clean['multimem_after']:+.4f}",
              delta=f"{clean['multimem_change']:+.4f}", delta_color="inverse")
    gap = sel["multimem_change"] - clean["multimem_change"]
    m3.metric("Targeting (chosen − clean change)", f"{gap:+.4f}",
              help="Negative: the augmentation lowers the chosen samples' memorization more than clean ones'.")
    fig = go.Figure()
    for col, name, colour in (("cmc_in", "CMC, models that saw it", "#E45756"),
                              ("cmc_out", "CMC, model that did not", "#4C78A8"),
                              ("multimem", "MultiMem", "#54A24B")):
        for when, pattern in (("before", ""), ("after", "/")):
            fig.add_bar(x=summary["group"], y=summary[f"{col}_{when}"], name=f"{name}, {when}",
                        marker=dict(color=colour, pattern_shape=pattern, opacity=1 if when == "before" else 0.6))
    fig.update_layout(barmode="group")
    st.plotly_chart(layout(fig, f"{aug} at {strength:g} on {', '.join(mods)}: means per group", "", "score"),
                    width="stretch", key="whatif_bars")
    show = table[["id", "group", "role", "injected", "cmc_in_before", "cmc_in_after", "cmc_out_before", "cmc_out_after",
                  "multimem_before", "multimem_after", "multimem_change"]]
    st.dataframe(show.round(4), hide_index=True, width="stretch", key="whatif_table")


# --- the page ------------------------------------------------------------------------------------------------

data = run_data.current_run()
st.title("Mitigation")
st.caption("Lower memorization and check what it does to downstream accuracy. Runs come from "
           "`multimem mitigate RUN --strategy remove|regroup|augment`; the preview below needs no training.")

mits = list_mitigations(data.run)
ev = data.run.path / "evaluation.json"
if mits:
    st.subheader("Mitigation runs")
    st.dataframe(overview_table(mits), hide_index=True, width="stretch", key="mitigation_runs")
    names = [m["name"] for m in mits]
    newest = max(range(len(mits)), key=lambda i: Path(mits[i]["path"], "config.json").stat().st_mtime)
    pick = st.selectbox("Show", names, index=newest, key="mitigation_pick")
    chosen = next(m for m in mits if m["name"] == pick)
    met = chosen["metrics"]
    if met is None:
        st.caption("This mitigation has not written metrics yet.")
    elif chosen["config"]["strategy"] == "regroup":
        regroup_section(met)
    elif chosen["config"]["strategy"] == "remove":
        sweep_section(met)
    else:
        augment_section(met)
else:
    st.info("No mitigation runs yet. Try `multimem mitigate RUN --strategy regroup` (in-training), "
            "`--strategy remove --sweep 0,50,100,200` (removal curve) or `--strategy augment --modalities all-subsets`.",
            icon=":material/info:")

st.subheader("What-if preview")
st.caption("How an augmentation would change the chosen samples' CMC under the models that saw them and the one "
           "that did not, and so their MultiMem, next to what it does to random clean samples. Computed with the "
           "run's saved models on the same random views before and after; nothing is retrained.")
preview_section(data)
