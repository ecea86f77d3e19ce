"""Reading a manifest: CSV, TSV, JSONL or Parquet, one row a sample (DESIGN §5).

Columns: `id` (optional; else the row number), any of `text`, `image`, `audio`, `video` (media paths
relative to the manifest's folder; a path that resolves outside that folder is refused unless
`MediaSpec.allow_outside_root`, see multimem_core.data.paths), optional `label` and `injected`. Column
names map through `ColumnKeys`, so an open_clip training CSV (`filepath`, `title`, tab-separated)
reads as it is with `ColumnKeys(image="filepath", text="title")`.

Whatever stops the whole dataset (unreadable file, too few modalities, duplicate ids, a column that is
not there) raises `ManifestError` at once, naming the file, the rows and the fix. A single bad sample
is not a manifest problem: decoding records it and skips it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from multimem_core.names import MODALITIES
from multimem_core.config import ColumnKeys
from multimem_core.data.files import MANIFEST_LIMIT, UnreadableFileError, read_regular_bounded, read_regular_head

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
EXTRA_COLUMNS = ("label", "injected")  # kept as str; "" where a row has none
MAX_LISTED = 10  # how many offending ids / rows a message lists before "and N more"
HEADER_LIMIT = 64 * 1024  # check_header reads at most this much of a file to find its header line


class ManifestError(ValueError):
    """The manifest as a whole cannot be used. The message names the file, the row(s) and the fix."""


@dataclass
class Manifest:
    table: pd.DataFrame  # id (str), row (int), any of text/image/audio/video (as given), label, injected
    root: Path  # the folder media paths are relative to
    path: Path
    format: str  # csv | tsv | jsonl | parquet | webdataset
    source_columns: dict[str, str] = field(default_factory=dict)  # standard name -> input column name
    sha256: str = ""

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.table.columns]

    def media_path(self, value: str) -> Path:
        """A media cell -> the file it names (relative to the manifest's folder unless absolute)."""
        return self.root / Path(str(value)).expanduser()


def read_manifest(
    path: str | Path, *, keys: ColumnKeys | None = None, modalities: Sequence[str] | None = None
) -> Manifest:
    """Read and validate a manifest. `keys` maps column names (default: the standard names).
    `modalities` restricts (and requires) the modality columns used; by default every modality
    with a column is used."""
    keys = keys or ColumnKeys()
    path = Path(path).expanduser()
    fmt = _format_of(path)
    data = _read(read_regular_bounded, path, MANIFEST_LIMIT)
    raw = _parse(path, fmt, data)
    if len(raw) == 0:
        raise ManifestError(f"{path}: the manifest has no rows. Add one row per sample.")

    source = map_columns(path, list(raw.columns), keys, modalities)
    table = pd.DataFrame({"id": _ids(path, raw, source.get("id")), "row": range(len(raw))})
    _check_media_cells(path, raw, source)
    for name in [m for m in MODALITIES if m in source] + [c for c in EXTRA_COLUMNS if c in source]:
        # Text keeps missing cells as "" (decoding reports them as "empty text"); media paths likewise.
        table[name] = [cell_text(v) for v in raw[source[name]].tolist()]
    return Manifest(
        table=table,
        root=path.parent.resolve(),
        path=path,
        format=fmt,
        source_columns=source,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def check_header(path: str | Path, *, keys: ColumnKeys | None = None,
                 modalities: Sequence[str] | None = None) -> dict[str, str] | None:
    """map_columns on a CSV or TSV manifest's header line alone, reading at most HEADER_LIMIT bytes: the file's
    columns, or ManifestError where they cannot make a manifest. None for the other formats, whose columns no
    first line gives (a JSONL row may lack a column that later rows have)."""
    path = Path(path).expanduser()
    fmt = _format_of(path)
    if fmt not in ("csv", "tsv"):
        return None
    head = _read(read_regular_head, path, HEADER_LIMIT)
    line = head.split(b"\n", 1)[0]
    if b"\n" not in head and len(head) == HEADER_LIMIT:
        raise ManifestError(f"{path}: no header line in its first {HEADER_LIMIT:,} bytes; a manifest's first line "
                            "names its columns.")
    return map_columns(path, list(_parse(path, fmt, line).columns), keys or ColumnKeys(), modalities)


# ---------------------------------------------------------------------------------------------- parsing

def _read(reader, path: Path, limit: int) -> bytes:
    """`reader` (the whole file, or its head) on a manifest, any failure a ManifestError naming the file."""
    try:
        return reader(path, limit, "manifest")
    except UnreadableFileError as e:
        raise ManifestError(str(e)) from e
    except OSError as e:
        raise ManifestError(f"{path}: cannot read the manifest ({e.strerror or e}). Check the path.") from e



def _format_of(path: Path) -> str:
    if path.is_dir():
        raise ManifestError(
            f"{path}: is a folder. Give a manifest file ({', '.join(sorted(FORMATS))}) or a WebDataset shard folder "
            "through the WebDataset reader."
        )
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ManifestError(
            f"{path}: unknown manifest extension {path.suffix!r}. Use one of {', '.join(sorted(FORMATS))} "
            "(rename the file if its content is one of these formats)."
        )
    return fmt


def _parse(path: Path, fmt: str, data: bytes) -> pd.DataFrame:
    """The file's bytes -> a DataFrame of its own columns, values as the format gives them."""
    try:
        if fmt in ("csv", "tsv"):
            return _read_delimited(data, fmt)
        if fmt == "jsonl":
            return _read_jsonl(path, data)
        import pyarrow.parquet as pq

        return _arrow_to_str_frame(pq.read_table(io.BytesIO(data)))
    except ManifestError:
        raise
    except pd.errors.EmptyDataError as e:
        raise ManifestError(f"{path}: the manifest is empty. Write a header row and one row per sample.") from e
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text: {_where_bytes(data, e.start)} has byte "
                            f"0x{data[e.start]:02x}, which UTF-8 does not allow (a mix of encodings?). "
                            "Save the manifest as UTF-8.") from e
    except Exception as e:  # pandas / pyarrow raise many types for malformed input
        raise ManifestError(f"{path}: cannot parse as {fmt.upper()}: {e}. Fix the file or its extension.") from e


def _where_bytes(data: bytes, offset: int) -> str:
    """'line L (…its text…)' for a byte offset: the line a person opens the file at, and the start of the row."""
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    text = data[start:end if end >= 0 else len(data)].decode("utf-8", "replace").strip()
    return f"line {line} ({text[:60]!r}{'…' if len(text) > 60 else ''}, counting the header as line 1)"


def _read_delimited(data: bytes, fmt: str) -> pd.DataFrame:
    text = data.decode("utf-8-sig")
    sep = "\t"
    if fmt == "csv":
        # open_clip's CSVs are often tab-separated while named .csv (its --csv-separator defaults to tab), and
        # spreadsheets in many locales write semicolons: the header's most frequent of the three (ties: comma).
        header = text.split("\n", 1)[0]
        sep = max((",", "\t", ";"), key=header.count)
    # Every cell as str, and no "NA"/"None" -> NaN guessing: a caption may well say "None".
    return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)


