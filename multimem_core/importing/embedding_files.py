"""Reading one model's embeddings (a folder of <modality>.npy / .views.npy / .parquet) and checking them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..names import MODALITIES

MAX_LISTED = 10          # ids a message lists before "and N more"
ZERO_NORM = 1e-12
TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
                  ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


class ImportValidationError(ValueError):
    """The inputs cannot make a run. The message names the file, the ids and the fix; nothing was written."""


def shown_ids(items: Sequence) -> str:
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
    # `multimem score --save-views` also keeps the views of its H pass (the ones H's mean is made of):
    # m.heldout.views.npy [A, M, d] with heldout.ids.txt; the importer's H pass uses them when present
    heldout_views: np.ndarray | None = None
    heldout_ids: list[str] | None = None

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


def read_id_lines(path: Path) -> list[str]:
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while ids and not ids[-1]:
        ids.pop()
    empty = [i for i, v in enumerate(ids) if not v]
    if empty:
        raise ImportValidationError(f"{path}: empty id on lines {shown_ids([i + 1 for i in empty])}. One id a line, "
                                    "no blank lines.")
    return ids


def _read_npy(folder: Path, modality: str) -> EmbeddingFile | None:
    views_path, plain_path = folder / f"{modality}.views.npy", folder / f"{modality}.npy"
    if not views_path.is_file() and not plain_path.is_file():
        return None
    ids_path = _id_file(folder, modality)
    ids = read_id_lines(ids_path)
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
    h_views, h_ids = _read_heldout_views(folder, modality, views)
    return EmbeddingFile(modality, path, ids, views, clean, h_views, h_ids)


def _read_heldout_views(folder: Path, modality: str, views: np.ndarray):
    """m.heldout.views.npy [A, M, d] with heldout.ids.txt (the H pass of a run saved with --save-views), if any."""
    path, ids_path = folder / f"{modality}.heldout.views.npy", folder / "heldout.ids.txt"
    if not path.is_file():
        return None, None
    if not ids_path.is_file():
        raise ImportValidationError(f"{path}: no {ids_path.name} beside it (the ids of its rows, one a line).")
    h_views, h_ids = _float_array(path), read_id_lines(ids_path)
    if h_views.ndim != 3 or h_views.shape[0] != views.shape[0] or h_views.shape[2] != views.shape[2] or (
            h_views.shape[1] != len(h_ids)):
        raise ImportValidationError(f"{path}: shape {tuple(h_views.shape)}; beside views {tuple(views.shape)} it must "
                                    f"be [A, M, d] = [{views.shape[0]}, {len(h_ids)} (lines of {ids_path.name}), "
                                    f"{views.shape[2]}].")
    return h_views, h_ids


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
            raise ImportValidationError(f"{path}: empty {column!r} cells for ids {shown_ids([ids[i] for i in bad])} "
                                        "(or inside them). Every sample needs its vector.")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            first = int(lengths[0])
            bad = np.flatnonzero(lengths != first)
            rows = bad if not shape else np.unique(bad // int(np.prod(shape)))
            raise ImportValidationError(
                f"{path}: column {column!r} holds lists of different lengths ({first} for id {ids[0]!r}, other "
                f"lengths for ids {shown_ids([ids[i] for i in rows])}). Every vector of a modality has the same size.")
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

    def views(self, idx: np.ndarray, modalities: Sequence[str], *, heldout_pass: bool = False):
        """[A, B, n, d] float32 L2-normalised torch tensor of the samples at positions `idx` of `ids`;
        heldout_pass: from the H pass's own views where the folder keeps them (m.heldout.views.npy)."""
        import torch
        import torch.nn.functional as F

        a = self.n_views
        per_mod = []
        for m in modalities:
            f = self.files[m]
            h_pos = {sid: r for r, sid in enumerate(f.heldout_ids or [])}
            if heldout_pass and f.heldout_views is not None and all(self.ids[i] in h_pos for i in idx):
                x = np.asarray(f.heldout_views[:, [h_pos[self.ids[i]] for i in idx]], dtype=np.float32)
            else:
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
            raise ImportValidationError(f"{f.path}: duplicate ids {shown_ids(dup)}. One row per sample.")
        if f is not first and set(f.ids) != set(first.ids):
            only_first = [i for i in first.ids if i not in set(f.ids)]
            only_this = [i for i in f.ids if i not in set(first.ids)]
            parts = []
            if only_first:
                parts.append(f"{len(only_first)} ids only in {first.path.name} ({shown_ids(only_first)})")
            if only_this:
                parts.append(f"{len(only_this)} ids only in {f.path.name} ({shown_ids(only_this)})")
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
                    f"{f.path}: {len(bad)} embeddings {what} (ids {shown_ids([f.ids[i] for i in bad])}). A vector "
                    "without a direction has no cosine: fix those samples, or leave them out of every file.")
