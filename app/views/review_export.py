"""Review & export: every decision with who and when, undo, and the cleaned dataset."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from app import common, run_data
from multimem_core import diagnose
from multimem_core.export import FORMATS, ID_FORMATS, MANIFEST_FORMATS, build_export, default_format, write_export
from multimem_core.repairs import current_repairs, repairs_path
from multimem_core.review import LABELS, DropRule, ReviewError, lower_is_worse

FORMAT_NAMES = {"csv": "cleaned manifest, CSV", "tsv": "cleaned manifest, TSV", "jsonl": "cleaned manifest, JSONL",
                "parquet": "cleaned manifest, Parquet", "ids": "removed ids, text (one a line)",
                "ids-csv": "removed ids, CSV with score", "npy": "removed ids, sorted .npy (DataComp style)",
                "shards": "cleaned dataset, WebDataset shards (a folder)"}
RULES = {"flagged": "Flagged as noisy", "top": "Top N by a score", "above": "Above a threshold",
         "below": "Below a threshold", "selection": "Current map selection"}

data = run_data.current_run()
store = run_data.store(data)
st.title("Review & export")

# --- decisions -----------------------------------------------------------------------------------------------
current = store.current()
history = store.history()
c = st.columns(4)
for i, label in enumerate(LABELS):
    c[i].metric(f"{common.FLAG_ICONS[label]} {label}", f"{int((current['label'] == label).sum()):,}")
c[3].metric("Decisions recorded", f"{len(history):,}",
            help="Every click is a row; undo adds a row too, so nothing is ever lost.")

fixes = current_repairs(store)
tab_now, tab_fix, tab_all = st.tabs(["Current flags (drops)", f"Repairs ({len(fixes):,})", "Full history and undo"])
with tab_fix:
    if len(fixes):
        st.caption("Each repaired sample takes one modality from another sample (the suggestion on its detail "
                   "or Triage page). An export with repairs applies them and writes what changed beside the file.")
        st.dataframe(fixes[["seq", "sample_id", "modality", "from_id", "reviewer", "created_at"]], hide_index=True,
                     width="stretch", height=min(400, 38 + 35 * len(fixes)), key="repairs_table",
                     column_config={"sample_id": "sample", "from_id": "takes it from", "created_at": "time (UTC)"})
        r1, r2 = st.columns([4, 1])
        pick = r1.selectbox("Repair to undo", fixes["seq"].tolist(), key="unfix_choice",
                            format_func=lambda q: (lambda r: f"#{q} · {r['sample_id']} · {r['modality']} from "
                                                   f"{r['from_id']}")(fixes.set_index("seq").loc[q]))
        r2.markdown("<div style='padding-top:1.7rem'></div>", unsafe_allow_html=True)
        r2.button("Undo repair", key="unfix_button", width="stretch", on_click=common.unrepair,
                  args=(data, int(pick)))
    else:
        st.info("No repairs yet. On a sample's detail page (\"Use this text\", image, audio or video) or in Triage "
                "(\"Replace the caption with it\"), a wrong caption, sound or image is replaced with the suggested "
                "one instead of dropping the sample.",
                icon=":material/build:")
with tab_now:
    if len(current):
        st.dataframe(current[["sample_id", "label", "reason", "reviewer", "created_at"]], hide_index=True,
                     width="stretch", height=min(400, 38 + 35 * len(current)),
                     column_config={"sample_id": "sample", "created_at": "time (UTC)"})
    else:
        st.info("No flags yet. Flag samples on the Samples, Sample detail or Map pages; they appear here.",
                icon=":material/flag:")
with tab_all:
    if len(history):
        st.dataframe(history, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(history)),
                     column_config={"sample_id": "sample", "created_at": "time (UTC)",
                                    "undoes": st.column_config.NumberColumn("undoes #", format="%d"),
                                    "undone_by": st.column_config.NumberColumn("undone by #", format="%d")})
        undoable = history[(history["action"] == "flag") & history["undone_by"].isna()]
        if len(undoable):
            u1, u2 = st.columns([4, 1])
            choice = u1.selectbox(
                "Decision to undo", undoable["seq"].tolist(), key="undo_choice",
                format_func=lambda s: (lambda r: f"#{s} · {r['sample_id']} · {r['label']} · {r['reviewer']} · "
                                       f"{r['created_at']}")(undoable.set_index("seq").loc[s]))
            u2.markdown("<div style='padding-top:1.7rem'></div>", unsafe_allow_html=True)
            if u2.button("Undo", key="undo_button", width="stretch"):
                try:
                    store.undo(int(choice), reviewer=common.reviewer(), source="review")
                    st.toast(f"Undid decision #{choice}")
                    st.rerun()
                except ReviewError as e:
                    st.error(common.inert(e))
    else:
        st.caption("The history is empty.")

# --- export ------------------------------------------------------------------------------------------------------
st.subheader("Export a cleaned dataset")
info = data.config.get("manifest") or {}
st.caption(f"Input manifest: {common.code(info.get('path', 'unknown'))} ({common.inert(info.get('format', '?'))}). The "
           "cleaned manifest keeps its format and column names, so your trainer reads it as before. "
           "The same export on the command line: `multimem export RUN --out FILE --drop flagged|top:N|above:T`.")
selection = st.session_state.get(common.SELECTION) or []
rules = [r for r in RULES if r != "selection" or selection]
if not data.score_cols:
    rules = [r for r in rules if r in ("flagged", "selection")]
e1, e2, e3 = st.columns([2, 2, 2])
rule_kind = e1.radio("Drop", rules, format_func=lambda r: RULES[r] + (f" ({len(selection):,})" if r == "selection"
                                                                      else ""), key="export_rule")
score = data.ranking
n, threshold = None, None
if rule_kind in ("top", "above", "below"):
    options = common.score_options(data)
    score = e2.selectbox("Score", options, index=options.index(data.ranking) if data.ranking in options else 0,
                         format_func=diagnose.score_label, key="export_score")
    if rule_kind == "top":
        n = int(e2.number_input("N", min_value=1, max_value=max(1, len(data.table)), value=min(100, len(data.table)),
                                step=10, key="export_n"))
    else:
        v = data.table[score].dropna()
        # the threshold that drops a tenth of the rows, from the side the rule drops (its own key per rule and
        # score, so that switching recomputes it)
        default = float(v.quantile(0.9 if rule_kind == "above" else 0.1)) if len(v) else 0.0
        threshold = float(e2.number_input("Threshold", value=round(default, 4), format="%.4f",
                                          key=f"export_threshold_{rule_kind}_{score}"))
        if lower_is_worse(score) == (rule_kind == "above"):
            e2.caption(f"For {diagnose.score_label(score)}, {'lower' if lower_is_worse(score) else 'higher'} "
                       "is more suspicious: this rule drops the least suspicious rows.")
formats = list(FORMATS)
fmt_default = default_format(data.run)
fmt = e3.selectbox("Format", formats, index=formats.index(fmt_default), format_func=FORMAT_NAMES.get,
                   key="export_format")

with_repairs = st.checkbox(f"Apply the {len(fixes):,} repairs", value=bool(len(fixes)), key="export_repairs",
                           disabled=not len(fixes) or fmt in ID_FORMATS,
                           help="The repaired samples' captions, sounds or images replaced; the list of changes "
                                "is written beside the export (NAME.repairs.csv). `multimem export --repairs`")
rule = DropRule("ids", ids=tuple(selection)) if rule_kind == "selection" else \
    DropRule(rule_kind, n=n, threshold=threshold, score=score)

if st.button("Build export", type="primary", key="export_build"):
    try:
        export = build_export(data.run, rule, format=fmt, store=store,
                              repairs=with_repairs and bool(len(fixes)) and fmt not in ID_FORMATS)
        stem = "cleaned_manifest" if fmt in MANIFEST_FORMATS else "cleaned_shards" if fmt == "shards" else "removed_ids"
        name = f"{stem}_{rule.kind}_{datetime.now():%Y%m%d-%H%M%S}"
        out = data.run.path / "exports" / f"{name}{export.suffix}"
        for k in range(2, 1000):  # two exports within a second: the second gets its own file, the first stays
            if not out.exists():
                break
            out = out.with_name(f"{name}-{k}{export.suffix}")
        write_export(export, out)
        st.session_state["export_result"] = (export, str(out), rule.describe())
    except ReviewError as e:
        st.session_state.pop("export_result", None)
        st.error(common.inert(e))

result = st.session_state.get("export_result")
if result:
    export, out, _ = result
    # the same line `multimem export` prints: what happened to every input row, the unloaded ones too
    st.success(f"{common.plain(export.summary())}. Written to {common.code(out)}.", icon=":material/check_circle:")
    if export.repairs is not None:
        st.caption(f"Applied **{len(export.repairs):,}** repairs to kept samples; the changes are in "
                   f"{common.code(str(repairs_path(out)))}.")
    d1, d2 = st.columns([1, 3])
    if export.data:  # shards are a folder on disk, nothing to download as one file
        d1.download_button("Download", export.data, file_name=out.rsplit("/", 1)[-1], key="export_download",
                           icon=":material/download:", width="stretch")
    if export.dropped:
        with d2.expander(f"Dropped ids ({len(export.dropped):,})"):
            st.dataframe(pd.DataFrame({"id": export.dropped[:10_000]}), hide_index=True, width="stretch")
