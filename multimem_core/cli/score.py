"""`multimem score`, `demo` and `summary` (multimem_core.score, multimem_core.summary)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CLIError, app_command, existing_path


def score_defaults() -> dict:
    """dest -> default of every `multimem score` option, read from the config fields that declare them."""
    from multimem_core.config import ScoreConfig
    from multimem_core.options import option_defaults

    return option_defaults(ScoreConfig)


def add_model_options(p: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """Every option of ScoreConfig (multimem_core.config declares them). suppress: an option not given stays
    out of the namespace, so that the values of `--config FILE` stand."""
    from multimem_core.config import ScoreConfig
    from multimem_core.options import add_options

    add_options(p, ScoreConfig, suppress=suppress)


def score_config(args, input_path: str, out: str, *, dataset_hints: dict | None = None, base=None):
    """The ScoreConfig of `base` (default: the defaults) with the options given in `args` set."""
    from dataclasses import replace

    from multimem_core.config import ScoreConfig

    try:
        cfg = (base or ScoreConfig(input=input_path, out=out)).with_options(vars(args))
        cfg = replace(cfg, input=input_path, out=out)
    except ValueError as e:
        raise CLIError(str(e))
    if (dataset_hints or {}).get("allow_hflip"):  # the dataset says its captions never mention left or right
        cfg = replace(cfg, train=replace(cfg.train, augment=replace(cfg.train.augment, hflip=True)))
    return cfg


def config_file(path):
    """The ScoreConfig in a config.json (a run's) or request.json (the New-run page's)."""
    import json

    from multimem_core.config import ScoreConfig

    try:
        return ScoreConfig.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise CLIError(f"{path}: not a score config ({e})")


def run_score(cfg):
    from multimem_core.data.manifest import ManifestError
    from multimem_core.score import score_run

    try:
        return score_run(cfg)
    except (ManifestError, FileNotFoundError, ValueError) as e:
        raise CLIError(str(e))


def add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="?", help="manifest (CSV, TSV, JSONL, Parquet) or a folder / list of WebDataset "
                   ".tar shards (default: the one --config names)")
    p.add_argument("--out", help="run directory to write (rerun the same command to resume; default: --config's)")
    p.add_argument("--config", type=existing_path, metavar="FILE",
                   help="start from the options in FILE (a run's config.json, or the request.json the dashboard "
                        "writes); options given here win")
    add_model_options(p, suppress=True)


def cmd_score(args) -> int:
    base = config_file(args.config) if args.config else None
    input_path, out = args.input or (base.input if base else None), args.out or (base.out if base else None)
    if not input_path or not out:
        raise CLIError("give the input and --out (or --config FILE that names them)")
    run = run_score(score_config(args, input_path, out, base=base))
    from multimem_core.distributed import dist_info

    if dist_info()[0] == 0:
        print_summary(run)
        print(f"\nopen it:  {app_command(run)}")
    return 0


# The demo's defaults per built-in dataset, chosen by measurement (docs/MEASUREMENTS.md). Any option given on
# the command line wins. The demos keep tiny towers trained from scratch at 32 px and 2 folds, whatever the
# defaults of `multimem score` are, so that their measured figures hold (tests/test_cli_defaults.py); the
# audio tower too (the emoji's sounds are speech, which a sound-effects encoder does not read as words), and the
# video tower (frozen ImageNet frames barely see where an emoji moves, which its caption names: docs/SPEED.md).
DEMO_PINNED = {"image_tower": "mm-tiny", "image_size": 32, "folds": 2, "audio_tower": "mel-cnn",
               "video_tower": "trained"}
DEMO_PROFILES = {
    # 60 epochs: with every row scored (each model's own fold as its reference set) 40 left multimem at 0.911
    "shapes": {"samples": 1500, "epochs": 60, "batch_size": 16, "weight_decay": 0.0, "frames": 4,
               "audio_seconds": 1.0, **DEMO_PINNED, "text_tower": "mm-tiny"},
    # Every emoji is unique, so clean samples are memorized too and only what carries over between emoji
    # (motion, spoken words, the picture in its clip, a pretrained text tower's sense of names) separates
    # them from injected ones: a pretrained text tower and many epochs (the profiles tried: docs/MEASUREMENTS.md).
    # The video and audio towers were 75 % of a training step: frames at 16 px (4 patches, the motion still
    # plain), speech at 8 kHz in 32 mel bands take the demo under 5 minutes, AUROCs held (docs/SPEED.md).
    "emoji": {"samples": 1000, "epochs": 100, "batch_size": 16, "weight_decay": 0.0, "frames": 4,
              "audio_seconds": 2.0, **DEMO_PINNED, "text_tower": "minilm",
              "video_size": 16, "audio_sample_rate": 8000, "audio_mels": 32},
}
DEMO_QUICK = {"samples": 400, "epochs": 8, "views": 4}
# the options a demo profile may set (None on the command line: the profile, else the score default)
PROFILE_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "image_size", "frames", "audio_seconds", "views",
                "text_tower", "image_tower", "folds", "audio_tower", "video_tower", "audio_sample_rate",
                "video_size", "audio_mels")


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="emoji", help="built-in dataset: emoji (real pictures, names, speech) or shapes")
    p.add_argument("--out", default="runs/demo", help="run directory (the dataset is built in OUT/data)")
    p.add_argument("--samples", type=int, default=None, help=f"number of samples ({_demo_default('samples')})")
    p.add_argument("--inject-rate", type=float, default=0.1, help="share of samples given an injected misalignment")
    p.add_argument("--quick", action="store_true", help="a small, fast version (a few hundred samples, few epochs)")
    add_model_options(p)
    # None = "the dataset's demo profile decides" (see DEMO_PROFILES); --help says what each profile sets
    p.set_defaults(**{k: None for k in PROFILE_KEYS})
    for action in p._actions:
        if action.dest in PROFILE_KEYS:
            action.help = f"{action.help} ({_demo_default(action.dest)})"


def _demo_default(key: str) -> str:
    """What the demo uses for option `key` when it is not given, per dataset, as --help states it."""
    default = score_defaults().get(key)
    per = ", ".join(f"{name} {profile.get(key, default)}" for name, profile in DEMO_PROFILES.items())
    return f"default: {per}" + (f"; with --quick {DEMO_QUICK[key]}" if key in DEMO_QUICK else "")


def apply_demo_profile(args) -> None:
    """Fill the options the user left unset from the dataset's profile, then the score command's defaults."""
    profile = dict(DEMO_PROFILES.get(args.dataset, {}))
    if args.quick:
        profile.update(DEMO_QUICK)
    args.samples = args.samples or profile.get("samples")
    default = score_defaults()
    for key in PROFILE_KEYS:
        if getattr(args, key) is None:
            setattr(args, key, profile.get(key, default[key]))


def cmd_demo(args) -> int:
    import inspect
    import json

    from multimem_core.data import BUILTIN_DATASETS

    if args.dataset not in BUILTIN_DATASETS:
        raise CLIError(f"unknown dataset {args.dataset!r}: choose one of {', '.join(BUILTIN_DATASETS)}")
    apply_demo_profile(args)
    out = Path(args.out)
    builder = BUILTIN_DATASETS[args.dataset]
    kwargs = {"inject_rate": args.inject_rate, "seed": args.seed, "progress": not args.quiet}
    if args.samples:  # shapes takes a size, emoji a limit on its fixed set
        kwargs["n" if "n" in inspect.signature(builder).parameters else "limit"] = args.samples
    print(f"building the {args.dataset} dataset in {out / 'data'} …")
    manifest = builder(out / "data", **kwargs)
    hints_path = Path(manifest).parent / "dataset.json"
    hints = json.loads(hints_path.read_text()) if hints_path.is_file() else {}
    run = run_score(score_config(args, str(manifest), str(out), dataset_hints=hints))
    print_summary(run)
    print(f"\nopen the dashboard:  {app_command(run)}")
    return 0


def add_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="run directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def print_summary(run, as_json: bool = False) -> None:
    import json

    from multimem_core.summary import format_summary, summarize

    s = summarize(run)
    print(json.dumps(s, indent=2, default=str) if as_json else format_summary(s))


def cmd_summary(args) -> int:
    from multimem_core.run import RunDir, RunDirError

    try:
        print_summary(RunDir(args.run), args.json)
    except RunDirError as e:
        raise CLIError(str(e))
    return 0


COMMANDS = [
    ("demo", "build a built-in dataset with injected misalignments, score it and print the summary", add_demo, cmd_demo),
    ("score", "train the models a protocol needs and write MultiMem scores into a run directory", add_score, cmd_score),
    ("summary", "counts, time per stage, mean scores by role and injected kind, AUROC of every score", add_summary,
     cmd_summary),
]
