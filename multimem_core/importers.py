"""Bring your own embeddings or scores: `multimem import-embeddings` and `multimem import-scores`.

Teams that train large models embed their data on their own cluster with their own code. These two
paths turn what they have into a run directory (DESIGN §6) that the dashboard opens:

import_embeddings   embeddings of every sample under the models that trained on it and the one that did
                    not -> scores by the same code as `multimem score` (score.write_scored: the metric,
                    the baselines that need only embeddings, the diagnostics, the projection).
import_scores       a table with `id` and score columns (e.g. from the paper's scripts) -> a run whose
                    embeddings, diagnostics and projection are absent, and the dashboard says so.

A model is a folder with, per modality m (two or more of image, text, audio, video), one of

    m.npy          [N, d] (one view) or [A, N, d] (A augmented views), any float dtype
    m.views.npy    [A, N, d]: the views, with m.npy [N, d] then the clean view (`multimem score --save-views`)
    m.parquet      an `id` column and one vector column; a cell is a vector [d] or a list of A views [A][d]

and for .npy files the ids, one a line, in m.ids.txt or (shared by the modalities) ids.txt. A run's own
RUN/embeddings/<model>/ folders have exactly this shape. Two layouts:

    paper      --in-model DIR --out-model DIR --heldout IDS: DIR's model trained on the scored samples,
               the other did not; the run calls them f and g. With --roles (S_S/S_C/S_I/H per id) the
               paper's sets are scored as `multimem score --protocol paper` scores them.
    crossfit   --crossfit DIR --roles FILE: one subfolder per model; a sample's role is the name of the
               model that did not train on it (or H, held out). RUN/samples.parquet is such a file.

Embeddings are L2-normalised on the way in (the metric needs unit vectors). Everything is checked before
anything is written: ids that differ between files, shapes, NaN or all-zero vectors, dimensions that
differ between modalities, fewer than two modalities; the message names the file and the ids. The run is
written into a temporary folder beside --out and renamed at the end, so a failure leaves nothing half.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import MODALITIES
from .data.manifest import ColumnKeys, Manifest
from .run import HELDOUT, ROLES_PAPER, RunDir

MAX_LISTED = 10          # ids a message lists before "and N more"
DEFAULT_TEMPERATURE = 0.07  # CLIP's initial temperature: the loss baseline's logit scale is 1/T = 14.3
ZERO_NORM = 1e-12
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
                  ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


class ImportValidationError(ValueError):
    """The inputs cannot make a run. The message names the file, the ids and the fix; nothing was written."""


def _listed(items: Sequence) -> str:
    items = list(items)
    shown = ", ".join(repr(str(i)) for i in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


# --- reading one model's embeddings -------------------------------------------------------------------

@dataclass
class EmbeddingFile:
    """One modality of one model, as read (not yet normalised)."""

    modality: str
    path: Path
    ids: list[str]
    views: np.ndarray            # [A, N, d] (may be a read-only memmap)
    clean: np.ndarray | None     # [N, d] the un-augmented view, when the folder has one apart from the views

    @property
    def n_views(self) -> int:
        return int(self.views.shape[0])

    @property
    def dim(self) -> int:
        return int(self.views.shape[2])


def _float_array(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImportValidationError(f"{path}: cannot read it as a .npy array ({e}). Save it with numpy.save.") from e
    if not np.issubdtype(array.dtype, np.floating):
        raise ImportValidationError(f"{path}: holds {array.dtype} values; embeddings must be floats "
                                    "(float16, float32 or float64).")
    return array


def _id_file(folder: Path, modality: str) -> Path:
    for name in (f"{modality}.ids.txt", "ids.txt"):
        if (folder / name).is_file():
            return folder / name
    raise ImportValidationError(f"{folder / (modality + '.npy')}: no id file next to it. Write the ids of its rows, "
                                f"one a line, to {folder / 'ids.txt'} (or {modality}.ids.txt).")


def _read_ids(path: Path) -> list[str]:
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while ids and not ids[-1]:
        ids.pop()
    empty = [i for i, v in enumerate(ids) if not v]
    if empty:
        raise ImportValidationError(f"{path}: empty id on lines {_listed([i + 1 for i in empty])}. One id a line, "
                                    "no blank lines.")
    return ids


def _read_npy(folder: Path, modality: str) -> EmbeddingFile | None:
    views_path, plain_path = folder / f"{modality}.views.npy", folder / f"{modality}.npy"
    if not views_path.is_file() and not plain_path.is_file():
        return None
    ids_path = _id_file(folder, modality)
    ids = _read_ids(ids_path)
    clean = None
    if views_path.is_file():
        path, views = views_path, _float_array(views_path)
        if views.ndim == 2:
            views = views[None]
        if plain_path.is_file():
            clean = _float_array(plain_path)
            if clean.ndim != 2 or clean.shape[0] != views.shape[1] or clean.shape[1] != views.shape[2]:
                raise ImportValidationError(
                    f"{plain_path}: shape {tuple(clean.shape)}, but beside {views_path.name} "
                    f"{tuple(views.shape)} it must be the clean view [N, d] = {tuple(views.shape[1:])}.")
    else:
        path, views = plain_path, _float_array(plain_path)
        if views.ndim == 2:
            views = views[None]
    if views.ndim != 3:
        raise ImportValidationError(f"{path}: shape {tuple(views.shape)}; expected [N, d] (one embedding per sample) "
                                    "or [A, N, d] (A augmented views per sample).")
    if views.shape[1] != len(ids):
        raise ImportValidationError(f"{path}: {views.shape[1]} embeddings but {ids_path} lists {len(ids)} ids. "
                                    "Row i of the array belongs to line i of the id file.")
    return EmbeddingFile(modality, path, ids, views, clean)


def _read_parquet(folder: Path, modality: str, vector_column: str | None) -> EmbeddingFile | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = next((folder / f"{modality}{s}" for s in (".parquet", ".pq") if (folder / f"{modality}{s}").is_file()), None)
    if path is None:
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise ImportValidationError(f"{path}: cannot read it as Parquet ({e}).") from e
    if "id" not in table.column_names:
        raise ImportValidationError(f"{path}: no `id` column (its columns: {', '.join(table.column_names)}).")
    lists = [c for c in table.column_names if c != "id" and (pa.types.is_list(table.schema.field(c).type) or
                                                             pa.types.is_large_list(table.schema.field(c).type) or
                                                             pa.types.is_fixed_size_list(table.schema.field(c).type))]
    if vector_column:
        if vector_column not in table.column_names:
            raise ImportValidationError(f"{path}: no column {vector_column!r} (its columns: "
                                        f"{', '.join(table.column_names)}).")
        column = vector_column
    elif len(lists) == 1:
        column = lists[0]
    else:
        raise ImportValidationError(
            f"{path}: {'no' if not lists else 'several'} vector columns ({', '.join(lists) or 'none of list type'}). "
            "Keep one column of float lists beside `id`, or name it with --vector-column.")
    ids = [str(v) for v in table.column("id").to_pylist()]
    arr = table.column(column).combine_chunks()
    shape: list[int] = []
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            bad = np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))
            raise ImportValidationError(f"{path}: empty {column!r} cells for ids {_listed([ids[i] for i in bad])} "
                                        "(or inside them). Every sample needs its vector.")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            first = int(lengths[0])
            bad = np.flatnonzero(lengths != first)
            rows = bad if not shape else np.unique(bad // int(np.prod(shape)))
            raise ImportValidationError(
                f"{path}: column {column!r} holds lists of different lengths ({first} for id {ids[0]!r}, other "
                f"lengths for ids {_listed([ids[i] for i in rows])}). Every vector of a modality has the same size.")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        arr = arr.flatten()
    if not shape:
        raise ImportValidationError(f"{path}: column {column!r} holds {arr.type} values, not vectors.")
    values = arr.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(ids), *shape)
    if values.ndim == 2:
        views = values[None]
    elif values.ndim == 3:
        views = values.transpose(1, 0, 2)  # [N, A, d] cells -> [A, N, d]
    else:
        raise ImportValidationError(f"{path}: {column!r} cells have shape {tuple(shape)}; expected a vector [d] "
                                    "or a list of views [A][d].")
    return EmbeddingFile(modality, path, ids, views, None)


@dataclass
class ModelEmbeddings:
    """One model's embeddings of every sample, rows aligned across modalities by id."""

    name: str
    folder: Path
    files: dict[str, EmbeddingFile]   # modality -> file, MODALITIES order
    ids: list[str]                    # the canonical order (set by `align`)
    rows: dict[str, np.ndarray]       # modality -> for each id in `ids`, its row in that file

    @property
    def modalities(self) -> list[str]:
        return list(self.files)

    @property
    def n_views(self) -> int:
        return max(f.n_views for f in self.files.values())

    @property
    def dim(self) -> int:
        return next(iter(self.files.values())).dim

    def align(self, ids: Sequence[str]) -> None:
        """Put rows in the order of `ids` (each must be in every file)."""
        self.ids = list(ids)
        for m, f in self.files.items():
            pos = {sid: r for r, sid in enumerate(f.ids)}
            self.rows[m] = np.fromiter((pos[s] for s in self.ids), dtype=np.int64, count=len(self.ids))

    def views(self, idx: np.ndarray, modalities: Sequence[str]):
        """[A, B, n, d] float32 L2-normalised torch tensor of the samples at positions `idx` of `ids`."""
        import torch
        import torch.nn.functional as F

        a = self.n_views
        per_mod = []
        for m in modalities:
            f = self.files[m]
            x = np.asarray(f.views[:, self.rows[m][idx]], dtype=np.float32)
            per_mod.append(np.broadcast_to(x, (a, *x.shape[1:])))  # one view of a modality stands for all A
        return F.normalize(torch.from_numpy(np.stack(per_mod, axis=2)), dim=-1)

    def clean(self, idx: np.ndarray, modality: str) -> np.ndarray:
        """[B, d] float32 L2-normalised clean view; without one, the mean of the views stands in."""
        f = self.files[modality]
        rows = self.rows[modality][idx]
        x = np.asarray(f.clean[rows] if f.clean is not None else np.asarray(f.views[:, rows], np.float32).mean(0),
                       dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=ZERO_NORM)


