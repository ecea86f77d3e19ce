"""End to end: a manifest in, a complete run directory out, with the metric doing its job."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from multimem_core.run import RunDir
from tests.conftest import tiny_score_config


def test_engine_run_is_complete(engine_run: RunDir):
    cfg = engine_run.config()
    assert cfg["status"] == "complete"
    mods = cfg["modalities"]
    assert mods == ["image", "text", "audio", "video"]
    samples, scores = engine_run.samples(), engine_run.scores()
    assert {"id", "role", "text", "image", "audio", "video", "label", "injected"} <= set(samples.columns)
    # crossfit scores every training sample, and only those
    train_ids = set(samples.loc[samples.role != "H", "id"])
    assert set(scores["id"]) == train_ids
    expected = {"multimem", "cmc_in", "cmc_out", "base__cosine", "base__clipmem", "base__loss"}
    expected |= {f"contrib__{m}" for m in mods}
    expected |= {f"pair__{a}__{b}" for i, a in enumerate(mods) for b in mods[i + 1:]}
    assert expected <= set(scores.columns)
    assert np.isfinite(scores[sorted(expected)].to_numpy()).all()
    np.testing.assert_allclose(scores["multimem"], scores["cmc_in"] - scores["cmc_out"], atol=1e-6)
    # scores.parquet has a row for every loaded sample; crossfit holds none out unless asked (--heldout-frac:
    # test_importers.test_heldout_rows_come_last_with_cmc_out_only checks that case)
    every = engine_run.scores(heldout=True)
    assert sorted(every["id"]) == sorted(samples["id"]) and every["id"].is_unique
    assert cfg["protocol"].get("heldout_frac") is None
    assert (every["role"] != "H").all() and set(scores["id"]) == set(samples["id"])
    sim_in, sim_out = engine_run.similarity_matrices()
    assert sim_in.shape == (len(scores), 4, 4) == sim_out.shape
    ids, emb = engine_run.embeddings("fold0", "image")
    assert len(ids) == len(samples) and emb.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=1e-2)
    proj = engine_run.projection()
    assert len(proj) == len(samples) and np.isfinite(proj[["x", "y"]].to_numpy()).all()
    assert {"decode", "train", "embed", "score"} <= set(engine_run.timings())
    assert (engine_run.models_dir / "fold0" / "model.safetensors").is_file()
    assert json.loads(engine_run.config_path.read_text())["models"]["fold0"]["trained_on"] == ["fold1"]


def test_injected_rank_above_clean(tmp_path):
    """Caption swaps on a small image+text shapes set: the models memorize them, so MultiMem ranks them high.

    Memorization needs many passes over each sample (DESIGN §8): small batches, no weight decay, 40 epochs.
    """
    from sklearn.metrics import roc_auc_score

    from multimem_core.config import MediaSpec
    from multimem_core.data.shapes import build_shapes
    from multimem_core.score import score_run

    manifest = build_shapes(tmp_path / "data", n=400, inject_rate=0.1, seed=1, modalities=("image", "text"),
                            image_size=32, progress=False)
    cfg = tiny_score_config(manifest, tmp_path / "run", epochs=40, views=4, seed=1, projection=False)
    cfg.media = MediaSpec(image_size=32)
    cfg.model.image_size = 32
    cfg.train.batch_size, cfg.train.weight_decay = 16, 0.0
    cfg.train_workers = None  # one process per model, as `multimem score` does
    run = score_run(cfg)
    merged = run.scores().merge(run.samples()[["id", "injected"]], on="id")
    injected = merged["injected"] != ""
    auroc = roc_auc_score(injected, merged["multimem"])
    assert auroc > 0.65, f"MultiMem AUROC {auroc:.3f}"
    gap = merged.loc[injected, "multimem"].mean() - merged.loc[~injected, "multimem"].mean()
    assert gap > 0.02, f"injected samples are memorized more than clean ones by only {gap:.4f}"


def test_paper_protocol_signs(tmp_path, shapes_manifest):
    from multimem_core.score import score_run

    run = score_run(tiny_score_config(shapes_manifest, tmp_path / "run", protocol="paper", projection=False,
                                      modalities=["image", "text"]))
    scores = run.scores()
    assert set(scores["role"]) == {"S_S", "S_C", "S_I"}
    assert set(run.config()["models"]) == {"f", "g"}


def test_bad_sample_is_skipped_and_recorded(tmp_path, shapes_manifest):
    from multimem_core.score import score_run

    table = pd.read_csv(shapes_manifest)
    broken = table.copy()
    broken.loc[3, "image"] = "image/does-not-exist.png"
    (shapes_manifest.parent / "image" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    broken.loc[5, "image"] = "image/corrupt.png"
    path = shapes_manifest.parent / "broken.csv"
    broken.to_csv(path, index=False)
    run = score_run(tiny_score_config(path, tmp_path / "run", modalities=["image", "text"], epochs=1,
                                      projection=False))
    errors = run.errors()
    assert set(errors["id"]) == {table.loc[3, "id"], table.loc[5, "id"]}
    assert errors["reason"].str.len().gt(0).all()
    assert len(run.samples()) == len(table) - 2


def test_resume_after_interrupted_training(tmp_path, shapes_manifest):
    """A crash mid-training: rerunning continues from the last checkpoint and ends where an uninterrupted run does."""
    from multimem_core import train as train_mod
    from multimem_core.score import score_run

    cfg = tiny_score_config(shapes_manifest, tmp_path / "a", modalities=["image", "text"], epochs=3, projection=False)
    full = score_run(cfg).scores()

    original = train_mod.contrastive_loss
    first_checkpoint = tmp_path / "b" / "models" / "fold0" / "checkpoint.pt"

    def crash_in_second_epoch(*a, **k):
        if first_checkpoint.is_file():  # fold0 trains first and checkpoints after each epoch: this is epoch 2
            raise KeyboardInterrupt
        return original(*a, **k)

    cfg_b = tiny_score_config(shapes_manifest, tmp_path / "b", modalities=["image", "text"], epochs=3,
                              projection=False)
    train_mod.contrastive_loss = crash_in_second_epoch
    try:
        with pytest.raises(KeyboardInterrupt):
            score_run(cfg_b)
    finally:
        train_mod.contrastive_loss = original
    ckpt = RunDir(cfg_b.out).models_dir / "fold0" / "checkpoint.pt"
    assert ckpt.is_file(), "a checkpoint was written after the first epoch"
    resumed = score_run(cfg_b).scores()
    pd.testing.assert_frame_equal(full.reset_index(drop=True), resumed.reset_index(drop=True), atol=1e-5)


def test_rerun_of_a_finished_run_keeps_the_time_of_work_it_skipped(tmp_path, shapes_manifest):
    """The same command again on a finished run resumes it: it finds the decoded media, the frozen text
    features and the trained models done, so their seconds stay those of the run that did the work; what it
    redoes (reading the input, embedding, scoring, the UMAP map) is timed anew, not added to the first run's."""
    import time

    from multimem_core.score import score_run

    cfg = tiny_score_config(shapes_manifest, tmp_path / "run", modalities=["image", "text"], epochs=1)
    cfg.model.text_tower = "minilm"  # frozen: its features are cached, so preparing is skipped too
    run = score_run(cfg)
    first = run.timings()
    start = time.perf_counter()
    score_run(cfg)
    wall = time.perf_counter() - start
    again = run.timings()
    assert set(again) == set(first) == {"read", "decode", "prepare", "train", "embed", "score", "projection"}
    skipped = ("decode", "prepare", "train")
    assert {k: again[k] for k in skipped} == {k: first[k] for k in skipped}
    redone = sorted(set(again) - set(skipped))
    assert sum(again[k] for k in redone) <= wall, (first, again, wall)


