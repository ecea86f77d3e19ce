"""The notebook API, used as a notebook would: a DataFrame of image paths and captions in, scores out."""

from __future__ import annotations

import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

import multimem as mm

TINY = dict(image_tower="mm-tiny", text_tower="mm-tiny", image_size=16, epochs=2, views=2, folds=2,
            projection=False, progress=False, train_workers=1)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    from multimem_core.data.shapes import build_shapes

    base = tmp_path_factory.mktemp("nb")
    manifest = build_shapes(base / "photos", n=48, inject_rate=0.1, seed=0, modalities=("image", "text"),
                            image_size=32, progress=False)
    # what a user has in a notebook: their own column names, paths relative to where they work
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False).rename(columns={"image": "filepath",
                                                                                  "text": "title"})
    df["filepath"] = "photos/" + df["filepath"]
    run = mm.score(df[["filepath", "title"]], modalities=["image", "text"], image_key="filepath",
                   text_key="title", root=base, out=base / "run", **TINY)
    return df, run, base


def test_score_a_dataframe(notebook):
    df, run, _ = notebook
    scores = run.scores
    assert len(scores) == len(df) and list(scores["title"]) == list(df["title"])  # joined, in input order
    scored = scores.dropna(subset=["multimem"])
    assert len(scored) == len(run.dir.scores()) > 0
    assert np.isfinite(scored[["multimem", "cmc_in", "cmc_out"]].to_numpy()).all()
    assert set(scores.loc[scores["multimem"].isna(), "role"]) <= {"H"}  # only held-out rows lack a score
    assert run.summary()["n_scored"] == len(scored)
    top = run.flagged("top:5")
    assert list(top["multimem"]) == sorted(scored["multimem"], reverse=True)[:5]


def test_dataframe_media_are_copied_into_the_run(notebook, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the Hugging Face `datasets` package is not installed")
    df, run, base = notebook
    copy = datasets.load_from_disk(str(run.path / "data")).with_format("arrow")
    assert copy["filepath"][7]["bytes"].as_py() == (base / df["filepath"][7]).read_bytes()
    out = run.export(tmp_path / "clean", to="hf", drop="top:3")
    assert len(datasets.load_from_disk(str(out))) == len(df) - 3


def test_paths_outside_the_root_are_refused(tmp_path):
    from multimem_core.data.manifest import ManifestError

    df = pd.DataFrame({"image": ["../../etc/passwd", "b.png"], "text": ["a", "b"]})
    with pytest.raises(ManifestError, match="outside"):
        mm.score(df, root=tmp_path / "data", out=tmp_path / "run", **TINY)


def test_unknown_option_names_the_known_ones(tmp_path):
    with pytest.raises(TypeError, match="epochs"):
        mm.score(tmp_path, out=tmp_path / "run", epoch=3)


def test_options_are_the_command_lines():
    from multimem_core import config as C
    from multimem import options, score_config
    from multimem_core.cli import build_parser

    cfg = score_config("x.csv", "run", epochs=3, seed=5, image_size=24, protocol="paper", image_key="filepath",
                       projection=False, quiet=True)
    assert cfg.train.epochs == 3 and cfg.train.seed == cfg.protocol.seed == 5
    assert cfg.media.image_size == 24 and cfg.protocol.name == "paper" and cfg.keys.image == "filepath"
    assert cfg.projection is False and cfg.progress is False
    assert score_config("x.csv", "run") == C.ScoreConfig(input="x.csv", out="run")  # nothing restated
    # every option of `multimem score` is an option here, by the same name
    score = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "score")[1]
    dests = {a.dest for a in score._actions} - {"help", "input", "out", "config", "modalities", "func"}
    assert dests <= set(options()), dests - set(options())


def test_open_serves_the_dashboard(notebook):
    _, run, _ = notebook
    proc = mm.open(run)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(proc.url + "/_stcore/health", timeout=2) as r:
                    assert r.read() == b"ok"
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "the dashboard did not start"
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_score_a_datasets_dataset(tmp_path):
    pytest.importorskip("datasets", reason="the Hugging Face `datasets` package is not installed")
    from tests.test_hf import hf_dataset

    ds = hf_dataset(tmp_path / "src", n=32)
    run = mm.score(ds, image_key="img", text_key="caption", id_key="key", out=tmp_path / "run", **TINY)
    scores = run.scores
    assert sorted(scores["id"]) == sorted(ds["key"])
    assert scores["image"].str.contains(r"\.arrow#img/").all()  # read from the run's own copy of the table
    assert scores["multimem"].notna().sum() == len(run.dir.scores())
