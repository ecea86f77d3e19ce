"""Targeted augmentations: stronger, chosen augmentations for chosen samples and modalities only.

Mitigation applies them to the most memorized samples (in their own mini-batches, so a per-batch
setting is enough), the augmentation study to every sample, and the what-if preview to the samples a
person selected. `--augment SPEC` is a comma-separated list of `name=strength` (strength optional):

    noise        Gaussian noise σ on the L2-normalised representation, re-normalised (paper: σ = 0.1).
                 normalize(e/‖e‖ + σ·z) = normalize(e + σ‖e‖·z): noise before the model's normalisation,
                 scaled by each embedding's own norm, so σ means the same for every tower.
    caption      token dropout with this probability, and the caption's words reordered for that share
                 of captions (frozen text features: Gaussian feature noise σ = strength / 2)
    crop         image and video: random crops down to (1 − strength) of the side
    jitter       image and video: brightness and contrast ± strength
    audio_noise  audio: additive Gaussian noise σ
    audio_shift  audio: circular shift up to this fraction of the clip
    frame_drop   video: each frame replaced by the previous kept one with this probability

`modalities` restricts every augmentation (and the noise) to a subset; the other modalities of the same
batch get the run's ordinary training augmentation. Alternative captions are not offered: a manifest
row holds one caption.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import AUGMENTERS
from .config import AugmentConfig

DEFAULTS = {"noise": 0.1, "caption": 0.3, "crop": 0.4, "jitter": 0.4, "audio_noise": 0.02, "audio_shift": 0.3,
            "frame_drop": 0.25}
MODALITY_OF = {"noise": None, "caption": ("text",), "crop": ("image", "video"), "jitter": ("image", "video"),
               "audio_noise": ("audio",), "audio_shift": ("audio",), "frame_drop": ("video",)}


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class TargetedAugment:
    """A per-batch augmentation for train.BatchPlan: input augmentations, then noise on embeddings."""

    strengths: tuple[tuple[str, float], ...] = ()      # (name, strength), names from DEFAULTS
    modalities: tuple[str, ...] | None = None          # None: every modality

    @classmethod
    def parse(cls, spec: str, modalities: Sequence[str] | None = None) -> "TargetedAugment":
        items = []
        for part in [p.strip() for p in str(spec or "").split(",") if p.strip()]:
            name, _, value = part.partition("=")
            name = name.strip().replace("-", "_")
            if name not in DEFAULTS:
                raise SpecError(f"unknown augmentation {name!r} in --augment {spec!r}; "
                                f"choose from {', '.join(DEFAULTS)} (as name=strength, comma-separated)")
            try:
                strength = float(value) if value.strip() else DEFAULTS[name]
            except ValueError:
                raise SpecError(f"--augment {spec!r}: strength of {name} must be a number, got {value!r}") from None
            if not 0 <= strength <= (10 if name == "noise" else 1):
                raise SpecError(f"--augment {spec!r}: strength of {name} out of range")
            items.append((name, strength))
        if not items:
            raise SpecError("--augment is empty: give at least one of " + ", ".join(DEFAULTS))
        mods = tuple(modalities) if modalities else None
        return cls(tuple(items), mods)

    def spec(self) -> str:
        return ",".join(f"{n}={s:g}" for n, s in self.strengths)

    def to_dict(self) -> dict:
        return {"spec": self.spec(), "modalities": list(self.modalities) if self.modalities else None}

    @property
    def trains_temperature(self) -> bool:
        """Noisy embeddings must not set the temperature every batch shares (train.BatchAugment)."""
        return self.strength("noise") <= 0

    def strength(self, name: str) -> float:
        return dict(self.strengths).get(name, 0.0)

    def targets(self, modality: str) -> bool:
        return self.modalities is None or modality in self.modalities

    def _strong(self, base: AugmentConfig) -> AugmentConfig:
        """The base augmentation made stronger where the spec says so (never weaker)."""
        s = dict(self.strengths)
        return replace(
            base,
            crop_scale=min(base.crop_scale, 1 - s["crop"]) if "crop" in s else base.crop_scale,
            jitter=max(base.jitter, s.get("jitter", 0.0)),
            token_dropout=max(base.token_dropout, s.get("caption", 0.0)),
            feature_noise=max(base.feature_noise, s.get("caption", 0.0) / 2),
            audio_noise=max(base.audio_noise, s.get("audio_noise", 0.0)),
            audio_shift=max(base.audio_shift, s.get("audio_shift", 0.0)),
        )

    # --- the two hooks train_model calls (see train.BatchAugment) ---------------------------------------
    def inputs(self, batch: Mapping[str, Tensor], base: AugmentConfig, gen: torch.Generator) -> dict[str, Tensor]:
        strong = self._strong(base)
        out = {}
        for m, x in batch.items():
            if not self.targets(m):
                out[m] = AUGMENTERS[m](x, base, gen)
                continue
            y = AUGMENTERS[m](x, strong, gen)
            if m == "text" and not y.dtype.is_floating_point and self.strength("caption") > 0:
                y = reorder_words(y, self.strength("caption"), gen)
            if m == "video" and self.strength("frame_drop") > 0:
                y = drop_frames(y, self.strength("frame_drop"), gen)
            out[m] = y
        return out

    def embeddings(self, emb: Mapping[str, Tensor], gen: torch.Generator) -> dict[str, Tensor]:
        sigma = self.strength("noise")
        if sigma <= 0:
            return dict(emb)
        out = {}
        for m, e in emb.items():
            if self.targets(m):
                z = torch.randn(e.shape, generator=gen).to(e.device, e.dtype)
                e = F.normalize(e + sigma * z, dim=-1)
            out[m] = e
        return out


def reorder_words(tokens: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Shuffle the word tokens (between start and end of text) of a share p of captions [B, L]."""
    b, length = tokens.shape
    eot = tokens.max(dim=1, keepdim=True).values
    pos = torch.arange(length)[None].expand(b, length)
    eot_pos = (tokens == eot).float().argmax(dim=1, keepdim=True)  # first end-of-text token
    word = (pos > 0) & (pos < eot_pos)
    chosen = torch.rand(b, 1, generator=gen) < p
    # Word positions get random keys inside (0, eot_pos); every other position keeps its own index as
    # key, so one sort leaves start, end and padding in place and shuffles only the words.
    keys = pos.float()
    noise = 1 + torch.rand(b, length, generator=gen) * (eot_pos.float() - 1 - 1e-3).clamp(min=0)
    keys = torch.where(word & chosen, noise, keys)
    return torch.gather(tokens, 1, keys.argsort(dim=1, stable=True))


