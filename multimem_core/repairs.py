"""Repairs: a wrong pair fixed instead of dropped, by taking one modality from another sample.

The detail and Triage pages suggest, for a sample whose caption (or sound, or image) disagrees with the rest,
the nearest one under the model that never trained on it. A repair records "sample S takes modality M from
sample T" in RUN/review.sqlite, one row a click, with undo as a new row (as decisions are). Export with
repairs applies them to the manifest's own rows (the cell is copied from T's row of the same manifest, so a
path stays relative to the same folder) and writes what it changed beside the manifest.
No Streamlit import here.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pandas as pd

from multimem_core.review import ReviewError, ReviewStore, utc_timestamp

MODALITIES = ("text", "image", "audio", "video")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS repairs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id  TEXT NOT NULL,
    modality   TEXT NOT NULL,
    from_id    TEXT NOT NULL,   -- the sample whose modality replaces this sample's
    action     TEXT NOT NULL CHECK (action IN ('repair', 'undo')),
    reviewer   TEXT NOT NULL,
    created_at TEXT NOT NULL,   -- ISO 8601, UTC
    undoes     INTEGER REFERENCES repairs(seq),
    source     TEXT NOT NULL DEFAULT ''   -- where the click came from: detail, triage
);
"""
COLUMNS = ["seq", "sample_id", "modality", "from_id", "reviewer", "created_at", "source"]


def _connect(store: ReviewStore):
    conn = store._connect()
    conn.executescript(_SCHEMA)
    return conn


def record_repair(store: ReviewStore, sample_id: str, modality: str, from_id: str, *, reviewer: str,
                  source: str = "") -> int:
    """Sample `sample_id` takes `modality` from sample `from_id`; returns the new row's seq."""
    if modality not in MODALITIES:
        raise ReviewError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    if str(sample_id) == str(from_id):
        raise ReviewError(f"sample {sample_id!r} cannot take its {modality} from itself")
    if not str(reviewer).strip():
        raise ReviewError("reviewer name is empty; type your name in the sidebar")
    with closing(_connect(store)) as conn:
        return conn.execute(
            "INSERT INTO repairs (sample_id, modality, from_id, action, reviewer, created_at, source) "
            "VALUES (?, ?, ?, 'repair', ?, ?, ?)", (str(sample_id), modality, str(from_id), reviewer.strip(),
                                                    utc_timestamp(), source)).lastrowid


def undo_repair(store: ReviewStore, seq: int, *, reviewer: str) -> int:
    """Cancel repair `seq` with a new row; the sample keeps its own modality again (or an earlier repair's)."""
    seq = int(seq)
    with closing(_connect(store)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT sample_id, modality, from_id, action FROM repairs WHERE seq = ?",
                               (seq,)).fetchone()
            if row is None or row[3] != "repair":
                raise ReviewError(f"no repair #{seq} in {store.path}")
            if conn.execute("SELECT 1 FROM repairs WHERE undoes = ?", (seq,)).fetchone():
                raise ReviewError(f"repair #{seq} was already undone")
            new = conn.execute(
                "INSERT INTO repairs (sample_id, modality, from_id, action, reviewer, created_at, undoes) "
                "VALUES (?, ?, ?, 'undo', ?, ?, ?)", (*row[:3], reviewer.strip() or "unknown", utc_timestamp(), seq)).lastrowid
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return new


def current_repairs(store: ReviewStore) -> pd.DataFrame:
    """Per (sample, modality), its latest repair that was not undone; newest first."""
    if not store.path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    with closing(_connect(store)) as conn:
        return pd.read_sql_query(
            "SELECT r.seq, r.sample_id, r.modality, r.from_id, r.reviewer, r.created_at, r.source FROM repairs r "
            "WHERE r.seq = (SELECT MAX(e.seq) FROM repairs e WHERE e.sample_id = r.sample_id "
            "AND e.modality = r.modality AND e.action = 'repair' "
            "AND NOT EXISTS (SELECT 1 FROM repairs u WHERE u.undoes = e.seq)) ORDER BY r.seq DESC", conn)


def apply_repairs(table: pd.DataFrame, row_of: dict[str, int], repairs: pd.DataFrame,
                  column_of: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A copy of `table` (a manifest, every sample's row in it given by `row_of`) with each repair's cell copied
    from the donor sample's row, and the log of what changed: sample_id, modality, column, before, after,
    from_id, reviewer, created_at. Donor cells are read before any repair is applied, so chains do not cascade."""
    out = table.copy()
    out.attrs = dict(table.attrs)
    log = []
    for r in repairs.itertuples(index=False):
        column = column_of.get(r.modality, r.modality)
        target, donor = row_of.get(str(r.sample_id)), row_of.get(str(r.from_id))
        if column not in table.columns:
            raise ReviewError(f"repair #{r.seq}: the manifest has no {r.modality} column ({column!r})")
        if target is None or donor is None:
            missing = r.sample_id if target is None else r.from_id
            raise ReviewError(f"repair #{r.seq}: sample {missing!r} is not in the manifest any more")
        before, after = table.iat[target, table.columns.get_loc(column)], table.iat[donor, table.columns.get_loc(column)]
        out.iat[target, out.columns.get_loc(column)] = after
        log.append({"sample_id": r.sample_id, "modality": r.modality, "column": column, "before": before,
                    "after": after, "from_id": r.from_id, "reviewer": r.reviewer, "created_at": r.created_at})
    return out, pd.DataFrame(log, columns=["sample_id", "modality", "column", "before", "after", "from_id",
                                           "reviewer", "created_at"])


def repairs_path(out: str | Path) -> Path:
    """Where the log of applied repairs goes, beside the written manifest: clean.csv -> clean.repairs.csv."""
    out = Path(out)
    return out.with_name(out.stem + ".repairs.csv")
