"""Reading a run folder's own files: a damaged, truncated or swapped file is one clear error, never a traceback.

A run folder is data: it may be copied half-way, edited by hand, or come from someone else. Every reader of
its JSON and Parquet files (multimem_core.run.RunDir, used by the CLI and the dashboard) goes through these
two functions, which read only regular files of bounded size (multimem_core.data.files) and turn whatever
the parser says into a RunDirError naming the file, what is wrong with it and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


class RunDirError(RuntimeError):
    """A run folder that cannot be read; the message names the file, what is wrong and what to do."""


DAMAGED_HINT = "rerun the command that made the run, or restore the file from a backup"


def read_run_json(path: Path, what: str) -> Any:
    """A run folder's JSON file, read as a regular file of bounded size; RunDirError if it is not one."""
    from .data.files import JSON_LIMIT, UnreadableFileError, read_regular_bounded

    try:
        return json.loads(read_regular_bounded(path, JSON_LIMIT, what).decode("utf-8"))
    except UnreadableFileError as e:
        raise RunDirError(f"{e} ({DAMAGED_HINT})") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: the {what} is damaged (not JSON: {e}); {DAMAGED_HINT}") from e
    except OSError as e:
        raise RunDirError(f"{path}: cannot read the {what} ({e.strerror or e}); check its permissions") from e


def read_run_parquet(path: Path, what: str) -> pd.DataFrame:
    """A run folder's Parquet table; RunDirError naming it if it is not a regular file or does not parse."""
    from .data.files import UnreadableFileError, check_regular

    try:
        check_regular(path, what)
        return pd.read_parquet(path)
    except UnreadableFileError as e:
        raise RunDirError(f"{e} ({DAMAGED_HINT})") from e
    except OSError as e:
        if e.errno is not None:
            raise RunDirError(f"{path}: cannot read the {what} ({e.strerror or e}); check its permissions") from e
        raise RunDirError(f"{path}: the {what} is damaged ({_first_line(e)}); {DAMAGED_HINT}") from e
    except Exception as e:  # pyarrow raises ArrowInvalid (a ValueError), ArrowIOError and others for bad bytes
        raise RunDirError(f"{path}: the {what} is damaged ({_first_line(e)}); {DAMAGED_HINT}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def read_run_lines(path: Path, what: str) -> list[str]:
    """A run folder's text file of one entry a line (ids.txt), read as a regular file of bounded size."""
    from .data.files import TABLE_LIMIT, UnreadableFileError, read_regular_bounded

    try:
        return read_regular_bounded(path, TABLE_LIMIT, what).decode("utf-8").splitlines()
    except UnreadableFileError as e:
        raise RunDirError(f"{e} ({DAMAGED_HINT})") from e
    except UnicodeDecodeError as e:
        raise RunDirError(f"{path}: the {what} is damaged (not UTF-8 text: {e}); {DAMAGED_HINT}") from e
    except OSError as e:
        raise RunDirError(f"{path}: cannot read the {what} ({e.strerror or e}); check its permissions") from e


def load_run_array(path: Path, what: str, *, mmap: bool = True):
    """A run folder's .npy array (memory-mapped unless mmap=False), only from a regular file (a FIFO there would
    block the reader for good) and never unpickled; RunDirError naming the file otherwise."""
    import numpy as np

    from .data.files import UnreadableFileError, check_regular

    try:
        check_regular(path, what)
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except UnreadableFileError as e:
        raise RunDirError(f"{e} ({DAMAGED_HINT})") from e
    except (ValueError, EOFError, OSError) as e:  # not an .npy, truncated, an object array, unreadable
        raise RunDirError(f"{path}: the {what} is damaged ({_first_line(e)}); {DAMAGED_HINT}") from e
