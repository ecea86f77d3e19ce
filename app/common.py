"""What every page draws: the sidebar, flag and tag callbacks, formatting, media, sample cards, the pager.

The run's data (finding, loading, caching, joining) lives in app.run_data.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app.media import MediaPathError, check_image, read_media
from app.run_data import RunData, discover_runs, runs_root, serving_root, store
from multimem_core import diagnose, names
from multimem_core.launch import runs_folder
from multimem_core.review import ReviewError, ReviewStore, default_reviewer
from multimem_core.run import RunDirError
from multimem_core.repairs import record_repair, undo_repair
from multimem_core.saved_views import list_views

SELECTION = "selection_ids"  # session key: ids selected on the Map or picked in the table (a list)
SELECTION_SOURCE = "selection_source"  # "map" or "table": where the selection was made
FILTERED = "filtered_ids"  # session key: the Samples page's filtered ids (an array), in order (Map, Triage use it)
FILTER_NOTE = "filtered_note"  # session key: those filters in words ("label cat, unreviewed")
REVIEWER = "reviewer"
PENDING_VIEW = "pending_view"  # session key: a saved view the sidebar opened, for its page to apply
DETAIL_PAGE = "views/detail.py"
FLAG_ICONS = {"noisy": ":material/flag:", "ok": ":material/check_circle:", "unsure": ":material/help:"}
RUN_DAMAGED = (RunDirError, ReviewError)  # what a damaged run folder raises: its message is one clear line
MAX_CARD_TEXT = 240  # characters of a caption shown on a card (the detail page shows all)


# --- the frame: sidebar, run picker, reviewer --------------------------------------------------------------

def sidebar() -> None:
    """Run picker and reviewer field, drawn by main.py on every page."""
    root = runs_root()
    runs = discover_runs(str(root)) if root else []
    # runs started on the New-run page: in `root` when it is a folder of runs, else under the data root
    runs += [p for p in discover_runs(str(runs_folder(root))) if p not in runs]
    if runs:
        labels = {p: _run_label(p, root) for p in runs}
        current = st.session_state.get("run_path")
        index = runs.index(current) if current in runs else 0
        if len(runs) > 1:
            choice = st.sidebar.selectbox("Run", runs, index=index, format_func=labels.get, key="run_picker",
                                          help=f"Runs found under {root}")
        else:
            choice = runs[0]
            st.sidebar.caption(f"Run **{_md(labels[choice])}**")
        st.session_state["run_path"] = choice
    else:
        st.session_state.pop("run_path", None)
    # The name lives in a plain session key; the widget gets its own key, refilled every run. (Streamlit
    # forgets a widget's state on pages that do not draw it, and the name must survive page switches.)
    if REVIEWER not in st.session_state:
        st.session_state[REVIEWER] = default_reviewer()
    st.session_state["_reviewer_field"] = st.session_state[REVIEWER]
    st.sidebar.text_input("Reviewer", key="_reviewer_field", help="Your name, stored with every flag you set.",
                          on_change=lambda: st.session_state.update({REVIEWER: st.session_state["_reviewer_field"]}))
    saved_views_list()
    selected = st.session_state.get(SELECTION) or []
    if selected:
        where = "picked in the table" if st.session_state.get(SELECTION_SOURCE) == "table" else "on the map"
        st.sidebar.caption(f"Selection ({where}): **{len(selected):,}** samples")
        st.sidebar.button("Clear selection", on_click=lambda: st.session_state.pop(SELECTION, None))


def saved_views_list() -> None:
    """The run's saved views (review.sqlite): a button each, which opens its page with its filters."""
    path = st.session_state.get("run_path")
    if not path:
        return
    try:
        views = list_views(ReviewStore(Path(path) / "review.sqlite"))
    except RUN_DAMAGED:  # the page says what is wrong with the file
        st.sidebar.caption(":material/error: saved views unavailable: review.sqlite cannot be read")
        return
    if views:
        st.sidebar.caption("Saved views")
        for v in views:
            if st.sidebar.button(_md(v["name"]), key=f"saved_view_{v['name']}", icon=":material/bookmark:",
                                 type="tertiary"):
                # the page applies it and writes it into its URL (a link to the page that is open would
                # reach the script without changing the address bar)
                st.session_state[PENDING_VIEW] = v
                st.switch_page(f"views/{v['page']}.py")


def _run_label(path: str, root: Path | None) -> str:
    p = Path(path)
    if root is None:
        return p.name
    try:
        rel = str(p.relative_to(Path(root).resolve()))
    except ValueError:
        return p.name
    return p.name if rel in ("", ".") else rel


def reviewer() -> str:
    return str(st.session_state.get(REVIEWER) or default_reviewer())


