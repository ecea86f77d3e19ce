"""The one rule for paths a dataset names: they stay inside the dataset's folder.

A manifest cell, a WebDataset member reference or a path typed into the dashboard is untrusted text.
`../../etc/passwd`, an absolute path elsewhere, or a symlink that leads out of the folder would let a
crafted dataset make the engine read (and the dashboard display) any file the user can read. Every
place that turns such text into a file goes through `resolve_under`: the decoder (multimem_core.data.decode),
the dashboard's media serving (app/media.py), shard references (multimem_core.data.shards) and the New-run
page's input check (multimem_core.launch).

The check resolves the path (`..` and every symlink on the way, via the file system's metadata only) and
compares it with the resolved root *before* anything opens the file. Users who keep media elsewhere on
purpose say so (`multimem score --allow-outside-root`, `MediaSpec.allow_outside_root`); the choice is
recorded in the run's config.json.
"""

from __future__ import annotations

from pathlib import Path

ALLOW_HINT = "move the file under that folder, or pass --allow-outside-root if media live elsewhere on purpose"


class BadPathError(ValueError):
    """A path that is refused before anything opens it. `.reason` is the short text for errors.parquet."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class OutsideRootError(BadPathError):
    """A path that leads outside the folder it must stay in."""


def resolve_under(root: str | Path, value: str | Path, *, allow_outside: bool = False) -> Path:
    """The path `value` names (relative to `root` unless absolute), resolved, and guaranteed to lie under
    `root` (or be `root` itself) unless `allow_outside`.

    Raises OutsideRootError for `..` escapes, absolute paths elsewhere and symlinks that resolve outside,
    BadPathError for a NUL byte or a symlink loop; nothing is opened, only resolved. Existence is the
    caller's business (a missing file is a different answer: "missing file", "no such shard")."""
    text = str(value).strip()
    if "\x00" in text:
        raise BadPathError("a path with a NUL byte", f"{text!r}: a path with a NUL byte (binary data in a path "
                           "column?); not opened")
    root = Path(root).expanduser().resolve()
    raw = Path(text).expanduser()
    joined = raw if raw.is_absolute() else root / raw
    try:
        resolved = joined.resolve()  # follows symlinks and '..' (readlink/stat only: no open)
    except (RuntimeError, OSError) as e:  # Python raises RuntimeError (3.11) or OSError (ELOOP) for a loop
        raise BadPathError("a symlink loop", f"{text!r}: a symlink loop ({e}); not opened") from e
    if allow_outside or resolved == root or resolved.is_relative_to(root):
        return resolved
    if joined.absolute() != resolved and _lexically_under(joined, root):
        reason = f"symlink to {resolved}, outside the dataset folder"
    elif raw.is_absolute():
        reason = "absolute path outside the dataset folder"
    else:
        reason = "path leads outside the dataset folder (..)"
    raise OutsideRootError(f"{reason}: not opened",
                           f"{text!r}: {reason} {root}; not opened ({ALLOW_HINT})")


def file_under(root: str | Path, value: str | Path, *, missing: str, error: type[Exception] = BadPathError) -> Path:
    """`resolve_under` for a file that must already exist as a regular file. A refused path raises `error`
    with resolve_under's message, a missing file raises `error(missing)`: each caller keeps its own error
    class (what its callers catch) and its own words for "not there"."""
    try:
        path = resolve_under(root, value)
    except BadPathError as e:
        raise error(str(e)) from e
    if not path.is_file():
        raise error(missing)
    return path


def _lexically_under(path: Path, root: Path) -> bool:
    """Whether `path` lies under `root` by its text alone (no '..' climbing out): then only a symlink can
    have taken its resolved form elsewhere."""
    parts: list[str] = []
    for part in path.absolute().parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return Path(*parts).is_relative_to(root) if parts else False