def read_model(folder: str | Path, *, name: str | None = None, modalities: Sequence[str] | None = None,
               vector_column: str | None = None) -> ModelEmbeddings:
    """Read and check one model's folder: ids agree between modalities, one dimension, compatible views."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ImportValidationError(f"{folder}: not a folder. A model is a folder of <modality>.npy (+ ids.txt) "
                                    "or <modality>.parquet files.")
    if modalities is not None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ImportValidationError(f"unknown modalities {unknown}; choose from {', '.join(MODALITIES)}.")
    files: dict[str, EmbeddingFile] = {}
    for m in MODALITIES:
        if modalities is not None and m not in modalities:
            continue
        f = _read_npy(folder, m) or _read_parquet(folder, m, vector_column)
        if f is not None:
            files[m] = f
        elif modalities is not None:
            raise ImportValidationError(f"{folder}: no embeddings for {m} ({m}.npy with ids.txt, {m}.views.npy "
                                        f"or {m}.parquet), but --modalities asks for it.")
    if len(files) < 2:
        have = ", ".join(p.name for p in sorted(folder.iterdir())[:12]) or "nothing"
        raise ImportValidationError(
            f"{folder}: embeddings for {', '.join(files) or 'no modality'}; MultiMem needs at least two modalities "
            f"of {', '.join(MODALITIES)} as <modality>.npy with ids.txt, or <modality>.parquet (the folder holds: "
            f"{have}).")
    first = next(iter(files.values()))
    for f in files.values():
        dup = pd.Index(f.ids)[pd.Index(f.ids).duplicated()].unique().tolist()
        if dup:
            raise ImportValidationError(f"{f.path}: duplicate ids {_listed(dup)}. One row per sample.")
        if f is not first and set(f.ids) != set(first.ids):
            only_first = [i for i in first.ids if i not in set(f.ids)]
            only_this = [i for i in f.ids if i not in set(first.ids)]
            parts = []
            if only_first:
                parts.append(f"{len(only_first)} ids only in {first.path.name} ({_listed(only_first)})")
            if only_this:
                parts.append(f"{len(only_this)} ids only in {f.path.name} ({_listed(only_this)})")
            raise ImportValidationError(f"{folder}: the ids of {first.path.name} and {f.path.name} differ: "
                                        f"{'; '.join(parts)}. Every modality of a model embeds the same samples.")
        if f.dim != first.dim:
            raise ImportValidationError(
                f"{folder}: {first.path.name} has dimension {first.dim} but {f.path.name} has {f.dim}. The modalities "
                "of a model share one embedding space: project them to the same size first.")
    counts = sorted({f.n_views for f in files.values()} - {1})
    if len(counts) > 1:
        listed = ", ".join(f"{f.path.name}: {f.n_views}" for f in files.values())
        raise ImportValidationError(f"{folder}: different numbers of augmented views ({listed}). Give every "
                                    "modality the same A, or one view for a modality that is not augmented.")
    model = ModelEmbeddings(name or folder.name, folder, files, [], {})
    model.align(first.ids)
    return model


def check_vectors(model: ModelEmbeddings, *, chunk: int = 4096) -> None:
    """NaN, inf or all-zero embeddings (any view, or the clean one) -> an error naming the file and the ids."""
    for m, f in model.files.items():
        n = len(f.ids)
        bad_nan: list[int] = []
        bad_zero: list[int] = []
        for s in range(0, n, chunk):
            for array in [f.views[:, s:s + chunk]] + ([f.clean[None, s:s + chunk]] if f.clean is not None else []):
                x = np.asarray(array, dtype=np.float32)
                finite = np.isfinite(x).all(axis=(0, 2))
                bad_nan += (s + np.flatnonzero(~finite)).tolist()
                norms = np.linalg.norm(np.where(np.isfinite(x), x, 0), axis=2)
                bad_zero += (s + np.flatnonzero(finite & (norms <= ZERO_NORM).any(axis=0))).tolist()
        for bad, what in ((sorted(set(bad_nan)), "contain NaN or inf"), (sorted(set(bad_zero)), "are all zeros")):
            if bad:
                raise ImportValidationError(
                    f"{f.path}: {len(bad)} embeddings {what} (ids {_listed([f.ids[i] for i in bad])}). A vector "
                    "without a direction has no cosine: fix those samples, or leave them out of every file.")


# --- ids, roles and the protocol -------------------------------------------------------------------------

def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV, TSV, JSONL or Parquet table, every column as it is (ids as str)."""
    path = Path(path).expanduser()
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ImportValidationError(f"{path}: unknown table type {path.suffix!r}; use one of "
                                    f"{', '.join(sorted(TABLE_SUFFIXES))}.")
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
    return _read_ids(path)


