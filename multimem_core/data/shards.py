"""WebDataset shards in and out (DESIGN §5): the other input format besides manifests.

A shard is an uncompressed .tar whose members group into samples by key exactly as the `webdataset`
package groups them: the key is the member name up to the first dot of its file name, consecutive
members with the same key are one sample (`s001.jpg`, `s001.txt`, `s001.wav`, `s001.mp4`).

    read_shards    the index: one scan of the tar headers of every shard (media are seeked past, only the
                   small .txt/.cls/.label/.json members are read) -> a Manifest whose media cells are
                   references "<shard>#<member>", so everything downstream treats shards like a manifest
    decode_shards  one streamed pass through every shard with webdataset (nothing unpacked to disk), member
                   bytes straight into the media loaders, into the same cache and `Decoded` as
                   decode_manifest, with the same per-sample errors
    read_member    the bytes behind one reference (the dashboard shows media from shards with it): data/shard_members.py
(Writing shards, the other way round, is data/shard_writer.py.)

Whatever stops the whole dataset (no shards, an unreadable shard, fewer than two modalities, the same key
twice) raises ManifestError naming the shard; a member that does not decode costs its sample only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
from braceexpand import braceexpand
from webdataset.tariterators import base_plus_ext, tarfile_samples

from multimem_core.names import MODALITIES
from multimem_core.data.files import MEDIA_LIMIT, TooLargeError
from multimem_core.data.decode import WORKERS, Decoded, Sample, decode_samples, ordered_map, row_loader
from multimem_core.config import ColumnKeys
from multimem_core.data.manifest import Manifest, ManifestError, cell_text
from multimem_core.data.media import MediaError
from multimem_core.config import MediaSpec

# Member extensions per modality, in order of preference when a sample has several.
EXTENSIONS = {
    "image": ("jpg", "jpeg", "png", "webp"),
    "text": ("txt",),
    "audio": ("wav", "flac", "ogg", "mp3"),
    "video": ("mp4", "webm", "avi"),
}
LABEL_EXTENSIONS = ("cls", "label")  # plain text; a .json member's "label" is used when neither is there
META_EXTENSION = "json"  # {"label": ..., "injected": ...}
SMALL_MEMBER_BYTES = 1 << 20  # text/label/json members larger than this are not metadata: not read in the index
REF = re.compile(r"(?s)(.+?\.tar)#(.+)")


class ShardMemberError(ValueError):
    """A reference "<shard>#<member>" that cannot be read; the message says why (outside the root, no such
    shard, no such member, too large)."""


@dataclass
class Shards(Manifest):
    """A Manifest read from WebDataset shards (format "webdataset"): media cells are references
    "<shard>#<member>" with the shard's path relative to `root`; `shards` lists the shard files in order."""

    shards: list[Path] = field(default_factory=list)


def is_member_ref(value: Any) -> bool:
    """True for a media cell that names a member of a shard ("shard-000.tar#s001.jpg")."""
    return isinstance(value, str) and REF.fullmatch(value) is not None


def split_ref(ref: str) -> tuple[str, str]:
    """"shard-000.tar#s001.jpg" -> ("shard-000.tar", "s001.jpg")."""
    match = REF.fullmatch(str(ref))
    if match is None:
        raise ShardMemberError(f"{ref!r} is not a shard reference like 'shard-000000.tar#key.jpg'")
    return match.group(1), match.group(2)


# ------------------------------------------------------------------------------------------------ reading


