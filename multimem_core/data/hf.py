"""Hugging Face datasets in: `save_to_disk` folders, Arrow/Parquet files with Image/Audio/Video features
(the media's bytes inside the table).

Read with pyarrow alone (the `datasets` package is needed only to write one back, exporters/hf.py):

    read_hf        the index: the small columns (text, id, label) of every data file -> a Manifest whose
                   media cells are references "<file>#<column>/<row>" (row counted within that file), or the
                   file path the feature stores when it holds no bytes (checked under the root like any path)
    decode_hf      one pass through the data files, record batch by record batch (Arrow files memory-mapped),
                   media bytes straight into the loaders, into the same cache and `Decoded` as manifests

The bytes behind one reference (for the dashboard and the exporters) are data/hf_media.py; imagefolder and
audiofolder folders are data/hf_folder.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from multimem_core.names import MODALITIES
from multimem_core.config import ColumnKeys
from multimem_core.data.decode import WORKERS, Decoded, Sample, decode_samples, ordered_map, row_loader
from multimem_core.data.hf_folder import METADATA_FILES
from multimem_core.data.hf_media import (MAX_MEDIA_BYTES, HFMediaError, arrow_table, is_ref,
                                         struct_with_bytes)
from multimem_core.data.manifest import EXTRA_COLUMNS, Manifest, ManifestError, cell_text, map_columns
from multimem_core.config import MediaSpec
from multimem_core.data.media import MediaError
from multimem_core.data.paths import OutsideRootError, resolve_under

FORMAT = "hf"
BATCH_ROWS = 64  # rows per record batch read while decoding: media of 64 samples in memory at a time


@dataclass
class HFDataset(Manifest):
    """A Manifest read from Hugging Face Arrow/Parquet files (format "hf"). `files` (relative to `root`)
    hold the rows in order, `file_rows` how many each; `features` is the datasets Features JSON."""

    files: list[str] = field(default_factory=list)
    file_rows: list[int] = field(default_factory=list)
    kind: str = "arrow"  # arrow | parquet
    features: dict = field(default_factory=dict)

    def config(self) -> dict:
        """What a run's config.json keeps to find the rows again (export --to hf writes them back)."""
        return {"files": self.files, "file_rows": self.file_rows, "kind": self.kind, "features": self.features}


# -------------------------------------------------------------------------------------------- detection


