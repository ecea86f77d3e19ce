"""The confidence figure: retrieval recall@5 on H against chance, written with every run, warned about."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from multimem_core.confidence import LIFT_THRESHOLD, heldout_confidence

N, H, D = 60, 20, 16


def embeddings(rng, *, aligned: bool) -> dict[str, np.ndarray]:
    image = rng.normal(size=(N, D)).astype(np.float32)
    text = image + 0.1 * rng.normal(size=(N, D)) if aligned else rng.normal(size=(N, D))
    return {"image": image, "text": text.astype(np.float32)}


@pytest.mark.parametrize("aligned", [True, False])
def test_figure_separates_aligned_from_unrelated_embeddings(aligned):
    rng = np.random.default_rng(0)
    clean = {"m0": embeddings(rng, aligned=aligned), "m1": embeddings(rng, aligned=aligned)}
    conf = heldout_confidence(clean, {name: np.arange(N - H, N) for name in clean}, modalities=["image", "text"])
    pair = conf["pairs"]["image-text"]
    assert conf["chance"] == pytest.approx(5 / H)
    assert pair["lift"] == pytest.approx(pair["recall_at_5"] / conf["chance"], rel=0.01)
    assert conf["low"] is (not aligned)
    if aligned:
        assert pair["recall_at_5"] == 1.0 and conf["lift"] >= LIFT_THRESHOLD
    else:
        assert conf["lift"] < LIFT_THRESHOLD


def test_too_few_heldout_samples_give_no_figure():
    rng = np.random.default_rng(0)
    conf = heldout_confidence({"m": embeddings(rng, aligned=True)}, {"m": np.arange(4)}, modalities=["image", "text"])
    assert conf["lift"] is None and conf["low"] is False


def write_import(tmp_path, *, aligned: bool):
    """import-embeddings of two models (paper layout) over N samples, the last H held out."""
    from multimem_core.importing.embeddings import EmbeddingImport, import_embeddings

    ids = [f"s{i:02d}" for i in range(N)]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"id": ids, "text": [f"caption {i}" for i in range(N)],
                  "image": [f"img/{i}.png" for i in range(N)]}).to_csv(manifest, index=False)
    rng = np.random.default_rng(1)
    folders = []
    for name in ("f", "g"):
        folder = tmp_path / name
        folder.mkdir()
        for m, x in embeddings(rng, aligned=aligned).items():
            np.save(folder / f"{m}.npy", x)
        (folder / "ids.txt").write_text("\n".join(ids) + "\n")
        folders.append(folder)
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n".join(ids[N - H:]))
    return import_embeddings(EmbeddingImport(manifest=str(manifest), out=str(tmp_path / "run"), in_model=str(folders[0]),
                                             out_model=str(folders[1]), heldout=str(heldout), projection=False))


@pytest.mark.parametrize("aligned", [True, False])
def test_run_stores_the_figure_and_summary_warns_only_when_low(tmp_path, aligned, capsys):
    from multimem_core.cli import main

    run = write_import(tmp_path, aligned=aligned)
    stored = json.loads((run.path / "config.json").read_text())["confidence"]
    assert stored["low"] is (not aligned)
    # the same figure travels with scores.parquet (its schema metadata)
    assert pd.read_parquet(run.path / "scores.parquet").attrs["confidence"] == stored
    assert main(["summary", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert "confidence recall@5 among the rows each model never trained on (≥ 20)" in text
    assert "No self-check in this run" in text
    assert ("WARNING: low confidence" in text) is (not aligned)
    if not aligned:  # imported embeddings: the advice is about the user's own models, not our towers' options
        assert "your own models" in text and "--image-tower" not in text


@pytest.mark.parametrize("aligned", [True, False])
def test_overview_warns_only_when_low(tmp_path, aligned, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from app import run_data

    run = write_import(tmp_path, aligned=aligned)
    monkeypatch.setenv(run_data.ENV_RUN, str(run.path))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Confidence: recall@5" in c.value for c in at.caption)
    warned = [w.value for w in at.warning if "low confidence" in w.value]
    assert bool(warned) is (not aligned)


SCRATCH = {"image_tower": "mm-tiny", "text_tower": "mm-tiny", "audio_tower": "mel-cnn", "video_tower": "trained",
           "pretrained": None, "freeze_image": False}


@pytest.mark.parametrize("model, scratch", [
    (None, []),                                                       # the defaults: every tower pretrained
    ({"image_tower": "mm-tiny"}, ["image", "text", "audio", "video"]),  # an old run's config: no tower options
    (SCRATCH, ["image", "text", "audio", "video"]),
    ({**SCRATCH, "pretrained": "ck.pt"}, ["audio"]),                  # the checkpoint: image, its text, the frames' copy
    ({**SCRATCH, "pretrained": "ck.pt", "freeze_image": True}, ["audio", "video"]),  # frames then train from scratch
    ({**SCRATCH, "text_tower": "minilm", "audio_tower": "aisfx"}, ["image", "video"]),
    ({**SCRATCH, "text_tower": "models/my-sentence-encoder"}, ["image", "audio", "video"]),
])
def test_towers_from_scratch_follow_create_model(model, scratch):
    from multimem_core.config import ModelConfig, towers_from_scratch

    config = ModelConfig().to_dict() if model is None else model
    assert towers_from_scratch(config, ["image", "text", "audio", "video"]) == scratch


def test_advice_names_only_what_the_run_does_not_use_yet():
    from multimem_core.config import ModelConfig
    from multimem_core.confidence import advice

    mods = ["image", "text", "audio"]
    default = advice({"model": ModelConfig().to_dict(), "modalities": mods})
    assert "--image-tower" not in default and "--audio-tower" not in default and "--epochs" not in default
    assert "pretrained weights already (image efficientnet-lite2, text minilm, audio aisfx)" in default
    mixed = advice({"model": ModelConfig(audio_tower="mel-cnn").to_dict(), "modalities": mods})
    assert "--audio-tower aisfx" in mixed and "--image-tower" not in mixed and "--text-tower" not in mixed
    assert "import-embeddings" in default and "import-embeddings" in mixed


@pytest.mark.parametrize("n_reference", [15, 16])
def test_figure_is_undefined_where_no_retrieval_could_clear_the_threshold(n_reference):
    from multimem_core.confidence import format_confidence

    rng = np.random.default_rng(0)
    clean = {"m0": embeddings(rng, aligned=True)}  # retrieval is perfect: recall@5 = 1
    conf = heldout_confidence(clean, {"m0": np.arange(n_reference)}, modalities=["image", "text"])
    # 15 rows: chance 5/15, so even recall 1 is 3× chance, never above the threshold (3×): no figure, no warning
    undefined = n_reference <= 5 * LIFT_THRESHOLD
    assert (conf["lift"] is None) is undefined and conf["low"] is False
    line = format_confidence(conf)[0]
    assert line.startswith("confidence undefined") is undefined
