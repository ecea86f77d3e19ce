"""Flags (SQLite, append-only, concurrent) and export (one implementation behind page and CLI)."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multimem_core.export import build_export, write_export
from multimem_core.review import DropRule, ReviewError, ReviewStore, ids_to_drop, parse_drop_rule
from multimem_core.run import RunDir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from synthetic_run import make_synthetic_run  # noqa: E402


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> RunDir:
    return make_synthetic_run(tmp_path_factory.mktemp("synth"), 300, seed=1, n_media=8)


@pytest.fixture
def store(tmp_path) -> ReviewStore:
    return ReviewStore(tmp_path / "review.sqlite")


def test_flags_are_rows_and_undo_never_deletes(store):
    store.flag(["a", "b"], "noisy", reviewer="ann", reason="wrong caption", source="samples")
    store.flag("a", "ok", reviewer="bob")
    assert store.labels() == {"a": "ok", "b": "noisy"}
    latest = int(store.history("a")["seq"].iloc[0])
    store.undo(latest, reviewer="ann")
    assert store.labels() == {"a": "noisy", "b": "noisy"}  # back to the previous decision
    hist = store.history()
    assert len(hist) == 4 and (hist["action"] == "undo").sum() == 1
    assert int(hist.loc[hist["seq"] == latest, "undone_by"].iloc[0]) == hist["seq"].max()
    with pytest.raises(ReviewError, match="already undone"):
        store.undo(latest, reviewer="ann")
    with pytest.raises(ReviewError, match="itself an undo"):
        store.undo(int(hist["seq"].max()), reviewer="ann")
    with pytest.raises(ReviewError, match="unknown flag label"):
        store.flag("a", "bad", reviewer="ann")
    with pytest.raises(ReviewError, match="reviewer"):
        store.flag("a", "noisy", reviewer="  ")
    store.undo(int(store.history("b")["seq"].iloc[0]), reviewer="ann")
    assert "b" not in store.labels()  # every decision undone: unreviewed again
    assert store.flagged_ids() == ["a"]


def test_wal_and_committed_before_return(store):
    store.flag("x", "noisy", reviewer="ann")
    # a second, independent connection (another session / a killed app's successor) sees the row at once
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT sample_id, label FROM decisions").fetchall() == [("x", "noisy")]


@pytest.mark.parametrize("trial", range(5))
def test_concurrent_writers_lose_nothing(tmp_path, trial):
    # A fresh database each trial: the race that lost flags was in opening a new database (switching it
    # to WAL, creating the schema) while other sessions did the same.
    path = tmp_path / "review.sqlite"
    errors: list[Exception] = []

    def work(k: int) -> None:
        s = ReviewStore(path)  # each "session" its own object, as in the app
        try:
            for i in range(25):
                s.flag(f"s{k}_{i}", "noisy", reviewer=f"r{k}")
        except Exception as e:  # a thread's exception would otherwise only be a warning
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = ReviewStore(path)
    assert len(store.history()) == 200
    assert len(store.labels()) == 200


def test_parse_drop_rule():
    assert parse_drop_rule("flagged") == DropRule("flagged")
    assert parse_drop_rule("top:7", score="base__loss") == DropRule("top", n=7, score="base__loss")
    assert parse_drop_rule("above:0.25").threshold == 0.25
    for bad in ("top", "top:x", "top:-1", "above:", "drop:3", "flagged:1"):
        with pytest.raises(ReviewError):
            parse_drop_rule(bad)


def test_ids_to_drop_follows_each_score_direction(synth):
    scores = synth.scores()
    top = ids_to_drop(synth, DropRule("top", n=5))
    assert top == scores.sort_values("multimem", ascending=False)["id"].head(5).tolist()
    low_cos = ids_to_drop(synth, DropRule("top", n=5, score="base__cosine"))  # low cosine = suspicious
    assert low_cos == scores.sort_values("base__cosine")["id"].head(5).tolist()
    above = ids_to_drop(synth, DropRule("above", threshold=0.1))
    assert set(above) == set(scores.loc[scores["multimem"] > 0.1, "id"])
    with pytest.raises(ReviewError, match="no score column"):
        ids_to_drop(synth, DropRule("top", n=3, score="nope"))
    with pytest.raises(ReviewError, match="not in"):
        ids_to_drop(synth, DropRule("ids", ids=("no-such-id",)))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_cleaned_manifest_keeps_every_original_column(synth, fmt, tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    store.flag(["s000003", "s000010"], "noisy", reviewer="ann")
    store.flag("s000011", "unsure", reviewer="ann")  # only "noisy" is dropped
    export = build_export(synth, DropRule("flagged"), format=fmt, store=store)
    out = write_export(export, tmp_path / f"clean.{fmt}")
    original = pd.read_csv(Path(synth.config()["manifest"]["path"]), dtype=str, keep_default_na=False)
    if fmt in ("csv", "tsv"):
        got = pd.read_csv(out, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False)
    elif fmt == "jsonl":
        got = pd.DataFrame([json.loads(line) for line in out.read_text().splitlines()])
    else:
        got = pd.read_parquet(out)
    assert list(got.columns) == list(original.columns)  # source_url, which the engine ignores, survives
    assert set(got["id"]) == set(original["id"]) - {"s000003", "s000010"}
    assert export.dropped == ["s000003", "s000010"] and export.kept == len(original) - 2


def test_open_clip_tab_separated_csv_comes_back_as_it_went_in(tmp_path):
    """An open_clip training CSV (tab-separated, filepath/title) is exported in the same shape."""
    root = tmp_path / "data"
    root.mkdir()
    src = pd.DataFrame({"filepath": [f"img/{i}.jpg" for i in range(5)], "title": [f"caption {i}" for i in range(5)],
                        "extra": list("abcde")})
    (root / "train.csv").write_text(src.to_csv(sep="\t", index=False))
    run = RunDir(tmp_path / "run")
    run.write_config({"modalities": ["image", "text"], "dataset_root": str(root), "protocol": "crossfit",
                      "manifest": {"path": str(root / "train.csv"), "format": "csv",
                                   "source_columns": {"image": "filepath", "text": "title"}}})
    run.write_samples(pd.DataFrame({"id": [str(i) for i in range(5)], "row": range(5), "role": "fold0",
                                    "image": src["filepath"], "text": src["title"], "injected": ""}))
    ReviewStore.for_run(run).flag("2", "noisy", reviewer="ann")
    export = build_export(run, DropRule("flagged"))
    text = export.data.decode()
    assert text.splitlines()[0] == "filepath\ttitle\textra"
    assert "img/2.jpg" not in text and text.count("\n") == 5
    # without the original file, the table is rebuilt from samples.parquet with the original names
    (root / "train.csv").unlink()
    rebuilt = pd.read_csv(io.BytesIO(build_export(run, DropRule("flagged"), format="csv").data))
    assert list(rebuilt.columns) == ["filepath", "title"] and len(rebuilt) == 4


def test_id_formats(synth, tmp_path):
    rule = DropRule("top", n=4)
    ids = ids_to_drop(synth, rule)
    assert build_export(synth, rule, format="ids").data.decode().split() == ids
    npy = np.load(write_export(build_export(synth, rule, format="npy"), tmp_path / "x.npy"))
    assert npy.tolist() == sorted(ids)
    table = pd.read_csv(io.BytesIO(build_export(synth, rule, format="ids-csv").data))
    assert table["id"].tolist() == ids and "multimem" in table


def test_cli_export(synth, tmp_path):
    ReviewStore.for_run(synth).flag("s000005", "noisy", reviewer="cli-test")
    out = tmp_path / "clean.csv"
    res = subprocess.run([sys.executable, "-m", "multimem_core.cli", "export", str(synth.path), "--out", str(out),
                          "--drop", "flagged"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "dropped 1 of 300" in res.stdout
    assert "s000005" not in set(pd.read_csv(out, dtype=str)["id"])
    res = subprocess.run([sys.executable, "-m", "multimem_core.cli", "export", str(synth.path), "--out", str(out),
                          "--drop", "top3"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "top:N" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------- rows the run could not load (errors.parquet) are broken rows


def _written_ids(out: Path, fmt: str) -> list[str]:
    if fmt in ("csv", "tsv"):
        return pd.read_csv(out, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False)["id"].tolist()
    if fmt == "jsonl":
        return [json.loads(line)["id"] for line in out.read_text().splitlines()]
    if fmt == "parquet":
        return pd.read_parquet(out)["id"].astype(str).tolist()
    from multimem_core.data.shards import read_shards

    return read_shards(out).table["id"].astype(str).tolist()


def _says_every_row(line: str, *, dropped: int, total: int, unloaded: int, kept: int) -> None:
    assert f"dropped {dropped} of {total} rows" in line, line
    assert f"left out {unloaded} more that the run could not load (2 missing file, 2 empty text, 1 path" in line, line
    assert f"kept {kept}" in line and dropped + unloaded + kept == total, line


def test_summary_quotes_each_reason_on_one_short_line():
    """A decoder's error can run over several lines and hundreds of characters: the summary stays one line, each
    reason quoted in at most 80 characters ending in "…", and its counts still add up."""
    from multimem_core.export import export_summary

    decoder = ("unexpected RuntimeError: [Errno 1094995529] Invalid data found when processing input: "
               "'/data/clips/0001.mp4'\n  moov atom not found\n  " + "stream 0, codec frame size not set; " * 8)
    skipped = pd.DataFrame({"id": ["a", "b", "c"], "row": [4, 9, 12],
                            "reason": [decoder, decoder, "missing file"]})
    line = export_summary(total=20, dropped=2, skipped=skipped, kept=15, rule="top:2", what="csv")
    assert "\n" not in line and "moov" not in line, line
    shown = line.split("could not load (", 1)[1].split("; listed in", 1)[0]
    first, second = shown.split(", 1 ")
    assert first.startswith("2 unexpected RuntimeError: [Errno 1094995529] Invalid data") and first.endswith("…")
    assert len(first) - len("2 ") <= 80 and second == "missing file", shown
    assert "left out 3 more" in line and "kept 15 (csv)" in line


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "shards"])
def test_cleaned_export_leaves_out_the_rows_the_run_could_not_load(unloadable_run, fmt, tmp_path):
    """A missing image, a path outside the dataset folder, an empty caption: the run skipped those rows, so a
    cleaned export leaves them out too, and its counts say what happened to each of the manifest's rows."""
    run, manifest, unloaded = unloadable_run
    rule = DropRule("top", n=3, score=run.ranking_column())
    top = ids_to_drop(run, rule)
    export = build_export(run, rule, format=fmt)
    written = _written_ids(write_export(export, tmp_path / ("clean" if fmt == "shards" else f"clean.{fmt}")), fmt)
    assert set(written) == set(manifest["id"]) - set(top) - set(unloaded)
    assert (export.total, export.kept, export.dropped) == (40, 32, top)
    assert dict(zip(export.skipped["id"], export.skipped["reason"].str[:18])) == \
        {i: why[:18] for i, why in unloaded.items()}
    _says_every_row(export.summary(), dropped=3, total=40, unloaded=5, kept=32)


