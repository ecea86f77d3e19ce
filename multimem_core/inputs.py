"""The input of a run, read once: the manifest (or shards), its decoded media (cached), the samples table.

Everything that reads a dataset for the engine goes through here: `multimem score` (score.score_run), the
importers, restoring a finished run's inputs (restore.py) and, through `select`, every module that takes
rows out of the decoded tensors (training, evaluation, the what-if preview). No training code here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .config import ColumnKeys
from .data.manifest import Manifest
from .config import MediaSpec


def is_shards(path: str | Path) -> bool:
    """A folder or a .tar names WebDataset shards; anything else is a manifest file."""
    path = Path(path).expanduser()
    return path.is_dir() or str(path).endswith(".tar")


def read_input(path: str | Path, *, keys: ColumnKeys | None = None,
               modalities: Sequence[str] | None = None) -> Manifest:
    """The manifest, the Hugging Face dataset or the shards at `path`, checked (data.manifest, data.hf and
    data.shards say what is wrong)."""
    from .data import hf, hf_folder

    path = Path(path).expanduser()
    if hf.data_files(path) is not None:
        return hf.read_hf(path, keys=keys, modalities=modalities)
    if hf_folder.metadata_file(path) is not None:
        return hf_folder.read_folder(path, keys=keys, modalities=modalities)
    if is_shards(path):
        from .data.shards import read_shards

        return read_shards(path, keys=keys, modalities=modalities)
    from .data.manifest import read_manifest

    return read_manifest(path, keys=keys, modalities=modalities)


def decode(source, modalities: Sequence[str], spec: MediaSpec, cache_dir: str | Path, *, progress: bool):
    """Every sample's media decoded to `spec`'s fixed shapes, memory-mapped from `cache_dir` (reused when
    the input, the modalities and the spec are the same)."""
    if getattr(source, "format", None) == "hf":
        from .data.hf import decode_hf

        return decode_hf(source, modalities, spec, cache_dir, progress=progress)
    if getattr(source, "format", None) == "webdataset":
        from .data.shards import decode_shards

        return decode_shards(source, modalities, spec, cache_dir, progress=progress)
    from .data.decode import decode_manifest

    return decode_manifest(source, modalities, spec, cache_dir, progress=progress)


def dataset_info(source: Manifest) -> dict | None:
    """The built-in datasets' dataset.json beside the manifest (name, injected kinds, hints), if any."""
    info = Path(source.root) / "dataset.json"
    return json.loads(info.read_text()) if info.is_file() else None


def manifest_config(source: Manifest) -> dict:
    """What a run's config.json records about its input: where it is, its format, hash and columns."""
    manifest = {"path": str(Path(source.path).expanduser().resolve()), "format": source.format,
                "sha256": source.sha256, "source_columns": source.source_columns}
    if hasattr(source, "files") and source.format == "hf":  # the data files, to write the rows back (export)
        manifest["hf"] = source.config()
    return {"dataset_root": str(Path(source.root).resolve()), "manifest": manifest}


def samples_table(source: Manifest, *, ids: Sequence[str], rows: np.ndarray, roles: np.ndarray) -> pd.DataFrame:
    """RUN/samples.parquet: per sample (manifest rows `rows`, named `ids`) its role, input columns, `injected`."""
    table = source.table.set_index("row", drop=False).loc[rows].reset_index(drop=True)
    table["id"] = list(ids)
    table.insert(1, "role", roles)
    if "injected" not in table:
        table["injected"] = ""
    table["injected"] = table["injected"].fillna("").astype(str)
    return table


def feature_keys(model, arrays: dict) -> dict[str, str]:
    """The cache key of each frozen encoder's features (modality -> key): the encoder and the exact inputs it
    reads (the decoded media's bytes, or the texts)."""
    import hashlib

    keys = {}
    for m in model.modalities:
        encoder = getattr(model.towers[m], "encoder_name", None)
        if encoder is None:
            continue
        digest = hashlib.sha256(encoder.encode())
        if isinstance(arrays[m], np.ndarray):  # decoded media (a frozen image tower): their bytes
            digest.update(str(arrays[m].shape).encode())
            digest.update(np.ascontiguousarray(arrays[m]).data)
        else:
            digest.update(json.dumps(list(arrays[m])).encode())
        keys[m] = digest.hexdigest()[:16]
    return keys


