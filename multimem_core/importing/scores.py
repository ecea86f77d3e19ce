"""`multimem import-scores`: a table of per-sample scores -> a run the dashboard opens."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ColumnKeys
from ..inputs import dataset_info, manifest_config, read_input, samples_table
from ..names import HEAD_COLUMNS, SCORE_PREFIXES, base_column
from ..run import RunDir
from .embedding_files import ImportValidationError, shown_ids
from .layout import StagingDir, read_table




@dataclass
class ScoresImport:
    """Options of `multimem import-scores`."""

    manifest: str
    scores: str                           # CSV / TSV / JSONL / Parquet with `id` and score columns
    out: str
    multimem_column: str | None = None    # the column that is MultiMem (default: `multimem`, or the only score)
    keys: ColumnKeys = field(default_factory=ColumnKeys)
    overwrite: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keys"] = asdict(self.keys)
        return d


def score_column_name(column: str) -> str:
    """The run's name for a score column: ours are kept; any other becomes base__<name> (a score to compare)."""
    if column in HEAD_COLUMNS:
        return column
    prefix = next((p for p in SCORE_PREFIXES if column.startswith(p)), None)
    if prefix is not None:  # ours by its prefix; the rest made of the characters a score name may hold
        return prefix + re.sub(r"[^0-9A-Za-z_]+", "_", column[len(prefix):]).strip("_")
    return base_column(re.sub(r"[^0-9A-Za-z_]+", "_", column).strip("_"))


MAX_ABS_SCORE = 1e12  # a score beyond this is a unit or parsing mistake, and its mean would overflow to inf


def _not_numbers(path: Path, table: pd.DataFrame, column: str) -> str:
    """Which cells of a score column are not numbers, by id and value."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = table.loc[values.isna() & table[column].notna(), ["id", column]]
    cells = ", ".join(f"{i!r}: {v!r}" for i, v in bad.head(MAX_SHOWN).itertuples(index=False))
    more = f" and {len(bad) - MAX_SHOWN} more" if len(bad) > MAX_SHOWN else ""
    return (f"{path}: column {column!r} holds {len(bad)} cells that are not numbers ({cells}{more}). Scores must be "
            "numbers: fix those cells, or drop their rows.")


def _check_values(path: Path, table: pd.DataFrame, column: str, *, allow_missing: bool = False) -> None:
    """Every score is a finite number of plausible size (a mean over them stays finite); other score columns
    may leave cells empty (NaN)."""
    values = table[column].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.isinf(values) | (np.abs(values) > MAX_ABS_SCORE)
        if not allow_missing:
            bad |= np.isnan(values)
    if bad.any():
        cells = ", ".join(f"{i!r}: {v!r}" for i, v in zip(table["id"][bad][:MAX_SHOWN], values[bad][:MAX_SHOWN]))
        raise ImportValidationError(
            f"{path}: {int(bad.sum())} rows have no finite {column!r} within ±{MAX_ABS_SCORE:g} ({cells}). Drop them "
            "or fill them in.")


MAX_SHOWN = 5


def import_scores(cfg: ScoresImport) -> RunDir:
    """A table of per-sample scores -> a run the dashboard opens (no embeddings, diagnostics or projection)."""
    from ..score import package_versions

    path = Path(cfg.scores).expanduser()
    if not path.exists():
        raise ImportValidationError(f"{path}: no such file (a table with `id` and score columns).")
    table = read_table(path)
    if "id" not in table.columns:
        raise ImportValidationError(f"{path}: no `id` column (its columns: {', '.join(map(str, table.columns))}). "
                                    "Name the sample id column `id`, as in the manifest.")
    dup = table["id"][table["id"].duplicated()].unique().tolist()
    if dup:
        raise ImportValidationError(f"{path}: duplicate ids {shown_ids(dup)}. One row per sample.")
    numeric = [c for c in table.columns if c not in ("id", "role") and pd.api.types.is_numeric_dtype(table[c])
               and not pd.api.types.is_bool_dtype(table[c])]
    ignored = [c for c in table.columns if c not in ("id", "role") and c not in numeric]
    source_col = cfg.multimem_column or ("multimem" if "multimem" in table.columns else None)
    if source_col is None and len(numeric) == 1:
        source_col = numeric[0]
    if source_col is None:
        raise ImportValidationError(
            f"{path}: which column is MultiMem? It has no `multimem` column and {len(numeric)} numeric columns "
            f"({', '.join(map(str, numeric)) or 'none'}). Name it with --multimem-column COLUMN.")
    if source_col not in table.columns:
        raise ImportValidationError(f"{path}: no column {source_col!r} (its columns: "
                                    f"{', '.join(map(str, table.columns))}).")
    if source_col not in numeric:
        raise ImportValidationError(_not_numbers(path, table, source_col))
    for c in numeric:
        _check_values(path, table, c, allow_missing=c != source_col)

    source = read_input(cfg.manifest, keys=cfg.keys)
    manifest_ids = source.table["id"].astype(str).tolist()
    stray = sorted(set(table["id"]) - set(manifest_ids))
    if stray:
        raise ImportValidationError(f"{path}: {len(stray)} ids are not in the manifest {source.path} "
                                    f"({shown_ids(stray)}). Score the manifest's samples, with its ids.")
    names = {source_col: "multimem"}
    for c in numeric:
        if c != source_col:
            names[c] = score_column_name(str(c))
    clash = [c for c in numeric if c != source_col and names[c] == "multimem"]
    if clash:
        raise ImportValidationError(f"{path}: column 'multimem' and --multimem-column {source_col!r} both claim to be "
                                    "MultiMem; keep one.")
    scored = set(table["id"])
    roles_given = table.set_index("id")["role"].astype(str).to_dict() if "role" in table.columns else {}
    roles = np.asarray([roles_given.get(i, "scored") if i in scored else "unscored" for i in manifest_ids], dtype=str)
    order = {sid: i for i, sid in enumerate(manifest_ids)}
    out_table = table.assign(_order=table["id"].map(order)).sort_values("_order", kind="stable")
    scores = pd.DataFrame({"id": out_table["id"].to_numpy(),
                           "role": [roles[order[i]] for i in out_table["id"]]})
    for c, name in names.items():
        scores[name] = out_table[c].to_numpy(dtype=np.float64)
    # our column order: multimem, cmc_in, cmc_out, then the rest as given
    head = [c for c in ("id", "role", *HEAD_COLUMNS) if c in scores.columns]
    scores = scores[head + [c for c in scores.columns if c not in head]]

    staging = StagingDir(cfg.out, overwrite=cfg.overwrite, command="multimem import-scores",
                         inputs=[cfg.manifest, cfg.scores])
    with staging as run:
        run.write_config({
            **cfg.to_dict(), "out": str(staging.out), "source": "import-scores", "modalities": source.modalities,
            "protocol": {"name": "imported"}, "status": "complete", "versions": package_versions(),
            **manifest_config(source), "dataset": dataset_info(source),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "n_samples": len(manifest_ids),
            "n_scored": int(len(scores)), "n_skipped": 0,
            "import": {"columns": {str(k): v for k, v in names.items()}, "ignored_columns": [str(c) for c in ignored],
                       "absent": ["embeddings", "diagnostics", "projection"]}})
        run.write_samples(samples_table(source, ids=manifest_ids, rows=source.table["row"].to_numpy(), roles=roles))
        run.write_scores(scores)
        run.write_progress(stage="done")
    return RunDir(staging.out)
