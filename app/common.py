"""What every page shares: finding and loading runs (cached), the sidebar, sample cards, media, flags.

Loading happens once per run version (`st.cache_resource`, keyed by the files' modification times, so
a re-scored run reloads by itself); a rerun only filters, sorts and slices the cached table. The
cached objects are shared between sessions and must be treated as read-only.
"""

from __future__ import annotations

import html
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app.filters import sort_order
from app.media import MediaPathError, read_media
from multimem_core import diagnose
from multimem_core.launch import runs_folder
from multimem_core.review import ReviewError, ReviewStore, default_reviewer
from multimem_core.run import RunDir, RunDirError

ENV_RUN = "MULTIMEM_RUN"  # the run (or folder of runs) the app shows, when not given after `--`
SELECTION = "selection_ids"  # session key: ids selected on the Map or picked in the table (a list)
SELECTION_SOURCE = "selection_source"  # "map" or "table": where the selection was made
FILTERED = "filtered_ids"  # session key: the Samples page's filtered set, in its order (Map and Triage use it)
FILTER_NOTE = "filtered_note"  # session key: those filters in words ("label cat, unreviewed")
REVIEWER = "reviewer"
DETAIL_PAGE = "views/detail.py"
FLAG_ICONS = {"noisy": ":material/flag:", "ok": ":material/check_circle:", "unsure": ":material/help:"}
MAX_CARD_TEXT = 240  # characters of a caption shown on a card (the detail page shows all)


# --- which run ----------------------------------------------------------------------------------------

def runs_root() -> Path | None:
    """The path given to `multimem app`: `--run PATH` after `--`, else $MULTIMEM_RUN."""
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("main.py") else []
    for i, arg in enumerate(argv):
        if arg == "--run" and i + 1 < len(argv):
            return Path(argv[i + 1]).expanduser()
        if arg.startswith("--run="):
            return Path(arg.split("=", 1)[1]).expanduser()
    value = os.environ.get(ENV_RUN, "").strip()
    return Path(value).expanduser() if value else None


@st.cache_data(ttl=10, show_spinner=False)
def discover_runs(root: str) -> list[str]:
    """Run directories at `root`: itself if it is one, else the complete ones up to two levels below, newest first."""
    base = Path(root)
    if RunDir(base).exists():
        return [str(base.resolve())]
    found = []
    if base.is_dir():
        for cfg in list(base.glob("*/config.json")) + list(base.glob("*/*/config.json")):
            if RunDir(cfg.parent).is_complete():  # not a run being written, failed or killed midway
                found.append(cfg.parent.resolve())
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p) for p in found]


def _stamp(run: RunDir) -> tuple:
    """Changes whenever the engine rewrites a file the app caches."""
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in
                 (run.config_path, run.samples_path, run.scores_path, run.projection_path, run.errors_path))


# --- the loaded run ------------------------------------------------------------------------------------

@dataclass
class RunData:
    run: RunDir
    stamp: tuple
    config: dict
    modalities: list[str]
    protocol: str
    table: pd.DataFrame  # every sample (samples.parquet order) with its scores joined; NaN where unscored
    score_cols: list[str]
    score_row: np.ndarray  # per table row, its row in scores.parquet (and the sim matrices); -1 if unscored
    errors: pd.DataFrame
    has_injected: bool
    search_text: pd.Series  # lower-cased captions for the text filter
    position: dict  # id -> row in `table`

    @property
    def name(self) -> str:
        return self.run.path.name

    @property
    def root(self) -> Path:
        return self.run.dataset_root

    @property
    def key(self) -> tuple:
        return (str(self.run.path), self.stamp)

    @property
    def ranking(self) -> str:
        """The column the run ranks by (the one its self-check found best), if the run has it; else multimem."""
        column = str(self.config.get("ranking") or "multimem").lstrip("-")
        if column in self.score_cols:
            return column
        return "multimem" if "multimem" in self.score_cols else (self.score_cols[0] if self.score_cols else "id")

    def row_of(self, sample_id: str) -> int | None:
        """The sample's row in `table`, or None if the run has no such id."""
        hit = self.position.get(str(sample_id))
        return None if hit is None else int(hit)


