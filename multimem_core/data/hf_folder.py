"""`imagefolder` / `audiofolder` datasets: a folder of media files with a metadata.jsonl (or .csv) whose
`file_name` column names each file, relative to the metadata file's folder. Read as a manifest: the
`file_name` column is the media path of the modality its files' extensions tell.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from multimem_core.config import ColumnKeys
from multimem_core.data.manifest import Manifest, ManifestError, read_manifest

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
FOLDER_EXTENSIONS = {
    "image": {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"},
    "audio": {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus"},
    "video": {".mp4", ".webm", ".avi", ".mov", ".mkv"},
}


def metadata_file(path: str | Path) -> Path | None:
    """The metadata file of an imagefolder/audiofolder at `path` (the file itself, the folder, or its only split
    folder); None if none."""
    path = Path(path).expanduser()
    if path.is_file() and path.name in METADATA_FILES:
        return path
    if not path.is_dir():
        return None
    here = [path / m for m in METADATA_FILES if (path / m).is_file()]
    if here:
        return here[0]
    splits = sorted(p for p in path.iterdir() if p.is_dir() and any((p / m).is_file() for m in METADATA_FILES))
    if len(splits) > 1:
        raise ManifestError(f"{path}: several splits with metadata ({', '.join(p.name for p in splits)}): name one "
                            f"split's folder, e.g. {splits[0]}.")
    return metadata_file(splits[0]) if splits else None


def read_folder(path: str | Path, *, keys: ColumnKeys | None = None,
                modalities: Sequence[str] | None = None) -> Manifest:
    """An imagefolder/audiofolder: its metadata file read as a manifest whose `file_name` column holds the
    media path (relative to the metadata file's folder), the modality told by the files' extensions."""
    meta = metadata_file(path)
    if meta is None:
        raise ManifestError(f"{path}: no {' or '.join(METADATA_FILES)} in this folder.")
    keys = keys or ColumnKeys()
    head = _first_rows(meta)
    if "file_name" in head.columns:
        modality = _modality_of(meta, head["file_name"].astype(str).tolist())
        if getattr(keys, modality) == getattr(ColumnKeys(), modality):
            keys = replace(keys, **{modality: "file_name"})
    return read_manifest(meta, keys=keys, modalities=modalities)


def _first_rows(meta: Path) -> pd.DataFrame:
    if meta.suffix == ".csv":
        return pd.read_csv(meta, dtype=str, keep_default_na=False, nrows=50)
    rows = []
    with open(meta, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    break  # the manifest reader names the bad line
            if len(rows) >= 50:
                break
    return pd.DataFrame.from_records([r for r in rows if isinstance(r, dict)])


def _modality_of(meta: Path, names: list[str]) -> str:
    for m, exts in FOLDER_EXTENSIONS.items():
        if any(Path(n).suffix.lower() in exts for n in names):
            return m
    raise ManifestError(f"{meta}: its file_name column names no image, audio or video files "
                        f"({', '.join(names[:3])}, …).")
