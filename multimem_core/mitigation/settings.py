"""What a mitigation request asks for: the strategies, the removal rankings, MitigateConfig, folder names."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from ..evaluate import EvalConfig

STRATEGIES = ("remove", "regroup", "augment")
# Removal rankings, each with the direction that means "remove first". CLIPMem is a memorization score
# (the image–text pair of MultiMem): high = memorized. The cosine baseline flags low agreement.
RANKINGS = {"multimem": "high", "base__cosine": "low", "base__clipmem": "high", "random": None}


class MitigationError(ValueError):
    """A user-facing problem with a mitigation request; the message says what to change."""


@dataclass
class MitigateConfig:
    strategy: str
    name: str | None = None                 # folder under RUN/mitigation/ (default: from the settings)
    # remove
    top: int = 100
    score: str = "multimem"
    sweep: tuple[int, ...] | None = None    # several N, every ranking
    rankings: tuple[str, ...] | None = None  # sweep rankings (default: all the run has)
    random_draws: int = 1                   # random removal repeated with this many seeds
    finetune_epochs: int = 5
    finetune_lr: float | None = None        # default: a quarter of the run's learning rate
    # regroup
    every: int = 5
    top_frac: float = 0.05
    score_views: int = 2                    # views per sample when re-scoring during training
    # regroup and augment
    augment: str = "noise=0.1"
    modalities: tuple[str, ...] | None = None  # modalities the targeted augmentations touch (None: all)
    all_subsets: bool = False               # augment: every non-empty subset of the run's modalities
    epochs: int | None = None               # regroup/augment: training epochs (default: the run's)
    # re-scoring and evaluation
    views: int | None = None                # views per sample in the final re-score (default: the run's)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0                           # random ranking
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise MitigationError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.strategy == "remove":
            for r in (self.score, *(self.rankings or ())):
                if r not in RANKINGS:
                    raise MitigationError(f"ranking {r!r}: choose from {', '.join(RANKINGS)}")
            if self.top < 0 or any(n < 0 for n in self.sweep or ()):
                raise MitigationError("the number of samples to remove cannot be negative")
            if self.finetune_epochs < 1:
                raise MitigationError("--finetune-epochs must be at least 1")
            if self.random_draws < 1:
                raise MitigationError("--random-draws must be at least 1")
        if self.strategy == "regroup":
            if self.every < 1:
                raise MitigationError("--every must be at least 1 epoch")
            if not 0 < self.top_frac < 1:
                raise MitigationError("--top-frac must lie in (0, 1), e.g. 0.05 for the top 5 %")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["evaluation"] = self.evaluation.to_dict()
        for k in ("sweep", "rankings", "modalities"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d

    def identity(self) -> dict:
        """The settings a folder's results depend on (not device or progress bars; for removal, not which
        points are asked for: points of the same fine-tuning accumulate in one folder)."""
        skip = {"device", "progress", "name"}
        if self.strategy == "remove":
            skip |= {"top", "score", "sweep", "rankings", "random_draws"}
        ident = {k: v for k, v in self.to_dict().items() if k not in skip}
        return json.loads(json.dumps(ident))  # as it reads back from config.json (tuples become lists)


def default_name(cfg: MitigateConfig) -> str:
    if cfg.strategy == "remove":
        name = f"remove-ft{cfg.finetune_epochs}" + (f"-lr{cfg.finetune_lr:g}" if cfg.finetune_lr else "")
    elif cfg.strategy == "regroup":
        name = f"regroup-every{cfg.every}-top{cfg.top_frac:g}-{cfg.augment}"
    else:
        mods = "all-subsets" if cfg.all_subsets else "+".join(cfg.modalities or ("all",))
        name = f"augment-{cfg.augment}-{mods}"
    if cfg.epochs and cfg.strategy != "remove":
        name += f"-e{cfg.epochs}"
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name.replace(",", "_"))


def parse_sweep(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise MitigationError(f"--sweep {text!r}: give comma-separated counts, e.g. 0,50,100,200") from None
    if not values:
        raise MitigationError("--sweep is empty")
    return values
