"""`multimem score`, `demo` and `summary` (multimem_core.score, multimem_core.summary)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CLIError, add_key_options, column_keys, existing_path


def score_defaults() -> dict:
    """The defaults of `multimem score`'s options, read from the engine's config dataclasses (their one home,
    multimem_core.config; the demo starts from its dataset's profile instead, DEMO_PROFILES)."""
    from multimem_core.config import MediaSpec, ModelConfig, ProtocolConfig, ScoreConfig, TrainConfig

    return {"epochs": TrainConfig.epochs, "batch_size": TrainConfig.batch_size, "lr": TrainConfig.lr,
            "weight_decay": TrainConfig.weight_decay, "seed": TrainConfig.seed, "image_size": MediaSpec.image_size,
            "frames": MediaSpec.video_frames, "audio_seconds": MediaSpec.audio_seconds, "views": ScoreConfig.views,
            "device": ScoreConfig.device, "image_tower": ModelConfig.image_tower,
            "text_tower": ModelConfig.text_tower, "image_views": ModelConfig.image_views,
            "protocol": ProtocolConfig.name, "folds": ProtocolConfig.folds, "heldout_frac": ProtocolConfig.heldout_frac}


def add_model_options(p: argparse.ArgumentParser) -> None:
    default = score_defaults()
    g = p.add_argument_group("data")
    g.add_argument("--modalities", help="comma-separated subset of image,text,audio,video (default: all the input has)")
    add_key_options(g)
    g.add_argument("--image-size", type=int, default=default["image_size"],
                   help="pixels the images and video frames are decoded to (default: the image tower's own)")
    g.add_argument("--frames", type=int, default=default["frames"], help="video frames sampled evenly per clip")
    g.add_argument("--audio-seconds", type=float, default=default["audio_seconds"], help="audio clip length (cropped or zero-padded)")
    g.add_argument("--allow-outside-root", action="store_true",
                   help="read media paths that lead outside the manifest's folder (.., absolute paths, symlinks); "
                        "by default they are refused, never opened, and recorded in errors.parquet")
    g = p.add_argument_group("protocol")
    g.add_argument("--protocol", choices=["crossfit", "paper"], default=default["protocol"],
                   help="crossfit: K folds, every training sample scored; paper: S_S/S_C/S_I/H of the paper")
    g.add_argument("--folds", type=int, default=default["folds"], help="K for crossfit: K models, each trained without one fold")
    g.add_argument("--heldout-frac", type=float, default=default["heldout_frac"], help="share of samples held out as H, trained on by no model (default: none under crossfit, "
                        "where each model's own fold is its reference set and every row is scored; 0.1 under paper)")
    g.add_argument("--views", "--augmentations", dest="views", type=int, default=default["views"],
                   help="random augmented views per sample in the CMC expectation (--augmentations: its old name)")
    g = p.add_argument_group("model and training")
    g.add_argument("--image-tower", default=default["image_tower"],
                   help="efficientnet-lite0 (frozen, ImageNet weights shipped with the package, + trained projection) "
                        "or an open_clip architecture trained from scratch: ours (mm-tiny, mm-small) or any open_clip name")
    g.add_argument("--text-tower", default=default["text_tower"],
                   help="'minilm' (frozen all-MiniLM-L6-v2 + trained projection), a local sentence-transformers "
                        "path, or an open_clip architecture trained from scratch")
    g.add_argument("--pretrained", default=None,
                   help="local open_clip checkpoint for the image/text towers (or an open_clip pretrained tag, "
                        "only where a model hub is reachable)")
    g.add_argument("--freeze-image", action="store_true",
                   help="with --pretrained: keep the open_clip image tower frozen (features cached once, only a "
                        "projection trains): minutes on a CPU")
    g.add_argument("--image-views", type=int, default=default["image_views"],
                   help="frozen image tower: augmented views per image whose features are cached")
    g.add_argument("--embed-dim", type=int, default=None, help="shared embedding size (default: the architecture's)")
    g.add_argument("--epochs", type=int, default=default["epochs"],
                   help="passes over each model's training set (more epochs memorize more)")
    g.add_argument("--batch-size", type=int, default=default["batch_size"], help="samples per step (the InfoNCE negatives)")
    g.add_argument("--lr", type=float, default=default["lr"], help="peak AdamW learning rate (warm-up, then cosine)")
    g.add_argument("--weight-decay", type=float, default=default["weight_decay"], help="AdamW weight decay")
    g.add_argument("--seed", type=int, default=default["seed"], help="seeds the split, the weights, the shuffles and the views")
    g.add_argument("--hflip", action="store_true",
                   help="allow horizontal flips (only when captions never mention left or right)")
    g.add_argument("--device", default=default["device"], help="cpu, cuda, or auto")
    g.add_argument("--train-workers", type=int, default=None,
                   help="models trained at once, one process each (default: one per model up to the cores, CPU only)")
    g.add_argument("--no-projection", action="store_true", help="skip the UMAP map")
    g.add_argument("--save-views", action="store_true",
                   help="also keep the augmented views the metric used (embeddings/<model>/<modality>.views.npy, "
                        "float32): `multimem import-embeddings` on them reproduces the scores")
    g.add_argument("--no-selfcheck", action="store_true",
                   help="plant no known corruptions: the run then cannot estimate how well its scores find bad pairs "
                        "(by default a crossfit run plants them, at up to 8 %% more training)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def score_config(args, input_path: str, out: str, *, dataset_hints: dict | None = None):
    from multimem_core.augment import AugmentConfig
    from multimem_core.config import SelfCheckConfig
    from multimem_core.data.media import MediaSpec
    from multimem_core.models.factory import ModelConfig
    from multimem_core.protocol import ProtocolConfig
    from multimem_core.score import ScoreConfig
    from multimem_core.train import TrainConfig

    hflip = args.hflip or bool((dataset_hints or {}).get("allow_hflip", False))
    try:
        protocol = ProtocolConfig(args.protocol, folds=args.folds, heldout_frac=args.heldout_frac, seed=args.seed)
    except ValueError as e:
        raise CLIError(str(e))
    mods = [m.strip() for m in args.modalities.split(",")] if args.modalities else None
    return ScoreConfig(
        input=input_path, out=out, modalities=mods,
        keys=column_keys(args),
        protocol=protocol,
        model=ModelConfig(image_tower=args.image_tower, text_tower=args.text_tower or args.image_tower,
                          pretrained=args.pretrained, embed_dim=args.embed_dim, image_size=args.image_size,
                          freeze_image=args.freeze_image, image_views=args.image_views),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          weight_decay=args.weight_decay,
                          augment=AugmentConfig(hflip=hflip)),
        media=MediaSpec(image_size=args.image_size, video_frames=args.frames, audio_seconds=args.audio_seconds,
                        allow_outside_root=args.allow_outside_root),
        selfcheck=SelfCheckConfig(enabled=not getattr(args, "no_selfcheck", False)),
        views=args.views, projection=not args.no_projection, device=args.device,
        progress=not args.quiet, save_views=getattr(args, "save_views", False), train_workers=args.train_workers,
    )


def run_score(cfg):
    from multimem_core.data.manifest import ManifestError
    from multimem_core.score import score_run

    try:
        return score_run(cfg)
    except (ManifestError, FileNotFoundError, ValueError) as e:
        raise CLIError(str(e))


def add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="manifest (CSV, TSV, JSONL, Parquet) or a folder / list of WebDataset .tar shards")
    p.add_argument("--out", required=True, help="run directory to write (rerun the same command to resume)")
    add_model_options(p)