def data_files(path: str | Path) -> tuple[Path, list[Path], str] | None:
    """(root, data files in order, "arrow"|"parquet") when `path` is a Hugging Face dataset held in Arrow or
    Parquet; None when it is something else (a manifest, shards, an imagefolder)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix == ".arrow":
            return path.parent.resolve(), [path.resolve()], "arrow"
        if path.suffix in (".parquet", ".pq") and _has_media_struct(path):
            return path.parent.resolve(), [path.resolve()], "parquet"
        return None
    if not path.is_dir():
        return None
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise ManifestError(f"{path}: a DatasetDict with splits {', '.join(splits)}: name one split's folder, "
                            f"e.g. {path / (splits[0] if splits else 'train')}.")
    state = path / "state.json"
    if state.is_file():
        try:
            names = [f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ManifestError(f"{state}: not a datasets state.json ({e}). Save the dataset again with "
                                "save_to_disk.") from e
        return path.resolve(), [_under(path, n) for n in names], "arrow"
    if any((path / m).is_file() for m in METADATA_FILES) or any(path.glob("*.tar")):
        return None
    for ext, kind in ((".parquet", "parquet"), (".arrow", "arrow")):
        found = sorted(p for p in path.rglob(f"*{ext}") if p.is_file())
        if found:
            # a folder of data files is one dataset; manifests beside them make it a folder of inputs: ask which
            others = sorted(p.name for p in path.iterdir() if p.suffix in (".csv", ".tsv", ".jsonl") and p.is_file())
            if others:
                raise ManifestError(f"{path}: holds manifests ({', '.join(others[:3])}{', …' if len(others) > 3 else ''})"
                                    f" beside {ext} data files ({found[0].relative_to(path)}{', …' if len(found) > 1 else ''}):"
                                    " name the file to read, e.g. " + str(path / others[0]) + ".")
            return path.resolve(), [p.resolve() for p in found], kind
    return None


def _under(root: Path, name: str) -> Path:
    try:
        return resolve_under(root, name)
    except OutsideRootError as e:
        raise ManifestError(f"{root / 'state.json'}: {e}") from e


def _has_media_struct(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception:  # not Parquet after all: the manifest reader names the problem
        return False
    return any(struct_with_bytes(schema.field(n).type) for n in schema.names)



# -------------------------------------------------------------------------------------------------- read


def read_hf(path: str | Path, *, keys: ColumnKeys | None = None,
            modalities: Sequence[str] | None = None) -> HFDataset:
    """Index a Hugging Face dataset held in Arrow/Parquet as a manifest (see the module's docstring)."""
    found = data_files(path)
    if found is None:
        raise ManifestError(f"{path}: not a Hugging Face dataset (no state.json, .arrow or Parquet with media).")
    root, files, kind = found
    keys = keys or ColumnKeys()
    schema = _schema(files[0], kind)
    features = _features(Path(path).expanduser(), schema)
    raw_cols = list(schema.names)
    source = map_columns(root, raw_cols, keys, modalities)
    media = {m: c for m, c in source.items() if m in ("image", "audio", "video")}
    small = [c for m, c in source.items() if m not in media]
    parts: list[pd.DataFrame] = []
    file_rows: list[int] = []
    names = [p.relative_to(root).as_posix() for p in files]
    for p, name in zip(files, names):
        if _schema(p, kind).names != raw_cols:
            raise ManifestError(f"{p}: its columns {_schema(p, kind).names} differ from {files[0].name}'s {raw_cols}.")
        start = 0
        for batch in _batches(p, kind, small + list(media.values())):
            part = pd.DataFrame({c: batch.column(c).to_pylist() for c in small}, dtype=object)
            for c in media.values():
                part[c] = _media_cells(batch.column(c), name, c, start)
            start += batch.num_rows
            parts.append(part)
        file_rows.append(start)
    raw = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(raw) == 0:
        raise ManifestError(f"{path}: the dataset has no rows.")
    label_names = (features.get(source.get("label", ""), {}) or {}).get("names")
    table = pd.DataFrame({"id": _ids(path, raw, source.get("id")), "row": range(len(raw))})
    for name in [m for m in MODALITIES if m in source] + [c for c in EXTRA_COLUMNS if c in source]:
        values = raw[source[name]].tolist()
        if name == "label" and label_names:
            values = [label_names[v] if isinstance(v, int) and 0 <= v < len(label_names) else v for v in values]
        table[name] = [cell_text(v) for v in values]
    return HFDataset(table=table, root=root, path=Path(path).expanduser(), format=FORMAT, source_columns=source,
                     sha256=_fingerprint(files), files=names, file_rows=file_rows, kind=kind, features=features)


def _schema(path: Path, kind: str):
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path) if kind == "parquet" else arrow_table(path).schema
    except ManifestError:
        raise
    except Exception as e:
        raise ManifestError(f"{path}: cannot read as {kind} ({e}).") from e


def _features(path: Path, schema) -> dict:
    """The datasets Features JSON: from the table's own metadata, else dataset_info.json beside it."""
    meta = (schema.metadata or {}).get(b"huggingface")
    try:
        if meta:
            return json.loads(meta)["info"]["features"]
        info = path / "dataset_info.json" if path.is_dir() else path.parent / "dataset_info.json"
        if info.is_file():
            return json.loads(info.read_text()).get("features") or {}
    except (ValueError, KeyError, TypeError):
        pass
    return {}


