"""What every command module shares: the user-facing error, path checks, the manifest column options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CLIError(SystemExit):
    """A user-facing error: printed without a traceback, exit status 2."""

    def __init__(self, message: str):
        print(f"multimem: error: {message}", file=sys.stderr)
        super().__init__(2)


def existing_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def add_key_options(g) -> None:
    """--id-key, --text-key, …: the manifest's column for each standard field (declared in ColumnKeys)."""
    from multimem_core.config import ColumnKeys
    from multimem_core.options import add_options

    add_options(g, ColumnKeys)


def column_keys(args):
    from multimem_core.config import ColumnKeys
    from multimem_core.options import apply

    return apply(ColumnKeys(), vars(args))


def app_command(run) -> str:
    """The `multimem app` line that opens a run this command just wrote, serving its dataset's folder."""
    import shlex

    try:
        root = run.dataset_root
    except (KeyError, ValueError, OSError, RuntimeError):
        return f"multimem app {shlex.quote(str(run.path))}"
    return f"multimem app {shlex.quote(str(run.path))} --data-root {shlex.quote(str(root))}"
