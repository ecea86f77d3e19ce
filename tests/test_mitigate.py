"""Mitigation: targeted augmentations, the regrouping plan, removal rankings, and the three strategies
end to end on a real (tiny) run, one or two epochs each, plus the what-if preview."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from multimem_core.config import AugmentConfig
from multimem_core.mitigation.settings import MitigateConfig, MitigationError, default_name, parse_sweep
from multimem_core.mitigation import mitigate
from multimem_core.mitigation.regroup import RegroupPlan
from multimem_core.mitigation.remove import removal_order
from multimem_core.mitigation.results import format_metrics, list_mitigations, removal_curves
from multimem_core.mitigation.study import AllBatchesPlan, modality_subsets
from multimem_core.run import RunDir
from multimem_core.targeted import SpecError, TargetedAugment, drop_frames, reorder_words
from multimem_core.train import shuffled_batches

# --- targeted augmentations ------------------------------------------------------------------------------


def test_spec_parsing_defaults_and_errors():
    aug = TargetedAugment.parse("noise, caption=0.5,frame-drop=0.2", ["image", "text"])
    assert aug.strengths == (("noise", 0.1), ("caption", 0.5), ("frame_drop", 0.2))
    assert aug.modalities == ("image", "text") and aug.spec() == "noise=0.1,caption=0.5,frame_drop=0.2"
    assert aug.targets("text") and not aug.targets("audio")
    with pytest.raises(SpecError, match="unknown augmentation 'blur'.*noise"):
        TargetedAugment.parse("blur=1")
    with pytest.raises(SpecError, match="must be a number"):
        TargetedAugment.parse("noise=lots")
    with pytest.raises(SpecError, match="empty"):
        TargetedAugment.parse(" , ")


def test_reorder_words_shuffles_only_the_words():
    from open_clip.tokenizer import SimpleTokenizer

    tokens = SimpleTokenizer(context_length=16)(["a red circle in the top left moving up"] * 8 + ["short"])
    gen = torch.Generator().manual_seed(0)
    out = reorder_words(tokens, 1.0, gen)
    assert torch.equal(reorder_words(tokens, 0.0, gen), tokens)
    for before, after in zip(tokens, out):
        assert sorted(before.tolist()) == sorted(after.tolist())          # same tokens
        assert after[0] == before[0]                                      # start of text stays
        eot = int(before.argmax())
        assert after[eot] == before[eot] and torch.equal(after[eot:], before[eot:])  # end and padding stay
    assert any(not torch.equal(a, b) for a, b in zip(out[:8], tokens[:8]))


def test_drop_frames_repeats_earlier_frames():
    video = torch.arange(4 * 6, dtype=torch.float32).view(4, 6, 1, 1, 1).expand(4, 6, 3, 2, 2).clone()
    out = drop_frames(video, 0.5, torch.Generator().manual_seed(1))
    assert out.shape == video.shape
    src = out[:, :, 0, 0, 0] - video[:, :1, 0, 0, 0]   # which frame each output frame shows
    assert (src[:, 0] == 0).all()
    assert (src[:, 1:] >= src[:, :-1]).all() and (src <= torch.arange(6)).all()  # time order kept, never ahead
    assert (src != torch.arange(6)).any()


def test_embedding_noise_touches_only_chosen_modalities_and_keeps_unit_norm():
    emb = {m: torch.nn.functional.normalize(torch.randn(5, 16), dim=-1) for m in ("image", "text")}
    out = TargetedAugment.parse("noise=0.1", ["text"]).embeddings(emb, torch.Generator().manual_seed(0))
    assert torch.equal(out["image"], emb["image"])
    assert not torch.allclose(out["text"], emb["text"])
    assert torch.allclose(out["text"].norm(dim=-1), torch.ones(5))
    assert (torch.nn.functional.cosine_similarity(out["text"], emb["text"]) > 0.3).all()


def test_targeted_inputs_leave_other_modalities_to_the_base_augmentation():
    batch = {"image": torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), "audio": torch.randn(4, 400)}
    base = AugmentConfig()
    aug = TargetedAugment.parse("audio_noise=0.5", ["audio"])
    out = aug.inputs(batch, base, torch.Generator().manual_seed(3))
    ref_image = TargetedAugment.parse("noise=0", ["audio"]).inputs(batch, base, torch.Generator().manual_seed(3))["image"]
    assert torch.equal(out["image"], ref_image)  # image: the base augmentation, untouched by the spec
    assert (out["audio"] - batch["audio"]).std() > 0.3  # audio: much stronger noise than the base 0.005


# --- the regrouping plan ---------------------------------------------------------------------------------

def test_regroup_plan_without_selection_is_the_plain_plan():
    idx = np.arange(100, 400)
    plan = RegroupPlan(augment="AUG")
    a = plan(0, idx, 64, torch.Generator().manual_seed(5))
    b = shuffled_batches(0, idx, 64, torch.Generator().manual_seed(5))
    assert [x.tolist() for x, _ in a] == [x.tolist() for x, _ in b]


def test_regroup_plan_puts_the_selected_in_their_own_augmented_batches():
    idx = np.arange(1000)
    selected = np.arange(0, 1000, 20)  # 50
    plan = RegroupPlan(augment="AUG", selections={3: selected})
    assert len(plan.selected_for(2)) == 0 and len(plan.selected_for(7)) == 50
    batches = plan(3, idx, 128, torch.Generator().manual_seed(0))
    plain_rest = shuffled_batches(3, np.setdiff1d(idx, selected), 128, torch.Generator().manual_seed(0))
    assert len(batches) == len(plain_rest) + 1            # the rest keep all their steps; one batch of 50 added
    allidx = np.concatenate([b for b, _ in batches])
    assert sorted(allidx.tolist()) == list(range(1000))    # every sample once
    aug = np.concatenate([b for b, a in batches if a == "AUG"])
    assert sorted(aug.tolist()) == selected.tolist()       # exactly the selected are augmented
    assert all(a is None for b, a in batches if not np.isin(b, selected).all())


def test_removal_order_directions():
    scores = pd.DataFrame({"id": list("abcd"), "multimem": [0.1, 0.5, -0.2, 0.3],
                           "base__cosine": [0.9, 0.1, 0.5, 0.7], "base__clipmem": [0.0, 0.2, 0.1, 0.3]})
    assert removal_order(scores, "multimem").tolist() == ["b", "d", "a", "c"]
    assert removal_order(scores, "base__cosine").tolist() == ["b", "c", "d", "a"]  # low agreement first
    assert removal_order(scores, "base__clipmem").tolist() == ["d", "b", "c", "a"]  # memorized first
    # the self-check's rankings: -cmc_out ranks the column cmc_out, lowest first
    scores["cmc_out"] = [0.4, 0.2, 0.9, -0.1]
    assert removal_order(scores, "-cmc_out").tolist() == ["d", "b", "a", "c"]
    r1, r2 = removal_order(scores, "random", seed=1), removal_order(scores, "random", seed=1)
    assert r1.tolist() == r2.tolist() and sorted(r1) == list("abcd")
    with pytest.raises(MitigationError, match="unknown ranking"):
        removal_order(scores, "loss")


def test_config_validation_and_names():
    with pytest.raises(MitigationError, match="strategy"):
        MitigateConfig(strategy="prune")
    with pytest.raises(MitigationError, match="top-frac"):
        MitigateConfig(strategy="regroup", top_frac=5)
    with pytest.raises(MitigationError, match="comma-separated"):
        parse_sweep("0,fifty")
    assert parse_sweep("0, 50,100") == (0, 50, 100)
    assert default_name(MitigateConfig(strategy="remove", sweep=(0, 10))) == "remove-ft5"
    assert default_name(MitigateConfig(strategy="remove", top=3)) == "remove-ft5"  # points accumulate
    assert "/" not in default_name(MitigateConfig(strategy="augment", augment="noise=0.1,crop=0.3"))
    assert len(modality_subsets(["image", "text", "audio", "video"])) == 15


@pytest.mark.parametrize("name", ["/tmp/x", "../models", "..", ".", "a/b", "a\\b", ".hidden", ""])
def test_name_is_one_plain_folder_under_mitigation(name):
    with pytest.raises(MitigationError, match="plain folder name"):
        MitigateConfig(strategy="remove", name=name)
    ok = MitigateConfig(strategy="augment", augment="noise=0.1,crop=0.3", modalities="image,text")
    assert MitigateConfig(strategy="remove", name=default_name(ok)).name == default_name(ok)  # made names pass


def test_metrics_never_hold_bare_nan_and_print_without_numbers(tmp_path):
    from multimem_core.mitigation.results import format_metrics
    from multimem_core.atomic import atomic_write_json

    mem = {"mean": float("nan"), "n": 0, "pairs": {"image-text": np.float32("nan")}}
    atomic_write_json(tmp_path / "metrics.json", {
        "strategy": "remove", "before": {"memorization": {"mean": 0.1, "n": 4}, "evaluation": {}},
        "after": {"memorization": mem, "evaluation": {"recall@5": float("inf")}}})

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    m = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert m["after"]["memorization"] == {"mean": None, "n": 0, "pairs": {"image-text": None}}
    assert "after" in format_metrics(m)


# --- end to end on the engine's tiny run -----------------------------------------------------------------

@pytest.fixture(scope="module")
def run(engine_run, tmp_path_factory) -> RunDir:
    """A private copy of the engine's run, with its models and decode cache (mitigation re-reads both)."""
    dst = tmp_path_factory.mktemp("mitigate") / "run"
    shutil.copytree(engine_run.path, dst, ignore=shutil.ignore_patterns("review.sqlite*", "mitigation", "evaluation.json"))
    return RunDir(dst)