def _read_jsonl(path: Path, data: bytes) -> pd.DataFrame:
    text = data.decode("utf-8-sig")
    if text.lstrip().startswith("["):  # a .json holding one array of records is accepted too
        records = json.loads(text)
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(
                    f"{path}: line {lineno} is not valid JSON ({e.msg}). Each line must be one JSON object."
                ) from e
            records.append(rec)
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        raise ManifestError(
            f"{path}: rows {_list(bad)} are not JSON objects. Each row must be an object like "
            '{"id": "a", "text": "...", "image": "a.png"}.'
        )
    return pd.DataFrame.from_records(records).astype(object)


def _arrow_to_str_frame(table: Any) -> pd.DataFrame:
    """Parquet -> object columns whose values print like the file (an int label stays "3", not "3.0")."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = {}
    for name in table.column_names:
        col = table.column(name)
        try:
            col = pc.cast(col, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # nested values: keep them and let _cell print them
        cols[name] = col.to_pylist()
    return pd.DataFrame(cols, dtype=object)


def cell_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# -------------------------------------------------------------------------------------------- validation


def map_columns(path: Path, have: Sequence[str], keys: ColumnKeys, modalities: Sequence[str] | None
                ) -> dict[str, str]:
    """Standard name -> input column, for a table whose columns are `have`. The one rule for the columns a
    manifest needs (files, Hugging Face datasets, a CSV's header alone): the columns asked for exist, and at least
    two modalities have one. ManifestError, naming the file, the columns and the fix, otherwise."""
    have = [str(c) for c in have]
    defaults = ColumnKeys()
    # A key set to something other than its default was asked for on purpose: it must exist
    # (unless it names a modality that `modalities` leaves out anyway).
    for f in fields(ColumnKeys):
        col = getattr(keys, f.name)
        left_out = modalities is not None and f.name in MODALITIES and f.name not in modalities
        if col != getattr(defaults, f.name) and col not in have and not left_out:
            raise _missing_column(path, f.name, col, have)
    if modalities is not None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ManifestError(f"{path}: unknown modalities {unknown}; choose from {', '.join(MODALITIES)}.")
        for m in modalities:
            if getattr(keys, m) not in have:
                raise _missing_column(path, m, getattr(keys, m), have)
        used = [m for m in MODALITIES if m in modalities]
    else:
        used = [m for m in MODALITIES if getattr(keys, m) in have]
    if modalities is not None and len(used) < 2:
        raise ManifestError(f"--modalities {','.join(modalities)}: MultiMem compares a sample's modalities with each "
                            f"other, so it needs at least two (e.g. --modalities image,text).")
    if len(used) < 2:
        found = ", ".join(used) if used else "none"
        raise ManifestError(
            f"{path}: needs at least two modalities of {', '.join(MODALITIES)}, found {found} "
            f"(its columns: {', '.join(have)}). Map yours with e.g. --image-key <column> --text-key <column>."
        )
    source = {m: getattr(keys, m) for m in used}
    if keys.id in have:
        source["id"] = keys.id
    if keys.label in have:
        source["label"] = keys.label
    if "injected" in have:
        source["injected"] = "injected"
    return {k: source[k] for k in ["id", *MODALITIES, *EXTRA_COLUMNS] if k in source}


def _check_media_cells(path: Path, raw: pd.DataFrame, source: dict[str, str]) -> None:
    """Media columns hold file paths: a column of bytes (images stored inside a Parquet file), lists or
    numbers is a different kind of dataset, and would otherwise fail row by row as 'missing file'."""
    for m in ("image", "audio", "video"):
        if m not in source:
            continue
        bad = [i for i, v in enumerate(raw[source[m]].tolist())
               if not (v is None or isinstance(v, str) or (isinstance(v, float) and math.isnan(v)))]
        if bad:
            kind = type(raw[source[m]].iloc[bad[0]]).__name__
            raise ManifestError(
                f"{path}: column {source[m]!r} ({m}) holds {kind} values, not file paths (rows {_list(bad)}, counted "
                f"from 0). Write the media out as files and put their paths, relative to {path.parent}, in the column.")


def _missing_column(path: Path, name: str, col: str, have: Iterable[str]) -> ManifestError:
    return ManifestError(
        f"{path}: no column {col!r} for {name} (its columns: {', '.join(have)}). "
        f"Name the right one with --{name}-key <column>."
    )


def _ids(path: Path, raw: pd.DataFrame, id_col: str | None) -> list[str]:
    if id_col is None:
        return [str(i) for i in range(len(raw))]
    ids = [cell_text(v).strip() for v in raw[id_col].tolist()]
    empty = [i for i, v in enumerate(ids) if not v]
    if empty:
        raise ManifestError(
            f"{path}: empty id in rows {_list(empty)} (rows counted from 0, header not counted). "
            f"Fill the {id_col!r} column, or drop it so that row numbers become the ids."
        )
    rows_of: dict[str, list[int]] = {}
    for i, v in enumerate(ids):
        rows_of.setdefault(v, []).append(i)
    dups = {k: v for k, v in rows_of.items() if len(v) > 1}
    if dups:
        shown = "; ".join(f"{k!r} at rows {_list(v)}" for k, v in list(dups.items())[:MAX_LISTED])
        more = f"; and {len(dups) - MAX_LISTED} more" if len(dups) > MAX_LISTED else ""
        raise ManifestError(
            f"{path}: duplicate ids in column {id_col!r}: {shown}{more} (rows counted from 0, header not counted). "
            f"Ids must be unique: fix them, or drop the {id_col!r} column so that row numbers become the ids."
        )
    return ids


def _list(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:MAX_LISTED])
    return shown + (f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else "")
