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


def _sqlite_objects(path: Path) -> list[str]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))


@pytest.mark.parametrize("target", ["other database", "no file yet"])
def test_a_flags_database_that_is_a_link_is_refused_and_its_target_untouched(target, tmp_path):
    """RUN/review.sqlite linked to another SQLite file (its tables, journal mode would change) or to a path
    that does not exist yet (SQLite would create it there, holding sample ids the sender chose)."""
    import sqlite3
    from contextlib import closing

    from multimem_core.review import ReviewError, ReviewStore
    from multimem_core.saved_views import list_views

    other = tmp_path / "elsewhere" / "app.sqlite"
    other.parent.mkdir()
    if target == "other database":
        with closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE secrets (x)")
            conn.commit()
        before = other.read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / "review.sqlite").symlink_to(other)
    store = ReviewStore(run / "review.sqlite")
    with pytest.raises(ReviewError, match="link"):
        store.flag(["a\nssh-ed25519 AAAA sender\n"], "noisy", reviewer="me")
    with pytest.raises(ReviewError, match="link"):
        list_views(store) if target == "other database" else store.tag(["a"], "x", reviewer="me")
    if target == "other database":
        assert other.read_bytes() == before and _sqlite_objects(other) == ["secrets"]
    else:
        assert not other.exists(), "a file was created where the link points"