def test_remove_drops_the_top_ranked_and_fine_tunes(run):
    cfg = MitigateConfig(strategy="remove", top=6, score="multimem", finetune_epochs=1, views=2, progress=False)
    m = mitigate(run, cfg)
    folder = run.mitigation_dir / default_name(cfg)
    assert json.loads((folder / "metrics.json").read_text())["points"] == m["points"]
    assert json.loads((folder / "config.json").read_text())["strategy"] == "remove"
    (point,) = m["points"]
    assert point["n_removed"] == 6 and m["after"] == point
    assert "rows" not in point  # which rows it is on follows from n_removed: memorization.n of them, not a sentence
    removed = set(run.scores().sort_values("multimem", ascending=False)["id"].astype(str).head(6))
    inj = run.samples().set_index("id").loc[list(removed), "injected"].fillna("").astype(bool).sum()
    assert point["injected_removed"] == inj
    # each model fine-tuned on its own training set minus the removed samples it had
    roles = run.samples().set_index("id")["role"]
    for name in ("fold0", "fold1"):
        train_ids = roles[(roles != "H") & (roles != name)].index.astype(str)
        stats = json.loads((folder / "models" / "multimem-6" / name / "train.json").read_text())
        assert stats["samples"] == len(set(train_ids) - removed)
        assert stats["epochs"] == 1
    # after: memorization over the kept samples only, compared with the run's own scores on the SAME rows
    # (the removed rows score highest, so the run's mean over every row would make any removal look good)
    base = run.scores().assign(id=lambda d: d["id"].astype(str))
    on_kept = base[~base["id"].isin(removed)]
    assert point["memorization"]["n"] == point["memorization_before"]["n"] == len(run.scores()) - 6
    assert point["memorization_before"]["mean"] == pytest.approx(on_kept["multimem"].mean(), abs=1e-5)
    after_scores = pd.read_parquet(folder / "scores_multimem-6.parquet").assign(id=lambda d: d["id"].astype(str))
    assert point["memorization"]["mean"] == pytest.approx(
        after_scores[~after_scores["id"].isin(removed)]["multimem"].mean(), abs=1e-5)
    assert m["change"]["multimem_mean"] == pytest.approx(
        point["memorization"]["mean"] - point["memorization_before"]["mean"], abs=2e-5)
    assert m["before"]["memorization"]["n"] == len(run.scores())  # the run itself, all rows, kept as well
    assert set(m["before"]["evaluation"]) >= {"recall@5", "linear_probe", "zero_shot"}
    assert (run.path / "evaluation.json").is_file()  # the before-evaluation is kept for `multimem summary`
    text = format_metrics(m)
    assert f"MultiMem {point['memorization_before']['mean']:+.4f}" in text.splitlines()[1]  # "before": same rows
    assert f"same {len(run.scores()) - 6} kept rows" in text
    assert m["change"]["recall@5_points"] == pytest.approx(
        100 * (point["evaluation"]["recall@5"] - m["before"]["evaluation"]["recall@5"]), abs=0.02)
    # the same command again reuses the finished point; more points with the same fine-tuning add to the
    # folder (here a second random draw, N = 0 and the random ranking); other fine-tuning is refused
    again = mitigate(run, cfg)
    assert again["points"] == m["points"]
    more = mitigate(run, MitigateConfig(strategy="remove", sweep=(0, 6), rankings=("multimem", "random"),
                                        random_draws=2, finetune_epochs=1, views=2, progress=False))
    keys = [(p["ranking"], p["n_removed"], p["draw"]) for p in more["points"]]
    assert keys == [("multimem", 6, 0), ("none", 0, 0), ("random", 6, 0), ("random", 6, 1)]
    assert more["points"][0] == point  # reused, not retrained
    r0, r1 = (p for p in more["points"] if p["ranking"] == "random")
    assert (folder / "models" / "random-6-d1" / "fold0" / "model.safetensors").is_file()

    curves = removal_curves(more["points"]).set_index(["ranking", "removed"])
    assert curves.loc[("random", 6), "draws"] == 2
    assert curves.loc[("random", 6), "value"] == pytest.approx((r0["evaluation"]["recall@5"] + r1["evaluation"]["recall@5"]) / 2)
    assert curves.loc[("multimem", 0), "value"] == curves.loc[("random", 0), "value"]  # N = 0 shared
    # MultiMem curves: each point's change on its own kept rows, not plain means over different row sets
    mem = removal_curves(more["points"], "multimem").set_index(["ranking", "removed"])
    assert mem.loc[("multimem", 6), "value"] == pytest.approx(
        point["memorization"]["mean"] - point["memorization_before"]["mean"], abs=1e-5)
    none = next(p for p in more["points"] if p["ranking"] == "none")
    assert none["memorization_before"] == m["before"]["memorization"]  # nothing removed: every row
    with pytest.raises(MitigationError, match="other settings"):
        mitigate(run, MitigateConfig(strategy="remove", top=7, finetune_epochs=2, name=default_name(cfg),
                                     progress=False))


