"""Frozen pretrained towers for sound and video: they load with the network unreachable, their cached
features are deterministic, and the packaged sound encoder tells real sound kinds apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter whose sockets cannot connect (nor resolve names): every tower a default
# ModelConfig builds, and the frozen video tower, must load and encode from files on the disk alone.
OFFLINE = r"""
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network unreachable (blocked by the test)")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

import numpy as np, torch
from multimem_core.config import VIDEO_TOWERS, ModelConfig
from multimem_core.models.factory import create_model

rng = np.random.default_rng(0)
t = np.linspace(0, 1, 16000, dtype=np.float32)
raw = {"image": rng.integers(0, 256, (2, 3, 48, 48), dtype=np.uint8),
       "text": ["a dog barks", "a bell rings"],
       "audio": np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * rng.standard_normal(16000).astype(np.float32)]),
       "video": rng.integers(0, 256, (2, 4, 3, 32, 32), dtype=np.uint8)}
out = {}
for video_tower in VIDEO_TOWERS:
    model = create_model(ModelConfig(modalities=("image", "text", "audio", "video"), video_tower=video_tower))
    first, again = model.prepare(raw), model.prepare(raw)
    out[video_tower] = {m: {"tower": type(model.towers[m]).__name__, "shape": list(first[m].shape),
                            "encoder": getattr(model.towers[m], "encoder_name", ""),
                            "equal": bool(torch.equal(first[m], again[m])),
                            "finite": bool(torch.isfinite(first[m].float()).all())} for m in first}
print(json.dumps(out))
"""


def test_default_towers_load_offline_and_are_deterministic():
    from multimem_core.config import IMAGE_TOWER, ModelConfig
    from multimem_core.models.frozen_image import efficientnet_feature_dim

    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}  # no help from hub settings
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", OFFLINE], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Loading weights" not in proc.stderr  # no library's own bar: `--quiet` must mean quiet
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    default = out[ModelConfig.video_tower]
    assert default["audio"]["tower"] == "FrozenAudioTower" and default["audio"]["shape"] == [2, ModelConfig.audio_views, 768]
    assert default["image"]["tower"] == "FrozenImageTower" and default["text"]["tower"] == "FrozenTextTower"
    # the default image tower is EfficientNet-Lite2 from its wheel: its head and middle blocks' features
    assert default["image"]["encoder"].startswith(f"image:{IMAGE_TOWER}@None|")
    assert default["image"]["shape"] == [2, ModelConfig.image_views, efficientnet_feature_dim(IMAGE_TOWER, True)]
    assert IMAGE_TOWER == "efficientnet-lite2" and efficientnet_feature_dim(IMAGE_TOWER, True) == 1280 + 120 + 208
    frozen_video = default["video"]
    assert frozen_video["tower"] == "FrozenVideoTower" and frozen_video["shape"] == [2, ModelConfig.video_views, 2560]
    for towers in out.values():
        for m, r in towers.items():
            assert r["equal"] and r["finite"], (m, r)


def _sound(kind: str, rng: np.random.Generator, seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    if kind == "tone":  # a sustained harmonic note at a random pitch
        f0 = rng.uniform(200, 500)
        wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    elif kind == "clicks":  # a train of short broadband clicks
        wave = np.zeros_like(t)
        for start in rng.uniform(0, seconds - 0.02, size=12):
            i = int(start * rate)
            wave[i:i + 80] = rng.standard_normal(80) * np.exp(-np.arange(80) / 15)
    else:  # a swept chirp
        f = np.linspace(rng.uniform(300, 600), rng.uniform(2000, 4000), t.size)
        wave = np.sin(2 * np.pi * np.cumsum(f) / rate)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def test_packaged_sound_encoder_groups_sound_kinds():
    """Different clips of one kind of sound lie closer together than clips of different kinds."""
    from multimem_core.models.frozen_audio import encode_audio_views, standardize

    rng = np.random.default_rng(0)
    kinds = ["tone", "clicks", "chirp"]
    waves = np.stack([_sound(k, rng) for k in kinds for _ in range(3)])
    feats = standardize(encode_audio_views(waves, sample_rate=16000, views=2))
    assert feats.shape == (9, 2, 768)
    assert not torch.allclose(feats[:, 0], feats[:, 1])  # the cached views differ
    sims = feats[:, 0] @ feats[:, 0].T
    label = torch.arange(9) // 3
    same = sims[(label[:, None] == label[None]) & ~torch.eye(9, dtype=torch.bool)].mean()
    other = sims[label[:, None] != label[None]].mean()
    assert same > other + 0.05, (float(same), float(other))


@pytest.mark.slow  # about 2 min on 2 cores: the encoders run on every clip
def test_frozen_audio_and_video_towers_score_a_run(tmp_path, shapes_manifest):
    """The whole pipeline with the packaged sound encoder and the frozen video tower: features cached once,
    only the projections train, every training sample scored."""
    from multimem_core.inputs import cached_features

    from conftest import tiny_score_config
    from multimem_core.score import score_run

    cfg = tiny_score_config(shapes_manifest, tmp_path / "run", modalities=["audio", "video", "text"], epochs=1,
                            projection=False, repeats=None)  # the default rule: a set this small, split again
    cfg.model.audio_tower, cfg.model.video_tower, cfg.model.audio_views = "aisfx", "efficientnet-lite0", 3
    run = score_run(cfg)
    audio = cached_features(next(run.cache_dir.glob("features_audio_*.npy")))
    video = cached_features(next(run.cache_dir.glob("features_video_*.npy")))
    assert audio.shape[1:] == (3, 768) and video.shape[1:] == (2, 2560)
    saved = torch.load(run.models_dir / "fold0" / "checkpoint.pt", weights_only=True)["model"]
    for m in ("audio", "video"):
        keys = [k for k in saved if k.startswith(f"towers.{m}.")]
        assert keys and all(k.startswith(f"towers.{m}.proj.") for k in keys), keys
    scores = run.scores()
    assert len(scores) > 0 and np.isfinite(scores["multimem"]).all()
    # every split's models trained on the same cached features; config.json names split 0's
    splits = run.config()["splits"]
    assert splits == cfg.protocol.repeats_for(len(scores)) > 1 and list(run.config()["models"]) == ["fold0", "fold1"]
    assert all((run.models_dir / f"r{r}-fold{k}" / "model.safetensors").is_file()
               for r in range(1, splits) for k in range(2))
    # evaluation and mitigation reopen split 0, the split config.json's models belong to, and know there were more
    from multimem_core.restore import load_run_inputs

    inputs = load_run_inputs(run)
    assert inputs.splits == splits and not inputs.assignment.repeats
    assert list(inputs.assignment.train_sets) == ["fold0", "fold1"]