def flag_ids(data: RunData, ids, label: str, *, source: str, reason: str = "") -> None:
    """Button callback: one committed row per id, before the page redraws."""
    try:
        ids = [ids] if isinstance(ids, str) else list(ids)
        seqs = store(data).flag(ids, label, reviewer=reviewer(), reason=reason, source=source)
        # one sample: say which, so that the reviewer sees the flag went where they meant
        st.session_state["_toast"] = f"Flagged {inert(ids[0])} as {label}" if len(ids) == 1 else \
            f"Flagged {len(seqs):,} as {label}"
    except ReviewError as e:
        st.session_state["_toast"] = f"Not saved: {inert(e)}"


def repair(data: RunData, sample_id: str, modality: str, from_id: str, *, source: str) -> None:
    """Button callback: sample_id takes `modality` from from_id (applied by an export with repairs)."""
    try:
        record_repair(store(data), sample_id, modality, from_id, reviewer=reviewer(), source=source)
        st.session_state["_toast"] = f"Repaired {inert(sample_id)}: its {modality} is now {inert(from_id)}'s"
    except ReviewError as e:
        st.session_state["_toast"] = f"Not saved: {inert(e)}"


def unrepair(data: RunData, seq: int) -> None:
    try:
        undo_repair(store(data), seq, reviewer=reviewer())
        st.session_state["_toast"] = f"Undid repair #{seq}"
    except ReviewError as e:
        st.session_state["_toast"] = f"Not undone: {inert(e)}"


def show_toast() -> None:
    msg = st.session_state.pop("_toast", None)
    if msg:
        st.toast(msg)


# --- formatting ----------------------------------------------------------------------------------------

def fmt(v, digits: int = 3, signed: bool = True) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or pd.isna(v):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _md(text: str) -> str:
    """Text made inert for st.markdown: no HTML, no links or images, no emphasis."""
    escaped = html.escape(str(text), quote=False)
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|~>$" else c for c in escaped)


def plain(text: str) -> str:
    return _md(text)


def inert(text) -> str:
    """Text shown as written inside Markdown (st.error, st.caption, a toast, a label or help), unable to form
    an image, a link or HTML. For messages and values that come from a run folder, the URL or an exception
    naming them: a sample id or media cell `![x](http://host/x.png)` would otherwise make the browser fetch
    from another host. Only what opens such syntax is escaped, so a path or `code` reads as it is."""
    return "".join("\\" + c if c in "\\[]<>!" else c for c in str(text))


def code(text: str) -> str:
    """Text inside a Markdown code span: shown verbatim, only backticks need to go."""
    return "`" + str(text).replace("`", "'") + "`"


def score_options(data: RunData) -> list[str]:
    return list(data.score_cols)


def keep_widgets(keys, *, save: bool = False) -> None:
    """Streamlit forgets a widget's value on pages that do not draw it: call once before a page's widgets to
    restore their values, and once after them with save=True, so filters survive a visit to another page."""
    for key in keys:
        shadow = f"_kept_{key}"
        if save:
            if key in st.session_state:
                st.session_state[shadow] = st.session_state[key]
        elif key not in st.session_state and shadow in st.session_state:
            st.session_state[key] = st.session_state[shadow]


def set_selection(ids, source: str) -> None:
    """The selection every page shares (cards, table, map, triage, export)."""
    st.session_state[SELECTION] = [str(i) for i in ids]
    st.session_state[SELECTION_SOURCE] = source


def tag_ids(data: RunData, ids, tag: str, *, remove: bool = False) -> None:
    """Button callback: add (or remove) a free tag on samples."""
    try:
        n = store(data).tag(list(ids), tag, reviewer=reviewer(), remove=remove)
        st.session_state["_toast"] = f"{'Untagged' if remove else 'Tagged'} {n:,} as {tag}"
    except ReviewError as e:
        st.session_state["_toast"] = f"Not saved: {inert(e)}"


def score_column_config(data: RunData) -> dict:
    """st.dataframe column settings: every score under its plain name, with what high means as help."""
    return {c: st.column_config.NumberColumn(diagnose.score_label(c), help=diagnose.score_help(c), format="%+.3f")
            for c in data.score_cols}


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail_uri(base: str, value: str, size: int = 96) -> str | None:
    """A small PNG of an image file as a data URI: the table's thumbnails (a page of rows at a time).
    `base` is the run's dataset folder (RunData.root); only files under serving_root() are read."""
    import base64
    import io

    from PIL import Image

    try:
        blob, _ = read_media(serving_root(), value, base=base)
        with Image.open(io.BytesIO(blob)) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except Exception:  # a broken or missing file shows as an empty cell; the card says why
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# --- media ---------------------------------------------------------------------------------------------