def _roles(path: str | Path) -> dict[str, str]:
    df = read_table(path)
    missing = [c for c in ("id", "role") if c not in df.columns]
    if missing:
        raise ImportValidationError(f"{path}: no {' or '.join(repr(c) for c in missing)} column (its columns: "
                                    f"{', '.join(map(str, df.columns))}). A roles table has `id` and `role`.")
    dup = df["id"][df["id"].duplicated()].unique().tolist()
    if dup:
        raise ImportValidationError(f"{path}: duplicate ids {_listed(dup)}.")
    return dict(zip(df["id"], df["role"].astype(str).str.strip()))


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def build_assignment(ids: Sequence[str], models: Sequence[str], *, layout: str, roles: dict[str, str] | None,
                     heldout: Iterable[str], roles_path: str = "--roles", heldout_path: str = "--heldout"):
    """The protocol's Assignment (roles, in-models, out-model) for imported models."""
    from .protocol import Assignment

    heldout = set(heldout)
    known = set(ids)
    unknown_h = sorted(heldout - known)
    if unknown_h:
        raise ImportValidationError(f"{heldout_path}: {len(unknown_h)} held-out ids have no embeddings "
                                    f"({_listed(unknown_h)}). H must be embedded by every model.")
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
        raise ImportValidationError(f"{roles_path}: no role for {len(missing)} embedded ids ({_listed(missing)}). "
                                    "Give every sample the name of the model that did not train on it, or H.")
    if wrong:
        shown = ", ".join(f"{s!r}: {r!r}" for s, r in wrong[:MAX_LISTED])
        raise ImportValidationError(f"{roles_path}: unknown roles ({shown}{' …' if len(wrong) > MAX_LISTED else ''}). "
                                    f"Allowed here: {', '.join(sorted(allowed))}.")
    roles_arr = np.asarray(out, dtype=str)
    if not (roles_arr == HELDOUT).any():
        raise ImportValidationError(f"no held-out samples: give --heldout IDS (ids no model trained on, one a line) "
                                    f"or rows with role H in {roles_path}. CMC compares each sample with H.")
    if (roles_arr == HELDOUT).all():
        raise ImportValidationError("every sample is held out: nothing is left to score.")
    if layout == "paper":
        in_models = {"S_C": ["f"], "S_I": ["g"], "S_S": ["f"]}
        out_model = {"S_C": "g", "S_I": "f", "S_S": "g"}
        train_sets = {"f": np.flatnonzero(np.isin(roles_arr, ["S_S", "S_C"])),
                      "g": np.flatnonzero(np.isin(roles_arr, ["S_S", "S_I"]))}
    else:
        in_models = {f: [g for g in models if g != f] for f in models}
        out_model = {f: f for f in models}
        train_sets = {f: np.flatnonzero(~np.isin(roles_arr, [f, HELDOUT])) for f in models}
    return Assignment(roles_arr, train_sets, in_models, out_model)


