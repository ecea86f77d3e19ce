"""Diagnostics the dashboard calls: the weakest pair in words, faiss neighbours, AUROC and precision at k."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from multimem_core import diagnose
from multimem_core import names


def test_weakest_pair_sentence_names_the_odd_modality():
    mods = ["image", "text", "audio"]
    sim = np.array([[1, .8, .1], [.8, 1, .15], [.1, .15, 1]])
    assert diagnose.weakest_pair_sentence(sim, mods).startswith("audio disagrees with image and text")
    four = np.array([[1, .9, .2, .8], [.9, 1, .25, .85], [.2, .25, 1, .3], [.8, .85, .3, 1]])
    assert diagnose.weakest_pair_sentence(four, mods + ["video"]).startswith(
        "audio disagrees with image, text and video")
    assert diagnose.weakest_pair_sentence(np.array([[1, .2], [.2, 1]]), ["image", "text"]).startswith(
        "image and text disagree")
    even = np.array([[1, .8, .75], [.8, 1, .75], [.75, .75, 1]])
    assert diagnose.weakest_pair_sentence(even, mods).startswith("no modality stands out")
    with pytest.raises(ValueError, match="does not match"):
        diagnose.weakest_pair_sentence(np.eye(3), ["image", "text"])


def test_neighbours_find_the_caption_an_image_expects():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    protos = rng.normal(size=(10, 16)).astype(np.float32)
    protos[8] = protos[3]  # samples 3 and 8 show the same thing
    ids = [f"s{i}" for i in range(10)]
    image = unit(protos + 0.05 * rng.normal(size=protos.shape))
    text = unit(protos + 0.05 * rng.normal(size=protos.shape))
    text[3] = unit(protos[7:8] + 0.05)[0]  # sample 3's caption describes sample 7: a caption swap
    index = diagnose.NeighbourIndex(ids, {"image": image.astype(np.float16), "text": text}, model="fold0")
    nb = index.neighbours("s3", query="image", target="text", k=3)
    # its own (wrong) caption is left out; the nearest caption is sample 8's: the suggested fix
    assert nb["id"].iloc[0] == "s8" and "s3" not in set(nb["id"]) and list(nb["rank"]) == [1, 2, 3]
    assert nb["similarity"].is_monotonic_decreasing
    # sample 7's image finds the swapped caption of sample 3 next to its own
    assert index.neighbours("s7", query="image", target="text", k=1)["id"].tolist() == ["s3"]
    with pytest.raises(KeyError, match="no embedding"):
        index.neighbours("nope", query="image", target="text")


def test_auroc_and_precision_follow_each_score_direction():
    injected = pd.Series(["", "", "caption_swap", "", "audio_swap"])
    scores = pd.DataFrame({"multimem": [0.0, 0.1, 0.9, 0.2, 0.8], "base__cosine": [0.9, 0.8, 0.1, 0.7, 0.2],
                           "base__clipmem": [0.0, 0.1, 0.9, 0.2, 0.8], "base__loss": [0.1, 0.2, 0.3, 0.9, 0.0]})
    table = diagnose.auroc_table(scores, injected).set_index("score")
    assert table.loc["multimem", "auroc"] == 1.0
    assert table.loc["base__cosine", "auroc"] == 1.0  # low cosine = suspicious
    assert table.loc["base__clipmem", "auroc"] == 1.0  # CLIPMem is a memorization score: high = suspicious
    pak = diagnose.precision_at_k(scores, injected, ["multimem"], points=5)
    assert pak["precision"].tolist() == [1.0, 1.0, 2 / 3, 0.5, 0.4]


def test_auroc_table_equals_roc_auc_score_with_ties_and_missing_scores():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    injected = pd.Series(np.where(rng.random(2000) < 0.15, "caption_swap", ""))
    v = np.round(rng.normal(size=2000), 1) + 0.3 * (injected != "").to_numpy()  # many ties
    v[rng.random(2000) < 0.05] = np.nan
    scores = pd.DataFrame({"multimem": v, "base__cosine": v})
    table = diagnose.auroc_table(scores, injected).set_index("score")
    ok, y = np.isfinite(v), (injected != "").to_numpy()
    assert table.loc["multimem", "auroc"] == pytest.approx(roc_auc_score(y[ok], v[ok]), abs=1e-12)
    assert table.loc["base__cosine", "auroc"] == pytest.approx(roc_auc_score(y[ok], -v[ok]), abs=1e-12)
    assert np.isnan(diagnose.auroc_table(scores, pd.Series([""] * 2000)).loc[0, "auroc"])  # one class only


def test_unseen_model():
    assert names.unseen_model("fold1", ["fold0", "fold1"], "crossfit") == "fold1"
    assert names.unseen_model("S_C", ["f", "g"], "paper") == "g"
    assert names.unseen_model("S_I", ["f", "g"], "paper") == "f"
    assert names.unseen_model("S_S", ["f", "g"], "paper") is None  # both saw it


def test_projection_falls_back_to_pca_below_twenty_points():
    x = np.random.default_rng(0).normal(size=(8, 5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = diagnose.umap_projection(x)
    assert out.shape == (8, 2) and out.dtype == np.float32
    assert any("too few for UMAP" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="NaN"):
        diagnose.umap_projection(np.array([[0.0, np.nan]] * 30))


def test_reason_sentences_treat_every_sample_on_its_own():
    rng = np.random.default_rng(0)
    sims = rng.uniform(-1, 1, (300, 4, 4))
    sims = (sims + sims.transpose(0, 2, 1)) / 2
    mods = ["image", "text", "audio", "video"]
    batch = diagnose.reason_sentences(sims, mods)
    assert batch == [diagnose.weakest_pair_sentence(m, mods) for m in sims]
    assert len({r.split(" (")[0] for r in batch}) > 5  # several different diagnoses, not one repeated


def test_reasons_are_written_by_scoring_and_recomputed_lazily(engine_run, tmp_path):
    import shutil

    from multimem_core.run import RunDir

    run = RunDir(shutil.copytree(engine_run.path, tmp_path / "run", ignore=shutil.ignore_patterns("models", "cache")))
    path = run.diagnostics_dir / diagnose.REASONS_FILE
    assert path.is_file(), "score_run writes the reasons"
    path.unlink()
    table = diagnose.reasons(run)
    assert path.is_file() and table["id"].tolist() == run.scores()["id"].astype(str).tolist()
    sims = run.similarity_matrices()[1]
    k = len(table) // 2
    assert table["reason"].iloc[k] == diagnose.weakest_pair_sentence(sims[k], run.modalities)
    stamp = path.stat().st_mtime_ns
    diagnose.reasons(run)
    assert path.stat().st_mtime_ns == stamp, "a fresh file is read, not recomputed"