def test_id_lists_name_the_rows_the_run_could_not_load(unloadable_run, tmp_path):
    """Applied to the input, an id list removes what the cleaned manifest leaves out: the unloaded rows too."""
    run, manifest, unloaded = unloadable_run
    rule = DropRule("top", n=3, score=run.ranking_column())
    top = ids_to_drop(run, rule)
    ids = build_export(run, rule, format="ids")
    assert ids.data.decode().split() == top + sorted(unloaded, key=manifest["id"].tolist().index)
    assert (ids.total, ids.kept) == (40, 32)
    _says_every_row(ids.summary(), dropped=3, total=40, unloaded=5, kept=32)
    assert np.load(write_export(build_export(run, rule, format="npy"), tmp_path / "x.npy")).tolist() == \
        sorted(top + list(unloaded))
    table = pd.read_csv(io.BytesIO(build_export(run, rule, format="ids-csv").data), dtype=str, keep_default_na=False)
    why = dict(zip(table["id"], table["why"]))
    assert all(why[i] == rule.describe() for i in top)
    assert all(why[i].startswith("could not load: " + unloaded[i]) for i in unloaded)


def test_cli_export_counts_every_row_and_can_keep_the_unloaded(unloadable_run, tmp_path, capsys):
    from multimem_core.cli import main

    run, manifest, unloaded = unloadable_run
    out = tmp_path / "m.csv"
    assert main(["export", str(run.path), "--out", str(out), "--drop", "top:3"]) == 0
    said = capsys.readouterr().out
    _says_every_row(said.splitlines()[0], dropped=3, total=40, unloaded=5, kept=32)
    assert not set(pd.read_csv(out, dtype=str)["id"]) & set(unloaded)
    # kept on purpose: every unloaded row is back, and the line adds up without them
    assert main(["export", str(run.path), "--out", str(tmp_path / "all.csv"), "--drop", "top:3", "--keep-unloaded"]) == 0
    assert "dropped 3 of 40 rows" in (said := capsys.readouterr().out) and "kept 37" in said
    assert set(unloaded) <= set(pd.read_csv(tmp_path / "all.csv", dtype=str)["id"])
    with pytest.raises(SystemExit):  # shards have no media to copy for them
        main(["export", str(run.path), "--format", "shards", "--out", str(tmp_path / "sh"), "--drop", "top:3",
              "--keep-unloaded"])
    assert "could not load" in capsys.readouterr().err and not (tmp_path / "sh").exists()
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "could not load" in " ".join(capsys.readouterr().out.split())


def test_the_console_quotes_each_skipped_reason_on_one_short_line():
    """`score`'s console note on skipped samples: a multi-line decoder error is one short line there (the whole
    reason stays in errors.parquet), the file it names is kept whole."""
    from multimem_core.run import describe_skipped

    decoder = "moov atom not found\n  " + "stream 0, codec frame size not set; " * 8
    errors = pd.DataFrame({"id": ["a"], "row": [4], "modality": ["video"], "path": ["/data/clips/0001.mp4"],
                           "reason": [decoder]})
    text = describe_skipped(errors, total=20)
    first, line = text.splitlines()
    assert first.startswith("skipped 1 of 20 samples") and line.startswith("  'a' (row 4): video /data/clips/0001.mp4: ")
    reason = line.split("0001.mp4: ", 1)[1]
    assert reason.startswith("moov atom not found stream 0") and reason.endswith("…") and len(reason) <= 80
