"""What a mitigation request asks for: the strategies, the removal rankings, MitigateConfig, folder names."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from ..config import DEVICES
from ..evaluate import EvalConfig
from ..options import option, validate

STRATEGIES = ("remove", "regroup", "augment")
# Removal rankings, each with the direction that means "remove first". CLIPMem is a memorization score
# (the image–text pair of MultiMem): high = memorized. The cosine baseline flags low agreement. The last two are
# rankings a run's self-check may choose (`multimem summary` names them): -cmc_out (the column cmc_out, lowest
# first: the model that never trained on a row aligns it poorly) and their mean rank.
RANKINGS = {"multimem": "high", "base__cosine": "low", "base__clipmem": "high", "random": None,
            "-cmc_out": "low", "combo__meanrank": "high"}
# What a sweep compares unless --rankings says otherwise: the paper's study (MultiMem against its baselines).
SWEEP_RANKINGS = ("multimem", "base__cosine", "base__clipmem", "random")
# A mitigation folder's name, given (--name) or made (default_name): one plain folder under RUN/mitigation/. The
# characters default_name keeps, starting with a letter or digit, so never a path, '.', '..' or a hidden folder.
# (launch.NAME_RE, the run-name rule, is stricter: it has no '=' or '+', which the made names use.)
FOLDER_CHARS = "A-Za-z0-9._=+-"
FOLDER_RE = re.compile(rf"^[A-Za-z0-9][{FOLDER_CHARS}]{{0,199}}$")


class MitigationError(ValueError):
    """A user-facing problem with a mitigation request; the message says what to change."""


@dataclass
class MitigateConfig:
    """One mitigation request; each option of `multimem mitigate` is declared on its field."""

    strategy: str = option(flag="--strategy", choices=STRATEGIES, group="strategy",
                           help="remove: drop the top N and fine-tune; regroup: in-training re-scoring, the most "
                                "memorized in batches of their own with targeted augmentations; augment: the "
                                "augmentation study")
    name: str | None = option(None, flag="--name", group="strategy",
                              help="folder under RUN/mitigation/ (None: made from the settings; removal points "
                                   "with the same fine-tuning accumulate in one folder)")
    # remove
    top: int = option(100, flag="--top", min=0, group="remove", help="remove this many samples")
    score: str = option("multimem", flag="--score", choices=tuple(RANKINGS), group="remove",
                        help="ranking that chooses what to remove")
    # several N, every ranking; text on the command line ("0,50,100"), a tuple once parsed
    sweep: tuple[int, ...] | None = option(None, flag="--sweep", group="remove",
                                           help="several counts, e.g. 0,50,100,200: fine-tune for each count and "
                                                "every ranking")
    rankings: tuple[str, ...] | None = option(None, flag="--rankings", group="remove",
                                              help=f"with --sweep: the rankings to run (None: those of the paper's "
                                                   f"{', '.join(SWEEP_RANKINGS)} that the run has)")
    random_draws: int = option(1, flag="--random-draws", min=1, group="remove",
                               help="repeat the random ranking with this many seeds (its spread is the noise floor)")
    finetune_epochs: int = option(5, flag="--finetune-epochs", min=1, group="remove",
                                  help="epochs of fine-tuning after the removal")
    finetune_lr: float | None = option(None, flag="--finetune-lr", group="remove",
                                       help="fine-tuning learning rate (None: a quarter of the run's)")
    # regroup
    every: int = option(5, flag="--every", min=1, group="regroup and augment", help="regroup: re-score every E epochs")
    top_frac: float = option(0.05, flag="--top-frac", group="regroup and augment",
                             help="regroup: share of training samples regrouped")
    score_views: int = option(2, flag="--score-views", min=1, group="regroup and augment",
                              help="regroup: views per sample when re-scoring in training")
    # regroup and augment
    augment: str = option("noise=0.1", flag="--augment", group="regroup and augment",
                          help="targeted augmentations, name=strength comma-separated: noise (σ on representations), "
                               "caption, crop, jitter, audio_noise, audio_shift, frame_drop")
    # modalities the targeted augmentations touch (None: all); "all-subsets" on the command line sets all_subsets
    modalities: tuple[str, ...] | None = option(None, flag="--modalities", group="regroup and augment",
                                                help="modalities the augmentations touch, e.g. image,text (None: all); "
                                                     "'all-subsets' runs the augmentation study over every non-empty "
                                                     "subset")
    all_subsets: bool = False               # augment: every non-empty subset of the run's modalities
    epochs: int | None = option(None, flag="--epochs", min=1, group="regroup and augment",
                                help="training epochs (None: the run's, so the run is the control)")
    # re-scoring and evaluation
    views: int | None = option(None, flag="--views", min=1, group="measuring",
                               help="views per sample in the re-score (None: the run's)")
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0                           # random ranking
    device: str = option("auto", flag="--device", choices=DEVICES, group="measuring", help="cpu, cuda, or auto")
    progress: bool = option(True, flag="--quiet", negate=True, group="measuring", help="no progress bars")

    def __post_init__(self):
        if isinstance(self.sweep, str):
            self.sweep = parse_sweep(self.sweep)
        if isinstance(self.rankings, str):
            self.rankings = tuple(r.strip() for r in self.rankings.split(",") if r.strip())
        if isinstance(self.modalities, str):
            if self.modalities == "all-subsets":
                self.modalities, self.all_subsets = None, True
            else:
                self.modalities = tuple(m.strip() for m in self.modalities.split(",") if m.strip())
        if self.name is not None and not FOLDER_RE.match(self.name):
            raise MitigationError(f"--name {self.name!r}: give a plain folder name (it goes under RUN/mitigation/): "
                                  "letters, digits, '.', '_', '-', '=' or '+', starting with a letter or digit, "
                                  "no '/' and not '.' or '..'")
        if self.strategy not in STRATEGIES:
            raise MitigationError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        try:
            validate(self)
        except ValueError as e:
            raise MitigationError(str(e)) from None
        if self.strategy == "remove":
            for r in (self.score, *(self.rankings or ())):
                if r not in RANKINGS:
                    raise MitigationError(f"ranking {r!r}: choose from {', '.join(RANKINGS)}")
            if any(n < 0 for n in self.sweep or ()):
                raise MitigationError("the number of samples to remove cannot be negative")
        if self.strategy == "regroup" and not 0 < self.top_frac < 1:
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
    return re.sub(rf"[^{FOLDER_CHARS}]+", "_", name.replace(",", "_"))


def parse_sweep(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise MitigationError(f"--sweep {text!r}: give comma-separated counts, e.g. 0,50,100,200") from None
    if not values:
        raise MitigationError("--sweep is empty")
    return values
