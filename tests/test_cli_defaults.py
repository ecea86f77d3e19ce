"""The built-in demos keep the configuration they were measured with when `multimem score`'s defaults move;
only a measured profile change (CHANGED) moves them.

tests/data/demo_configs_before_issue11.json holds both demos' resolved configs computed once from the code
before the defaults moved to pretrained towers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multimem_core import cli
from multimem_core.cli.score import apply_demo_profile, score_config
from multimem_core.config import MODEL_FROM_INPUT, ProtocolConfig

BEFORE = json.loads((Path(__file__).parent / "data" / "demo_configs_before_issue11.json").read_text())
# options added since, at the values that leave a run as it was, and the one renamed
# (image_features is read by the frozen EfficientNet tower only, which the demos do not use)
ADDED = {"model": {"freeze_image": False, "image_views": 4, "image_features": "head+mid", "audio_tower": "mel-cnn",
                   "audio_views": 4, "video_tower": "trained", "video_views": 2, "audio_mels": 64},
         # the demos' images are square, and a square image decodes the same padded or cropped
         "media": {"allow_outside_root": False, "image_fit": "pad"},
         # crossfit scores every row (no H: each model's own fold is its reference set), and plants its self-check
         # (virtual swaps: formed at scoring time, no training)
         # (splits repeated only on small sets: a demo's rows are split once, test below)
         "protocol": {"heldout_frac": None, "repeats": None},
         "selfcheck": {"enabled": True, "share": 0.03, "min_per_kind": 30, "max_share": 0.08, "virtual": 400,
                       "bootstrap": 200, "seed": 0}}
RENAMED = {"augmentations": "views"}
# what a demo's profile changed on purpose since, by measurement: the emoji demo's cheaper video and audio front
# ends (AUROCs held, docs/SPEED.md "The demo in 5 minutes"); the shapes demo's longer training (docs/MEASUREMENTS.md)
CHANGED = {"emoji": {"media": {"video_size": 16, "audio_sample_rate": 8000}, "model": {"audio_mels": 32}},
           "shapes": {"train": {"epochs": 60}}}


def resolved(dataset: str) -> tuple[int, dict]:
    args = cli.build_parser().parse_args(["demo", "--dataset", dataset])
    apply_demo_profile(args)
    return args.samples, json.loads(json.dumps(score_config(args, "IN", "OUT").to_dict()))


@pytest.mark.parametrize("dataset", ["emoji", "shapes"])
def test_demo_configs_are_unchanged(dataset):
    samples, config = resolved(dataset)
    expected = json.loads(json.dumps(BEFORE[dataset]["config"]))
    for section, fields in ADDED.items():
        expected.setdefault(section, {}).update(fields)
    for section, fields in CHANGED.get(dataset, {}).items():
        expected[section].update(fields)
    for key in MODEL_FROM_INPUT:  # derived from the input and media when the model is built, not stored
        expected["model"].pop(key, None)
    expected["progress"] = True
    for old, new in RENAMED.items():
        expected[new] = expected.pop(old)
    assert samples == BEFORE[dataset]["samples"]
    assert config == expected
    assert ProtocolConfig(**config["protocol"]).repeats_for(samples) == 1


def test_score_defaults_use_pretrained_towers():
    args = cli.build_parser().parse_args(["score", "x.csv", "--out", "o"])
    model = score_config(args, "x.csv", "o").model
    assert (model.image_tower, model.text_tower) == ("efficientnet-lite2", "minilm")
    assert (model.audio_tower, model.video_tower) == ("aisfx", "efficientnet-lite0")


def test_demo_help_states_what_each_profile_uses(capsys):
    """`multimem demo --help` printed "(default: None)" for every option its profiles fill in, and "the whole
    dataset" for --samples: it names each profile's value instead."""
    from multimem_core.cli.score import DEMO_PROFILES, DEMO_QUICK, PROFILE_KEYS

    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "whole dataset" not in text
    for key in ("samples", "epochs", "image_tower", "audio_tower"):
        said = ", ".join(f"{name} {profile[key]}" for name, profile in DEMO_PROFILES.items())
        assert f"(default: {said}" in text, key
    assert f"with --quick {DEMO_QUICK['samples']})" in text
    flag_help = {k: text.split(f"--{k.replace('_', '-')} ")[2] for k in PROFILE_KEYS}  # [0] usage, [1] usage
    assert not [k for k, h in flag_help.items() if h.split("--")[0].rstrip().endswith("(default: None)")]
