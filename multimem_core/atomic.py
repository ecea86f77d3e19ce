"""Writing files so that a reader never sees half of one: each writer writes a temporary name beside the
file and renames it into place, so a crash or a full disk leaves the old file or none, never a torn one.
Every file of a run and of an export is written through these."""

from __future__ import annotations

import errno
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@contextmanager
def _replacing(path: Path, suffix: str = ""):
    """A temporary name beside `path`, renamed onto it when the block succeeds. On failure the temporary
    file goes (a full disk leaves no half file behind) and an OSError names `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}{suffix}")  # threads write too
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _replacing(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Strict JSON, NaN and infinities as null: other tools (jq, browsers) reject json.dumps's bare NaN."""
    atomic_write_bytes(path, json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False).encode())


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinite float as None (null)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    with _replacing(path) as tmp:
        df.to_parquet(tmp, index=False)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with _replacing(path, ".npy") as tmp:
        np.save(tmp, array)


def atomic_save_torch(path: Path, obj: Any) -> None:
    """torch.save through Python's own file writing: a full disk is an OSError naming `path` (torch's
    zip writer reports it as an opaque RuntimeError), and never a half-written file."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def allocated_memmap(path: str | os.PathLike, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy memory map whose blocks are reserved on disk now.

    A plain memmap is a sparse file: on a full disk the write into a page that finds no space kills the
    process with SIGBUS, long after the file was created. Reserving the blocks up front turns that into
    an OSError (ENOSPC) naming the file, which `multimem` reports as a full disk.

    The file is new: whatever had the name goes first. A run folder may come from someone else, and a name
    there that is a symlink to a user's file must not be written through (open_memmap would truncate and
    fill the link's target; the caller's rename would then move that file into the run)."""
    Path(path).unlink(missing_ok=True)  # a link goes, never its target
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0), 0o644))
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        try:
            with open(path, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: as before
                return array
            raise OSError(e.errno, e.strerror, str(path)) from e
    return array
