"""Flags and export: the reviewer's decisions and the cleaned dataset they lead to.

Flags live in RUN/review.sqlite (WAL). Every click is one row, committed before the click returns;
undo is a new row that points at the decision it cancels, so history is never rewritten and a killed
app loses nothing that was committed. Several app sessions (or the CLI) may write at once: SQLite
serialises the writers, and nobody updates or deletes a row, so nobody overwrites anybody.

Which ids to drop is a `DropRule` (flagged, top N, above or below a threshold); export.py writes what is
left. No Streamlit import here.
"""

from __future__ import annotations

import getpass
import os
import random
import re
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

# `top:N` drops the N most suspicious, whichever end of the score that is (names.LOWER_IS_WORSE).
from multimem_core.names import LOWER_IS_WORSE
from multimem_core.run import RunDir

LABELS = ("noisy", "ok", "unsure")
TAG_PATTERN = re.compile(r"^[\w][\w .:/+-]{0,39}$")  # a short word or phrase: letters, digits, a few signs
_BUSY_TIMEOUT_S = 30  # how long a click waits for other sessions before it reports "database is locked"



class ReviewError(ValueError):
    """A user-facing problem with a flag or an export; the message says what to do."""


def default_reviewer() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return os.environ.get("USER", "reviewer")


def lower_is_worse(column: str) -> bool:
    return column in LOWER_IS_WORSE


