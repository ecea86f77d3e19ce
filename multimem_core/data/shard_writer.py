"""write_shards: samples (media as paths under a root, or as references into shards) -> WebDataset tar shards.

The reading side, and what a shard member and a reference are, is data/shards.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from webdataset.tariterators import base_plus_ext

from multimem_core.names import MEDIA_MODALITIES, MODALITIES
from multimem_core.data.manifest import cell_text
from multimem_core.data import hf_media
from multimem_core.data.shard_members import original_members
from multimem_core.data.shards import EXTENSIONS, META_EXTENSION, is_member_ref, is_meta



def write_shards(
    table: pd.DataFrame,
    root: str | Path,
    out_dir: str | Path,
    *,
    shard_size: int = 1000,
    prefix: str = "shard",
) -> list[Path]:
    """Write each row of `table` as one WebDataset sample keyed by its id into `out_dir`/{prefix}-000000.tar,
    ... (`shard_size` samples a shard), in table order; returns the shard paths.

    Media cells are paths under `root` (a manifest's table) or references "<shard>#<member>" into shards
    under `root` (a table from read_shards or a run's samples.parquet). A sample that came from shards is
    copied member for member, byte for byte (also members this package does not read); otherwise it gets
    key.<media extension> from its files, key.txt, and key.json with label and injected (plus key.cls when
    the label is an integer, the WebDataset convention for class indices).

    Refuses an `out_dir` that already holds .tar files (old shards would mix with the new ones)."""
    import webdataset as wds

    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    root = Path(root).expanduser().resolve()
    out_dir = Path(out_dir).expanduser()
    if out_dir.is_dir() and any(out_dir.glob("*.tar")):
        raise ValueError(f"{out_dir} already holds .tar shards; write into an empty or new folder.")
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, key in enumerate(table["id"].astype(str)):
        _check_key(key, i)
    pattern = str(out_dir).replace("%", "%%") + f"/{prefix}-%06d.tar"
    written: list[Path] = []
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0, post=lambda p: written.append(Path(p))) as sink:
        for rec in table.to_dict("records"):
            sink.write(_sample(rec, root))
    return written


MIME_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "audio/wav": "wav", "audio/flac": "flac",
            "audio/ogg": "ogg", "audio/mpeg": "mp3", "video/mp4": "mp4", "video/webm": "webm"}


def _check_key(key: str, row: int) -> None:
    if not key or base_plus_ext(f"{key}.txt") != (key, "txt") or is_meta(key) or key.startswith("/") or (
            ".." in key.split("/")):
        raise ValueError(f"id {key!r} (row {row}) cannot be a WebDataset key: a key needs a file name without "
                         "dots, and no '..' or leading '/'. Rename the ids (e.g. replace '.' by '_').")


def _sample(rec: dict[str, Any], root: Path) -> dict[str, Any]:
    key = str(rec["id"])
    cells = {m: str(rec.get(m) or "") for m in MODALITIES if cell_text(rec.get(m))}
    refs = [c for m, c in cells.items() if m != "text" and is_member_ref(c)]
    sample: dict[str, Any] = {}
    if refs:
        sample = original_members(root, refs[0])
    for m in MEDIA_MODALITIES:
        cell = cells.get(m)
        if not cell or is_member_ref(cell) or any(e in sample for e in EXTENSIONS[m]):
            continue
        if hf_media.is_ref(cell):  # media held in a Hugging Face data file under the root
            blob = hf_media.read_hf_media(root, cell)
            sample[MIME_EXT.get(hf_media.mime_of(blob), "bin")] = blob
            continue
        path = Path(cell).expanduser()
        path = path if path.is_absolute() else root / path
        ext = path.suffix.lower().lstrip(".")
        if not ext:
            raise ValueError(f"sample {key!r}: {m} file {cell!r} has no extension; the shard member needs one")
        sample[ext] = path.read_bytes()
    if not refs:
        if "text" in cells:
            sample["txt"] = cells["text"]
        meta = {k: cell_text(rec.get(k)) for k in ("label", "injected") if cell_text(rec.get(k))}
        if meta:
            sample[META_EXTENSION] = json.dumps(meta, ensure_ascii=False)
        if meta.get("label", "").lstrip("-").isdigit():
            sample["cls"] = meta["label"]
    return {"__key__": key, **sample}