def protocol_name(config: dict) -> str:
    """config["protocol"] is the engine's ProtocolConfig ({"name": ..., "folds": ...}) or a bare name."""
    p = config.get("protocol", "crossfit")
    return str(p.get("name", "crossfit")) if isinstance(p, dict) else str(p)


def protocol_folds(config: dict) -> int | None:
    p = config.get("protocol")
    folds = p.get("folds") if isinstance(p, dict) else config.get("folds")
    return int(folds) if folds else None


@st.cache_resource(max_entries=3, show_spinner="Loading the run…")
def _load(path: str, stamp: tuple) -> RunData:
    run = RunDir(path)
    config = run.config()
    samples = run.samples()
    samples["id"] = samples["id"].astype(str)
    scores = run.scores()
    if scores is None:
        scores = pd.DataFrame({"id": pd.Series(dtype=str)})
    scores = scores.copy()
    scores["id"] = scores["id"].astype(str)
    score_cols = diagnose.score_columns(scores)
    scores["_score_row"] = np.arange(len(scores))
    table = samples.merge(scores[["id", "_score_row", *score_cols]], on="id", how="left")
    score_row = table.pop("_score_row").fillna(-1).astype(np.int64).to_numpy()
    table["scored"] = score_row >= 0
    if "injected" not in table.columns:
        table["injected"] = ""
    table["injected"] = table["injected"].fillna("").astype(str)
    text = table["text"].fillna("").astype(str).str.lower() if "text" in table.columns else pd.Series([""] * len(table))
    # the one-line reason, computed once per run (RUN/diagnostics/reasons.parquet), never per view
    reasons = diagnose.reasons(run)
    reason_of = dict(zip(reasons["id"].astype(str), reasons["reason"]))
    table["reason"] = [reason_of.get(i, "") for i in table["id"]]
    table["label"] = table["label"].fillna("").astype(str) if "label" in table.columns else ""
    return RunData(run=run, stamp=stamp, config=config, modalities=list(config["modalities"]),
                   protocol=protocol_name(config), table=table, score_cols=score_cols,
                   score_row=score_row, errors=run.errors(), has_injected=bool((table["injected"] != "").any()),
                   search_text=text, position=dict(zip(table["id"], range(len(table)))))


def load_run(path: str | Path) -> RunData:
    run = RunDir(path)
    return _load(str(run.path), _stamp(run))


@st.cache_data(max_entries=16, show_spinner=False)
def sorted_rows(path: str, stamp: tuple, column: str, ascending: bool) -> np.ndarray:
    """Row order of the whole table by a column that does not change while the app runs (a score, id,
    label, caption, reason): sorted once per run version, reused by every filter and page."""
    return sort_order(load_run(path).table, column, ascending)


@st.cache_resource(max_entries=4, show_spinner="Building the neighbour index…")
def neighbour_index(path: str, stamp: tuple, model: str) -> diagnose.NeighbourIndex:
    return diagnose.NeighbourIndex.from_run(RunDir(path), model)


@st.cache_resource(max_entries=3, show_spinner=False)
def similarity_matrices(path: str, stamp: tuple):
    return RunDir(path).similarity_matrices()


@st.cache_data(max_entries=3, show_spinner=False)
def projection(path: str, stamp: tuple) -> pd.DataFrame | None:
    df = RunDir(path).projection()
    if df is not None:
        df["id"] = df["id"].astype(str)
    return df


# --- the frame: sidebar, run picker, reviewer --------------------------------------------------------------

def sidebar() -> None:
    """Run picker and reviewer field, drawn by main.py on every page."""
    root = runs_root()
    runs = discover_runs(str(root)) if root else []
    # runs started on the New-run page: in `root` when it is a folder of runs, else under the data root
    runs += [p for p in discover_runs(str(runs_folder(root))) if p not in runs]
    if runs:
        names = {p: _run_label(p, root) for p in runs}
        current = st.session_state.get("run_path")
        index = runs.index(current) if current in runs else 0
        if len(runs) > 1:
            choice = st.sidebar.selectbox("Run", runs, index=index, format_func=names.get, key="run_picker",
                                          help=f"Runs found under {root}")
        else:
            choice = runs[0]
            st.sidebar.caption(f"Run **{_md(names[choice])}**")
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
    selected = st.session_state.get(SELECTION) or []
    if selected:
        where = "picked in the table" if st.session_state.get(SELECTION_SOURCE) == "table" else "on the map"
        st.sidebar.caption(f"Selection ({where}): **{len(selected):,}** samples")
        st.sidebar.button("Clear selection", on_click=lambda: st.session_state.pop(SELECTION, None))