def test_remove_fills_in_same_rows_for_points_recorded_without_them(run):
    """A metrics.json written before points carried the run's scores on their kept rows is read (the page and
    the report say the comparison is not possible) and the same command adds them, without retraining."""
    cfg = MitigateConfig(strategy="remove", top=6, finetune_epochs=1, views=2, progress=False)
    path = run.mitigation_dir / default_name(cfg) / "metrics.json"
    first = mitigate(run, cfg)
    old = json.loads(path.read_text())
    for p in old["points"]:
        p.pop("memorization_before")
    old["after"] = next(p for p in old["points"] if p["ranking"] == "multimem" and p["n_removed"] == 6)
    assert "not comparable" in format_metrics(old)
    path.write_text(json.dumps(old))
    again = mitigate(run, cfg)
    assert again["after"]["memorization_before"] == first["after"]["memorization_before"]
    assert again["after"]["seconds"] == first["after"]["seconds"]  # reused, not retrained
    assert again["change"] == first["change"]


def test_remove_reads_points_that_still_carry_a_rows_sentence(run):
    """metrics.json written while each removal point stored a sentence naming its rows ("rows") reads as before;
    the same command again drops the sentence and changes nothing else."""
    cfg = MitigateConfig(strategy="remove", top=6, finetune_epochs=1, views=2, progress=False)
    path = run.mitigation_dir / default_name(cfg) / "metrics.json"
    first = mitigate(run, cfg)
    old = json.loads(path.read_text())
    for p in [*old["points"], old["after"]]:
        p["rows"] = (f"the {p['memorization_before']['n']} scored rows not removed: memorization (fine-tuned models) "
                     "and memorization_before (the run's own scores) are both on these rows")
    path.write_text(json.dumps(old))
    assert format_metrics(old) == format_metrics(first)
    assert removal_curves(old["points"], "multimem").equals(removal_curves(first["points"], "multimem"))
    again = mitigate(run, cfg)
    assert all("rows" not in p for p in again["points"]) and "rows" not in again["after"]
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}


