"""Decoding a whole dataset once, into a cache of fixed-size arrays.

    CACHE/image.npy   uint8   [N, 3, S, S]
    CACHE/audio.npy   float32 [N, L]
    CACHE/video.npy   uint8   [N, T, 3, S, S]
    CACHE/text.json   list[str]
    CACHE/meta.json   the cache key, kept ids and rows, and the per-sample errors; written last, so
                      its presence with a matching key means the arrays beside it are complete

N counts the kept samples only: a sample that fails in any modality is recorded in `errors` and left
out of every array. Training reads the arrays as memory maps, so a dataset larger than RAM still works.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from multimem_core.names import MEDIA_MODALITIES, MODALITIES
from multimem_core.data.manifest import Manifest
from multimem_core.data.media import MediaError, load_audio, load_image, load_text, load_video
from multimem_core.config import MediaSpec
from multimem_core.data.paths import BadPathError, resolve_under
from multimem_core.atomic import allocated_memmap, atomic_save_npy, atomic_write_bytes

CACHE_VERSION = 2  # bump when the decoding itself changes, so old caches are not reused
ERROR_COLUMNS = ["id", "row", "modality", "path", "reason"]
WORKERS = 2  # decoders release the GIL; 2 threads measured faster on the 2-core machines (see tests)
COPY_CHUNK = 1024  # rows per copy when compacting the arrays


@dataclass
class Decoded:
    ids: list[str]
    rows: np.ndarray  # manifest row of each kept sample, manifest order
    arrays: dict[str, np.ndarray | list[str]]  # image/audio/video memmaps, text list[str]
    errors: pd.DataFrame  # id, row, modality, path, reason: one row per failed (sample, modality)
    cache_hit: bool = False  # True when the arrays came from an earlier decode with the same key


def cache_key(manifest: Manifest, modalities: Sequence[str], spec: MediaSpec) -> str:
    """What the decoded arrays depend on: the manifest's bytes and where its media lie, the columns
    read, the modalities and the shapes."""
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "manifest_sha256": manifest.sha256,
            "root": str(manifest.root),
            "columns": manifest.source_columns,
            "modalities": sorted(modalities),
            "spec": asdict(spec),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def decode_manifest(
    manifest: Manifest,
    modalities: Sequence[str],
    spec: MediaSpec,
    cache_dir: str | Path,
    *,
    progress: bool = True,
    workers: int = WORKERS,
) -> Decoded:
    """Decode every row of `manifest` in `modalities` to `spec`'s shapes under `cache_dir`, or reload
    the cache when an earlier call had the same key. Failed samples are recorded, not fatal."""

    def samples(mods: list[str]) -> Iterator[Sample]:
        load = row_loader(manifest, mods, spec)
        return ordered_map(lambda rec: (rec, *load(rec)), manifest.table.to_dict("records"), workers)

    return decode_samples(manifest, modalities, spec, cache_dir, samples, progress=progress)


Sample = tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]  # (record, values, error records)


def decode_samples(
    manifest: Manifest,
    modalities: Sequence[str],
    spec: MediaSpec,
    cache_dir: str | Path,
    samples: Callable[[list[str]], Iterable[Sample]],
    *,
    progress: bool = True,
) -> Decoded:
    """The cache around any way of reading a dataset (manifest files here, WebDataset shards in
    shards.py): reload it when the key matches, else call `samples(modalities)`, which yields every
    row of `manifest.table` in table order as (record, values per modality, error records), and store
    the rows without errors."""
    modalities = list(dict.fromkeys(modalities))
    missing = [m for m in modalities if m not in manifest.modalities]
    if missing:
        raise ValueError(
            f"{manifest.path}: cannot decode {missing}: the manifest has only {manifest.modalities}."
        )
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(manifest, modalities, spec)
    meta_path = cache_dir / "meta.json"
    cached = _load_cache(cache_dir, meta_path, key, modalities)
    if cached is not None:
        return cached
    meta_path.unlink(missing_ok=True)  # from here on the old arrays are being overwritten

    n = len(manifest.table)
    shapes = {
        "image": ((3, spec.image_size, spec.image_size), np.uint8),
        "audio": ((spec.audio_samples,), np.float32),
        "video": ((spec.video_frames, 3, spec.video_size, spec.video_size), np.uint8),
    }
    media = [m for m in MEDIA_MODALITIES if m in modalities]
    partial = {m: allocated_memmap(cache_dir / f"{m}.partial.npy", shapes[m][1], (max(n, 1), *shapes[m][0]))
               for m in media}
    texts: list[str] = []
    kept_ids: list[str] = []
    kept_rows: list[int] = []
    errors: list[dict[str, Any]] = []

    with tqdm(total=n, desc="decode", unit="sample", disable=not progress) as bar:
        for rec, values, errs in samples(modalities):
            bar.update(1)
            if errs:
                errors.extend(errs)
                continue
            k = len(kept_ids)
            for m in media:
                partial[m][k] = values[m]
            if "text" in values:
                texts.append(values["text"])
            kept_ids.append(str(rec["id"]))
            kept_rows.append(int(rec["row"]))

    arrays: dict[str, np.ndarray | list[str]] = {}
    for m in media:
        arrays[m] = _finish_array(partial.pop(m), cache_dir, m, len(kept_ids))
    if "text" in modalities:
        atomic_write_bytes(cache_dir / "text.json", json.dumps(texts, ensure_ascii=False).encode())
        arrays["text"] = texts
    error_frame = pd.DataFrame(errors, columns=ERROR_COLUMNS)
    meta = {
        "key": key,
        "modalities": modalities,
        "spec": asdict(spec),
        "manifest": str(manifest.path),
        "manifest_sha256": manifest.sha256,
        "ids": kept_ids,
        "rows": kept_rows,
        "errors": error_frame.to_dict("records"),
    }
    atomic_write_bytes(meta_path, json.dumps(meta).encode())
    return Decoded(ids=kept_ids, rows=np.asarray(kept_rows, dtype=np.int64), arrays=arrays, errors=error_frame)


def row_loader(
    manifest: Manifest,
    modalities: Sequence[str],
    spec: MediaSpec,
    *,
    open_media: Callable[[dict[str, Any], str], tuple[Path | bytes, str]] | None = None,
):
    """A function: one manifest record -> (values per modality, error records). Every modality of a
    row is tried, so the errors table shows all of what is wrong with a sample at once.

    `open_media(record, modality)` gives what a loader reads (a path, or the bytes of a member of a
    shard) and the name to show in errors; by default the cell is a path under the manifest's root."""
    order = [m for m in MODALITIES if m in modalities]

    def from_path(rec: dict[str, Any], m: str) -> tuple[Path, str]:
        if not str(rec[m]).strip():
            raise MediaError(f"no {m} path")
        shown = str(manifest.media_path(rec[m]))
        try:  # checked before anything opens the file
            return resolve_under(manifest.root, rec[m], allow_outside=spec.allow_outside_root), shown
        except BadPathError as e:
            raise MediaError(e.reason, shown) from e

    open_media = open_media or from_path

    def load(rec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        values: dict[str, Any] = {}
        errs: list[dict[str, Any]] = []
        for m in order:
            cell = rec[m]
            where = "" if m == "text" else str(cell)
            try:
                if m == "text":
                    values[m] = load_text(cell)
                    continue
                src, where = open_media(rec, m)
                if m == "image":
                    values[m] = load_image(src, spec.image_size, fit=spec.image_fit)
                elif m == "audio":
                    values[m] = load_audio(src, spec.audio_sample_rate, spec.audio_samples)
                else:
                    values[m] = load_video(src, spec.video_frames, spec.video_size)
            except MediaError as e:
                errs.append(_error(rec, m, e.path or where, e.reason))
            except Exception as e:  # a file no loader foresaw must cost one sample, not the whole decode
                errs.append(_error(rec, m, where, f"unexpected {type(e).__name__}: {e}"))
        return values, errs

    return load


def _error(rec: dict[str, Any], modality: str, path: str, reason: str) -> dict[str, Any]:
    return {"id": str(rec["id"]), "row": int(rec["row"]), "modality": modality, "path": path, "reason": reason}


def ordered_map(fn, items: Iterable, workers: int) -> Iterator:
    """fn over items in order; with workers > 1 on a thread pool that runs at most a bounded window
    ahead (so a huge manifest, or a stream of shards, never queues all its samples in memory)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    items = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending = deque(pool.submit(fn, it) for it in islice(items, workers * 8))
        while pending:
            done = pending.popleft()
            for it in islice(items, 1):
                pending.append(pool.submit(fn, it))
            yield done.result()


def _finish_array(partial: np.memmap, cache_dir: Path, name: str, kept: int) -> np.ndarray:
    """Move the partial array to its final name, compacted to the kept rows (they are its first `kept`)."""
    src = Path(partial.filename)
    final = cache_dir / f"{name}.npy"
    if kept == partial.shape[0]:
        partial.flush()
        del partial
        os.replace(src, final)
    else:
        if kept == 0:
            atomic_save_npy(final, np.zeros((0, *partial.shape[1:]), dtype=partial.dtype))
        else:
            tmp = cache_dir / f"{name}.compact.npy"
            out = allocated_memmap(tmp, partial.dtype, (kept, *partial.shape[1:]))
            for start in range(0, kept, COPY_CHUNK):
                out[start : start + COPY_CHUNK] = partial[start : min(kept, start + COPY_CHUNK)]
            out.flush()
            del out
            os.replace(tmp, final)
        del partial
        src.unlink(missing_ok=True)
    return _open_array(final)


def _open_array(path: Path) -> np.ndarray:
    # Copy-on-write memory map: the arrays may exceed RAM, nothing writes them back to disk, and torch
    # can wrap them without warning about read-only memory.
    return np.load(path, mmap_mode="c")


def _load_cache(cache_dir: Path, meta_path: Path, key: str, modalities: Sequence[str]) -> Decoded | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key:
        return None
    try:
        arrays: dict[str, np.ndarray | list[str]] = {m: _open_array(cache_dir / f"{m}.npy") for m in MEDIA_MODALITIES
                                                      if m in modalities}
        if "text" in modalities:
            arrays["text"] = json.loads((cache_dir / "text.json").read_text())
    except (OSError, ValueError):
        return None  # a file beside the marker went missing: decode again
    n = len(meta["ids"])
    if any(len(a) != n for a in arrays.values()):
        return None
    return Decoded(
        ids=list(meta["ids"]),
        rows=np.asarray(meta["rows"], dtype=np.int64),
        arrays=arrays,
        errors=pd.DataFrame(meta["errors"], columns=ERROR_COLUMNS),
        cache_hit=True,
    )
