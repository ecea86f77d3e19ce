"""Media held inside Hugging Face Arrow/Parquet data files, one value at a time: the references the run
keeps for them ("<file>#<column>/<row>", row counted within that file), reading the bytes behind one (the
dashboard and the exporters), and telling their media type without a file name.

A reference is untrusted text from a run directory: the file it names must lie under the dataset's root,
and a value over the byte limit is refused before it is copied out of the file.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from multimem_core.data.paths import file_under

REF = re.compile(r"(?s)(.+?\.(?:arrow|parquet))#(.+)/(\d+)")
MAX_MEDIA_BYTES = 256 * 2**20  # one sample's media held in a table; larger is a mistake, not a picture


class HFMediaError(ValueError):
    """A reference "<file>#<column>/<row>" that cannot be read; the message says why."""



def is_ref(value: Any) -> bool:
    return isinstance(value, str) and REF.fullmatch(value) is not None


def split_ref(ref: str) -> tuple[str, str, int]:
    match = REF.fullmatch(str(ref))
    if match is None:
        raise HFMediaError(f"{ref!r} is not a reference like 'data-00000-of-00001.arrow#image/0'")
    return match.group(1), match.group(2), int(match.group(3))



def struct_with_bytes(t) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0


def arrow_table(path: Path):
    """A whole Arrow file as a pyarrow Table, memory-mapped (nothing is read until a value is used)."""
    st = path.stat()
    return _arrow_cached(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _arrow_cached(path: str, size: int, mtime_ns: int):
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(pa.memory_map(path)).read_all()
    except Exception as e:
        raise HFMediaError(f"{path}: cannot read as Arrow ({e})") from e



def read_hf_media(root: str | Path, ref: str, *, max_bytes: int = MAX_MEDIA_BYTES) -> bytes:
    """The media bytes a reference "<file>#<column>/<row>" names. The file must lie under `root` (references
    are untrusted text from a run directory); a value over `max_bytes` is refused before it is copied."""
    import pyarrow.compute as pc

    file, col, row = split_ref(ref)
    root = Path(root).expanduser().resolve()
    path = file_under(root, file, missing=f"no data file {file!r} under {root}", error=HFMediaError)
    try:
        column = _one_row(path, col, row)
    except (KeyError, IndexError, HFMediaError) as e:
        raise HFMediaError(f"{ref!r}: no such row or column in {path} ({e})") from e
    if not struct_with_bytes(column.type):
        raise HFMediaError(f"{ref!r}: column {col!r} holds no media bytes")
    blobs = column.field("bytes")
    size = pc.binary_length(blobs)[0].as_py()
    if size is None:
        raise HFMediaError(f"{ref!r}: the row holds no bytes")
    if size > max_bytes:
        raise HFMediaError(f"{ref!r} is larger than {max_bytes // 2**20} MiB")
    return blobs[0].as_py()


def _one_row(path: Path, col: str, row: int):
    """Column `col` of row `row` of a data file, as a length-1 array: Arrow memory-mapped, Parquet one row group."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        f = pq.ParquetFile(path)
        for g in range(f.metadata.num_row_groups):
            n = f.metadata.row_group(g).num_rows
            if row < n:
                return f.read_row_group(g, columns=[col]).column(col).slice(row, 1).combine_chunks()
            row -= n
        raise IndexError(row)
    table = arrow_table(path)
    if row >= table.num_rows:
        raise IndexError(row)
    return table.column(col).slice(row, 1).combine_chunks()


def mime_of(blob: bytes) -> str:
    """The media type of bytes held without a file name, from their first bytes."""
    head = blob[:16]
    for magic, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
                        (b"BM", "image/bmp"), (b"fLaC", "audio/flac"), (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"),
                        (b"\x1aE\xdf\xa3", "video/webm")):
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF":
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12],
                                                                                          "application/octet-stream")
    if head[4:8] == b"ftyp":
        return "video/mp4"
    return "application/octet-stream"