def test_remove_never_replaces_evaluate_s_file(run):
    """RUN/evaluation.json is `multimem evaluate`'s: reused when its settings match (read back from JSON),
    never overwritten when they differ (its --prompt); mitigate keeps its own in the mitigation folder."""
    cfg = MitigateConfig(strategy="remove", top=6, finetune_epochs=1, views=2, progress=False)
    path = run.path / "evaluation.json"
    mitigate(run, cfg)
    ev = json.loads(path.read_text())
    ev["label_noise"] = {"mark": 1}  # what `multimem evaluate` adds; same settings: reused as it is
    path.write_text(json.dumps(ev))
    mitigate(run, cfg)
    assert json.loads(path.read_text()) == ev
    ev["config"]["prompt"] = "a photo of a {label}"
    path.write_text(json.dumps(ev))
    m = mitigate(run, cfg)
    assert json.loads(path.read_text()) == ev
    own = json.loads((run.mitigation_dir / default_name(cfg) / "base_evaluation.json").read_text())
    assert own["config"]["prompt"] == "a {label}" and m["before"]["evaluation"]["recall@5"] == own["recall@5"]


def test_remove_refuses_to_leave_nothing(run):
    n = len(run.scores())
    with pytest.raises(MitigationError, match=f"remove fewer than {n}"):
        mitigate(run, MitigateConfig(strategy="remove", top=n, finetune_epochs=1, views=2, progress=False,
                                     name="everything"))
    # two crossfit models: the one row left is in one fold, so the other fold's model trained on none of it
    with pytest.raises(MitigationError, match="nothing to fine-tune"):
        mitigate(run, MitigateConfig(strategy="remove", sweep=(1, n - 1), finetune_epochs=1, views=2,
                                     rankings=("multimem",), progress=False, name="almost-everything"))
    assert not (run.mitigation_dir / "almost-everything" / "models").exists()  # refused before any training


