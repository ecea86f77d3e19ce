"""Samples: cards or a table of every sample, most memorized first; filters, bulk actions, one-click flags.

The filtered set (in display order) goes into the session for the Map (which shows it) and Triage (which
walks through it); rows picked in the table become the selection the Map shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import common, filters, run_data, url_state
from multimem_core import diagnose, names
from multimem_core.review import LABELS, ReviewError
from multimem_core.saved_views import save_view

VIEWS = {"cards": ":material/grid_view: Cards", "table": ":material/table_rows: Table"}
THUMBNAIL_ROWS = 1_000  # image thumbnails in the table (each is read and resized): at most this many rows
TABLE_ROWS = 50_000  # rows of the table in one piece; more are paged
KEPT = ["samples_sort", "samples_labels", "samples_flag", "samples_tags", "samples_roles",
        "samples_kinds", "samples_filter_col", "samples_query", "samples_text_mode", "samples_view"]


@st.cache_data(max_entries=8, show_spinner=False)
def score_range(path: str, stamp: tuple, column: str) -> tuple[float, float]:
    v = run_data.load_run(path).table[column].to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return (float(v.min()), float(v.max())) if len(v) else (0.0, 0.0)


def filter_widgets(data: run_data.RunData, all_tags: list[str]) -> filters.Filters:
    t = data.table
    sorts = common.score_options(data) + [c for c in filters.SORT_COLUMNS if c == "_flag" or c in t.columns]
    name = lambda c: filters.SORT_COLUMNS.get(c) or diagnose.score_label(c)  # noqa: E731
    st.session_state.setdefault("samples_sort", data.ranking if data.ranking in sorts else sorts[0])
    c1, c2, c3, c4, c5 = st.columns([2, 1.3, 2, 1.6, 1.6])
    sort = c1.selectbox("Sort by", sorts, format_func=name, key="samples_sort",
                        help="Any score, or id, dataset label, caption, flag or reason")
    # most suspicious first by default: highest for memorization scores, lowest for agreement and cosine
    orders = ["lowest first", "highest first"] if sort in names.LOWER_IS_WORSE or sort not in data.score_cols \
        else ["highest first", "lowest first"]
    ascending = c2.selectbox("Order", orders, key=f"samples_order_{sort}") == "lowest first"
    dataset_labels = run_data.distinct(str(data.run.path), data.stamp, "label")
    label_pick = c3.multiselect("Dataset label", dataset_labels, key="samples_labels", placeholder="any label",
                                disabled=not dataset_labels, help=None if dataset_labels else "This dataset has no labels")
    flag_state = c4.selectbox("Flag", filters.FLAG_STATES, key="samples_flag")
    tag_pick = c5.multiselect("Tag", all_tags, key="samples_tags", placeholder="any tag", disabled=not all_tags,
                              help=None if all_tags else "No tags yet: tag samples with the bulk actions below")

    c1, c2, c3, c4 = st.columns([2, 2.6, 2, 2])
    options = common.score_options(data)
    st.session_state.setdefault("samples_filter_col", sort if sort in options else options[0])
    filter_col = c1.selectbox("Score range of", options, format_func=diagnose.score_label, key="samples_filter_col",
                              help="Any score, e.g. one modality pair")
    lo, hi = score_range(str(data.run.path), data.stamp, filter_col)
    rng = (lo, hi)
    if hi > lo:
        key = f"samples_range_{filter_col}"
        st.session_state.setdefault(key, (lo, hi))  # a shared link may have set it already
        rng = c2.slider(diagnose.score_label(filter_col), lo, hi, key=key, format="%.3f",
                        help=diagnose.score_help(filter_col))
    roles = sorted(run_data.distinct(str(data.run.path), data.stamp, "role"), key=lambda r: (r == names.HELDOUT, r))
    role_pick = c3.multiselect("Part of the protocol", roles, format_func=names.role_label, key="samples_roles",
                               placeholder="all", help="Which fold (or set) the sample is in; held out = no model "
                                                       "trained on it")
    kinds = run_data.distinct(str(data.run.path), data.stamp, "injected") if data.has_injected else []
    kind_pick = c4.multiselect("Injected kind", ["clean", *kinds], key="samples_kinds", placeholder="any",
                               disabled=not kinds, help=None if kinds else "No injected misalignments known")

    c1, c2, c3 = st.columns([4, 1.6, 2.4])
    query = c1.text_input("Caption", key="samples_query", placeholder="words the caption contains, or a regex")
    st.session_state.setdefault("samples_text_mode", "all words")
    mode = c2.segmented_control("Match", filters.TEXT_MODES, key="samples_text_mode") or "all words"
    selection = st.session_state.get(common.SELECTION) or []
    only = None
    if selection:
        st.session_state.setdefault("samples_only_sel", st.session_state.get(common.SELECTION_SOURCE) == "map")
        c3.markdown("<div style='padding-top:2.1rem'></div>", unsafe_allow_html=True)
        if c3.toggle(f"Only the selection ({len(selection):,})", key="samples_only_sel"):
            only = set(selection)
    return filters.Filters(sort=sort, ascending=ascending, roles=role_pick, labels=label_pick, kinds=kind_pick,
                           flag=flag_state, tags=tag_pick, score=filter_col,
                           score_range=None if rng == (lo, hi) else tuple(rng), text=query, text_mode=mode,
                           only_ids=only)


URL_KEYS = ("sort", "order", "label", "flag", "tag", "role", "kind", "range", "q", "mode", "view", "sel")


def default_sort(data: run_data.RunData) -> str:
    return "multimem" if "multimem" in data.score_cols else (data.score_cols or ["id"])[0]


def apply_query(data: run_data.RunData, q: url_state.Query, all_tags: list[str]) -> None:
    """A shared link or a saved view: set the filter widgets from the URL (unknown values are left out)."""
    ss, t = st.session_state, data.table
    sorts = common.score_options(data) + [c for c in filters.SORT_COLUMNS if c == "_flag" or c in t.columns]
    sort = url_state.one(q, "sort")
    ss["samples_sort"] = sort if sort in sorts else default_sort(data)
    if url_state.one(q, "order") in ("asc", "desc"):
        ss[f"samples_order_{ss['samples_sort']}"] = "lowest first" if url_state.one(q, "order") == "asc" \
            else "highest first"
    known = {c: run_data.distinct(str(data.run.path), data.stamp, c) for c in ("label", "role", "injected")}
    ss["samples_labels"] = [v for v in q.get("label", []) if v in known["label"]]
    ss["samples_flag"] = url_state.one(q, "flag", "any") if url_state.one(q, "flag") in filters.FLAG_STATES else "any"
    ss["samples_tags"] = [v for v in q.get("tag", []) if v in all_tags]
    ss["samples_roles"] = [v for v in q.get("role", []) if v in known["role"]]
    ss["samples_kinds"] = [v for v in q.get("kind", []) if v == "clean" or v in known["injected"]]
    ss["samples_query"] = url_state.one(q, "q", "")
    ss["samples_text_mode"] = url_state.one(q, "mode") if url_state.one(q, "mode") in filters.TEXT_MODES \
        else "all words"
    col, _, bounds = (url_state.one(q, "range") or "").partition(":")
    if col in data.score_cols:
        lo, hi = score_range(str(data.run.path), data.stamp, col)
        try:
            a, b = (float(v) for v in bounds.split(":"))
            ss["samples_filter_col"] = col
            ss[f"samples_range_{col}"] = (min(max(a, lo), hi), min(max(b, lo), hi))
        except ValueError:
            pass
    else:
        for key in [k for k in ss if str(k).startswith("samples_range_")]:
            del ss[key]
    ss["samples_view"] = "table" if url_state.one(q, "view") == "table" else "cards"
    picked = [i for i in q.get("sel", []) if data.row_of(i) is not None]
    if picked:
        common.set_selection(picked, "table")
    ss["samples_only_sel"] = bool(picked)


def query_of(data: run_data.RunData, f: filters.Filters, view: str) -> url_state.Query:
    q: url_state.Query = {}
    orders_default = f.sort in names.LOWER_IS_WORSE or f.sort not in data.score_cols
    if f.sort != default_sort(data) or f.ascending != orders_default:
        q["sort"], q["order"] = [f.sort], ["asc" if f.ascending else "desc"]
    q["label"], q["tag"], q["role"], q["kind"] = list(f.labels), list(f.tags), list(f.roles), list(f.kinds)
    if f.flag != "any":
        q["flag"] = [f.flag]
    if f.score_range is not None:
        q["range"] = [f"{f.score}:{f.score_range[0]!r}:{f.score_range[1]!r}"]
    if f.text.strip():
        q["q"] = [f.text]
        if f.text_mode != "all words":
            q["mode"] = [f.text_mode]
    if view == "table":
        q["view"] = ["table"]
    if f.only_ids is not None:
        q["sel"] = url_state.selection_param(st.session_state.get(common.SELECTION))
    return q


def save_view_box(data: run_data.RunData, query: url_state.Query) -> None:
    with st.popover("Save this view", icon=":material/bookmark_add:"):
        name = st.text_input("Name", key="view_name", placeholder="e.g. dogs, unreviewed, caption wrong")
        if st.button("Save", key="view_save"):
            try:
                save_view(run_data.store(data), name, "samples", query, reviewer=common.reviewer())
                st.session_state["_toast"] = f"Saved the view {common.inert(repr(name.strip()))}: it is in the sidebar"
                st.rerun()
            except ReviewError as e:
                st.error(common.inert(e))
        if query.get("sel") == [] and st.session_state.get("samples_only_sel"):
            st.caption(f"The selection is larger than {url_state.MAX_SELECTION_IN_URL} samples: the view keeps "
                       "the filters without it.")


def bulk_actions(data: run_data.RunData, ids: list[str], note: str) -> None:
    with st.expander(f"Act on these {len(ids):,} samples ({common.inert(note)})", icon=":material/checklist:"):
        cols = st.columns(len(LABELS) + 1)
        for col, label in zip(cols, LABELS):
            col.button(f"Flag all as {label}", key=f"bulk_{label}", icon=common.FLAG_ICONS[label], width="stretch",
                       on_click=common.flag_ids, args=(data, ids, label), kwargs={"source": "samples-bulk"})
        if cols[-1].button("Triage them one by one", key="bulk_triage", icon=":material/keyboard:", width="stretch"):
            st.session_state["triage_source"] = "filters"
            st.switch_page("views/triage.py")
        c1, c2, c3, c4 = st.columns([3, 1.2, 1.2, 2.4])
        tag = c1.text_input("Tag", key="bulk_tag", placeholder="e.g. watermark, duplicate, wrong language",
                            label_visibility="collapsed")
        c2.button("Tag all", key="bulk_tag_add", icon=":material/sell:", width="stretch", disabled=not tag.strip(),
                  on_click=common.tag_ids, args=(data, ids, tag.strip()))
        c3.button("Untag all", key="bulk_tag_remove", width="stretch", disabled=not tag.strip(),
                  on_click=common.tag_ids, args=(data, ids, tag.strip()), kwargs={"remove": True})
        if c4.button("Export without them…", key="bulk_export", icon=":material/ios_share:", width="stretch"):
            common.set_selection(ids, "table")
            st.session_state["export_rule"] = "selection"
            st.switch_page("views/review_export.py")


def table_view(data: run_data.RunData, page: pd.DataFrame, labels: dict, tags: dict) -> None:
    shown = pd.DataFrame({"id": page["id"].to_numpy()})
    config = {"id": st.column_config.TextColumn("id", pinned=True)}
    if "image" in data.modalities and "image" in page.columns and len(page) <= THUMBNAIL_ROWS:
        root = str(data.root)
        shown.insert(0, "thumbnail", [common.thumbnail_uri(root, str(v)) if isinstance(v, str) and v else None
                                      for v in page["image"]])
        config["thumbnail"] = st.column_config.ImageColumn("image", width="small")
    if "text" in page.columns:
        shown["caption"] = page["text"].fillna("").astype(str).to_numpy()
        config["caption"] = st.column_config.TextColumn("caption", width="large")
    if page["label"].astype(bool).any():
        shown["label"] = page["label"].to_numpy()
    shown["flag"] = filters.flag_column(page["id"], labels)
    shown["tags"] = [", ".join(tags.get(i, ())) for i in page["id"]]
    shown["reason"] = page["reason"].to_numpy()
    config["reason"] = st.column_config.TextColumn("why (model that never saw it)", width="large",
                                                   help="The modality that disagrees with the others")
    for c in data.score_cols:
        shown[c] = page[c].to_numpy()
    config.update(common.score_column_config(data))
    event = st.dataframe(shown, hide_index=True, width="stretch", height=min(38 + 56 * len(shown), 760),
                         row_height=56 if "thumbnail" in shown else None, column_config=config,
                         on_select="rerun", selection_mode="multi-row", key="samples_table")
    picked = shown["id"].iloc[list(event.selection.rows)].tolist() if event and event.selection.rows else []
    if picked and picked != st.session_state.get("samples_table_last"):
        st.session_state["samples_table_last"] = picked
        common.set_selection(picked, "table")
        st.rerun()  # the sidebar and the bulk actions show the new selection
    if picked:
        st.caption(f"{len(picked):,} rows picked: they are the selection the Map highlights.")


data = run_data.current_run()
st.title("Samples")
st.caption("Most memorized first. Flag a noisy pair with one click; every click is saved at once to "
           "`review.sqlite`. Each sample says why it scores high: the modality that disagrees under the model "
           "that never trained on it.")
common.keep_widgets(KEPT)
review = run_data.store(data)
labels, tags = review.labels(), review.tags()
all_tags = sorted({t for have in tags.values() for t in have})
if (shared := url_state.incoming("samples", URL_KEYS)) is not None:
    apply_query(data, shared, all_tags)
if (view_opened := st.session_state.pop(common.PENDING_VIEW, None)) and view_opened["page"] == "samples":
    apply_query(data, view_opened["params"], all_tags)
if data.score_cols:
    chosen = filter_widgets(data, all_tags)
else:
    st.info("This run has no scores yet, so samples are listed in manifest order.", icon=":material/hourglass_empty:")
    chosen = filters.Filters(sort="id", ascending=True)
dynamic = chosen.sort in ("_flag",)
order = None if dynamic else run_data.sorted_rows(str(data.run.path), data.stamp, chosen.sort, chosen.ascending)
try:
    rows = filters.matching_rows(data.table, data.search_text, chosen, labels=labels, tags=tags, order=order)
except filters.FilterError as e:
    st.error(common.inert(e), icon=":material/error:")
    st.stop()
common.keep_widgets(KEPT, save=True)
ids = data.ids[rows]  # an array, not a list: no million-element conversion per rerun
st.session_state[common.FILTERED] = ids
st.session_state[common.FILTER_NOTE] = chosen.describe()
query = query_of(data, chosen, st.session_state.get("samples_view") or "cards")
url_state.write("samples", URL_KEYS, query)

if len(rows) == 0:
    st.info("No sample matches these filters. Widen the score range, clear the caption search or pick "
            "another flag state.", icon=":material/search_off:")
    st.stop()
bulk_actions(data, ids, chosen.describe())
st.session_state.setdefault("samples_view", "cards")
v1, v2 = st.columns([4, 1.2])
view = v1.segmented_control("View", list(VIEWS), format_func=VIEWS.get, key="samples_view",
                            label_visibility="collapsed") or "cards"
with v2:
    save_view_box(data, query)
if view == "table":
    # up to TABLE_ROWS matching samples in one table, in the server's order: a click on a column header then
    # sorts every one of them. Beyond that, pages of TABLE_ROWS: a browser grid and the message that carries
    # it stay small, and "Sort by" above sorts all of them.
    by = filters.SORT_COLUMNS.get(chosen.sort) or diagnose.score_label(chosen.sort)
    whole = len(rows) <= TABLE_ROWS
    st.caption(f"**{len(rows):,}** of {len(data.table):,} samples match, sorted by {common.inert(by)}; "
               + ("click a column header to sort all of them by it." if whole else
                  f"a column header sorts the {TABLE_ROWS:,} rows of a page, *Sort by* above sorts all of them.")
               + ("" if len(rows) <= THUMBNAIL_ROWS else f" Thumbnails show when at most {THUMBNAIL_ROWS:,} match."))
    shown_rows = rows if whole else rows[common.paged(len(rows), key="samples_table", sizes=(TABLE_ROWS,))]
    table_view(data, data.table.iloc[shown_rows], labels, tags)
else:
    page = data.table.iloc[rows[common.paged(len(rows), key="samples_cards", sizes=(12, 24, 48))]]
    common.card_grid(data, page, labels=labels, score=chosen.sort, source="samples", key="grid", tags=tags)
