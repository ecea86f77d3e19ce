"""The trained towers' cheaper front ends: frames read at the size they are decoded to, fewer mel bands."""

from __future__ import annotations

import pytest
import torch

from multimem_core.config import ModelConfig
from multimem_core.models.factory import create_model
from multimem_core.models.towers import SENTENCE_DIMS, load_sentence_encoder

MODS = ("image", "text", "audio", "video")


def _model(**kw):
    torch.manual_seed(0)
    return create_model(ModelConfig(modalities=MODS, image_tower="mm-tiny", text_tower="mm-tiny", image_size=32,
                                    video_frames=4, audio_sample_rate=8000, audio_tower="mel-cnn",
                                    video_tower="trained", **kw))


def test_small_frames_are_read_at_their_own_size():
    model = _model(video_size=16, audio_mels=32)
    frames = model.towers["video"].frames
    assert frames.image_size == 16
    # a 16 px frame is 4 patches of 8 px (+ the class token), a 32 px image 16
    assert frames.visual.positional_embedding.shape[0] == 5
    assert model.towers["image"].visual.positional_embedding.shape[0] == 17
    assert model.towers["audio"].mel.shape == (201, 32)
    out = model({"video": torch.rand(2, 4, 3, 16, 16), "audio": torch.randn(2, 16000)})
    assert out["video"].shape == out["audio"].shape == (2, 64)
    assert torch.allclose(out["video"].norm(dim=-1), torch.ones(2))


def test_frames_as_large_as_the_images_start_as_the_image_tower():
    for video_size in (None, 32):
        model = _model(video_size=video_size)
        frames, image = model.towers["video"].frames.visual, model.towers["image"].visual
        assert model.towers["video"].frames.image_size == 32
        assert all(torch.equal(a, b) for a, b in zip(frames.state_dict().values(), image.state_dict().values()))
        assert model.towers["audio"].mel.shape == (201, 64)


def test_known_sentence_feature_sizes_are_the_encoders_own():
    enc = load_sentence_encoder("minilm")
    dim = (getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension)()
    assert set(SENTENCE_DIMS.values()) == {dim}
    assert enc.encode(["a grinning face"], convert_to_tensor=True).shape[-1] == dim


def test_a_text_tower_path_that_does_not_exist_is_named_as_a_missing_folder(tmp_path):
    missing = tmp_path / "no-such-encoder"
    with pytest.raises(ValueError, match="no such folder"):
        create_model(ModelConfig(modalities=("image", "text"), image_tower="mm-tiny", text_tower=str(missing)))


def test_a_text_tower_path_to_a_file_is_named_as_a_missing_folder(tmp_path):
    (tmp_path / "encoder.bin").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="no such folder"):
        create_model(ModelConfig(modalities=("image", "text"), image_tower="mm-tiny",
                                 text_tower=str(tmp_path / "encoder.bin")))


@pytest.mark.parametrize("text_tower", [
    "minilm", "mm-tiny",                 # by name; a file named mm-tiny lies in the current folder
    "my-encoder",                        # a bare name that is a folder here
    "HERE/my-encoder",                   # a path to a folder here
    "/elsewhere/encoders/mine",          # a config.json made on another machine: the folder is not here
    "C:\\encoders\\mine",                # ... on a Windows machine
])
def test_create_model_and_towers_from_scratch_read_a_text_tower_alike(tmp_path, monkeypatch, text_tower):
    """config.is_sentence_folder is the one rule: the model factory builds the frozen tower exactly where a run's
    config reads as a frozen text tower; a folder absent here is still one, named as missing, not an architecture."""
    from multimem_core.config import is_sentence_folder, towers_from_scratch
    from multimem_core.models import factory

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-encoder").mkdir()
    (tmp_path / "mm-tiny").write_text("a file, not a sentence-transformers folder")
    text_tower = text_tower.replace("HERE", str(tmp_path))
    # no real sentence-transformers model in the folder: only which tower is built matters here
    monkeypatch.setattr(factory.FrozenTextTower, "create", classmethod(lambda cls, name, dim: cls(name, 8, dim)))
    model = {"image_tower": "mm-tiny", "text_tower": text_tower, "pretrained": None}
    frozen = "text" not in towers_from_scratch(model, ["text"])
    assert frozen is (text_tower != "mm-tiny")
    assert is_sentence_folder(text_tower) is (text_tower not in ("minilm", "mm-tiny"))
    cfg = ModelConfig(modalities=("image", "text"), image_tower="mm-tiny", text_tower=text_tower, image_size=16)
    if frozen and not (text_tower == "minilm" or (tmp_path / text_tower).is_dir()):
        with pytest.raises(ValueError, match="no such folder"):
            create_model(cfg)
        return
    built = create_model(cfg).towers["text"]
    assert isinstance(built, factory.FrozenTextTower) is frozen
