"""Exports to the review tools (FiftyOne, Renumics Spotlight, Label Studio), each read back with its own library
where it installs (`pip install -e ".[spotlight]"` ...); skipped with the reason where it does not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from multimem_core.cli import main
from multimem_core.run import RunDir

TINY = ["--image-tower", "mm-tiny", "--text-tower", "mm-tiny", "--image-size", "16", "--epochs", "2", "--views", "2",
        "--folds", "2", "--no-projection", "--quiet", "--train-workers", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    """A run on a Hugging Face dataset whose images are bytes in the table: exports must write them out."""
    pytest.importorskip("datasets", reason="the Hugging Face `datasets` package is not installed")
    from tests.test_hf import hf_dataset

    base = tmp_path_factory.mktemp("tools")
    hf_dataset(base, n=40).save_to_disk(str(base / "ds"))
    assert main(["score", str(base / "ds"), "--out", str(base / "run"), "--image-key", "img", "--text-key", "caption",
                 "--id-key", "key", *TINY]) == 0
    return RunDir(base / "run")


def test_spotlight_reads_the_table(run, tmp_path):
    pytest.importorskip("renumics.spotlight", reason="renumics-spotlight is not installed (pip install -e '.[spotlight]')")
    from pathlib import Path

    from renumics.spotlight.data_source import create_datasource
    from renumics.spotlight.data_store import DataStore

    out = tmp_path / "review.parquet"
    assert main(["export", str(run.path), "--to", "spotlight", "--out", str(out), "--drop", "top:3"]) == 0
    store = DataStore(create_datasource(Path(out)), {})  # how `spotlight review.parquet` opens it
    dtypes = {k: str(v) for k, v in store.dtypes.items()}
    assert {"id", "image", "text", "multimem", "reason", "drop"} <= set(dtypes)
    assert (dtypes["image"], dtypes["multimem"], dtypes["drop"]) == ("Image", "float", "bool")  # files it can show
    table = pd.read_parquet(out)
    scores = run.scores()
    merged = table.merge(scores[["id", "multimem"]], on="id", suffixes=("", "_run"))
    np.testing.assert_allclose(merged["multimem"], merged["multimem_run"])
    assert set(table.loc[table["drop"], "id"]) == set(scores.nlargest(3, "multimem")["id"])
    # the images held in the table were written out as files Spotlight can open
    from PIL import Image

    with Image.open(table["image"].iloc[0]) as im:
        assert im.size == (32, 32)


def test_label_studio_tasks_validate(run, tmp_path):
    pytest.importorskip("label_studio_sdk", reason="label-studio-sdk is not installed (pip install -e '.[label-studio]')")
    from label_studio_sdk.label_interface import LabelInterface

    out = tmp_path / "tasks.json"
    assert main(["export", str(run.path), "--to", "label-studio", "--out", str(out), "--drop", "top:3"]) == 0
    tasks = json.loads(out.read_text())
    interface = LabelInterface(out.with_suffix(".xml").read_text())
    assert len(tasks) == len(run.scores())
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores == sorted(scores, reverse=True)  # most suspicious first
    for task in tasks:
        # (the SDK's validate_task calls validate_prediction without the prediction: check them apart)
        assert interface.validate_task({"data": task["data"]}), task["data"]
        assert interface.validate_prediction(task["predictions"][0]), task["predictions"][0]
    assert [t["predictions"][0]["result"][0]["value"]["choices"] for t in tasks[:4]] == [["noisy"]] * 3 + [["clean"]]
    assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")


def test_fiftyone_loads_back(run, tmp_path):
    fo = pytest.importorskip("fiftyone", reason="fiftyone is not installed (pip install -e '.[fiftyone]')")
    try:
        fo.list_datasets()
    except Exception as e:  # fiftyone needs its MongoDB: no database, no test
        pytest.skip(f"fiftyone's database does not start here: {e}")
    out = tmp_path / "fo"
    assert main(["export", str(run.path), "--to", "fiftyone", "--out", str(out), "--drop", "top:3"]) == 0
    loaded = fo.Dataset.from_dir(str(out), dataset_type=fo.types.FiftyOneDataset)
    try:
        by_id = {s["sample_id"]: s for s in loaded}
        scores = run.scores()
        assert set(by_id) == set(run.samples()["id"])
        for r in scores.itertuples():
            assert by_id[r.id]["multimem"] == pytest.approx(r.multimem)
        assert sum(s["drop"] for s in loaded) == 3
    finally:
        loaded.delete()


def test_tool_exports_refuse_existing_output(run, tmp_path, capsys):
    out = tmp_path / "tasks.json"
    out.write_text("[]")
    with pytest.raises(SystemExit):
        main(["export", str(run.path), "--to", "label-studio", "--out", str(out)])
    assert "already exists" in capsys.readouterr().err and out.read_text() == "[]"


@pytest.mark.parametrize("fmt", ["hf", "fiftyone"])
@pytest.mark.parametrize("where", [".", "models"])
def test_folder_exports_refuse_the_run_folder(run, fmt, where, capsys):
    """A tool's dataset folder is never written into the run itself (only under RUN/exports/)."""
    before = {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.is_file()}
    out = run.path / where
    with pytest.raises(SystemExit):
        main(["export", str(run.path), "--to", fmt, "--out", str(out), "--drop", "top:3"])
    assert "a run's own files are never written over" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.path.rglob("*") if p.is_file()} == before