def features_path(cache_dir: str | Path, modality: str, key: str) -> Path:
    """Where prepare_cached keeps a frozen encoder's features of `modality` under the cache key `key`."""
    return Path(cache_dir) / f"features_{modality}_{key}.npy"


def features_cached(cache_dir: str | Path, keys: dict[str, str]) -> bool:
    """Whether every frozen encoder's features (`keys`: feature_keys) are already cached: preparing then
    encodes nothing (False when there is no frozen encoder: nothing cached to reuse)."""
    return bool(keys) and all(features_path(cache_dir, m, k).is_file() for m, k in keys.items())


def prepare_cached(model, arrays: dict, cache_dir: Path, *, keys: dict[str, str] | None = None) -> dict:
    """Each tower's prepare() on the decoded arrays; frozen pretrained features are cached on disk.

    A frozen encoder (MiniLM for text, EfficientNet-Lite0 for images) is the expensive part of preparing: its
    features are kept in cache_dir keyed by the encoder and the exact inputs, so a rerun, a resumed run or a
    training worker never recomputes them. They are memory-mapped (.npy): the processes of a run share one
    copy in the page cache, and a dataset larger than memory stays on disk. Under torchrun every process
    encodes its share of the rows (distributed.py); the cached file is the one a single process writes.
    `keys`: feature_keys(model, arrays) when the caller has them. A training worker passes the lead's, so
    that it never reads the decoded media: hashing them again would map every decoded image into every
    worker (at 16k photos, 1.2 GB more in the training stage).
    """
    from .distributed import barrier, dist_info, from_lead

    rank, world = dist_info()
    keys = feature_keys(model, arrays) if keys is None else keys
    out = {}
    for m in model.modalities:
        tower = model.towers[m]
        if getattr(tower, "encoder_name", None) is None:
            out[m] = tower.prepare(arrays[m])
            continue
        path = features_path(cache_dir, m, keys[m])
        if not from_lead(path.is_file()):
            if world > 1 and hasattr(tower, "prepare_share"):
                _prepare_shared(tower, arrays[m], path, rank, world)
            elif rank == 0:
                _save(path, tower.prepare(arrays[m]).numpy())
            barrier()
        out[m] = cached_features(path)
    return out


def cached_features(path: Path):
    """A cached feature file as a tensor over its memory map (copy-on-write: never written back)."""
    import torch

    return torch.from_numpy(np.load(path, mmap_mode="c"))


def _save(path: Path, array: np.ndarray) -> None:
    from .atomic import atomic_save_npy

    atomic_save_npy(path, array)  # no half file under the final name; an unguessable temporary name


def _prepare_shared(tower, raw, path: Path, rank: int, world: int) -> None:
    """Every process encodes its share of the rows into its own part files beside the cache; the lead puts the
    rows in place (through a memory map: one part in memory at a time), then removes the parts."""
    import os

    from .distributed import barrier
    from .atomic import allocated_memmap

    parts = [(path.with_name(f"{path.stem}.part{r}-of-{world}.rows.npy"),
              path.with_name(f"{path.stem}.part{r}-of-{world}.npy")) for r in range(world)]
    rows, feats = tower.prepare_share(raw, rank, world)
    _save(parts[rank][1], feats.numpy())
    _save(parts[rank][0], np.asarray(rows, dtype=np.int64))
    barrier()
    if rank != 0:
        return
    shapes = [np.load(f, mmap_mode="r").shape for _, f in parts]
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    full = allocated_memmap(tmp, np.float32, (len(raw), *next(s for s in shapes if s[0])[1:]))
    for rows_file, feats_file in parts:
        full[np.load(rows_file)] = np.load(feats_file, mmap_mode="r")
    full.flush()
    del full
    os.replace(tmp, path)
    for files in parts:
        for f in files:
            f.unlink(missing_ok=True)


def select(data: dict, idx: np.ndarray) -> dict:
    """The rows `idx` (in that order) of every modality's decoded tensor."""
    import torch

    index = torch.from_numpy(np.sort(idx))  # sorted reads are friendlier to memory-mapped arrays
    perm = torch.from_numpy(np.argsort(np.argsort(idx)))
    return {m: x[index][perm] for m, x in data.items()}