def test_regroup_rescores_selects_and_reports_overhead(run):
    cfg = MitigateConfig(strategy="regroup", every=1, top_frac=0.1, augment="noise=0.1,caption=0.3",
                         views=2, progress=False)
    m = mitigate(run, cfg)
    assert m["before"]["source"].startswith("the run's own models")
    assert m["before"]["memorization"]["mean"] == pytest.approx(run.scores()["multimem"].mean(), abs=1e-5)
    n_train = {n: int(((run.samples()["role"] != "H") & (run.samples()["role"] != n)).sum()) for n in ("fold0", "fold1")}
    epochs = run.config()["train"]["epochs"]
    for name, hist in m["history"].items():
        assert [h["epoch"] for h in hist] == list(range(1, epochs + 1))  # every epoch but the last, plus the end
        assert hist[0]["selected"] == math.ceil(0.1 * n_train[name])
        state = json.loads((run.mitigation_dir / default_name(cfg) / "models" / "regroup" / name / "regroup.json")
                           .read_text())
        assert len(state["selections"]["1"]) == hist[0]["selected"]
    o = m["overhead"]
    assert o["scoring_s"] > 0 and 0 < o["share"] < 1
    assert m["after"]["memorization"]["n"] == len(run.scores())
    # the run's own views (2 here): the mitigated in-models against the run's never-saw-it model, exactly
    assert run.config()["views"] == 2
    after = pd.read_parquet(run.mitigation_dir / default_name(cfg) / "scores.parquet").set_index("id")
    base = run.scores().set_index("id").loc[after.index]
    assert m["after"]["memorization_vs_reference"]["mean"] == pytest.approx(
        (after["cmc_in"] - base["cmc_out"]).mean(), abs=1e-5)
    assert isinstance(m["change"]["multimem_mean"], float)


