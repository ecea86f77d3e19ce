"""A run folder is data that may come from someone else: what its crafted files must not make us do.

Each test plants what a sender could put in a run folder (a symlink where the engine writes, a SQLite file
that is a link, a media cell that is Markdown, ...) and checks that no file outside the run is touched and
nothing is fetched from another host.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file of the user's, outside every run: nothing may write it, move it or delete it."""
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_text("the user's own file\n")
    return path


def test_a_symlink_where_the_decode_cache_writes_leaves_its_target_alone(victim, tmp_path):
    """RUN/cache/<m>.partial.npy linked to a user's file: decoding (evaluate, mitigate, the dashboard's what-if
    preview) writes a new array of its own, never through the link."""
    from multimem_core.config import MediaSpec
    from multimem_core.data.decode import decode_manifest
    from multimem_core.data.manifest import read_manifest
    from multimem_core.data.shapes import build_shapes

    manifest = build_shapes(tmp_path / "data", n=12, inject_rate=0.0, seed=0, modalities=("image", "text"),
                            image_size=16, progress=False)
    cache = tmp_path / "run" / "cache"
    cache.mkdir(parents=True)
    for name in ("image.partial.npy", "image.compact.npy"):
        (cache / name).symlink_to(victim)
    decoded = decode_manifest(read_manifest(manifest), ["image", "text"], MediaSpec(image_size=16), cache,
                              progress=False)
    assert len(decoded.ids) == 12
    assert victim.read_text() == "the user's own file\n", "a link in the run folder redirected a write"
    assert not (cache / "image.npy").is_symlink() and (cache / "image.npy").resolve().parent == cache.resolve()


def test_allocated_memmap_replaces_a_link_instead_of_writing_through_it(victim, tmp_path):
    from multimem_core.run import allocated_memmap

    link = tmp_path / "run" / "embeddings" / "f" / "image.npy"
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    array = allocated_memmap(link, np.float16, (4, 3))
    array[:] = 1
    array.flush()
    del array
    assert victim.read_text() == "the user's own file\n"
    assert not link.is_symlink() and np.load(link).shape == (4, 3)
