"""Hugging Face datasets in and out: a `save_to_disk` folder with images held as bytes scores end to end with
`multimem score`, the dashboard serves its images from the table, and `multimem export --to hf` writes the input
minus the dropped rows with the same features. Parquet with Image features and imagefolder read too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

datasets = pytest.importorskip("datasets", reason="the Hugging Face `datasets` package is not installed")

from multimem_core.cli import main  # noqa: E402
from multimem_core.review import DropRule, ids_to_drop  # noqa: E402
from multimem_core.run import RunDir  # noqa: E402

TINY = ["--image-tower", "mm-tiny", "--text-tower", "mm-tiny", "--image-size", "16", "--epochs", "2", "--views", "2",
        "--folds", "2", "--no-projection", "--quiet", "--train-workers", "1"]


def shapes_table(folder: Path, n: int = 48) -> tuple[pd.DataFrame, Path]:
    from multimem_core.data.shapes import build_shapes

    manifest = build_shapes(folder, n=n, inject_rate=0.1, seed=0, modalities=("image", "text"), image_size=32,
                            progress=False)
    return pd.read_csv(manifest, dtype=str, keep_default_na=False), Path(manifest).parent


def hf_dataset(folder: Path, n: int = 48):
    """A dataset as people keep them: images as PNG bytes in an Image feature, a caption, a ClassLabel."""
    table, root = shapes_table(folder / "src", n)
    labels = sorted(set(table["label"]))
    return datasets.Dataset.from_dict(
        {"img": [{"bytes": (root / p).read_bytes(), "path": None} for p in table["image"]],
         "caption": table["text"].tolist(), "key": table["id"].tolist(),
         "label": [labels.index(v) for v in table["label"]]},
        features=datasets.Features({"img": datasets.Image(), "caption": datasets.Value("string"),
                                    "key": datasets.Value("string"), "label": datasets.ClassLabel(names=labels)}))


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory) -> tuple[Path, RunDir]:
    base = tmp_path_factory.mktemp("hf")
    hf_dataset(base).save_to_disk(str(base / "ds"))
    assert main(["score", str(base / "ds"), "--out", str(base / "run"), "--image-key", "img", "--text-key", "caption",
                 "--id-key", "key", *TINY]) == 0
    return base / "ds", RunDir(base / "run")


def test_saved_dataset_scores_end_to_end(hf_run):
    ds_dir, run = hf_run
    cfg = run.config()
    assert cfg["status"] == "complete" and cfg["manifest"]["format"] == "hf"
    samples, scores = run.samples(), run.scores()
    original = datasets.load_from_disk(str(ds_dir))
    assert sorted(samples["id"]) == sorted(original["key"])
    assert samples["image"].str.fullmatch(r"data-\d+-of-\d+\.arrow#img/\d+").all()  # bytes stay in the table
    assert set(samples["label"]) <= set(original.features["label"].names)  # class names, not their indices
    assert len(scores) > 0 and np.isfinite(scores["multimem"]).all()
    # the decoded pixels are those of the bytes in the table (row by row)
    from multimem_core.data.media import load_image

    ref = samples.iloc[3]
    row = int(ref["row"])
    assert ref["text"] == original[row]["caption"]
    blob = original.with_format("arrow")[row]["img"][0]["bytes"].as_py()
    assert load_image(blob, 16, fit="crop").shape == (3, 16, 16)


def test_dashboard_serves_table_media_under_the_root_only(hf_run, tmp_path):
    from app.media import MediaPathError, read_media

    ds_dir, run = hf_run
    ref = run.samples()["image"].iloc[0]
    blob, mime = read_media(run.dataset_root, ref)
    original = datasets.load_from_disk(str(ds_dir)).with_format("arrow")
    assert blob == original[int(run.samples()["row"].iloc[0])]["img"][0]["bytes"].as_py()
    assert mime == "image/png"
    # a reference is untrusted text: a data file outside the root is never opened
    outside = tmp_path / "evil.arrow"
    shutil.copy(next(ds_dir.glob("*.arrow")), outside)
    for bad in [f"../{'../' * 8}{str(outside).lstrip('/')}#img/0", f"{outside}#img/0"]:
        with pytest.raises(MediaPathError, match="outside"):
            read_media(run.dataset_root, bad)
    with pytest.raises(MediaPathError, match="no such row"):
        read_media(run.dataset_root, ref.split("#")[0] + "#img/100000")
    from multimem_core.data.hf_media import HFMediaError, read_hf_media

    with pytest.raises(HFMediaError, match="larger than"):  # checked before the value is copied out
        read_hf_media(run.dataset_root, ref, max_bytes=10)


def test_dashboard_shows_the_images(hf_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import run_data

    _, run = hf_run
    monkeypatch.setenv(run_data.ENV_RUN, str(run.path))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page("views/detail.py")
    at.query_params["id"] = run.scores()["id"].iloc[0]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]  # a media that cannot be served shows as st.error
    assert len(at.get("image")) > 0  # the sample and its neighbours, read from the Arrow file


def test_export_to_hf_round_trips(hf_run, tmp_path, capsys):
    ds_dir, run = hf_run
    out = tmp_path / "clean"
    assert main(["export", str(run.path), "--to", "hf", "--out", str(out), "--drop", "top:5"]) == 0
    assert "dropped 5 of 48 rows" in capsys.readouterr().out
    top5 = set(run.scores().nlargest(5, "multimem")["id"])
    before, after = datasets.load_from_disk(str(ds_dir)), datasets.load_from_disk(str(out))
    assert after.features == before.features
    assert len(after) == len(before) - 5
    assert set(after["key"]) == set(before["key"]) - top5
    kept = before.filter(lambda r: r["key"] not in top5).with_format("arrow")
    assert after.with_format("arrow")["img"] == kept["img"]  # the same bytes, row for row
    # export never writes over an existing folder
    with pytest.raises(SystemExit):
        main(["export", str(run.path), "--to", "hf", "--out", str(out), "--drop", "top:5"])
    assert "already exists" in capsys.readouterr().err


def test_export_of_a_manifest_run_to_hf_counts_the_input_and_leaves_out_unloaded_rows(unloadable_run, tmp_path,
                                                                                       capsys):
    """The counts are of the input's rows, before anything is removed, and the rows the run could not load
    (whose files are missing or refused) are left out like every other cleaned export's."""
    run, manifest, unloaded = unloadable_run
    out = tmp_path / "clean"
    assert main(["export", str(run.path), "--to", "hf", "--out", str(out), "--drop", "top:5"]) == 0
    said = capsys.readouterr().out.splitlines()[0]
    assert said.startswith("dropped 5 of 40 rows (the 5 samples with") and "kept 30 (Hugging Face dataset)" in said
    assert "left out 5 more that the run could not load (2 missing file, 2 empty text, 1 path" in said
    top5 = set(ids_to_drop(run, DropRule("top", n=5, score=run.ranking_column())))
    after = datasets.load_from_disk(str(out))
    assert set(after["id"]) == set(manifest["id"]) - top5 - set(unloaded) and len(after) == 30
    assert all(isinstance(v["bytes"], bytes) for v in after.with_format("python")["image"])


