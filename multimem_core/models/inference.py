"""Running frozen networks on a CPU at speed: denormal floats flushed to zero.

Denormal floats (magnitudes below 1.2e-38) take a slow microcode path on x86 CPUs. Real images drive some
activations of EfficientNet-Lite0 (batch norms folded) into that range: on 2 Zen 4 cores its forward pass
on decoded photos ran 10x faster with them flushed to zero (docs/SPEED.md). Flushing changes no value by
more than 1.2e-38.

`torch.set_flush_denormal` sets the mode of the calling thread only; torch's intra-op threads (OpenMP)
keep theirs, so the switch also runs once on every thread of the OpenMP team, through libgomp's
`GOMP_parallel` (the runtime torch's wheel ships and loads). Where torch uses another runtime, only the
calling thread flushes.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Iterable, Iterator, TypeVar

import torch

_depth = 0  # nested blocks: only the outermost one switches
T, R = TypeVar("T"), TypeVar("R")


@lru_cache(maxsize=1)
def _gomp_parallel() -> Callable[[Callable[[], None]], None] | None:
    """Run a Python function once on each of torch's OpenMP threads, or None where that is not possible."""
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")
    if not os.path.isfile(path) or "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        lib = ctypes.CDLL(path)  # the copy torch already loaded: dlopen returns the same library
        parallel = lib.GOMP_parallel
    except (OSError, AttributeError):
        return None
    body_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    parallel.argtypes = [body_type, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel.restype = None

    def on_every_thread(fn: Callable[[], None]) -> None:
        body = body_type(lambda _: fn())
        parallel(body, None, torch.get_num_threads(), 0)

    return on_every_thread


def _set_everywhere(on: bool) -> bool:
    """Set the mode on this thread and torch's OpenMP threads; False where the CPU cannot flush."""
    supported = torch.set_flush_denormal(on)
    everywhere = _gomp_parallel()
    if supported and everywhere is not None and torch.get_num_threads() > 1:
        everywhere(lambda: torch.set_flush_denormal(on) and None)
    return supported


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Denormal floats read and written as zero inside the block, on this thread and torch's intra-op threads.

    torch has no getter for the mode, so the outermost block always ends with it off: the rest of the
    process keeps IEEE behaviour, as it had before unless something else switched the mode on."""
    global _depth
    _depth += 1
    switched = _depth == 1 and _set_everywhere(True)
    try:
        yield
    finally:
        _depth -= 1
        if switched:
            _set_everywhere(False)


@contextmanager
def one_thread_each() -> Iterator[Callable[[Callable[[T], R], Iterable[T]], list[R]]]:
    """A `map(fn, items)` that runs the items in as many Python threads as torch has intra-op threads, each
    of them computing on one core (torch's operations release the GIL), without autograd, denormals flushed.

    Small forward passes (8 images) split over two OpenMP threads wait for each other at every layer, and on
    a shared machine a thread that loses its core stalls the other: on 2 busy cores EfficientNet-Lite0 ran
    2.3x faster on one thread than on two (docs/SPEED.md). Independent batches on one core each never wait."""
    workers = torch.get_num_threads()
    if workers <= 1:
        yield lambda fn, items: [fn(item) for item in items]
        return

    def flushed(fn: Callable[[T], R], item: T) -> R:
        torch.set_flush_denormal(True)  # this thread's own mode: with one intra-op thread, the only one used
        try:
            with torch.no_grad():  # grad mode is per thread: the caller's does not reach here
                return fn(item)
        finally:
            torch.set_flush_denormal(False)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            yield lambda fn, items: list(pool.map(lambda item: flushed(fn, item), items))
    finally:
        torch.set_num_threads(workers)