# --- flags -------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id  TEXT NOT NULL,
    action     TEXT NOT NULL CHECK (action IN ('flag', 'undo')),
    label      TEXT,            -- noisy | ok | unsure for 'flag'; the cancelled label for 'undo'
    reason     TEXT NOT NULL DEFAULT '',
    reviewer   TEXT NOT NULL,
    created_at TEXT NOT NULL,   -- ISO 8601, UTC
    undoes     INTEGER REFERENCES decisions(seq),
    source     TEXT NOT NULL DEFAULT ''   -- where the click came from: samples, detail, map, cli
);
CREATE INDEX IF NOT EXISTS decisions_sample ON decisions(sample_id);
CREATE TABLE IF NOT EXISTS tags (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id  TEXT NOT NULL,
    tag        TEXT NOT NULL,
    action     TEXT NOT NULL CHECK (action IN ('add', 'remove')),
    reviewer   TEXT NOT NULL,
    created_at TEXT NOT NULL    -- ISO 8601, UTC
);
CREATE INDEX IF NOT EXISTS tags_sample ON tags(sample_id);
"""


@dataclass(frozen=True)
class ReviewStore:
    """RUN/review.sqlite. Cheap to construct; every call opens its own connection, so one store object
    can be shared by threads and each Streamlit rerun sees what other sessions committed."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        object.__setattr__(self, "path", path / "review.sqlite" if path.is_dir() else path)

    @classmethod
    def for_run(cls, run: RunDir) -> "ReviewStore":
        return cls(run.review_path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_symlink():
            # A run folder may come from someone else: SQLite follows a link, so opening it would change
            # another database (tables, journal mode) or create a file wherever the link points, holding
            # sample ids the sender chose. (SQLite itself refuses links for the -wal and -shm files.)
            raise ReviewError(f"{self.path}: the flags database is a link (to {os.readlink(self.path)}), not the "
                              "run's own file; nothing was opened. Remove the link (the run then starts with no "
                              "flags) or copy the database into the run folder")
        if self.path.exists() and not self.path.is_file():
            raise ReviewError(f"{self.path}: the flags database is not a regular file; move it away (the run then "
                              "starts with no flags) or restore it from a backup")
        # SQLite's busy timeout covers reads and writes but not every lock that switching to WAL and creating
        # the schema take: sessions that open a new database at the same moment can get "database is locked"
        # at once. Those steps are idempotent, so they are retried until the same deadline.
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            # timeout: a writer waits for another session's commit instead of failing with "database is locked".
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when the click returns
                conn.executescript(_SCHEMA)
                return conn
            except sqlite3.OperationalError as e:
                conn.close()
                if "locked" in str(e) or "busy" in str(e):
                    if time.monotonic() < deadline:
                        time.sleep(random.uniform(0.005, 0.05))
                        continue
                    raise
                raise self._damaged(e) from e
            except sqlite3.DatabaseError as e:
                conn.close()
                raise self._damaged(e) from e

    def _damaged(self, e: Exception) -> "ReviewError":
        return ReviewError(f"{self.path}: the flags database is damaged ({e}: not a SQLite database multimem can "
                           "use); move it away (the run then starts with no flags) or restore it from a backup")

    # -- writing ------------------------------------------------------------------------------------
    def flag(self, sample_ids: str | Iterable[str], label: str, *, reviewer: str, reason: str = "",
             source: str = "") -> list[int]:
        """Record one decision per id (one transaction); returns the new rows' seq numbers."""
        if label not in LABELS:
            raise ReviewError(f"unknown flag label {label!r}; use one of {', '.join(LABELS)}")
        if not str(reviewer).strip():
            raise ReviewError("reviewer name is empty; type your name in the sidebar")
        ids = [sample_ids] if isinstance(sample_ids, str) else [str(i) for i in sample_ids]
        now = utc_timestamp()
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                seqs = [conn.execute(
                    "INSERT INTO decisions (sample_id, action, label, reason, reviewer, created_at, source) "
                    "VALUES (?, 'flag', ?, ?, ?, ?, ?)", (sid, label, reason, reviewer.strip(), now, source)
                ).lastrowid for sid in ids]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return seqs

    def undo(self, seq: int, *, reviewer: str, reason: str = "", source: str = "") -> int:
        """Cancel decision `seq` with a new 'undo' row. The sample's state falls back to its previous
        decision. Undoing twice, or undoing an undo, is refused with a clear message."""
        seq = int(seq)  # numpy integers would bind as blobs and match nothing
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")  # check-then-insert in one write transaction: no double undo
            try:
                row = conn.execute("SELECT sample_id, action, label FROM decisions WHERE seq = ?", (seq,)).fetchone()
                if row is None:
                    raise ReviewError(f"no decision #{seq} in {self.path}")
                if row[1] != "flag":
                    raise ReviewError(f"decision #{seq} is itself an undo; flag the sample again instead")
                done = conn.execute("SELECT seq FROM decisions WHERE undoes = ?", (seq,)).fetchone()
                if done is not None:
                    raise ReviewError(f"decision #{seq} was already undone by #{done[0]}")
                new = conn.execute(
                    "INSERT INTO decisions (sample_id, action, label, reason, reviewer, created_at, undoes, source) "
                    "VALUES (?, 'undo', ?, ?, ?, ?, ?, ?)",
                    (row[0], row[2], reason, reviewer.strip() or default_reviewer(), utc_timestamp(), seq, source),
                ).lastrowid
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return new

    # -- reading ------------------------------------------------------------------------------------
    def history(self, sample_id: str | None = None) -> pd.DataFrame:
        """Every row, newest first, with `undone_by` filled for cancelled decisions."""
        if not self.path.is_file():
            return _empty_history()
        where, args = ("WHERE d.sample_id = ?", (sample_id,)) if sample_id is not None else ("", ())
        with closing(self._connect()) as conn:
            df = pd.read_sql_query(
                "SELECT d.seq, d.sample_id, d.action, d.label, d.reason, d.reviewer, d.created_at, d.undoes, "
                "d.source, u.seq AS undone_by FROM decisions d LEFT JOIN decisions u ON u.undoes = d.seq "
                f"{where} ORDER BY d.seq DESC", conn, params=args)
        return df

    def current(self) -> pd.DataFrame:
        """Per sample, its latest decision that was not undone: sample_id, label, reason, reviewer,
        created_at, seq. Samples whose every decision was undone are absent (unreviewed)."""
        if not self.path.is_file():
            return pd.DataFrame(columns=["sample_id", "label", "reason", "reviewer", "created_at", "seq"])
        with closing(self._connect()) as conn:
            return pd.read_sql_query(
                "SELECT d.sample_id, d.label, d.reason, d.reviewer, d.created_at, d.seq FROM decisions d "
                "WHERE d.seq = (SELECT MAX(e.seq) FROM decisions e WHERE e.sample_id = d.sample_id "
                "AND e.action = 'flag' AND NOT EXISTS (SELECT 1 FROM decisions u WHERE u.undoes = e.seq)) "
                "ORDER BY d.seq DESC", conn)

    def labels(self) -> dict[str, str]:
        """sample_id -> current label."""
        cur = self.current()
        cur = cur[cur["label"].isin(LABELS)]  # a row written by hand into a database from elsewhere is no flag
        return dict(zip(cur["sample_id"], cur["label"]))

    def flagged_ids(self, label: str = "noisy") -> list[str]:
        return sorted(sid for sid, lab in self.labels().items() if lab == label)

    # -- tags -----------------------------------------------------------------------------------------
    def tag(self, sample_ids: str | Iterable[str], tag: str, *, reviewer: str, remove: bool = False) -> int:
        """Add (or remove) a free tag on samples, one row each, in one transaction; returns the row count."""
        tag = str(tag).strip()
        if not TAG_PATTERN.match(tag):
            raise ReviewError(f"tag {tag!r} is not usable: up to 40 letters, digits, spaces or . : / + -, "
                              "starting with a letter or digit")
        if not str(reviewer).strip():
            raise ReviewError("reviewer name is empty; type your name in the sidebar")
        ids = [sample_ids] if isinstance(sample_ids, str) else [str(i) for i in sample_ids]
        rows = [(sid, tag, "remove" if remove else "add", reviewer.strip(), utc_timestamp()) for sid in ids]
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO tags (sample_id, tag, action, reviewer, created_at) "
                                 "VALUES (?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(rows)

    def tags(self) -> dict[str, tuple[str, ...]]:
        """sample_id -> its current tags (those whose latest row adds them), sorted."""
        if not self.path.is_file():
            return {}
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT t.sample_id, t.tag FROM tags t WHERE t.action = 'add' AND t.seq = (SELECT MAX(u.seq) "
                "FROM tags u WHERE u.sample_id = t.sample_id AND u.tag = t.tag)").fetchall()
        out: dict[str, list[str]] = {}
        for sid, tag in rows:
            out.setdefault(sid, []).append(tag)
        return {sid: tuple(sorted(tags)) for sid, tags in out.items()}



def utc_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame(columns=["seq", "sample_id", "action", "label", "reason", "reviewer", "created_at",
                                 "undoes", "source", "undone_by"])


# --- which ids to drop -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DropRule:
    """flagged (label noisy) | top (the n most suspicious by `score`) | above / below (score vs threshold)
    | ids (an explicit list, e.g. the dashboard's current selection)."""

    kind: str
    n: int | None = None
    threshold: float | None = None
    score: str = "multimem"
    ids: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        if self.kind == "flagged":
            return "samples flagged as noisy"
        if self.kind == "top":
            end = "lowest" if lower_is_worse(self.score) else "highest"
            return f"the {self.n} samples with the {end} {self.score}"
        if self.kind in ("above", "below"):
            return f"samples with {self.score} {'>' if self.kind == 'above' else '<'} {self.threshold:g}"
        return f"{len(self.ids)} selected samples"


def parse_drop_rule(text: str, *, score: str = "multimem") -> DropRule:
    """'flagged' | 'top:N' | 'above:T' | 'below:T' (the CLI's --drop)."""
    kind, _, value = text.strip().partition(":")
    kind = kind.lower()
    try:
        if kind == "flagged" and not value:
            return DropRule("flagged", score=score)
        if kind == "top":
            n = int(value)
            if n < 0:
                raise ValueError
            return DropRule("top", n=n, score=score)
        if kind in ("above", "below"):
            return DropRule(kind, threshold=float(value), score=score)
    except ValueError:
        pass
    raise ReviewError(f"--drop {text!r} is not a rule; use flagged, top:N (e.g. top:100), above:T or below:T "
                      "(e.g. above:0.2)")


def ids_to_drop(run: RunDir, rule: DropRule, *, store: ReviewStore | None = None,
                scores: pd.DataFrame | None = None) -> list[str]:
    """The ids the rule removes: score rules most suspicious first, flagged and explicit ids sorted."""
    if rule.kind == "flagged":
        return (store or ReviewStore.for_run(run)).flagged_ids("noisy")
    if rule.kind == "ids":
        known = set(run.samples()["id"].astype(str))
        unknown = [i for i in rule.ids if i not in known]
        if unknown:
            raise ReviewError(f"{len(unknown)} selected ids are not in {run.samples_path} (e.g. {unknown[0]!r})")
        return sorted(set(rule.ids))
    scores = run.scores() if scores is None else scores
    if scores is None:
        raise ReviewError(f"{run.path} has no scores.parquet yet: score the run before dropping by score")
    if rule.score not in scores.columns:
        cols = [c for c in scores.columns if c not in ("id", "role")]
        raise ReviewError(f"no score column {rule.score!r} in {run.scores_path}; choose one of {', '.join(cols)}")
    values = scores[rule.score].to_numpy(dtype=np.float64)
    ids = scores["id"].astype(str).to_numpy()
    ok = np.isfinite(values)
    ids, values = ids[ok], values[ok]
    sign = -1.0 if lower_is_worse(rule.score) else 1.0
    order = np.argsort(-sign * values, kind="stable")  # most suspicious first
    if rule.kind == "top":
        return ids[order[: rule.n]].tolist()
    if rule.kind == "above":
        keep = values[order] > rule.threshold
    elif rule.kind == "below":
        keep = values[order] < rule.threshold
    else:
        raise ReviewError(f"unknown drop rule {rule.kind!r}")
    return ids[order][keep].tolist()
