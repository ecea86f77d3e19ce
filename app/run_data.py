"""The run the dashboard shows: finding runs, loading one (cached), the tables joined, its indexes.

Loading happens once per run version (`st.cache_resource`, keyed by the files' modification times, so
a re-scored run reloads by itself); a rerun only filters, sorts and slices the cached table. The
cached objects are shared between sessions and must be treated as read-only. Widgets live in app.common.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app.filters import sort_order
from multimem_core import diagnose
from multimem_core.config import ScoreConfig
from multimem_core.options import option_defaults, option_fields, values_of
from multimem_core.review import ReviewStore
from multimem_core.run import RunDir, RunDirError
from multimem_core.tables import join_scores

ENV_RUN = "MULTIMEM_RUN"  # the run (or folder of runs) the app shows, when not given after `--`


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


def serving_root() -> Path:
    """The only folder whose files the app sends to the browser: `--data-root DIR` after `--` (as `multimem
    app` passes it), else $MULTIMEM_DATA_ROOT, else the folder the app was started in. Never a path read from
    a run folder (docs/SERVING.md)."""
    from multimem_core.launch import data_root

    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("main.py") else []
    for i, arg in enumerate(argv):
        if arg == "--data-root" and i + 1 < len(argv):
            return Path(argv[i + 1]).expanduser().resolve()
        if arg.startswith("--data-root="):
            return Path(arg.split("=", 1)[1]).expanduser().resolve()
    return data_root()


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
    position: "RowIndex"  # id -> row in `table`
    ids: np.ndarray  # the table's ids as Python strings (object array), for slicing without a conversion

    @property
    def name(self) -> str:
        return self.run.path.name

    @property
    def root(self) -> Path:
        """Where the run says its media are: only where relative media paths are looked up. What may be
        served is decided by serving_root(), from the app's command line."""
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

    def rows_of(self, ids) -> np.ndarray:
        """The rows of many ids at once (-1 where the run has no such id)."""
        return self.position.rows(ids)


class RowIndex:
    """id -> row, over a hash index instead of a dict of a million Python strings (built in a fraction of
    the time, a fraction of the memory); the first id of a repeated one wins."""

    def __init__(self, ids: pd.Series):
        index = pd.Index(ids)
        if not index.is_unique:
            keep = ~index.duplicated(keep="first")
            index = index[keep]
            self._rows = np.flatnonzero(keep)
        else:
            self._rows = None
        self._index = index

    def rows(self, ids) -> np.ndarray:
        wanted = ids if isinstance(ids, (pd.Series, pd.Index, np.ndarray, list)) else list(ids)
        at = self._index.get_indexer(pd.Index(wanted))
        if self._rows is not None:
            at = np.where(at >= 0, self._rows[at], -1)
        return at.astype(np.int64)

    def get(self, sample_id, default=None):
        at = self.rows([sample_id])[0]
        return default if at < 0 else int(at)

    def __contains__(self, sample_id) -> bool:
        return self.get(sample_id) is not None

    def __len__(self) -> int:
        return len(self._index)


def protocol_name(config: dict) -> str:
    """The protocol as config.json's ProtocolConfig names it ("imported" for an imported table of scores)."""
    return str((config.get("protocol") or {}).get("name", "crossfit"))


def protocol_folds(config: dict) -> int | None:
    folds = (config.get("protocol") or {}).get("folds")
    return int(folds) if folds else None


def scored_with(config: dict) -> list[dict] | None:
    """Every option the run was scored with (flag, value, default, help), from config.json read as the
    ScoreConfig it is; None for a run that was imported rather than scored here."""
    if config.get("source") or "train" not in config:
        return None
    try:
        cfg = ScoreConfig.from_dict(config)
    except (TypeError, ValueError):
        return None
    defaults = option_defaults(ScoreConfig)
    return [{"dest": o.dest, "option": o.option.flag, "value": v, "default": defaults[o.dest], "help": o.option.help}
            for o, v in zip(option_fields(ScoreConfig), values_of(cfg).values())]


@st.cache_resource(max_entries=3, show_spinner="Loading the run…")
def _load(path: str, stamp: tuple) -> RunData:
    run = RunDir(path)
    config = run.config()
    joined = join_scores(run.samples(), run.scores())
    table, score_cols, score_row = joined.table, joined.score_cols, joined.score_row
    text = table["text"].fillna("").astype(str).str.lower() if "text" in table.columns else pd.Series([""] * len(table))
    # the one-line reason, computed once per run (RUN/diagnostics/reasons.parquet), never per view
    reasons = diagnose.reasons(run)
    at = RowIndex(reasons["id"].astype(str)).rows(table["id"])
    reason = np.full(len(table), "", dtype=object)
    reason[at >= 0] = reasons["reason"].to_numpy(dtype=object)[at[at >= 0]]
    table["reason"] = pd.Series(reason, index=table.index, dtype="str")
    table["label"] = table["label"].fillna("").astype(str) if "label" in table.columns else ""
    return RunData(run=run, stamp=stamp, config=config, modalities=list(config["modalities"]),
                   protocol=protocol_name(config), table=table, score_cols=score_cols,
                   score_row=score_row, errors=run.errors(), has_injected=bool((table["injected"] != "").any()),
                   search_text=text, position=RowIndex(table["id"]), ids=table["id"].to_numpy(dtype=object))


def load_run(path: str | Path) -> RunData:
    run = RunDir(path)
    return _load(str(run.path), _stamp(run))


@st.cache_resource(max_entries=16, show_spinner=False)
def sorted_rows(path: str, stamp: tuple, column: str, ascending: bool) -> np.ndarray:
    """Row order of the whole table by a column that does not change while the app runs (a score, id,
    label, caption, reason): sorted once per run version, reused by every filter, page and session
    (shared, not copied: read-only)."""
    order = sort_order(load_run(path).table, column, ascending)
    order.setflags(write=False)
    return order


@st.cache_data(max_entries=8, show_spinner=False)
def distinct(path: str, stamp: tuple, column: str) -> list[str]:
    """The non-empty values of a text column (label, role, injected kind), sorted: once per run version."""
    return sorted(v for v in load_run(path).table[column].astype(str).unique() if v)


@st.cache_resource(max_entries=4, show_spinner="Building the neighbour index…")
def neighbour_index(path: str, stamp: tuple, model: str) -> diagnose.NeighbourIndex:
    return diagnose.NeighbourIndex.from_run(RunDir(path), model)


@st.cache_resource(max_entries=3, show_spinner=False)
def similarity_matrices(path: str, stamp: tuple):
    return RunDir(path).similarity_matrices()


@st.cache_resource(max_entries=3, show_spinner=False)
def projection(path: str, stamp: tuple) -> pd.DataFrame | None:
    """RUN/projection.parquet, shared by every session without a copy per rerun (read-only)."""
    df = RunDir(path).projection()
    if df is not None:
        df["id"] = df["id"].astype(str)
    return df


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
        from app.common import code, inert

        st.error(f"Cannot read the run at {code(path)}: {inert(e)}")
        st.stop()


def store(data: RunData) -> ReviewStore:
    return ReviewStore.for_run(data.run)
