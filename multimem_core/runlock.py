"""One writer per run directory, and worker processes that never outlive the writer.

    RUN/.lock   an fcntl.flock (exclusive) held by the process that writes the run: `multimem score`,
                `mitigate`, the importers, runs the New-run page starts. The file holds the holder's pid,
                command and start time, so that a second command can say who holds the run.

The kernel drops the lock when its holder ends, however it ends (kill -9 included): no stale lock files
to clean. A second writer fails at once with `RunLockedError` naming the holder instead of both writing
the same files. Flags (RUN/review.sqlite) do not take this lock: SQLite serialises those writers itself.

Training workers are separate processes that write checkpoints into the run: `die_with_parent` (their
initializer) asks Linux to SIGKILL them the moment their parent dies, so that after a `kill -9` of
`multimem score` nothing writes into the run any more and a rerun can take the lock at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another process writes this run; the message names it (pid, command, since when)."""


def lock_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOCK_NAME


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since", 0))))
    return f"pid {info.get('pid', '?')} ({info.get('command', '?')}, since {since})"


def read_holder(run_dir: str | Path) -> dict | None:
    """What the lock file says about its last holder (it may have ended: see `holder`)."""
    try:
        return json.loads(lock_path(run_dir).read_text() or "null")
    except (OSError, ValueError):
        return None


class RunLock:
    """`with RunLock(run_dir, "multimem score"):` holds RUN/.lock exclusively or raises RunLockedError."""

    def __init__(self, run_dir: str | Path, command: str | None = None):
        self.run_dir = Path(run_dir).expanduser()
        self.command = command or " ".join(["multimem", *sys.argv[1:]]) or "multimem"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path(self.run_dir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is in use by {_describe(read_holder(self.run_dir))}: one writer per run. Wait for "
                "it to finish (or stop it), then run the command again.") from None
        info = json.dumps({"pid": os.getpid(), "command": self.command, "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: str | Path) -> dict | None:
    """The live holder of the run's lock ({pid, command, since}), or None when nobody holds it."""
    import fcntl

    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(run_dir) or {"pid": None, "command": "?", "since": 0}
    finally:
        os.close(fd)
    return None


def describe_holder(run_dir: str | Path) -> str | None:
    """"pid N (command, since …)" when the run is locked, else None."""
    info = holder(run_dir)
    return None if info is None else _describe(info)


# --- worker processes ---------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a worker process (a pool initializer): SIGKILL this process as soon as its parent dies.

    Linux's prctl(PR_SET_PDEATHSIG) makes the kernel send the signal when the parent ends, at once and
    whatever the cause; a parent that died before this call is caught by comparing getppid. Elsewhere
    (macOS) a thread watches the parent instead, which reacts within a fraction of a second."""
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent was gone before the call: the signal will never come
            os._exit(1)
        return
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