# --- the run ------------------------------------------------------------------------------------------------

@dataclass
class EmbeddingImport:
    """Options of `multimem import-embeddings` (one of the two layouts)."""

    manifest: str                        # manifest file or shards folder: the media the dashboard shows
    out: str
    in_model: str | None = None          # paper layout
    out_model: str | None = None
    crossfit: str | None = None          # crossfit layout: one subfolder per model
    heldout: str | None = None           # ids of H: text (one a line) or a table with `id`
    roles: str | None = None             # table with id, role
    modalities: list[str] | None = None  # default: every modality the models share
    keys: ColumnKeys = field(default_factory=ColumnKeys)
    vector_column: str | None = None     # Parquet input: the column holding the vectors
    temperature: float | None = DEFAULT_TEMPERATURE  # loss baseline at logit scale 1/T; None leaves it out
    projection: bool = True
    seed: int = 0
    chunk_size: int = 4096
    overwrite: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keys"] = asdict(self.keys)
        return d


def _read_source(path: str, keys: ColumnKeys) -> Manifest:
    p = Path(path).expanduser()
    if p.is_dir() or str(p).endswith(".tar"):
        from .data.shards import read_shards

        return read_shards(p, keys=keys)
    from .data.manifest import read_manifest

    return read_manifest(p, keys=keys)


