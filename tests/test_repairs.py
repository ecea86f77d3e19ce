"""Repairs: recorded in review.sqlite with undo, applied by export to the manifest's own rows, logged beside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from multimem_core.export import build_export, write_export
from multimem_core.repairs import current_repairs, record_repair, repairs_path, undo_repair
from multimem_core.review import DropRule, ReviewError, ReviewStore
from multimem_core.run import RunDir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from synthetic_run import make_synthetic_run  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> RunDir:
    return make_synthetic_run(tmp_path_factory.mktemp("synth"), 60, seed=2, n_media=4)


def test_repairs_are_rows_with_undo(tmp_path):
    store = ReviewStore(tmp_path / "review.sqlite")
    first = record_repair(store, "a", "text", "b", reviewer="ann", source="detail")
    record_repair(store, "a", "text", "c", reviewer="ann")  # a later choice wins
    record_repair(store, "d", "image", "e", reviewer="bob")
    cur = current_repairs(store)
    assert sorted(map(tuple, cur[["sample_id", "modality", "from_id"]].values.tolist())) == \
        [("a", "text", "c"), ("d", "image", "e")]
    undo_repair(store, int(cur.loc[cur["sample_id"] == "a", "seq"].iloc[0]), reviewer="ann")
    cur = current_repairs(store)
    assert cur.loc[cur["sample_id"] == "a", "from_id"].tolist() == ["b"]  # back to the earlier repair
    undo_repair(store, first, reviewer="ann")
    assert current_repairs(store)["sample_id"].tolist() == ["d"]
    with pytest.raises(ReviewError, match="already undone"):
        undo_repair(store, first, reviewer="ann")
    with pytest.raises(ReviewError, match="from itself"):
        record_repair(store, "a", "text", "a", reviewer="ann")
    with pytest.raises(ReviewError, match="unknown modality"):
        record_repair(store, "a", "smell", "b", reviewer="ann")


def test_export_applies_repairs_to_kept_rows_and_logs_them(synth, tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    original = pd.read_csv(Path(synth.config()["manifest"]["path"]), dtype=str, keep_default_na=False)
    ids = original["id"].tolist()
    record_repair(store, ids[0], "text", ids[1], reviewer="ann")
    record_repair(store, ids[2], "text", ids[3], reviewer="ann")
    store.flag([ids[2], ids[5]], "noisy", reviewer="ann")  # a dropped sample is not repaired
    export = build_export(synth, DropRule("flagged"), format="csv", store=store, repairs=True)
    out = write_export(export, tmp_path / "clean.csv")
    got = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("id")
    caption = synth.config()["manifest"].get("source_columns", {}).get("text", "text")
    assert set(got.index) == set(ids) - {ids[2], ids[5]}
    assert got.loc[ids[0], caption] == original.set_index("id").loc[ids[1], caption]
    assert got.loc[ids[1], caption] == original.set_index("id").loc[ids[1], caption]  # the donor keeps its own
    log = pd.read_csv(repairs_path(out), dtype=str, keep_default_na=False)
    assert log[["sample_id", "from_id"]].values.tolist() == [[ids[0], ids[1]]]
    assert log["before"].tolist() == [original.set_index("id").loc[ids[0], caption]]
    # without --repairs nothing changes and no log is written
    plain = write_export(build_export(synth, DropRule("flagged"), format="csv", store=store), tmp_path / "p.csv")
    assert pd.read_csv(plain, dtype=str, keep_default_na=False).set_index("id").loc[ids[0], caption] == \
        original.set_index("id").loc[ids[0], caption]
    assert not repairs_path(plain).exists()
    with pytest.raises(ReviewError, match="manifest or shards"):
        build_export(synth, DropRule("flagged"), format="ids", store=store, repairs=True)


def test_cli_export_with_repairs(synth, tmp_path):
    run = RunDir(tmp_path / "run")
    import shutil

    shutil.copytree(synth.path, run.path)
    ids = run.samples()["id"].astype(str).tolist()
    record_repair(ReviewStore.for_run(run), ids[4], "text", ids[7], reviewer="ann")
    out = tmp_path / "clean.csv"
    res = subprocess.run([sys.executable, "-m", "multimem_core.cli", "export", str(run.path), "--out", str(out),
                          "--drop", "flagged", "--repairs"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "applied 1 repairs" in res.stdout and repairs_path(out).is_file()
