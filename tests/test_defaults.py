"""One source of defaults: the engine's config dataclasses (multimem_core.config). `multimem score`'s options,
launch.NewRun (what the dashboard starts) and the New-run page's widgets all show the same values."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from multimem_core.cli import build_parser, score_config
from multimem_core.config import MediaSpec, ModelConfig, ProtocolConfig, ScoreConfig, TrainConfig
from multimem_core.launch import NewRun

ROOT = Path(__file__).resolve().parent.parent

# the option of `multimem score` -> the dataclass field it sets
ENGINE = {"epochs": TrainConfig.epochs, "batch_size": TrainConfig.batch_size, "lr": TrainConfig.lr,
          "weight_decay": TrainConfig.weight_decay, "seed": TrainConfig.seed, "image_size": MediaSpec.image_size,
          "frames": MediaSpec.video_frames, "audio_seconds": MediaSpec.audio_seconds, "views": ScoreConfig.views,
          "device": ScoreConfig.device, "image_tower": ModelConfig.image_tower,
          "text_tower": ModelConfig.text_tower, "image_views": ModelConfig.image_views,
          "audio_tower": ModelConfig.audio_tower, "audio_views": ModelConfig.audio_views,
          "video_tower": ModelConfig.video_tower, "video_views": ModelConfig.video_views, "protocol": ProtocolConfig.name,
          "folds": ProtocolConfig.folds, "heldout_frac": ProtocolConfig.heldout_frac}


def test_cli_defaults_are_the_dataclass_defaults():
    args = build_parser().parse_args(["score", "m.csv", "--out", "run"])
    assert {k: getattr(args, k) for k in ENGINE} == ENGINE
    cfg, plain = score_config(args, args.input, args.out), ScoreConfig(input="m.csv", out="run")
    assert cfg.train == plain.train and cfg.media == plain.media and cfg.protocol == plain.protocol
    assert (cfg.views, cfg.device, cfg.chunk_size) == (plain.views, plain.device, plain.chunk_size)
    # the image size reaches the model too (ModelConfig's None means "the architecture's own")
    assert cfg.model.image_tower == plain.model.image_tower and cfg.model.image_size == plain.media.image_size


def test_views_option_and_its_old_name():
    parse = build_parser().parse_args
    assert parse(["score", "m.csv", "--out", "r", "--views", "3"]).views == 3
    assert parse(["score", "m.csv", "--out", "r", "--augmentations", "5"]).views == 5


def test_new_run_defaults_are_the_dataclass_defaults():
    job = NewRun(input="m.csv", out="run")
    fields = {k: v for k, v in asdict(job).items() if k in ENGINE}
    assert fields == {k: ENGINE[k] for k in fields} and len(fields) >= 10
    # and the command it starts scores with exactly the engine's defaults
    started = build_parser().parse_args(job.command()[3:])  # after `python -m multimem_core.cli`
    plain = build_parser().parse_args(["score", "m.csv", "--out", "run", "--quiet"])
    assert score_config(started, "m.csv", "run") == score_config(plain, "m.csv", "run")


def test_new_run_page_widgets_show_the_defaults(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("MULTIMEM_RUN", str(tmp_path / "runs"))
    monkeypatch.setenv("MULTIMEM_DATA_ROOT", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page("views/new_run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = {"folds": at.number_input(key="newrun_folds").value, "epochs": at.number_input(key="newrun_epochs").value,
             "views": at.number_input(key="newrun_views").value,
             "image_size": at.number_input(key="newrun_image_size").value,
             "batch_size": at.number_input(key="newrun_batch").value,
             "frames": at.number_input(key="newrun_frames").value,
             "audio_seconds": at.number_input(key="newrun_audio_s").value,
             "seed": at.number_input(key="newrun_seed").value, "device": at.selectbox(key="newrun_device").value,
             "protocol": at.radio(key="newrun_protocol").value,
             "image_tower": at.selectbox(key="newrun_image_tower").value,
             "text_tower": at.selectbox(key="newrun_text_tower").value,
             "audio_tower": at.selectbox(key="newrun_audio_tower").value,
             "video_tower": at.selectbox(key="newrun_video_tower").value}
    shown["image_size"] = shown["image_size"] or None  # the page's 0 is "the tower's own", the engine's None
    assert shown == {k: ENGINE[k] for k in shown}