def drop_frames(video: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Replace each frame (except the first) by the previous kept frame with probability p; [B, T, ...]."""
    b, t = video.shape[:2]
    keep = torch.rand(b, t, generator=gen) >= p
    keep[:, 0] = True
    src = torch.where(keep, torch.arange(t)[None].expand(b, t), torch.zeros(b, t, dtype=torch.long))
    src = src.cummax(dim=1).values
    return video[torch.arange(b)[:, None], src]


def view_generator(seed: int, key: int) -> torch.Generator:
    """The random stream of the views of one chunk (`key`: its start; H chunks -1 - start), so that a sample's
    views depend on the run's seed and its chunk, not on the order chunks are embedded in."""
    return torch.Generator().manual_seed(seed * 7919 + key)


# Samples per forward pass when embedding on a CPU: the views of a whole chunk (256) at once ran a third
# slower than in passes of 32 (measured on the emoji demo's model; small passes stay in the caches).
FORWARD_BATCH = 32


@torch.no_grad()
def embed_views(model, batch: Mapping[str, Tensor], *, base: AugmentConfig, views: int, gen: torch.Generator,
                targeted: TargetedAugment | None = None) -> Tensor:
    """[A, B, n, d] normalised embeddings of A random views of a batch (the CMC's E_aug), optionally targeted."""
    device = next(model.parameters()).device
    mods = model.modalities
    out = []
    for _ in range(views):
        x = targeted.inputs(batch, base, gen) if targeted else {m: AUGMENTERS[m](v, base, gen) for m, v in batch.items()}
        rows = len(next(iter(x.values())))
        step = FORWARD_BATCH if device.type == "cpu" else rows
        parts = [model({m: v[s:s + step].to(device) for m, v in x.items()}) for s in range(0, rows, step)]
        emb = {m: torch.cat([p[m] for p in parts]) for m in parts[0]}
        if targeted:
            emb = targeted.embeddings(emb, gen)
        out.append(torch.stack([emb[m].float().cpu() for m in mods], dim=1))
    return torch.stack(out)


def describe(aug: TargetedAugment) -> str:
    mods = "all modalities" if aug.modalities is None else "+".join(aug.modalities)
    return f"{aug.spec()} on {mods}"
