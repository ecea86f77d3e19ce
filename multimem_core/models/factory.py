"""`create_model(ModelConfig)`: the one entry point that builds a multi-tower contrastive model.

In open_clip's style, architectures are small JSON files (model_configs/*.json) registered with
open_clip, so `--image-tower mm-tiny` and `--image-tower ViT-B-32` go through the same code; a local
checkpoint (`--pretrained PATH`) loads with weights_only=True. Nothing here downloads anything.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import CLIP_TEMPERATURE, FROZEN_IMAGE_TOWERS, FROZEN_TEXT_TOWERS, ModelConfig, is_sentence_folder
from .frozen_audio import FrozenAudioTower, is_frozen_audio
from .frozen_image import FrozenImageTower, is_frozen_image
from .frozen_video import FrozenVideoTower, is_frozen_video
from .towers import AudioTower, FrozenTextTower, ImageTower, OpenClipTextTower, VideoTower

CONFIG_DIR = Path(__file__).parent / "model_configs"


@lru_cache(maxsize=None)
def register_builtin_configs() -> tuple[str, ...]:
    """Make our tiny architectures known to open_clip by name (like its own model_configs)."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    return tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))


def architecture(name: str) -> dict:
    """The JSON config of an open_clip architecture (ours or open_clip's)."""
    import open_clip

    register_builtin_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown open_clip architecture {name!r}; "
                         f"ours: {', '.join(register_builtin_configs())}; open_clip's: see open_clip.list_models()")
    return json.loads(json.dumps(cfg))


def build_clip(name: str, *, embed_dim: int | None = None, image_size: int | None = None,
               pretrained: str | None = None) -> nn.Module:
    """An open_clip model with its text tower as a module (`.text`), so each tower can be taken apart.

    With `pretrained`, a local checkpoint is loaded (weights_only=True); open_clip converts a standard
    CLIP state dict to this layout itself. An open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, ...)
    downloads from the model hub, so it works only on a machine that reaches it.
    """
    import open_clip

    arch = architecture(name)
    if pretrained is not None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not Path(pretrained).is_file() and pretrained not in tags:
            raise FileNotFoundError(f"--pretrained {pretrained}: no such file, nor an open_clip pretrained tag of "
                                    f"{name} ({', '.join(tags) or 'it has none'})")
        if embed_dim not in (None, arch["embed_dim"]):
            raise ValueError(f"the checkpoint of {name} fixes embed_dim={arch['embed_dim']}; leave it unset")
        kwargs = {"force_image_size": image_size} if image_size else {}
        try:
            return open_clip.create_model(name, pretrained=pretrained, force_custom_text=True,
                                          weights_only=True, **kwargs)
        except OSError as e:  # a tag whose weights could not be fetched (no network, no hub)
            raise FileNotFoundError(f"--pretrained {pretrained}: the weights of this open_clip tag could not "
                                    f"be fetched ({e}); download them where a hub is reachable and give the "
                                    "local file instead") from e
    cfg = dict(arch, embed_dim=embed_dim or arch["embed_dim"])
    cfg["vision_cfg"] = dict(arch["vision_cfg"], image_size=image_size or arch["vision_cfg"]["image_size"])
    cfg.pop("custom_text", None)
    return open_clip.CustomTextCLIP(**cfg)


class MultiTowerModel(nn.Module):
    """Towers keyed by modality, one shared embedding space and one learnable temperature."""

    def __init__(self, towers: dict[str, nn.Module], embed_dim: int, init_temperature: float = CLIP_TEMPERATURE):
        super().__init__()
        self.towers = nn.ModuleDict(towers)
        self.embed_dim = embed_dim
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / init_temperature))))

    @property
    def modalities(self) -> list[str]:
        return list(self.towers.keys())

    def prepare(self, raw: dict) -> dict[str, Tensor]:
        return {m: self.towers[m].prepare(raw[m]) for m in self.modalities}

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """L2-normalised embeddings per modality, [B, d] each."""
        return {m: F.normalize(self.towers[m](batch[m]).float(), dim=-1) for m in self.modalities if m in batch}


def create_model(cfg: ModelConfig) -> MultiTowerModel:
    mods = list(cfg.modalities)
    unknown = set(mods) - {"image", "text", "audio", "video"}
    if unknown or len(mods) < 2:
        raise ValueError(f"modalities must be ≥ 2 of image, text, audio, video; got {mods}")
    frozen_image = is_frozen_image(cfg.image_tower, cfg.freeze_image)
    # the open_clip architecture of the trained towers (text, video frames) when the image tower is not one
    clip_arch = "mm-tiny" if cfg.image_tower in FROZEN_IMAGE_TOWERS else cfg.image_tower
    arch = architecture(clip_arch)
    embed_dim = cfg.embed_dim or arch["embed_dim"]
    native_size = arch["vision_cfg"]["image_size"]
    image_size = native_size if frozen_image else (cfg.image_size or native_size)
    towers: dict[str, nn.Module] = {}
    clip = None if frozen_image else build_clip(cfg.image_tower, embed_dim=embed_dim, image_size=image_size,
                                                pretrained=cfg.pretrained)

    if "image" in mods:
        towers["image"] = (FrozenImageTower.create(cfg.image_tower, embed_dim, pretrained=cfg.pretrained,
                                                   views=cfg.image_views, mid_blocks=cfg.image_features == "head+mid")
                           if frozen_image else ImageTower(clip.visual, image_size))
    if "text" in mods:
        if is_sentence_folder(cfg.text_tower) and not Path(cfg.text_tower).is_dir():
            # meant as a folder: say so, not "unknown open_clip architecture" nor sentence-transformers' own error
            raise ValueError(f"--text-tower {cfg.text_tower}: no such folder (a local sentence-transformers model "
                             f"is a folder; or choose {FROZEN_TEXT_TOWERS[0]}, or an open_clip architecture)")
        if cfg.text_tower in FROZEN_TEXT_TOWERS or is_sentence_folder(cfg.text_tower):
            towers["text"] = FrozenTextTower.create(cfg.text_tower, embed_dim)
        else:
            same = cfg.text_tower == cfg.image_tower
            text_clip = clip if same and clip is not None else build_clip(
                cfg.text_tower, embed_dim=embed_dim, pretrained=cfg.pretrained if same else None)
            towers["text"] = OpenClipTextTower(text_clip.text, text_clip.text.context_length)
    if "audio" in mods:
        towers["audio"] = (FrozenAudioTower(cfg.audio_tower, embed_dim, sample_rate=cfg.audio_sample_rate,
                                            views=cfg.audio_views)
                           if is_frozen_audio(cfg.audio_tower) else AudioTower(embed_dim, sample_rate=cfg.audio_sample_rate, n_mels=cfg.audio_mels))
    if "video" in mods and is_frozen_video(cfg.video_tower):
        towers["video"] = FrozenVideoTower(cfg.video_tower, embed_dim, views=cfg.video_views)
    elif "video" in mods:
        # Its own copy of the image architecture: moving frames are not the still images' distribution. Frames
        # decoded smaller than the images are read at their own size (fewer patches), not upsampled.
        frame_size = min(image_size, cfg.video_size or image_size)
        frame_visual = copy.deepcopy(clip.visual) if clip is not None and frame_size == image_size else build_clip(
            clip_arch, embed_dim=embed_dim, image_size=frame_size).visual
        towers["video"] = VideoTower(ImageTower(frame_visual, frame_size), embed_dim, cfg.video_frames)
    ordered = {m: towers[m] for m in ("image", "text", "audio", "video") if m in towers}
    return MultiTowerModel(ordered, embed_dim, cfg.init_temperature)