def cmd_score(args) -> int:
    run = run_score(score_config(args, args.input, args.out))
    from multimem_core.train import dist_info

    if dist_info()[0] == 0:
        print_summary(run)
        print(f"\nopen it:  multimem app {run.path}")
    return 0


# The demo's defaults per built-in dataset, chosen by measurement on 2 CPU cores (README, "The demo").
# Any option given on the command line wins.
# The demos keep what they were measured with (tiny towers trained from scratch at 32 px, 2 folds): the
# defaults of `multimem score` moved to pretrained towers and 4 folds for real photos (issue 11), the demos
# did not (tests/test_cli_defaults.py checks that their configs are unchanged).
DEMO_PINNED = {"image_tower": "mm-tiny", "image_size": 32, "folds": 2}
DEMO_PROFILES = {
    "shapes": {"samples": 1500, "epochs": 40, "batch_size": 16, "weight_decay": 0.0, "frames": 4,
               **DEMO_PINNED, "text_tower": "mm-tiny"},
    # Every emoji is unique, so clean samples are memorized too and only what carries over between emoji
    # (motion, spoken words, the picture in its clip, a pretrained text tower's sense of names) separates
    # them from injected ones. Measured MultiMem AUROC on 1,000 samples with the frozen MiniLM text tower:
    # 60 epochs 0.75, 100 epochs 0.79 with the bare emoji as image, 0.85 with the clip's key frame as image
    # (it shows the motion too); lr 0.001 0.79, lr 0.004 0.71; 1,400 samples x 72 epochs 0.76 (README, "The demo").
    "emoji": {"samples": 1000, "epochs": 100, "batch_size": 16, "weight_decay": 0.0, "frames": 4,
              "audio_seconds": 2.0, **DEMO_PINNED, "text_tower": "minilm"},
}
DEMO_QUICK = {"samples": 400, "epochs": 8, "views": 4}
# the options a demo profile may set (None on the command line: the profile, else the score default)
PROFILE_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "image_size", "frames", "audio_seconds", "views",
                "text_tower", "image_tower", "folds")


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="emoji", help="built-in dataset: emoji (real pictures, names, speech) or shapes")
    p.add_argument("--out", default="runs/demo", help="run directory (the dataset is built in OUT/data)")
    p.add_argument("--samples", type=int, default=None, help="number of samples (default: the whole dataset)")
    p.add_argument("--inject-rate", type=float, default=0.1, help="share of samples given an injected misalignment")
    p.add_argument("--quick", action="store_true", help="a small, fast version (a few hundred samples, few epochs)")
    add_model_options(p)
    # None = "the dataset's demo profile decides" (see DEMO_PROFILES)
    p.set_defaults(**{k: None for k in PROFILE_KEYS})


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
    print(f"\nopen the dashboard:  multimem app {run.path}")
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
