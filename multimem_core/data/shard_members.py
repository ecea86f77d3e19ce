"""Reading members of WebDataset shards by reference ("<shard>#<member>", data/shards.py): the bytes behind one
reference (the dashboard shows media from shards with it) and every member of a sample (for writing shards)."""

from __future__ import annotations

import tarfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from webdataset.tariterators import base_plus_ext

from multimem_core.data.files import MEDIA_LIMIT, TooLargeError, size_text
from multimem_core.data.paths import file_under
from multimem_core.data.shards import ShardMemberError, is_meta, split_ref



@lru_cache(maxsize=64)
def _member_index(path: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) of one shard; cached per file version (size and mtime are part
    of the cache key, so a rewritten shard is scanned again)."""
    with tarfile.open(path, "r:") as tar:
        return {info.name: (info.offset_data, info.size) for info in tar if info.isreg()}


def _index_of(path: Path) -> dict[str, tuple[int, int]]:
    st = path.stat()
    try:
        return _member_index(str(path), st.st_size, st.st_mtime_ns)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardMemberError(f"{path}: cannot read the shard ({e})") from e


def _shard_path(root: Path, shard: str) -> Path:
    return file_under(root, shard, missing=f"no shard {shard!r} under {root}", error=ShardMemberError)


def read_member(root: str | Path, ref: str, *, max_bytes: int | None = None) -> bytes:
    """The bytes of the member a reference "<shard>#<member>" names, read directly from the tar (the
    shard's member index is cached, so showing many media of one shard scans it once).

    The shard must lie under `root` (references are untrusted text from a run directory).
    Raises ShardMemberError when it does not, when shard or member is missing, or when the member is
    larger than `max_bytes`."""
    root = Path(root).expanduser().resolve()
    shard, member = split_ref(ref)
    path = _shard_path(root, shard)
    entry = _index_of(path).get(member)
    if entry is None:
        raise ShardMemberError(f"no member {member!r} in {path}")
    offset, size = entry
    if max_bytes is not None and size > max_bytes:
        raise ShardMemberError(f"{ref!r} is larger than {max_bytes} bytes")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise ShardMemberError(f"{path}: member {member!r} is truncated")
    return data


@lru_cache(maxsize=64)
def _key_index(path: str, size: int, mtime_ns: int) -> dict[str, list[tuple[str, int, int]]]:
    """sample key -> [(extension, data offset, size)] of one shard (for copying whole samples)."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for name, (offset, length) in _member_index(path, size, mtime_ns).items():
        prefix, ext = base_plus_ext(name)
        if prefix is not None and not is_meta(name):
            out.setdefault(prefix, []).append((ext.lower(), offset, length))
    return out


def original_members(root: Path, ref: str) -> dict[str, bytes]:
    """Every member of the sample a reference points into: {extension: bytes}."""
    shard, member = split_ref(ref)
    path = _shard_path(root, shard)
    _index_of(path)  # scanned (or refused) with a clear error first
    st = path.stat()
    out = {}
    with open(path, "rb") as f:
        for ext, offset, size in _key_index(str(path), st.st_size, st.st_mtime_ns).get(base_plus_ext(member)[0], []):
            if size > MEDIA_LIMIT:
                raise ShardMemberError(f"{path}: member of {size_text(size)} in sample {member!r}, over the "
                                       f"{size_text(MEDIA_LIMIT)} bound: not copied")
            f.seek(offset)
            out[ext] = f.read(size)
    return out


def member_sizes(paths: Sequence[Path]) -> dict[tuple[str, str], int]:
    """(shard file name, member name) -> declared size, from the headers (cached per shard version)."""
    out = {}
    for p in paths:
        for name, (_, size) in _index_of(Path(p)).items():
            out[(Path(p).name, name)] = size
    return out


def refused_members(rec: dict[str, Any], media: Sequence[str], sizes: dict[tuple[str, str], int]) -> dict[str, Any]:
    """{extension: TooLargeError} for the record's members over the bound (not read; the sample is skipped)."""
    out = {}
    for m in media:
        if rec.get(m):
            shard, member = split_ref(rec[m])
            size = sizes.get((Path(shard).name, member), 0)
            if size > MEDIA_LIMIT:
                reason = f"member of {size_text(size)}, over the {size_text(MEDIA_LIMIT)} bound: not read"
                out[base_plus_ext(member)[1].lower()] = TooLargeError(reason, f"{rec[m]}: {reason}")
    return out