def test_frozen_pretrained_text_tower_is_cached(tmp_path, shapes_manifest):
    """--text-tower minilm: frozen all-MiniLM-L6-v2 (shipped in a wheel) + trained projection, features cached."""
    from multimem_core.score import score_run

    cfg = tiny_score_config(shapes_manifest, tmp_path / "run", modalities=["image", "text"], epochs=1,
                            projection=False)
    cfg.model.text_tower = "minilm"
    run = score_run(cfg)
    cached = list(run.cache_dir.glob("features_text_*.npy"))
    assert len(cached) == 1
    assert run.scores()["multimem"].notna().all()
    # the projection is trained, the encoder is not part of the saved model
    from safetensors.torch import load_file

    weights = load_file(run.models_dir / "fold0" / "model.safetensors")
    assert any(k.startswith("towers.text.proj") for k in weights)
    assert not any("encoder" in k for k in weights if k.startswith("towers.text"))


def test_models_trained_in_parallel_processes_match(tmp_path, shapes_manifest):
    """One process per model (the CPU default) gives the scores of training them one after another."""
    from multimem_core.score import score_run

    seq = tiny_score_config(shapes_manifest, tmp_path / "seq", modalities=["image", "text"], projection=False)
    par = tiny_score_config(shapes_manifest, tmp_path / "par", modalities=["image", "text"], projection=False)
    par.train_workers = 2
    a, b = score_run(seq).scores(), score_run(par).scores()
    assert list(a["id"]) == list(b["id"])
    # threads differ (2 vs 1 per model), so float reductions may round differently
    np.testing.assert_allclose(a["multimem"], b["multimem"], atol=2e-3)