def test_augment_study_trains_a_control_when_epochs_differ(run, capsys):
    from multimem_core.cli import main

    assert main(["mitigate", str(run.path), "--strategy", "augment", "--modalities", "text,image", "--epochs", "1",
                 "--views", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "image+text" in out and "before" in out
    (m,) = [x["metrics"] for x in list_mitigations(run) if x["config"]["strategy"] == "augment"]
    assert m["before"]["source"] == "plain training, 1 epochs"
    assert [r["modalities"] for r in m["rows"]] == [["image", "text"]]
    with pytest.raises(SystemExit) as exit_:
        main(["mitigate", str(run.path), "--strategy", "augment", "--modalities", "smell", "--quiet"])
    assert exit_.value.code == 2
    assert "smell" in capsys.readouterr().err


def test_preview_compares_selected_with_clean(run):
    from multimem_core.whatif import PreviewModels, preview, preview_summary

    pm = PreviewModels.load(run, views=2)
    top = run.scores().sort_values("multimem")["id"].astype(str).tolist()[-2:]
    table = preview(pm, top, TargetedAugment.parse("noise=0.3"), n_clean=8)
    assert table["group"].tolist() == ["selected"] * 2 + ["clean (random)"] * 8
    clean = table[table["group"] != "selected"]
    assert not set(clean["id"]) & set(top) and (clean["injected"] == "").all()
    assert np.allclose(table["multimem_before"], table["cmc_in_before"] - table["cmc_out_before"])
    assert np.allclose(table["multimem_change"], table["multimem_after"] - table["multimem_before"])
    assert (table["cmc_in_after"] != table["cmc_in_before"]).all()
    # no augmentation at all: after equals before (the same seeded views)
    same = preview(pm, top, TargetedAugment.parse("noise=0"), n_clean=4)
    assert np.allclose(same["multimem_change"], 0, atol=1e-6)
    summary = preview_summary(table)
    assert summary["n"].tolist() == [2, 8]
    held = run.samples().query("role == 'H'")["id"].astype(str)
    if len(held):  # crossfit holds no row out unless asked (--heldout-frac): then no H row can be previewed
        with pytest.raises(ValueError, match="held-out"):
            preview(pm, [held.iloc[0]], TargetedAugment.parse("noise"))


@pytest.mark.parametrize("spec, trains", [("noise=0.5", False), ("crop=0.4,jitter=0.4", True)])
def test_noisy_batches_leave_the_shared_temperature_alone(tmp_path, spec, trains):
    """Batches with noise on their embeddings do not move the logit scale every batch shares (regrouping
    pulled it from 14.5 to 9.4); input-only augmentations train it as usual."""
    from multimem_core.config import ModelConfig
    from multimem_core.models.factory import create_model
    from multimem_core.config import TrainConfig
    from multimem_core.train import train_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(image_tower="mm-tiny", text_tower="mm-tiny", image_size=16))
    n = 32
    data = {"image": torch.rand(n, 3, 16, 16),
            "text": model.towers["text"].prepare([f"shape number {i}" for i in range(n)])}
    before = model.logit_scale.detach().clone()
    plan = AllBatchesPlan(TargetedAugment.parse(spec))
    train_model(model, data, np.arange(n), TrainConfig(epochs=2, batch_size=8, lr=1e-2), tmp_path, plan=plan,
                progress=False)
    assert torch.equal(model.logit_scale.detach(), before) != trains
    assert TargetedAugment.parse(spec).trains_temperature == trains