def shard_paths(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """The shard files `source` names, in order: a folder (its *.tar, sorted by name), one .tar, a brace
    pattern ("data/shard-{000000..000009}.tar"), or a list of any of these."""
    if isinstance(source, (list, tuple)):
        paths = [p for s in source for p in shard_paths(s)]
        if not paths:
            raise ManifestError("an empty list of shards: name at least one .tar file or a folder of them.")
        return paths
    text = os.path.expanduser(str(source))
    path = Path(text)
    if path.is_dir():
        paths = sorted(p for p in path.glob("*.tar") if p.is_file())
        if not paths:
            raise ManifestError(f"{path}: no .tar shards in this folder. Give a folder of WebDataset .tar "
                                "shards (key.jpg, key.txt, ...) or a manifest file.")
        return paths
    paths = [Path(p) for p in braceexpand(text)] if "{" in text and not path.exists() else [path]
    for p in paths:
        if p.suffix.lower() != ".tar":
            raise ManifestError(f"{p}: not a .tar shard. Shards must be uncompressed .tar files "
                                "(re-pack .tar.gz shards without compression).")
        if not p.is_file():
            raise ManifestError(f"{p}: no such shard. Check the path or the brace pattern.")
    return paths


def read_shards(
    source: str | Path | Sequence[str | Path],
    *,
    keys: ColumnKeys | None = None,
    modalities: Sequence[str] | None = None,
) -> Shards:
    """Index WebDataset shards as a manifest: id = the sample's key, media = "<shard>#<member>", text =
    the .txt member, label from .cls/.label/.json, injected from .json.

    `keys` can name other member extensions for a modality ("jpg" or "jpg;png"); `modalities` restricts
    (and requires) the modalities used, as for manifests."""
    keys = keys or ColumnKeys()
    paths = [p.resolve() for p in shard_paths(source)]
    root = Path(os.path.commonpath([p.parent for p in paths]))
    exts = _extensions(keys)
    names = [p.relative_to(root).as_posix() for p in paths]

    records: list[dict[str, Any]] = []
    shard_of: dict[str, str] = {}
    dups: dict[str, list[str]] = {}
    for path, name in zip(paths, names):
        with _open_for_reading(path) as f:
            for key, members in _scan(path):
                if key in shard_of:
                    dups.setdefault(key, [shard_of[key]]).append(name)
                    continue
                shard_of[key] = name
                records.append({**_record(f, name, key, members, exts), "row": len(records)})
    if dups:
        shown = "; ".join(f"{k!r} in {', '.join(v)}" for k, v in list(dups.items())[:10])
        more = f"; and {len(dups) - 10} more" if len(dups) > 10 else ""
        raise ManifestError(f"{root}: duplicate sample keys: {shown}{more}. Keys must be unique across all "
                            "shards: rename the members, or remove the shard that repeats them.")
    if not records:
        raise ManifestError(f"{root}: the shards hold no samples ({', '.join(names)}). "
                            "Each sample is members key.jpg, key.txt, ... in a .tar.")

    table = pd.DataFrame.from_records(records)
    used = _used_modalities(root, table, exts, modalities)
    extra = [c for c in ("label", "injected") if c in table and (table[c] != "").any()]
    table = table[["id", "row", *used, *extra]]
    source_columns = {"id": "__key__", **{m: ";".join(exts[m]) for m in used}}
    if "label" in extra:
        source_columns["label"] = ";".join(exts["label"] + (META_EXTENSION,))
    if "injected" in extra:
        source_columns["injected"] = META_EXTENSION
    given = source if isinstance(source, (str, Path)) else root
    return Shards(
        table=table.reset_index(drop=True),
        root=root,
        path=Path(os.path.expanduser(str(given))),
        format="webdataset",
        source_columns=source_columns,
        sha256=_fingerprint(paths, names),
        shards=paths,
    )


def _extensions(keys: ColumnKeys) -> dict[str, tuple[str, ...]]:
    """Member extensions per field; a ColumnKeys entry changed from its default names extensions."""
    default = ColumnKeys()
    out = {}
    for name, exts in {**EXTENSIONS, "label": LABEL_EXTENSIONS}.items():
        given = getattr(keys, name)
        out[name] = exts if given == getattr(default, name) else tuple(
            e.strip().lstrip(".").lower() for e in given.split(";") if e.strip())
    return out


class _open_for_reading:
    """open(path, "rb") whose failure is a ManifestError naming the shard."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        try:
            self.f = open(self.path, "rb")
        except OSError as e:
            raise ManifestError(f"{self.path}: cannot read the shard ({e.strerror or e}). Check the file.") from e
        return self.f

    def __exit__(self, *exc):
        self.f.close()


def is_meta(name: str) -> bool:
    # the members webdataset's tar_file_iterator skips (its own __index__-style metadata)
    return ("/" not in name and name.startswith("__") and name.endswith("__")) or re.match(
        r"__[^/]*__($|/)", name) is not None


def _scan(path: Path) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    """(key, {extension: member}) per sample of one shard, grouped exactly as webdataset groups a stream
    (so the decode pass meets the samples in this order). Reads headers only: "r:" seeks past the data."""
    key, members = None, {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isreg() or is_meta(info.name):
                    continue
                prefix, ext = base_plus_ext(info.name)
                if prefix is None:
                    continue  # a name without an extension is no part of a sample (webdataset skips it too)
                ext = ext.lower()
                if prefix != key:
                    if members:
                        yield key, members
                    key, members = prefix, {}
                if ext in members:
                    raise ManifestError(
                        f"{path}: member {info.name!r} repeats '.{ext}' of sample {key!r} (a key's members "
                        "must be consecutive and each extension appear once). Re-pack the shard.")
                members[ext] = info
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ManifestError(f"{path}: cannot read the shard ({e}). It must be an uncompressed .tar; "
                            "re-create it, or move it out of the folder.") from e
    if members:
        yield key, members


def _read(f, info: tarfile.TarInfo) -> bytes:
    f.seek(info.offset_data)
    return f.read(info.size)


def _record(f, name: str, key: str, members: dict[str, tarfile.TarInfo],
            exts: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """One table row: references for media, the small members' contents for text/label/injected."""

    def small(ext: str) -> str | None:
        info = members.get(ext)
        if info is None or info.size > SMALL_MEMBER_BYTES:
            return None
        return _read(f, info).decode("utf-8", errors="replace")

    rec: dict[str, Any] = {"id": key}
    for m in MODALITIES:
        found = next((e for e in exts[m] if e in members), None)
        if m == "text":
            rec[m] = (small(found) or "") if found else ""
        else:
            rec[m] = f"{name}#{members[found].name}" if found else ""
    meta = {}
    raw = small(META_EXTENSION)
    if raw:
        try:
            parsed = json.loads(raw)
            meta = parsed if isinstance(parsed, dict) else {}
        except json.JSONDecodeError:
            meta = {}  # a .json that is not ours (or broken) carries no label; the sample stays usable
    label = next((small(e) for e in exts["label"] if e in members), None)
    rec["label"] = (label.strip() if label is not None else cell_text(meta.get("label")))
    rec["injected"] = cell_text(meta.get("injected"))
    return rec


def _used_modalities(root: Path, table: pd.DataFrame, exts: dict[str, tuple[str, ...]],
                     modalities: Sequence[str] | None) -> list[str]:
    present = [m for m in MODALITIES if (table[m] != "").any()]
    if modalities is not None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ManifestError(f"{root}: unknown modalities {unknown}; choose from {', '.join(MODALITIES)}.")
        for m in modalities:
            if m not in present:
                raise ManifestError(
                    f"{root}: no sample has a {'/'.join('.' + e for e in exts[m])} member for {m}. "
                    f"Name its extension with --{m}-key <ext>, or leave {m} out of the modalities.")
        used = [m for m in MODALITIES if m in modalities]
    else:
        used = present
    if len(used) < 2:
        raise ManifestError(
            f"{root}: needs at least two modalities of {', '.join(MODALITIES)}, found "
            f"{', '.join(used) or 'none'} (extensions looked for: "
            f"{'; '.join(m + ' ' + '/'.join(exts[m]) for m in MODALITIES)}). "
            "Name other extensions with e.g. --image-key jpg --text-key caption.")
    return used


def _fingerprint(paths: Sequence[Path], names: Sequence[str]) -> str:
    """Cheap identity of the shard set (names, sizes, modification times): rewriting a shard changes it,
    so the decode cache is not reused for changed data, without hashing gigabytes."""
    h = hashlib.sha256()
    for path, name in zip(paths, names):
        st = path.stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- decoding


def decode_shards(
    shards: Shards,
    modalities: Sequence[str],
    spec: MediaSpec,
    cache_dir: str | Path,
    *,
    progress: bool = True,
    workers: int = WORKERS,
) -> Decoded:
    """Decode every sample of `shards` in `modalities` to `spec`'s shapes under `cache_dir` (or reload the
    cache), streaming each shard once. A member that does not decode is recorded in `errors` and its
    sample skipped, as for manifests; samples keep the shards' key order."""

    def samples(mods: list[str]) -> Iterator[Sample]:
        load = row_loader(shards, mods, spec, open_media=_member_bytes)

        def one(pair: tuple[dict[str, Any], dict[str, Any]]) -> Sample:
            rec, members = pair
            values, errs = load({**rec, "__members__": members})
            return rec, values, errs

        return ordered_map(one, _stream(shards, mods), workers)

    return decode_samples(shards, modalities, spec, cache_dir, samples, progress=progress)


def _member_bytes(rec: dict[str, Any], m: str) -> tuple[bytes, str]:
    ref = rec[m]
    if not ref:
        raise MediaError(f"no {m} member")
    data = rec["__members__"].get(_ext(ref))
    if data is None:
        raise MediaError("member missing from the shard")
    if isinstance(data, TooLargeError):
        raise MediaError(data.reason, ref)
    return data, ref


def _ext(ref: str) -> str:
    return base_plus_ext(split_ref(ref)[1])[1].lower()


def _stream(shards: Shards, modalities: Sequence[str]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(table record, {extension: bytes}) for every row in table order, reading each shard once with
    webdataset. Only the members the modalities reference are read into memory."""
    table = shards.table
    records = table.to_dict("records")
    media = [m for m in modalities if m != "text"]
    wanted = {_ext(ref) for m in media for ref in table[m] if ref}
    row_of = {k: i for i, k in enumerate(table["id"])}
    urls = [{"url": str(p)} for p in shards.shards]
    # a member's declared size is a header field: one over the bound is never read (a sparse 2 GiB member)
    from multimem_core.data.shard_members import member_sizes, refused_members

    sizes = member_sizes(shards.shards)
    too_big = {name for (_, name), size in sizes.items() if size > MEDIA_LIMIT}
    stream = tarfile_samples(urls, select_files=lambda name: (base_plus_ext(name)[1] or "").lower() in wanted
                             and name not in too_big)
    i = 0
    try:
        for sample in stream:
            key = sample["__key__"]
            j = row_of.get(key)
            if j is None or j < i:
                raise ManifestError(f"{sample['__url__']}: sample {key!r} was not in the shards when they were "
                                    "read: the shards changed during the run. Score again.")
            for skipped in records[i:j]:  # none of its wanted members were in the stream
                yield skipped, refused_members(skipped, media, sizes)
            members = {k: v for k, v in sample.items() if not k.startswith("__")}
            yield records[j], {**refused_members(records[j], media, sizes), **members}
            i = j + 1
    except ManifestError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise ManifestError(f"cannot stream the shards ({e}); were they changed or truncated since they were "
                            "read? Check them and score again.") from e
    for rest in records[i:]:
        yield rest, refused_members(rest, media, sizes)



__all__ = [
    "EXTENSIONS",
    "ShardMemberError",
    "Shards",
    "decode_shards",
    "is_member_ref",
    "read_shards",
    "shard_paths",
    "split_ref",
]