def _manifest_config(source: Manifest) -> dict:
    return {"dataset_root": str(Path(source.root).resolve()),
            "manifest": {"path": str(Path(source.path).expanduser().resolve()), "format": source.format,
                         "sha256": source.sha256, "source_columns": source.source_columns}}


def _dataset_info(source: Manifest) -> dict | None:
    info = Path(source.root) / "dataset.json"
    return json.loads(info.read_text()) if info.is_file() else None


class _StagingDir:
    """A temporary run folder beside `out`, renamed onto it at the end (or removed on failure)."""

    def __init__(self, out: str | Path, *, overwrite: bool):
        self.out = Path(out).expanduser().resolve()
        if self.out.exists() and not (self.out.is_dir() and not any(self.out.iterdir())) and not overwrite:
            raise ImportValidationError(f"{self.out} exists and is not empty: choose another --out, or pass "
                                        "--overwrite to replace it.")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.importing-{os.getpid()}"

    def __enter__(self) -> RunDir:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return RunDir(self.tmp)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
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


def _check_same_ids(models: dict[str, ModelEmbeddings]) -> None:
    names = list(models)
    ref = models[names[0]]
    ref_set = set(ref.ids)
    for name in names[1:]:
        other = set(models[name].ids)
        if other != ref_set:
            only_ref, only_other = sorted(ref_set - other), sorted(other - ref_set)
            parts = []
            if only_ref:
                parts.append(f"{len(only_ref)} ids only in {ref.folder} ({_listed(only_ref)})")
            if only_other:
                parts.append(f"{len(only_other)} ids only in {models[name].folder} ({_listed(only_other)})")
            raise ImportValidationError("the models embed different samples: " + "; ".join(parts) +
                                        ". Every model embeds every sample (the scored ones and H).")


