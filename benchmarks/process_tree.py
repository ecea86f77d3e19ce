"""Memory of a benchmarked command and every process it starts (its training workers), sampled with psutil."""

from __future__ import annotations

import psutil


def tree_memory(root: psutil.Process) -> tuple[int, int, int]:
    """(sum of PSS, sum of RSS, largest RSS) in bytes over root and its descendants, now.

    PSS splits a shared page between the processes that map it (torch's libraries, a memory-mapped cache
    counted once); RSS counts it in every process: an upper bound."""
    pss = rss = top = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            mem = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a worker that just ended
        pss, rss, top = pss + mem.pss, rss + mem.rss, max(top, mem.rss)
    return pss, rss, top