@pytest.mark.parametrize("which", ["hf_run", "unloadable_run"])
def test_export_to_hf_reads_errors_parquet_once(which, request, tmp_path, monkeypatch):
    """The rows the run could not load are read from RUN/errors.parquet once, for the counts and for writing
    the dataset alike, for a run of a Hugging Face dataset and for one of a manifest."""
    from multimem_core.exporters import export_to

    run = request.getfixturevalue(which)[0 if which == "unloadable_run" else 1]
    reads, read = [], RunDir.errors
    monkeypatch.setattr(RunDir, "errors", lambda self: reads.append(self.errors_path) or read(self))
    said = export_to(run, "hf", tmp_path / "clean", DropRule("top", n=3, score=run.ranking_column()))
    assert reads == [run.errors_path], reads
    total = len(datasets.load_from_disk(str(tmp_path / "clean"))) + 3 + (5 if which == "unloadable_run" else 0)
    assert said.startswith(f"dropped 3 of {total} rows"), said


def test_export_to_shards_and_csv(hf_run, tmp_path, capsys):
    """Shards carry the table's media bytes; a manifest would name no files, so it is refused with the way out."""
    import tarfile

    ds_dir, run = hf_run
    assert main(["export", str(run.path), "--format", "shards", "--out", str(tmp_path / "shards"), "--drop", "top:5"]) == 0
    with tarfile.open(next((tmp_path / "shards").glob("*.tar"))) as tar:
        pngs = [m for m in tar.getmembers() if m.name.endswith(".png")]
        first = tar.extractfile(pngs[0]).read()
    original = datasets.load_from_disk(str(ds_dir)).with_format("arrow")
    key = pngs[0].name.rsplit(".", 1)[0]
    assert first == original["img"][original["key"].to_pylist().index(key)]["bytes"].as_py()
    with pytest.raises(SystemExit):
        main(["export", str(run.path), "--format", "csv", "--out", str(tmp_path / "clean.csv"), "--drop", "top:5"])
    assert "--to hf" in capsys.readouterr().err and not (tmp_path / "clean.csv").exists()


def test_parquet_with_image_features_reads_and_decodes(tmp_path):
    from multimem_core.config import ColumnKeys, MediaSpec
    from multimem_core.inputs import decode, read_input

    ds = hf_dataset(tmp_path, n=24)
    ds.to_parquet(str(tmp_path / "train.parquet"), batch_size=5)  # row groups of 5 rows
    source = read_input(tmp_path / "train.parquet", keys=ColumnKeys(image="img", text="caption", id="key"))
    assert source.format == "hf" and source.kind == "parquet" and len(source.table) == 24
    decoded = decode(source, ["image", "text"], MediaSpec(image_size=16), tmp_path / "cache", progress=False)
    assert len(decoded.ids) == 24 and decoded.arrays["image"].shape == (24, 3, 16, 16)
    assert decoded.arrays["text"][5] == ds[5]["caption"]
    from multimem_core.data.hf_media import read_hf_media

    ref = source.table["image"][17]  # the dashboard's read: one row group of one column
    assert ref == "train.parquet#img/17"
    assert read_hf_media(source.root, ref) == ds.with_format("arrow")[17]["img"][0]["bytes"].as_py()


