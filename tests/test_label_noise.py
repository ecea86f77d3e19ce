"""cleanlab beside MultiMem: label issues on a run's frozen features, and their overlap with MultiMem's top rows."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from multimem_core.cli import main
from multimem_core.run import RunDir
from tests.test_exporters import TINY

cleanlab = pytest.importorskip("cleanlab", reason="cleanlab is not installed (pip install -e '.[cleanlab]')")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunDir:
    pytest.importorskip("datasets", reason="the Hugging Face `datasets` package is not installed")
    from tests.test_hf import hf_dataset

    base = tmp_path_factory.mktemp("noise")
    hf_dataset(base, n=60).save_to_disk(str(base / "ds"))
    assert main(["score", str(base / "ds"), "--out", str(base / "run"), "--image-key", "img", "--text-key", "caption",
                 "--id-key", "key", *TINY]) == 0
    return RunDir(base / "run")


def test_cleanlab_beside_multimem(run):
    from multimem_core.label_noise import compare, format_comparison, frozen_features

    result = compare(run)
    assert "skipped" not in result, result
    scores = run.scores()
    assert result["n_samples"] <= len(scores) and result["n_classes"] >= 2
    assert 0 <= result["overlap"] <= min(result["n_cleanlab"], result["n_top"])
    top = set(scores.nlargest(result["n_top"], "multimem")["id"])
    assert set(result["only_multimem"]) <= top
    assert not set(result["only_cleanlab"]) & top  # "only cleanlab" means not in MultiMem's top
    assert any("cleanlab found" in line for line in format_comparison(result))
    # each sample's features come from a model that never trained on it
    ids = scores["id"].astype(str).tolist()[:4]
    role = dict(zip(run.samples()["id"].astype(str), run.samples()["role"]))
    feats = frozen_features(run, ids)
    for i, sid in enumerate(ids):
        emb_ids, emb = run.embeddings(role[sid], "image")  # crossfit: model "foldK" never saw fold K
        d = emb.shape[1]
        np.testing.assert_allclose(feats[i, :d], emb[emb_ids.index(sid)].astype(np.float32))


def test_no_labels_says_so(run, tmp_path):
    from multimem_core.label_noise import compare

    copy = tmp_path / "run"
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("models", "cache"))
    unlabelled = RunDir(copy)
    samples = unlabelled.samples()
    samples["label"] = ""
    unlabelled.write_samples(samples)
    assert compare(unlabelled) == {"skipped": "the dataset has no labels"}