def _media_cells(column, file_name: str, col: str, start: int) -> list[str]:
    """One media column -> its cells: a reference where the row holds bytes, the stored path where it
    holds only a path, "" where it holds neither; a plain string column is a column of paths."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return [cell_text(v) for v in column.to_pylist()]
    if not struct_with_bytes(column.type):
        raise ManifestError(f"{file_name}: media column of type {column.type}, not an Image/Audio/Video feature "
                            "(a struct of bytes and path) nor paths.")
    has_bytes = pc.is_valid(column.field("bytes")).to_pylist()
    paths = (column.field("path").to_pylist() if column.type.get_field_index("path") >= 0
             else [None] * len(column))
    return [f"{file_name}#{col}/{start + i}" if b else cell_text(p) for i, (b, p) in enumerate(zip(has_bytes, paths))]


def _ids(path, raw: pd.DataFrame, id_col: str | None) -> list[str]:
    if id_col is None:
        return [str(i) for i in range(len(raw))]
    ids = [cell_text(v).strip() for v in raw[id_col].tolist()]
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique().tolist()
    if dup or any(not i for i in ids):
        raise ManifestError(f"{path}: the id column {id_col!r} has {'duplicate ids ' + repr(dup[:10]) if dup else 'empty ids'}."
                            f" Ids must be unique: fix them, or name another column with --id-key.")
    return ids


def _fingerprint(files: list[Path]) -> str:
    """What the decode cache depends on: every data file's name, size and modification time."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _batches(path: Path, kind: str, columns: list[str]) -> Iterator:
    """The file's rows as record batches of `columns`, BATCH_ROWS at a time: an Arrow file is memory-mapped,
    a Parquet file read one row group at a time, so memory holds one batch of media, not the file."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        except Exception as e:
            raise ManifestError(f"{path}: cannot read as Parquet ({e}).") from e
        return
    yield from arrow_table(path).select(columns).to_batches(max_chunksize=BATCH_ROWS)


# ------------------------------------------------------------------------------------------------ decode


def decode_hf(ds: HFDataset, modalities: Sequence[str], spec: MediaSpec, cache_dir: str | Path, *,
              progress: bool = True, workers: int = WORKERS) -> Decoded:
    """Decode every row of `ds` in `modalities` into the cache (or reload it), one pass over the data files.
    A row whose media does not decode is recorded in `errors` and skipped, as for manifests."""

    def samples(mods: list[str]) -> Iterator[Sample]:
        load = row_loader(ds, mods, spec, open_media=_held_bytes(ds, spec))

        def one(rec: dict[str, Any]) -> Sample:
            values, errs = load(rec)
            return {k: v for k, v in rec.items() if not k.startswith("__")}, values, errs

        return ordered_map(one, _records_with_media(ds, mods), workers)

    return decode_samples(ds, modalities, spec, cache_dir, samples, progress=progress)


def _held_bytes(ds: HFDataset, spec: MediaSpec):
    """open_media for row_loader: a reference gives the bytes read beside the record; a path is checked under
    the root like a manifest's."""

    def open_media(rec: dict[str, Any], m: str):
        cell = str(rec[m])
        if is_ref(cell):
            blob = rec["__bytes__"].get(m)
            if blob is None:
                raise MediaError(f"no {m} bytes in the table", cell)
            if isinstance(blob, HFMediaError):
                raise MediaError(str(blob), cell)
            return blob, cell
        if not cell.strip():
            raise MediaError(f"no {m} in the table (neither bytes nor a path)")
        try:
            return resolve_under(ds.root, cell, allow_outside=spec.allow_outside_root), cell
        except OutsideRootError as e:
            raise MediaError(e.reason, cell) from e

    return open_media


def _records_with_media(ds: HFDataset, modalities: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Every record of ds.table in order, with "__bytes__": {modality: the media bytes its row holds}."""
    import pyarrow.compute as pc

    media = {m: ds.source_columns[m] for m in ("image", "audio", "video") if m in modalities}
    records = iter(ds.table.to_dict("records"))
    for name in ds.files:
        for batch in _batches(ds.root / name, ds.kind, list(media.values())):
            columns = {}
            for m, c in media.items():
                col = batch.column(c)
                if struct_with_bytes(col.type):
                    blobs = col.field("bytes")
                    columns[m] = (blobs, pc.binary_length(blobs).to_pylist())
            for i in range(batch.num_rows):
                rec = next(records)
                held = {}
                for m, (blobs, lengths) in columns.items():
                    n = lengths[i]
                    if n is not None and n > MAX_MEDIA_BYTES:
                        held[m] = HFMediaError(f"{m} of {n:,} bytes, over {MAX_MEDIA_BYTES:,}: not decoded")
                    elif n is not None:
                        held[m] = blobs[i].as_py()
                yield {**rec, "__bytes__": held}


