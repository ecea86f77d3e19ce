"""Every configuration of the engine, as plain dataclasses: their field defaults are THE defaults.

The CLI's options, the dashboard's New-run page (launch.NewRun) and the docs read their defaults from
these classes (tests/test_defaults.py checks that they agree), so a default is changed here and only here.
Nothing heavy is imported (no torch): `multimem --help` builds its options from this module at once.
The modules that use a config re-export it under its old home (`multimem_core.train.TrainConfig`, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

PROTOCOLS = ("crossfit", "paper")


@dataclass
class ColumnKeys:
    """The manifest's column name for each standard field (CLI: --id-key, --image-key, ...)."""

    id: str = "id"
    text: str = "text"
    image: str = "image"
    audio: str = "audio"
    video: str = "video"
    label: str = "label"


@dataclass(frozen=True)
class MediaSpec:
    """The fixed shapes every sample is decoded to, and where media may come from (the decode cache key)."""

    image_size: int | None = None   # None: the image tower's own (score.resolve_media fills it in)
    audio_sample_rate: int = 16000
    audio_seconds: float = 1.0
    video_frames: int = 8
    video_size: int = 32
    # Media paths that resolve outside the manifest's folder (.., absolute, symlinks) are refused and never
    # opened unless this is True (multimem_core.data.paths; `multimem score --allow-outside-root`).
    allow_outside_root: bool = False

    @property
    def audio_samples(self) -> int:
        return int(round(self.audio_sample_rate * self.audio_seconds))


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: float = 0.9          # image/video: zoom in up to this fraction of the side
    translate: float = 0.04          # image/video: shift up to this fraction of the side
    hflip: bool = False              # only when captions say nothing about left and right
    jitter: float = 0.1              # image/video: brightness/contrast ± this
    token_dropout: float = 0.05      # text: drop this fraction of word tokens
    feature_noise: float = 0.05      # text (frozen features): Gaussian noise σ
    audio_gain_db: float = 6.0       # audio: gain ± this many dB
    audio_shift: float = 0.1         # audio: circular shift up to this fraction of the clip
    audio_noise: float = 0.005       # audio: additive noise σ
    frame_jitter: int = 1            # video: each frame index moves by up to this many frames

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelConfig:
    """What to build. `embed_dim=None` takes the image architecture's own embedding size."""

    modalities: Sequence[str] = ("image", "text")
    # Pretrained towers by default, both shipped in PyPI wheels (measured on real photos: README, "Real data"):
    # 'efficientnet-lite0' (frozen ImageNet features + trained projection) or an open_clip architecture
    image_tower: str = "efficientnet-lite0"
    text_tower: str = "minilm"            # open_clip architecture, 'minilm', or a sentence-transformers path
    pretrained: str | None = None         # local open_clip checkpoint for image/text towers of `image_tower`
    freeze_image: bool = False            # open_clip image tower: frozen `pretrained` features + projection
    image_views: int = 4                  # frozen image tower: augmented views whose features are cached
    embed_dim: int | None = None
    image_size: int | None = None         # None: the architecture's own
    video_frames: int = 8
    audio_sample_rate: int = 16000
    init_temperature: float = 0.07

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d


@dataclass(frozen=True)
class ProtocolConfig:
    name: str = "crossfit"
    folds: int = 4  # 4 beat 2 on real photos (MultiMem AUROC 0.849 vs 0.824, same time: README, "Real data")
    # share of samples held out as H, trained on by no model. None: none for crossfit, whose models each
    # take the fold they never saw as the CMC's unrelated set, so that every row is scored; 0.1 for paper.
    heldout_frac: float | None = None
    # paper: shares of S_S, S_C, S_I (H takes heldout_frac first)
    paper_shares: tuple[float, float, float] = (0.5, 0.25, 0.25)
    seed: int = 0

    def __post_init__(self):
        if self.name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.name!r}: choose one of {', '.join(PROTOCOLS)}")
        if self.name == "crossfit" and self.folds < 2:
            raise ValueError("crossfit needs --folds 2 or more (each sample needs a model that did not see it)")
        frac = self.heldout
        if self.name == "paper" and not 0 < frac < 0.5:
            raise ValueError("the paper protocol needs heldout_frac in (0, 0.5)")
        if not 0 <= frac < 0.5:
            raise ValueError("heldout_frac must lie in [0, 0.5)")

    @property
    def heldout(self) -> float:
        """The share of samples in H, the default filled in."""
        if self.heldout_frac is not None:
            return self.heldout_frac
        return 0.1 if self.name == "paper" else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SelfCheckConfig:
    """Known corruptions planted in training (never in the scores) to measure detection power on this data."""

    enabled: bool = True     # crossfit only: the paper protocol scores only S_C ∪ S_I
    share: float = 0.03      # planted rows per kind (one modality exchanged between two rows), share of rows
    min_per_kind: int = 30   # at least this many per kind ...
    max_share: float = 0.08  # ... and never more than this share of the rows in all (the run's cost)
    bootstrap: int = 300     # resamples for the interval
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_frac: float = 0.05
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d


@dataclass
class ScoreConfig:
    input: str                                  # manifest file or folder of WebDataset shards
    out: str
    modalities: list[str] | None = None         # None: every modality the input has
    keys: ColumnKeys = field(default_factory=ColumnKeys)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    media: MediaSpec = field(default_factory=MediaSpec)
    selfcheck: SelfCheckConfig = field(default_factory=SelfCheckConfig)
    views: int = 8                              # A: random augmented views per sample in the CMC's first term
    chunk_size: int = 256
    projection: bool = True
    projection_per_modality: bool = False
    device: str = "auto"
    progress: bool = True
    # also keep the A augmented views the metric used: RUN/embeddings/<model>/<modality>.views.npy [A, N, d]
    # float32, so that `multimem import-embeddings` on them reproduces this run's scores exactly
    save_views: bool = False
    train_workers: int | None = None  # None: one process per model up to the number of cores (CPU only)

    def to_dict(self) -> dict:
        return {
            "input": str(self.input), "out": str(self.out), "modalities": self.modalities,
            "keys": asdict(self.keys), "protocol": self.protocol.to_dict(), "model": self.model.to_dict(),
            "train": self.train.to_dict(), "media": asdict(self.media), "selfcheck": self.selfcheck.to_dict(),
            "views": self.views,
            "chunk_size": self.chunk_size, "projection": self.projection,
            "projection_per_modality": self.projection_per_modality, "device": self.device,
            "save_views": self.save_views,
        }