def import_embeddings(cfg: EmbeddingImport, *, progress: bool = False) -> RunDir:
    """Embeddings computed elsewhere -> a complete run directory, scored like `multimem score` scores."""
    from .metric import CMCTerms, cmc_terms
    from .score import Stages, _samples_table, package_versions, write_scored

    t0 = time.perf_counter()
    paper = cfg.in_model is not None or cfg.out_model is not None
    if paper == (cfg.crossfit is not None) or (paper and (cfg.in_model is None or cfg.out_model is None)):
        raise ImportValidationError("give either --in-model DIR --out-model DIR (paper layout) or --crossfit DIR "
                                    "(one folder per fold model), not both and not neither.")
    if paper:
        folders = {"f": Path(cfg.in_model).expanduser(), "g": Path(cfg.out_model).expanduser()}
        layout = "paper"
    else:
        root = Path(cfg.crossfit).expanduser()
        if not root.is_dir():
            raise ImportValidationError(f"{root}: not a folder. --crossfit takes a folder with one subfolder per "
                                        "fold model.")
        subs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: _natural(p.name))
        folders = {p.name: p for p in subs}
        layout = "crossfit"
        if len(folders) < 2:
            raise ImportValidationError(f"{root}: {len(folders)} model folder(s) ({', '.join(folders) or 'none'}); "
                                        "crossfit needs two or more, one per fold.")
        if cfg.roles is None:
            raise ImportValidationError("the crossfit layout needs --roles FILE: per id, the name of the model folder "
                                        "that did not train on it (or H). A run's samples.parquet is such a file.")
    models = {name: read_model(folder, name=name, modalities=cfg.modalities, vector_column=cfg.vector_column)
              for name, folder in folders.items()}
    mods_of = {name: m.modalities for name, m in models.items()}
    if len({tuple(v) for v in mods_of.values()}) > 1:
        listed = "; ".join(f"{models[n].folder}: {', '.join(v)}" for n, v in mods_of.items())
        raise ImportValidationError(f"the models have embeddings of different modalities ({listed}). Give the same "
                                    "modalities for every model, or choose the shared ones with --modalities.")
    modalities = next(iter(mods_of.values()))
    _check_same_ids(models)
    for m in models.values():
        check_vectors(m, chunk=cfg.chunk_size)

    source = _read_source(cfg.manifest, cfg.keys)
    manifest_ids = source.table["id"].astype(str).tolist()
    embedded = set(next(iter(models.values())).ids)
    stray = [i for i in next(iter(models.values())).ids if i not in set(manifest_ids)]
    if stray:
        raise ImportValidationError(f"{source.path}: {len(stray)} embedded ids are not in the manifest "
                                    f"({_listed(stray)}). Embed the manifest's samples, with its ids.")
    keep = [i for i, sid in enumerate(manifest_ids) if sid in embedded]
    ids = [manifest_ids[i] for i in keep]
    rows = source.table["row"].to_numpy()[keep]
    for m in models.values():
        m.align(ids)

    roles = _roles(cfg.roles) if cfg.roles else None
    heldout = read_ids(cfg.heldout) if cfg.heldout else []
    assignment = build_assignment(ids, list(models), layout=layout, roles=roles, heldout=heldout,
                                  roles_path=str(cfg.roles or "--roles"), heldout_path=str(cfg.heldout or "--heldout"))
    if cfg.temperature is not None and not cfg.temperature > 0:
        raise ImportValidationError(f"--temperature {cfg.temperature}: must be positive (CLIP's is 0.07); leave "
                                    "the loss baseline out with --no-loss instead.")
    logit_scales = ({name: 1.0 / cfg.temperature for name in models} if cfg.temperature is not None else None)
    n = len(ids)
    unembedded = [i for i in range(len(manifest_ids)) if manifest_ids[i] not in embedded]
    errors = pd.DataFrame({"id": [manifest_ids[i] for i in unembedded],
                           "row": source.table["row"].to_numpy()[unembedded].astype(int),
                           "modality": "", "path": str(next(iter(folders.values()))),
                           "reason": "no embeddings"}, columns=["id", "row", "modality", "path", "reason"])

    staging = _StagingDir(cfg.out, overwrite=cfg.overwrite)
    with staging as run:
        stages = Stages(run, True)
        base = {**cfg.to_dict(), "out": str(staging.out), "source": "import-embeddings", "modalities": modalities,
                "protocol": {"name": layout, **({"folds": len(models)} if layout == "crossfit" else {})},
                "augmentations": max(m.n_views for m in models.values()), "status": "running",
                "versions": package_versions(), **_manifest_config(source), "dataset": _dataset_info(source),
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "baselines": {"base__cosine": "mean pairwise cosine under the models that saw the sample",
                              "base__loss": (f"per-sample contrastive loss at temperature {cfg.temperature} "
                                             "(logit scale 1/T), negatives from H") if logit_scales else
                              "left out: no temperature given (--temperature T to include it)"}}
        run.write_config(base)
        run.write_errors(errors)
        run.write_samples(_samples_table(source, SimpleNamespace(ids=ids, rows=rows), assignment))
        h = assignment.heldout
        terms, clean = {}, {}
        with stages("embed"):
            for name, model in models.items():
                folder = run.embeddings_dir / name
                folder.mkdir(parents=True, exist_ok=True)
                clean[name] = {m: np.lib.format.open_memmap(folder / f"{m}.npy", mode="w+", dtype=np.float16,
                                                            shape=(n, model.dim)) for m in modalities}
                h_sum = None
                for s in range(0, len(h), cfg.chunk_size):  # H's mean over views and samples, in chunks
                    part = model.views(h[s:s + cfg.chunk_size], modalities).mean(0).sum(0)
                    h_sum = part if h_sum is None else h_sum + part
                h_mean = (h_sum / len(h))[None, None]  # [1, 1, n, d]: its own mean, so cmc_terms uses it as is
                grams, crosses = [], []
                for s in range(0, n, cfg.chunk_size):
                    idx = np.arange(s, min(n, s + cfg.chunk_size))
                    t = cmc_terms(model.views(idx, modalities), h_mean)
                    grams.append(t.gram)
                    crosses.append(t.cross)
                    for m in modalities:
                        clean[name][m][idx] = model.clean(idx, m).astype(np.float16)
                    stages.report(stage="embed", model=name, chunk=s // cfg.chunk_size + 1,
                                  chunks=-(-n // cfg.chunk_size))
                import torch

                terms[name] = CMCTerms(torch.cat(grams), torch.cat(crosses))
                for arr in clean[name].values():
                    arr.flush()
                (folder / "ids.txt").write_text("\n".join(ids) + "\n")
        scores = write_scored(run, stages, ids=ids, assignment=assignment, terms=terms, clean=clean,
                              modalities=modalities, logit_scales=logit_scales,
                              projection_model=next(iter(models)) if cfg.projection else None, seed=cfg.seed)
        run.write_config({
            **base, "status": "complete", "n_samples": n, "n_scored": int(len(scores)),
            "confidence": scores.attrs["confidence"],
            "n_skipped": int(len(errors)), "seconds": round(time.perf_counter() - t0, 2),
            "models": {name: {"source": str(model.folder.resolve()), "views": model.n_views, "dim": model.dim,
                              "trained_on": sorted(set(assignment.roles[assignment.train_sets[name]])),
                              "n_train": int(len(assignment.train_sets[name]))} for name, model in models.items()}})
        run.write_progress(stage="done")
    return RunDir(staging.out)


# --- scores from a table --------------------------------------------------------------------------------------

KNOWN_SCORES = ("multimem", "cmc_in", "cmc_out")
KNOWN_PREFIXES = ("pair__", "contrib__", "base__")


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
    if column in KNOWN_SCORES or column.startswith(KNOWN_PREFIXES):
        return column
    return "base__" + re.sub(r"[^0-9A-Za-z_]+", "_", column).strip("_")


def import_scores(cfg: ScoresImport) -> RunDir:
    """A table of per-sample scores -> a run the dashboard opens (no embeddings, diagnostics or projection)."""
    from .score import _samples_table, package_versions

    path = Path(cfg.scores).expanduser()
    if not path.is_file():
        raise ImportValidationError(f"{path}: no such file (a table with `id` and score columns).")
    table = read_table(path)
    if "id" not in table.columns:
        raise ImportValidationError(f"{path}: no `id` column (its columns: {', '.join(map(str, table.columns))}). "
                                    "Name the sample id column `id`, as in the manifest.")
    dup = table["id"][table["id"].duplicated()].unique().tolist()
    if dup:
        raise ImportValidationError(f"{path}: duplicate ids {_listed(dup)}. One row per sample.")
    numeric = [c for c in table.columns if c not in ("id", "role") and pd.api.types.is_numeric_dtype(table[c])
               and not pd.api.types.is_bool_dtype(table[c])]
    ignored = [c for c in table.columns if c not in ("id", "role") and c not in numeric]
    source_col = cfg.multimem_column or ("multimem" if "multimem" in numeric else None)
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
        raise ImportValidationError(f"{path}: column {source_col!r} is not numeric (e.g. {table[source_col].iloc[0]!r}).")
    bad = table.loc[~np.isfinite(table[source_col].to_numpy(dtype=np.float64)), "id"].tolist()
    if bad:
        raise ImportValidationError(f"{path}: {len(bad)} rows have no finite {source_col!r} ({_listed(bad)}). "
                                    "Drop them or fill them in.")

    source = _read_source(cfg.manifest, cfg.keys)
    manifest_ids = source.table["id"].astype(str).tolist()
    stray = sorted(set(table["id"]) - set(manifest_ids))
    if stray:
        raise ImportValidationError(f"{path}: {len(stray)} ids are not in the manifest {source.path} "
                                    f"({_listed(stray)}). Score the manifest's samples, with its ids.")
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
    assignment = SimpleNamespace(roles=roles)
    order = {sid: i for i, sid in enumerate(manifest_ids)}
    out_table = table.assign(_order=table["id"].map(order)).sort_values("_order", kind="stable")
    scores = pd.DataFrame({"id": out_table["id"].to_numpy(),
                           "role": [roles[order[i]] for i in out_table["id"]]})
    for c, name in names.items():
        scores[name] = out_table[c].to_numpy(dtype=np.float64)
    # our column order: multimem, cmc_in, cmc_out, then the rest as given
    head = [c for c in ("id", "role", *KNOWN_SCORES) if c in scores.columns]
    scores = scores[head + [c for c in scores.columns if c not in head]]

    staging = _StagingDir(cfg.out, overwrite=cfg.overwrite)
    with staging as run:
        run.write_config({
            **cfg.to_dict(), "out": str(staging.out), "source": "import-scores", "modalities": source.modalities,
            "protocol": {"name": "imported"}, "status": "complete", "versions": package_versions(),
            **_manifest_config(source), "dataset": _dataset_info(source),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "n_samples": len(manifest_ids),
            "n_scored": int(len(scores)), "n_skipped": 0,
            "import": {"columns": {str(k): v for k, v in names.items()}, "ignored_columns": [str(c) for c in ignored],
                       "absent": ["embeddings", "diagnostics", "projection"]}})
        run.write_samples(_samples_table(source, SimpleNamespace(ids=manifest_ids,
                                                                 rows=source.table["row"].to_numpy()), assignment))
        run.write_scores(scores)
        run.write_progress(stage="done")
    return RunDir(staging.out)