def show_media(data: RunData, row: pd.Series, modality: str, *, compact: bool = False) -> None:
    value = row.get(modality)
    if modality == "text":
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        if not text:
            st.caption("(no caption)")
            return
        shown = text if not compact or len(text) <= MAX_CARD_TEXT else text[:MAX_CARD_TEXT] + "…"
        st.text(shown)  # plain text: never Markdown, never HTML
        return
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        st.caption(f"(no {modality})")
        return
    try:  # whatever goes wrong with one file costs this card's media only, never the page
        blob, mime = read_media(serving_root(), str(value), base=data.root)
        if modality == "image":
            check_image(blob)
            st.image(blob, width="stretch" if compact else 360)
        elif modality == "audio":
            st.audio(blob, format=mime)
        elif modality == "video":
            if compact:
                st.video(blob, format=mime, loop=True, muted=True)
            else:
                st.video(blob, format=mime)
    except MediaPathError as e:
        st.error(f"{modality}: {inert(e)}", icon=":material/warning:")
    except Exception as e:  # noqa: BLE001 (a file no check foresaw: say so on the card)
        st.error(inert(f"{modality}: cannot show {str(value)!r} ({type(e).__name__}: {e})"), icon=":material/warning:")


# --- sample cards ------------------------------------------------------------------------------------

def card_grid(data: RunData, rows: pd.DataFrame, *, labels: dict[str, str], score: str, columns: int = 4,
              source: str, key: str, tags: dict | None = None) -> None:
    """Cards for `rows` (already filtered, sorted and paged), `columns` to a row."""
    for start in range(0, len(rows), columns):
        cols = st.columns(columns, gap="small")
        for col, (_, row) in zip(cols, rows.iloc[start:start + columns].iterrows()):
            with col:
                sample_card(data, row, labels=labels, score=score, source=source, key=key, tags=tags)


def sample_card(data: RunData, row: pd.Series, *, labels: dict[str, str], score: str, source: str, key: str,
                tags: dict | None = None) -> None:
    sid = str(row["id"])
    with st.container(border=True):
        st.page_link(DETAIL_PAGE, label=f"**{_md(sid)}**", icon=":material/open_in_new:", query_params={"id": sid},
                     help="Open the sample detail")
        label = labels.get(sid)
        facts = [_md(names.role_label(str(row["role"])))]
        if row.get("label"):
            facts.append(f"label {_md(row['label'])}")
        if row.get("injected"):
            facts.append(f"injected: {_md(row['injected'])}")
        facts.append(f"{FLAG_ICONS[label]} **{label}**" if label else "not reviewed")
        facts += [f"#{_md(t)}" for t in (tags or {}).get(sid, ())]
        st.caption(" · ".join(facts))
        visual = [m for m in ("image", "video") if m in data.modalities and m in row.index]
        if len(visual) == 2:
            left, right = st.columns(2, gap="small")
            for col, m in zip((left, right), visual):
                with col:
                    show_media(data, row, m, compact=True)
        else:
            for m in visual:
                show_media(data, row, m, compact=True)
        for m in ("text", "audio"):
            if m in data.modalities and m in row.index:
                show_media(data, row, m, compact=True)
        if bool(row.get("scored")):
            parts = [f"memorized **{fmt(row.get('multimem'))}**"]
            if score in data.score_cols and score != "multimem":
                parts.append(f"{_md(diagnose.score_label(score))} **{fmt(row.get(score))}**")
            st.markdown(" · ".join(parts))
            if row.get("reason"):
                st.caption(f":material/explore: {_md(row['reason'])}")
        else:
            st.caption("not scored (held out or skipped)")
        # no `help` on these: Streamlit draws a second, hidden copy of a button that has a tooltip
        b1, b2 = st.columns(2, gap="small")
        b1.button("Noisy", key=f"{key}_noisy_{sid}", icon=FLAG_ICONS["noisy"], on_click=flag_ids,
                  args=(data, [sid], "noisy"), kwargs={"source": source}, width="stretch")
        b2.button("OK", key=f"{key}_ok_{sid}", icon=FLAG_ICONS["ok"], on_click=flag_ids, args=(data, [sid], "ok"),
                  kwargs={"source": source}, width="stretch")


def paged(n: int, *, key: str, sizes=(12, 24, 48)) -> slice:
    """A compact pager over n items; returns the slice of the current page (page 1 again when n shrinks)."""
    c1, c2, c3 = st.columns([1, 1, 4])
    size = c1.selectbox("Per page", sizes, key=f"{key}_size")
    pages = max(1, -(-n // size))
    if st.session_state.get(f"{key}_page", 1) > pages:
        st.session_state[f"{key}_page"] = 1
    page = c2.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key=f"{key}_page")
    first = (page - 1) * size
    c3.markdown(f"<div style='padding-top:2.1rem'>Showing <b>{min(first + 1, n):,}–{min(first + size, n):,}</b> "
                f"of <b>{n:,}</b></div>", unsafe_allow_html=True)
    return slice(first, first + size)
