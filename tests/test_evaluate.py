"""Downstream evaluation: the pure metrics on hand-made embeddings, then a real run's saved models."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from multimem_core.evaluate import (EvalConfig, evaluate_run, format_evaluation, linear_probe, recall_at_k, retrieval,
                                    zero_shot)
from multimem_core.run import RunDir


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recall_at_k_counts_the_rank_of_the_own_item():
    rng = np.random.default_rng(0)
    q = unit(rng.normal(size=(50, 16)))
    assert recall_at_k(q, q, (1, 5)) == {1: 1.0, 5: 1.0}
    # gallery shifted by one row: the own item is never the best match of a random direction
    g = np.roll(q, 1, axis=0)
    r = recall_at_k(q, g, (1, 50))
    assert r[1] < 0.2 and r[50] == 1.0


def test_recall_at_k_exact_rank():
    # ranks (gallery items strictly closer than the own one): query 0 → 2, query 1 → 1, query 2 → 2
    q = unit([[1, 0], [0, 1], [0, 1]])
    g = unit([[0.2, 1], [1, 0.1], [1, 0]])
    r = recall_at_k(q, g, (1, 2, 3))
    assert r == {1: 0.0, 2: pytest.approx(1 / 3), 3: 1.0}


def test_retrieval_has_every_ordered_pair():
    rng = np.random.default_rng(1)
    emb = {m: unit(rng.normal(size=(20, 8))) for m in ("image", "text", "audio")}
    table = retrieval(emb, (1, 5))
    assert set(table) == {"image->text", "image->audio", "text->image", "text->audio", "audio->image", "audio->text"}
    assert all(set(v) == {"R@1", "R@5"} and 0 <= v["R@1"] <= v["R@5"] <= 1 for v in table.values())


def test_linear_probe_and_zero_shot_on_separable_classes():
    rng = np.random.default_rng(2)
    centres = unit(rng.normal(size=(3, 16)))
    y = np.repeat(np.array(["a", "b", "c"]), 40)
    x = unit(centres[np.repeat(np.arange(3), 40)] + 0.1 * rng.normal(size=(120, 16)))
    assert linear_probe(x[::2], y[::2], x[1::2], y[1::2]) > 0.95
    assert zero_shot(x, y, ["a", "b", "c"], centres) > 0.95
    assert zero_shot(x, y, ["b", "c", "a"], centres) < 0.05  # prompts in the wrong order: wrong classes
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, np.array(["a"] * len(x)), x, y)


@pytest.fixture
def run_copy(engine_run, tmp_path) -> RunDir:
    dst = tmp_path / "run"
    shutil.copytree(engine_run.path, dst, ignore=shutil.ignore_patterns("review.sqlite*", "mitigation", "evaluation.json"))
    return RunDir(dst)


def test_evaluate_run_writes_json_the_summary_prints(run_copy):
    from multimem_core.summary import format_summary, summarize

    result = evaluate_run(run_copy, progress=False)
    on_disk = json.loads((run_copy.path / "evaluation.json").read_text())
    assert on_disk["recall@5"] == result["recall@5"]
    mods = run_copy.modalities
    assert len(result["retrieval"]) == len(mods) * (len(mods) - 1)
    assert set(result["per_model"]) == {"fold0", "fold1"}
    # each model is evaluated on the rows it never trained on: its own fold (crossfit holds no H by default)
    roles = run_copy.samples()["role"]
    assert result["n_heldout"] == int(roles[roles.str.startswith("fold")].value_counts().min())
    for key in ("recall@1", "recall@5", "recall@10", "linear_probe", "zero_shot"):
        assert 0 <= result[key] <= 1, key
    assert result["recall@1"] <= result["recall@5"] <= result["recall@10"]
    # recall@5 is a multiple of 1/|H| per pair and model, averaged
    assert set(result["zero_shot_by_modality"]) == set(mods) - {"text"}
    text = format_summary(summarize(run_copy))
    assert "downstream evaluation" in text and "image->text" in text and "recall@5" in text
    assert "\n".join(format_evaluation(result)).count("->") == len(result["retrieval"])


def test_load_run_model_reproduces_the_saved_embeddings(engine_run):
    """The restored model and re-decoded inputs give back RUN/embeddings (the clean view) exactly."""
    from multimem_core.evaluate import embed_clean
    from multimem_core.restore import load_run_inputs, load_run_model

    inputs = load_run_inputs(engine_run)
    model = load_run_model(engine_run, "fold0")
    idx = np.arange(0, inputs.n, 7)
    got = embed_clean(model, inputs.data, idx)
    for m in inputs.modalities:
        ids, saved = engine_run.embeddings("fold0", m)
        assert ids == inputs.ids
        np.testing.assert_allclose(got[m], np.asarray(saved[idx], dtype=np.float32), atol=2e-3)


def test_cli_evaluate(run_copy, capsys):
    from multimem_core.cli import main

    assert main(["evaluate", str(run_copy.path), "--quiet", "--prompt", "a photo of a {label}"]) == 0
    out = capsys.readouterr().out
    assert "recall@5" in out and "zero-shot" in out and "evaluation.json" in out
    assert json.loads((run_copy.path / "evaluation.json").read_text())["config"]["prompt"] == "a photo of a {label}"


def test_cli_evaluate_waits_for_no_writer(run_copy, capsys):
    """evaluate writes RUN/evaluation.json: beside a score or mitigate of the same run it stops and names the
    holder, leaving nothing written."""
    from multimem_core.cli import main
    from multimem_core.runlock import RunLock

    with RunLock(run_copy.path, "multimem score (still training)"):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", str(run_copy.path), "--quiet"])
    assert e.value.code == 2 and "multimem score (still training)" in capsys.readouterr().err
    assert not (run_copy.path / "evaluation.json").exists()


def test_missing_model_names_the_file(engine_run):
    from multimem_core.restore import load_run_model
    from multimem_core.run import RunDirError

    with pytest.raises(RunDirError, match="fold7.*model.safetensors|model.safetensors.*fold7"):
        load_run_model(engine_run, "fold7")


def test_eval_config_is_json_safe():
    assert json.loads(json.dumps(EvalConfig().to_dict()))["ks"] == [1, 5, 10]


def test_recall_at_k_in_chunks_equals_all_at_once():
    """Memory is chunk × N similarities: the chunked ranks are those of the whole matrix."""
    rng = np.random.default_rng(1)
    q = rng.normal(size=(50, 8)).astype(np.float32)
    g = q + rng.normal(scale=0.8, size=q.shape).astype(np.float32)
    assert recall_at_k(q, g, (1, 5, 10), chunk=7) == recall_at_k(q, g, (1, 5, 10), chunk=1000)
