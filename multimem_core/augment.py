"""Per-modality random augmentations on whole batches (no per-sample Python loops).

They serve twice: as training augmentation, and as the random views E_aug of the CMC's first term.
Each keeps what a caption states: horizontal flips are off unless the dataset allows them (captions
that say "left" or "moving right" would be contradicted by a flip).

Randomness comes from an explicit torch.Generator so that training and scoring are reproducible under
a seed, and a resumed training replays the same views.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from .config import AugmentConfig


def _affine_grid(b: int, size: tuple[int, int], cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    scale = 1.0 - (1.0 - cfg.crop_scale) * torch.rand(b, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * cfg.translate * 2
    flip = torch.ones(b)
    if cfg.hflip:
        flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    return F.affine_grid(theta, [b, 1, *size], align_corners=False)


def _color(x: Tensor, cfg: AugmentConfig, gen: torch.Generator, shape: tuple[int, ...]) -> Tensor:
    bright = 1 + (torch.rand(shape, generator=gen) * 2 - 1) * cfg.jitter
    contrast = 1 + (torch.rand(shape, generator=gen) * 2 - 1) * cfg.jitter
    mean = x.mean(dim=(-1, -2, -3), keepdim=True)
    return ((x - mean) * contrast + mean * bright).clamp(0, 1)


def augment_feature_views(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Cached features of V views of each sample [B, V, F] (a frozen tower) -> one random view [B, F]
    plus Gaussian noise of norm about feature_noise. The views carry the augmentation; the noise is scaled
    by 1/√F because the features are unit vectors of 1,280 dimensions, where a per-dimension σ of 0.05
    (what 384-d MiniLM text features get) would be 1.8 times the feature itself."""
    pick = torch.randint(0, x.shape[1], (x.shape[0],), generator=gen)
    x = x[torch.arange(x.shape[0]), pick].float()
    return x + cfg.feature_noise / x.shape[1] ** 0.5 * torch.randn(x.shape, generator=gen)


def augment_image(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """uint8 or [0,1] float [B, 3, H, W] -> augmented float [B, 3, H, W] in [0, 1].
    Cached features of a frozen tower [B, V, F] -> augment_feature_views."""
    if x.ndim == 3:
        return augment_feature_views(x, cfg, gen)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    b = x.shape[0]
    grid = _affine_grid(b, x.shape[-2:], cfg, gen)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _color(x, cfg, gen, (b, 1, 1, 1))


def augment_video(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """uint8 [B, T, 3, H, W] -> float: the same crop for all frames of a clip, frame indices jittered.
    Cached features of a frozen tower [B, V, F] -> augment_feature_views."""
    if x.ndim == 3:
        return augment_feature_views(x, cfg, gen)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    b, t = x.shape[:2]
    if cfg.frame_jitter and t > 1:
        offsets = torch.randint(-cfg.frame_jitter, cfg.frame_jitter + 1, (b, t), generator=gen)
        idx = (torch.arange(t)[None] + offsets).clamp(0, t - 1).sort(dim=1).values  # keep the order of time
        x = x[torch.arange(b)[:, None], idx]
    grid = _affine_grid(b, x.shape[-2:], cfg, gen).repeat_interleave(t, dim=0)
    frames = F.grid_sample(x.flatten(0, 1), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _color(frames.view_as(x), cfg, gen, (b, 1, 1, 1, 1))


def augment_text(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Token ids [B, L]: drop word tokens (not start/end/padding). Frozen features [B, D]: add noise."""
    if x.dtype.is_floating_point:
        return x + cfg.feature_noise * torch.randn(x.shape, generator=gen)
    if cfg.token_dropout <= 0:
        return x
    eot = x.max(dim=1, keepdim=True).values          # open_clip pools at the end-of-text token, the largest id
    word = (x > 0) & (x != eot) & (torch.arange(x.shape[1])[None] > 0)
    drop = word & (torch.rand(x.shape, generator=gen) < cfg.token_dropout)
    # Remove the dropped tokens and close the gap, so the sequence stays a valid caption.
    keep = ~drop
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    out = torch.gather(x * keep, 1, order)
    return out


def augment_audio(x: Tensor, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """Waveforms [B, L]: gain, circular shift, noise. Cached features of a frozen tower [B, V, F] ->
    augment_feature_views."""
    if x.ndim == 3:
        return augment_feature_views(x, cfg, gen)
    b, n = x.shape
    gain = 10 ** ((torch.rand(b, 1, generator=gen) * 2 - 1) * cfg.audio_gain_db / 20)
    shifts = ((torch.rand(b, generator=gen) * 2 - 1) * cfg.audio_shift * n).long()
    idx = (torch.arange(n)[None] - shifts[:, None]) % n
    x = torch.gather(x.float(), 1, idx) * gain
    return x + cfg.audio_noise * torch.randn(x.shape, generator=gen)


AUGMENTERS = {"image": augment_image, "video": augment_video, "text": augment_text, "audio": augment_audio}


def augment_batch(batch: dict[str, Tensor], cfg: AugmentConfig, gen: torch.Generator) -> dict[str, Tensor]:
    return {m: AUGMENTERS[m](x, cfg, gen) for m, x in batch.items()}
