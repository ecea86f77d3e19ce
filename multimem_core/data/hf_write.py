"""A pandas DataFrame -> a Hugging Face dataset folder (what `save_to_disk` writes: one Arrow stream file,
dataset_info.json, state.json), with every media cell's bytes inside the table. The Python API
(the `multimem` package) scores a notebook's DataFrame this way: the run then reads, serves and exports its media
from its own copy and trusts no path. Written with pyarrow alone; `datasets.load_from_disk` reads the result.

A media cell may be a path (relative to `root`; one that leads outside `root` is refused unless
`allow_outside_root`), bytes, or a PIL image (stored as PNG). Files are read one at a time and written in
batches, so memory holds one batch of media.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from multimem_core.config import ColumnKeys
from multimem_core.data.hf_media import MAX_MEDIA_BYTES
from multimem_core.data.manifest import ManifestError
from multimem_core.data.paths import OutsideRootError, resolve_under

FEATURE = {"image": "Image", "audio": "Audio", "video": "Video"}
DATA_FILE = "data-00000-of-00001.arrow"
BATCH_ROWS = 64


def frame_to_dataset(frame: pd.DataFrame, out: Path, *, keys: ColumnKeys, root: Path,
                     allow_outside_root: bool = False) -> Path:
    """Write `frame` as a dataset folder `out` (reused as it is when it holds the same rows already)."""
    import pyarrow as pa

    if len(frame) == 0:
        raise ManifestError("the DataFrame has no rows.")
    frame = frame.reset_index(drop=True)
    media = {c: m for m in FEATURE if (c := getattr(keys, m)) in frame.columns}
    features = {str(c): ({"_type": FEATURE[media[c]]} if c in media else {"dtype": "string", "_type": "Value"})
                for c in frame.columns}
    fields = [pa.field(str(c), _struct() if c in media else pa.string()) for c in frame.columns]
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    schema = pa.schema(fields, metadata=meta)
    digest = hashlib.sha256()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{DATA_FILE}.partial"
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, len(frame), BATCH_ROWS):
            chunk = frame.iloc[start:start + BATCH_ROWS]
            arrays = []
            for c in frame.columns:
                if c in media:
                    cells = [_media(root, v, start + i, c, allow_outside_root) for i, v in enumerate(chunk[c])]
                    for cell in cells:
                        digest.update(cell["bytes"] or b"")
                    arrays.append(pa.array(cells, type=_struct()))
                else:
                    values = [None if _missing(v) else str(v) for v in chunk[c]]
                    digest.update(json.dumps(values).encode())
                    arrays.append(pa.array(values, type=pa.string()))
            writer.write_batch(pa.record_batch(arrays, schema=schema))
    fingerprint = digest.hexdigest()[:16]
    state = out / "state.json"
    if (out / DATA_FILE).is_file() and state.is_file() and json.loads(state.read_text()).get("_fingerprint") == fingerprint:
        tmp.unlink()  # the same rows as before: keep the file (and the decode cache keyed on it)
        return out
    tmp.replace(out / DATA_FILE)
    (out / "dataset_info.json").write_text(json.dumps({"features": features}, indent=2))
    (out / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": DATA_FILE}], "_fingerprint": fingerprint, "_format_columns": None,
        "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}, indent=2))
    return out


def _struct():
    import pyarrow as pa

    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _media(root: Path, value: Any, row: int, column: str, allow_outside: bool) -> dict:
    """One media cell -> {"bytes", "path"}; a cell that cannot be read is stored empty (decoding then records
    that row as skipped, with the reason), except a path outside `root`, which is refused at once."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return {"bytes": None, "path": None}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": bytes(value), "path": None}
    if type(value).__module__.startswith("PIL."):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    if not isinstance(value, (str, Path)):
        raise ManifestError(f"row {row}, column {column!r}: a {type(value).__name__}; media cells must be paths, "
                            "bytes or PIL images.")
    try:
        path = resolve_under(root, value, allow_outside=allow_outside)
    except OutsideRootError as e:
        raise ManifestError(f"row {row}, column {column!r}: {e}") from e
    if not path.is_file() or path.stat().st_size > MAX_MEDIA_BYTES:
        return {"bytes": None, "path": None}  # decoding skips the row: "no image in the table"
    return {"bytes": path.read_bytes(), "path": path.name}
