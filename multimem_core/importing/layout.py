"""Ids, roles and tables read from files, the protocol layout of imported models, and the staging folder."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..protocol import assignment_from_roles
from ..names import HELDOUT, ROLES_PAPER
from ..run import RunDir
from ..outputs import OutputError, check_output, content, not_empty
from ..runlock import RunLock, lock_path
from .embedding_files import (MAX_LISTED, TABLE_SUFFIXES, ImportValidationError, ModelEmbeddings, shown_ids,
                              read_id_lines)


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV, TSV, JSONL or Parquet table, every column as it is (ids as str)."""
    path = Path(path).expanduser()
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ImportValidationError(f"{path}: unknown table type {path.suffix!r}; use one of "
                                    f"{', '.join(sorted(TABLE_SUFFIXES))}.")
    from ..data.files import TABLE_LIMIT, UnreadableFileError, check_regular, size_text

    try:  # a FIFO would block the reader forever, a device read without end
        check_regular(path, "table")
    except UnreadableFileError as e:
        raise ImportValidationError(str(e)) from e
    if path.stat().st_size > TABLE_LIMIT:
        raise ImportValidationError(f"{path}: the table holds {size_text(path.stat().st_size)}, over the "
                                    f"{size_text(TABLE_LIMIT)} a table may hold; nothing was read.")
    try:
        if fmt == "parquet":
            df = pd.read_parquet(path)
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=not path.read_text(encoding="utf-8").lstrip().startswith("["),
                              dtype={"id": str})
        else:
            df = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype={"id": str, "role": str})
    except (OSError, ValueError) as e:
        raise ImportValidationError(f"{path}: cannot read it ({e}).") from e
    if "id" in df.columns:
        df["id"] = df["id"].astype(str).str.strip()
    return df


def read_ids(path: str | Path) -> list[str]:
    """Held-out ids: a text file (one id a line) or a table with an `id` column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ImportValidationError(f"{path}: no such file (the held-out ids: one a line, or a table with `id`).")
    if path.suffix.lower() in TABLE_SUFFIXES:
        df = read_table(path)
        if "id" not in df.columns:
            raise ImportValidationError(f"{path}: no `id` column (its columns: {', '.join(map(str, df.columns))}).")
        return df["id"].tolist()
    return read_id_lines(path)


def read_roles(path: str | Path) -> dict[str, str]:
    df = read_table(path)
    missing = [c for c in ("id", "role") if c not in df.columns]
    if missing:
        raise ImportValidationError(f"{path}: no {' or '.join(repr(c) for c in missing)} column (its columns: "
                                    f"{', '.join(map(str, df.columns))}). A roles table has `id` and `role`.")
    dup = df["id"][df["id"].duplicated()].unique().tolist()
    if dup:
        raise ImportValidationError(f"{path}: duplicate ids {shown_ids(dup)}.")
    return dict(zip(df["id"], df["role"].astype(str).str.strip()))


def natural_order(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def build_assignment(ids: Sequence[str], models: Sequence[str], *, layout: str, roles: dict[str, str] | None,
                     heldout: Iterable[str], roles_path: str = "--roles", heldout_path: str = "--heldout"):
    """The protocol's Assignment (roles, in-models, out-model) for imported models."""
    heldout = set(heldout)
    known = set(ids)
    unknown_h = sorted(heldout - known)
    if unknown_h:
        raise ImportValidationError(f"{heldout_path}: {len(unknown_h)} held-out ids have no embeddings "
                                    f"({shown_ids(unknown_h)}). H must be embedded by every model.")
    if layout == "paper":
        allowed = set(ROLES_PAPER)
        default = "S_C"
    else:
        allowed = set(models) | {HELDOUT}
        default = None
    out = []
    missing, wrong = [], []
    for sid in ids:
        if sid in heldout:
            out.append(HELDOUT)
            continue
        role = (roles or {}).get(sid, default)
        if role is None:
            missing.append(sid)
        elif role not in allowed:
            wrong.append((sid, role))
        out.append(role)
    if missing:
        raise ImportValidationError(f"{roles_path}: no role for {len(missing)} embedded ids ({shown_ids(missing)}). "
                                    "Give every sample the name of the model that did not train on it, or H.")
    if wrong:
        shown = ", ".join(f"{s!r}: {r!r}" for s, r in wrong[:MAX_LISTED])
        raise ImportValidationError(f"{roles_path}: unknown roles ({shown}{' …' if len(wrong) > MAX_LISTED else ''}). "
                                    f"Allowed here: {', '.join(sorted(allowed))}.")
    roles_arr = np.asarray(out, dtype=str)
    if layout == "paper" and not (roles_arr == HELDOUT).any():
        raise ImportValidationError(f"no held-out samples: give --heldout IDS (ids no model trained on, one a line) "
                                    f"or rows with role H in {roles_path}. The paper protocol compares each sample with H.")
    if (roles_arr == HELDOUT).all():
        raise ImportValidationError("every sample is held out: nothing is left to score.")
    return assignment_from_roles(roles_arr, layout, models=models)


class StagingDir:
    """A temporary run folder beside `out`, renamed onto it at the end (or removed on failure).

    `out` is locked (RUN/.lock, multimem_core.runlock) from the start to the swap: a second import or a
    `multimem score` into the same folder is refused, naming this one. The held lock file moves into the new
    run before the swap, so the run is never unlocked while it changes."""

    def __init__(self, out: str | Path, *, overwrite: bool, command: str = "multimem import",
                 inputs: Sequence[str | Path | None] = ()):
        try:  # a folder that holds what the import reads is never replaced, --overwrite or not
            self.out = check_output(out, inputs=[p for p in inputs if p], writes="replaced run")
        except OutputError as e:
            raise ImportValidationError(str(e)) from e
        if self.out.exists() and not (self.out.is_dir() and not content(self.out)) and not overwrite:
            raise ImportValidationError(not_empty(self.out, remedy=", or pass --overwrite to replace it"))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.importing-{os.getpid()}"
        self.created = not self.out.exists()
        self.lock = RunLock(self.out, command)

    def __enter__(self) -> RunDir:
        self.lock.acquire()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return RunDir(self.tmp)

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                if self.created and not content(self.out):  # leave nothing behind, not even the lock's folder
                    lock_path(self.out).unlink(missing_ok=True)
                    self.out.rmdir()
                return False
            os.replace(lock_path(self.out), lock_path(self.tmp))  # the held lock travels with the new run
            old = None
            if self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
            elif self.out.exists():  # --overwrite: move the old run aside, put the new one in place, then delete
                old = self.out.parent / f".{self.out.name}.replaced-{os.getpid()}"
                os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            if old is not None and old.exists():
                shutil.rmtree(old, ignore_errors=True)
            return False
        finally:
            self.lock.release()


def check_same_ids(models: dict[str, ModelEmbeddings]) -> None:
    names = list(models)
    ref = models[names[0]]
    ref_set = set(ref.ids)
    for name in names[1:]:
        other = set(models[name].ids)
        if other != ref_set:
            only_ref, only_other = sorted(ref_set - other), sorted(other - ref_set)
            parts = []
            if only_ref:
                parts.append(f"{len(only_ref)} ids only in {ref.folder} ({shown_ids(only_ref)})")
            if only_other:
                parts.append(f"{len(only_other)} ids only in {models[name].folder} ({shown_ids(only_other)})")
            raise ImportValidationError("the models embed different samples: " + "; ".join(parts) +
                                        ". Every model embeds every sample (the scored ones and H).")
