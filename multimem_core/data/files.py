"""The one rule for reading a file the user (or a run folder) names: only regular files, never more than a
bound decided before reading.

A manifest that is a FIFO blocks `open()` forever; one symlinked to /dev/zero reads until memory runs out;
a directory or a socket where a file was expected fails with an errno a person does not recognise. Every
reader of untrusted paths (manifests, score tables, id lists, run-folder files, media the dashboard sends)
asks `file_kind` what the path is before anything opens it, and reads through `read_regular_bounded`,
which opens without blocking, checks again on the open descriptor (the path may have been swapped in
between) and reads at most `limit` bytes. Refusals are `NotRegularFileError` / `TooLargeError`, whose
message says what the file is and what to do.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MiB = 2**20
GiB = 2**30

# Bounds, decided before reading. A manifest of 10 M rows is a few GB; a run folder's JSON is kilobytes.
MANIFEST_LIMIT = 4 * GiB
TABLE_LIMIT = 4 * GiB      # score tables, id lists, role tables given to the importers
JSON_LIMIT = 64 * MiB      # config.json, progress.json, timings.json of a run
MEDIA_LIMIT = 1 * GiB      # one media file or shard member read whole (the decoders stream what is larger)


class UnreadableFileError(ValueError):
    """A path that is not read; `.reason` is the short text (for errors.parquet), str() the full message."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class NotRegularFileError(UnreadableFileError):
    """A FIFO, a device, a socket, a directory or a missing path where a file was expected."""


class TooLargeError(UnreadableFileError):
    """A file (or a declared member size) over the bound for what it is."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of_mode(mode: int) -> str:
    """'a regular file', 'a FIFO (named pipe)', 'a character device', … for a stat mode."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def file_kind(path: str | os.PathLike) -> str:
    """What `path` is, by its metadata only (nothing is opened): 'a regular file', 'a folder', 'a FIFO (named
    pipe)', 'a character device', …, 'missing', 'a symlink loop', 'a name too long', 'a path with a NUL byte',
    or 'unreadable (<reason>)'."""
    try:
        return kind_of_mode(os.stat(path).st_mode)
    except ValueError:  # embedded null byte
        return "a path with a NUL byte"
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return {errno.ELOOP: "a symlink loop", errno.ENAMETOOLONG: "a name too long",
                errno.ENOTDIR: "missing"}.get(e.errno, f"unreadable ({e.strerror or e})")


def plain_reason(kind: str) -> str:
    """The short reason for a path of `kind` that is not a regular file (errors.parquet, cards)."""
    if kind == "missing":
        return "missing file"
    if kind.startswith(("a symlink", "a name", "a path", "unreadable")):
        return kind
    return f"{kind}, not a file"


def check_regular(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` if it is a regular file (following symlinks); NotRegularFileError saying what it is otherwise."""
    kind = file_kind(path)
    if kind == "missing":
        raise NotRegularFileError("missing file", f"{path}: cannot read the {what}: no such file. Check the path.")
    if kind != "a regular file":
        raise NotRegularFileError(plain_reason(kind), f"{path}: the {what} is {kind}, not a regular file; "
                                  f"nothing was read. Give the path of a regular file.")
    return Path(path)


def read_regular_bounded(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes.

    Refuses before opening what is not a regular file, opens with O_NONBLOCK (a FIFO swapped in after the
    check cannot block) and checks the open descriptor again; reads at most `limit` + 1 bytes, so a file that
    grows while read is refused too. OSError (permissions, I/O) passes through, naming the file."""
    fd = _open_regular(path, what)
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise _too_large(path, st.st_size, limit, what)
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, min(8 * MiB, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise _too_large(path, got, limit, what)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_regular_head(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The first `limit` bytes (at most) of `path`, a regular file of any size: a header, never the whole file.
    Refuses what is not a regular file as read_regular_bounded does."""
    fd = _open_regular(path, what)
    try:
        chunks, got = [], 0
        while got < limit:
            chunk = os.read(fd, limit - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _open_regular(path: str | os.PathLike, what: str) -> int:
    """A descriptor open on `path`, a regular file: checked before opening, opened with O_NONBLOCK (a FIFO
    swapped in after the check cannot block) and checked again on the descriptor."""
    check_regular(path, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = kind_of_mode(mode)
            raise NotRegularFileError(plain_reason(kind), f"{path}: the {what} is {kind}, not a regular file; "
                                      "nothing was read.")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_text_bounded(path: str | os.PathLike, limit: int, what: str = "file") -> str:
    return read_regular_bounded(path, limit, what).decode("utf-8")


def size_text(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB" if n >= MiB else f"{n:,} bytes"


def _too_large(path, size: int, limit: int, what: str) -> TooLargeError:
    return TooLargeError(f"{size_text(size)}, over the {size_text(limit)} bound: not read",
                         f"{path}: the {what} holds {size_text(size)}, over the {size_text(limit)} a {what} may "
                         "hold; nothing was read. Split it, or check that it is the file you meant.")