def test_bad_media_bytes_cost_one_row(tmp_path):
    from multimem_core.config import ColumnKeys, MediaSpec
    from multimem_core.inputs import decode, read_input

    ds = hf_dataset(tmp_path, n=12)
    rows = ds.to_dict()
    rows["img"] = [{"bytes": b"not an image" if i == 2 else r["bytes"], "path": None}
                   for i, r in enumerate(ds.with_format("arrow")["img"].to_pylist())]
    datasets.Dataset.from_dict(rows, features=ds.features).save_to_disk(str(tmp_path / "ds"))
    source = read_input(tmp_path / "ds", keys=ColumnKeys(image="img", text="caption", id="key"))
    decoded = decode(source, ["image", "text"], MediaSpec(image_size=16), tmp_path / "cache", progress=False)
    assert len(decoded.ids) == 11
    err = decoded.errors.iloc[0]
    assert err["id"] == rows["key"][2] and err["reason"] == "not an image" and "#img/2" in err["path"]


def test_imagefolder_with_metadata(tmp_path):
    from multimem_core.config import MediaSpec
    from multimem_core.inputs import decode, read_input

    table, root = shapes_table(tmp_path / "src", 16)
    folder = tmp_path / "imagefolder" / "train"
    folder.mkdir(parents=True)
    with open(folder / "metadata.jsonl", "w") as f:
        for r in table.itertuples():
            shutil.copy(root / r.image, folder / Path(r.image).name)
            f.write(json.dumps({"file_name": Path(r.image).name, "text": r.text}) + "\n")
    source = read_input(tmp_path / "imagefolder")  # the only split is found
    assert source.modalities == ["image", "text"] and source.source_columns["image"] == "file_name"
    assert read_input(folder / "metadata.jsonl").source_columns == source.source_columns  # or its metadata file
    decoded = decode(source, ["image", "text"], MediaSpec(image_size=16), tmp_path / "cache", progress=False)
    assert len(decoded.ids) == 16
    # datasets reads the same folder: our rows are its rows
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "imagefolder"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(loaded["text"]) == sorted(decoded.arrays["text"])


def test_new_run_page_lists_saved_datasets(hf_run):
    from multimem_core import launch

    ds_dir, _ = hf_run
    assert ds_dir.resolve() in launch.find_inputs(ds_dir.parent)


def test_dataset_dict_asks_for_a_split(tmp_path):
    from multimem_core.data.manifest import ManifestError
    from multimem_core.inputs import read_input

    datasets.DatasetDict({"train": hf_dataset(tmp_path, n=8)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ManifestError, match="name one split"):
        read_input(tmp_path / "dd")


def test_audio_feature_bytes_decode(tmp_path):
    import io

    import soundfile as sf

    from multimem_core.config import MediaSpec
    from multimem_core.data.hf_media import mime_of, read_hf_media
    from multimem_core.inputs import decode, read_input

    def tone(hz: float) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, np.sin(2 * np.pi * hz * np.arange(8000) / 8000).astype(np.float32), 8000, format="WAV")
        return buf.getvalue()

    hz = [220.0, 330.0, 440.0, 550.0, 660.0, 770.0]
    from multimem_core.config import ColumnKeys
    from multimem_core.data.hf_write import frame_to_dataset

    # written as an Audio feature by the notebook API's writer (datasets itself needs torchcodec to encode audio)
    frame = pd.DataFrame({"audio": [tone(h) for h in hz], "text": [f"a tone of {h:.0f} Hz" for h in hz]})
    frame_to_dataset(frame, tmp_path / "ds", keys=ColumnKeys(), root=tmp_path)
    assert str(datasets.load_from_disk(str(tmp_path / "ds")).features["audio"]).startswith("Audio(")
    source = read_input(tmp_path / "ds")
    assert source.modalities == ["text", "audio"]
    decoded = decode(source, ["audio", "text"], MediaSpec(audio_seconds=0.5), tmp_path / "cache", progress=False)
    assert decoded.arrays["audio"].shape == (6, 8000)
    # 16 kHz after resampling: the strongest frequency of row 2 is its tone
    spectrum = np.abs(np.fft.rfft(decoded.arrays["audio"][2]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) < 5
    assert mime_of(read_hf_media(source.root, source.table["audio"][0])) == "audio/wav"


def test_a_folder_with_manifests_beside_data_files_asks_which_to_read(tmp_path):
    from multimem_core.data.manifest import ManifestError
    from multimem_core.inputs import read_input

    table = pd.DataFrame({"image": ["a.png"], "text": ["a cat"]})
    table.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "data").mkdir()
    table.to_parquet(tmp_path / "data" / "train-00000.parquet")
    with pytest.raises(ManifestError, match=r"holds manifests \(train.csv\) beside .parquet data files"):
        read_input(tmp_path)