def _run_label(path: str, root: Path | None) -> str:
    p = Path(path)
    if root is None:
        return p.name
    try:
        rel = str(p.relative_to(Path(root).resolve()))
    except ValueError:
        return p.name
    return p.name if rel in ("", ".") else rel


def current_run() -> RunData:
    """The selected run, loaded; if there is none, an empty state that says what to do, and stop."""
    path = st.session_state.get("run_path")
    if not path:
        root = runs_root()
        where = f"No run found at `{root}`." if root else "No run given."
        st.info(f"{where} Make one with `multimem demo` (or `multimem score MANIFEST --out RUN`), then open it "
                "with `multimem app RUN` (or a folder of runs).", icon=":material/info:")
        st.stop()
    try:
        return load_run(path)
    except (RunDirError, FileNotFoundError, KeyError, ValueError) as e:
        st.error(f"Cannot read the run at `{path}`: {e}")
        st.stop()


def store(data: RunData) -> ReviewStore:
    return ReviewStore.for_run(data.run)


def reviewer() -> str:
    return str(st.session_state.get(REVIEWER) or default_reviewer())


def flag_ids(data: RunData, ids, label: str, *, source: str, reason: str = "") -> None:
    """Button callback: one committed row per id, before the page redraws."""
    try:
        seqs = store(data).flag(list(ids) if not isinstance(ids, str) else ids, label, reviewer=reviewer(),
                                reason=reason, source=source)
        st.session_state["_toast"] = f"Flagged {len(seqs):,} as {label}"
    except ReviewError as e:
        st.session_state["_toast"] = f"Not saved: {e}"


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


def code(text: str) -> str:
    """Text inside a Markdown code span: shown verbatim, only backticks need to go."""
    return "`" + str(text).replace("`", "'") + "`"


def score_options(data: RunData) -> list[str]:
    return list(data.score_cols)


def role_label(role: str) -> str:
    """Which part of the protocol a sample is in, in words (never "role fold0")."""
    if role.startswith("fold") and role[4:].isdigit():
        return f"fold {role[4:]}"
    return {"H": "held out (no model trained on it)", "S_S": "shared (both models trained on it)",
            "S_C": "candidate (only f trained on it)", "S_I": "independent (only g trained on it)"}.get(role, role)


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
        st.session_state["_toast"] = f"Not saved: {e}"


def score_column_config(data: RunData) -> dict:
    """st.dataframe column settings: every score under its plain name, with what high means as help."""
    return {c: st.column_config.NumberColumn(diagnose.score_label(c), help=diagnose.score_help(c), format="%+.3f")
            for c in data.score_cols}


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail_uri(root: str, value: str, size: int = 96) -> str | None:
    """A small PNG of an image file as a data URI: the table's thumbnails (a page of rows at a time)."""
    import base64
    import io

    from PIL import Image

    try:
        blob, _ = read_media(root, value)
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
    try:
        blob, mime = read_media(data.root, str(value))
    except MediaPathError as e:
        st.error(f"{modality}: {e}", icon=":material/warning:")
        return
    except OSError as e:
        st.error(f"{modality}: cannot read {value!r} ({e.strerror or e})", icon=":material/warning:")
        return
    if modality == "image":
        st.image(blob, width="stretch" if compact else 360)
    elif modality == "audio":
        st.audio(blob, format=mime)
    elif modality == "video":
        if compact:
            st.video(blob, format=mime, loop=True, muted=True)
        else:
            st.video(blob, format=mime)


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
        facts = [_md(role_label(str(row["role"])))]
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
