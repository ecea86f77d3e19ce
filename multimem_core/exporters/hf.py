"""`multimem export RUN --to hf`: the cleaned dataset as a Hugging Face dataset (`datasets.load_from_disk(OUT)`).

A run made from a Hugging Face dataset writes its own rows back, with the same features (the media bytes copied
from the input's data files, every column kept) minus the dropped rows. A run made from a manifest or shards
writes the kept rows with its media read from the files into Image/Audio/Video features, so the output holds
the bytes and needs none of the input's paths. Needs the `datasets` package (`pip install datasets`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from multimem_core.data.files import read_regular_bounded
from multimem_core.data.paths import file_under, resolve_under
from multimem_core.review import ReviewError
from multimem_core.run import RunDir

MEDIA_FEATURES = {"image": "Image", "audio": "Audio", "video": "Video"}
MAX_FILE_BYTES = 256 * 2**20  # a media file larger than this is not copied into the table


def require_datasets():
    try:
        import datasets
    except ImportError as e:
        raise ReviewError("--to hf needs the `datasets` package: pip install datasets") from e
    return datasets


def write_hf(run: RunDir, removed: set[str], out: str | Path, unloaded: pd.DataFrame) -> tuple[int, int]:
    """Write the input's rows minus those of the ids in `removed` (the drop rule's and the rows the run could not
    load: multimem_core.export.removal, which also gives `unloaded`, every row the run could not load) as a
    dataset folder `out` (which must not exist yet or be empty); (rows kept, rows in the input), both counted on
    the input as it was before anything was removed."""
    from multimem_core.export import cleaned_manifest

    from .embedding import embedding_input

    datasets = require_datasets()
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReviewError(f"{out} already exists and is not an empty folder: choose a new --out "
                          "(export never writes over files)")
    info = run.config().get("manifest") or {}
    emb = embedding_input(run)  # the input re-read now: its root and its own cells, never the run folder's paths
    if info.get("format") == "hf" and info.get("hf"):
        samples = run.samples()
        rows = dict(zip(unloaded["id"], unloaded["row"]))  # the unloaded rows are in the input, not in samples
        rows.update(zip(samples["id"].astype(str), samples["row"].astype(int)))
        drop_rows = {rows[i] for i in removed if i in rows}
        ds = _input_dataset(datasets, emb, info["hf"])
        total = len(ds)
        ds = ds.select([i for i in range(total) if i not in drop_rows])
    else:
        # the manifest's (or the shards') kept rows, each media cell the input's own for its sample id
        table, total, ids, source = cleaned_manifest(run, removed, unloaded)
        names = info.get("source_columns") or {}
        emb.check(ids, table, {m: names.get(m, m) for m in MEDIA_FEATURES}, source)
        ds = _dataset_from_manifest(datasets, emb.root, names, table)
    try:
        ds.save_to_disk(str(out))
    except (OSError, ValueError) as e:
        raise ReviewError(f"cannot write the dataset into {out}: {e}") from e
    return len(ds), total


def _input_dataset(datasets, emb, hf: dict):
    """The run's input dataset, every row, from its data files (Arrow memory-mapped) as the input re-read now
    names them (`emb`: EmbedInput), with its features; `hf`: what config.json recorded, to see it changed."""
    from datasets.table import InMemoryTable, MemoryMappedTable, concat_tables

    if getattr(emb.source, "format", None) != "hf":
        raise ReviewError(f"{emb.run.path}: the run was made from a Hugging Face dataset, but its input "
                          f"({emb.source.path}) is not one now; put it back where the run found it")
    hf = {**hf, **emb.source.config(), "file_rows": hf.get("file_rows")}
    root = emb.root
    tables = []
    for name in hf["files"]:
        path = file_under(root, name, error=ReviewError,
                          missing=f"{root / name}: the input's data file is gone; export with --format ids instead")
        if hf.get("kind") == "parquet":
            import pyarrow.parquet as pq

            tables.append(InMemoryTable(pq.read_table(path)))
        else:
            try:
                tables.append(MemoryMappedTable.from_file(str(path)))
            except Exception as e:
                raise ReviewError(f"{path}: cannot read the input's data file ({e})") from e
    rows = sum(t.num_rows for t in tables)
    if hf.get("file_rows") and rows != sum(hf["file_rows"]):
        raise ReviewError(f"{root}: the dataset has {rows} rows but had {sum(hf['file_rows'])} when scored: it "
                          "changed after the run; export with --format ids instead")
    features = datasets.Features.from_dict(hf["features"]) if hf.get("features") else None
    table = concat_tables(tables) if len(tables) > 1 else tables[0]
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features))


def _dataset_from_manifest(datasets, root: Path, names: dict, table):
    """The kept rows of a manifest (or shards), `table` (`names`: standard name -> its column), with each media
    file's bytes, read under `root` (the input's own: EmbedInput.root), in an Image/Audio/Video feature."""
    columns, features = {}, {}
    for col in table.columns:
        modality = next((m for m, c in names.items() if c == col and m in MEDIA_FEATURES), None)
        if modality is None:
            columns[col] = ["" if v is None else str(v) for v in table[col].tolist()]
            features[col] = datasets.Value("string")
            continue
        columns[col] = [_media_value(root, v) for v in table[col].tolist()]
        features[col] = getattr(datasets, MEDIA_FEATURES[modality])(decode=False)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _media_value(root: Path, cell) -> dict | None:
    """{"bytes", "path"} of one media cell: a file under the root, a shard member, or media held in a table."""
    from multimem_core.data import hf_media as hf
    from multimem_core.data.shard_members import read_member
    from multimem_core.data.shards import is_member_ref

    text = "" if cell is None else str(cell).strip()
    if not text:
        return None
    try:
        if is_member_ref(text):
            return {"bytes": read_member(root, text, max_bytes=MAX_FILE_BYTES), "path": text.rsplit("#", 1)[1]}
        if hf.is_ref(text):
            return {"bytes": hf.read_hf_media(root, text, max_bytes=MAX_FILE_BYTES), "path": None}
        path = resolve_under(root, text)
        # a regular file of bounded size only: the cell is untrusted text and could name a FIFO or a huge file
        return {"bytes": read_regular_bounded(path, MAX_FILE_BYTES, "media file"), "path": path.name}
    except (ValueError, OSError) as e:  # refused paths, unreadable files, over the bound: each names the file
        raise ReviewError(f"cannot copy {text!r} into the dataset: {e}") from e
