"""`multimem …`: the command line. Each subcommand is a small `add_<name>` (its options) and `cmd_<name>` (its work).

Heavy imports (torch, umap, streamlit) happen inside the commands so that `multimem --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CLIError(SystemExit):
    """A user-facing error: printed without a traceback, exit status 2."""

    def __init__(self, message: str):
        print(f"multimem: error: {message}", file=sys.stderr)
        super().__init__(2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimem",
        description="Measure, explain and mitigate memorization in multi-modal contrastive models (MultiMem).",
        epilog="Start with `multimem demo`, then open the dashboard with the command it prints.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add, run in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    return int(result or 0)


def existing_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


# --- subcommands: each is add_<name>(parser) for its options and cmd_<name>(args) for its work --------
# (each section below is owned by the module it calls into; keep imports inside cmd_* functions)


# `SUBCOMMANDS` lists them in the order `multimem --help` shows: (name, one-line help, add, cmd).
SUBCOMMANDS: list = []

# ---- score / demo / summary (multimem_core.score, multimem_core.summary) ----------------------------

# Defaults of `multimem score` (the demo starts from its dataset's profile instead, DEMO_PROFILES).
# MultiMem measures memorization, so the proxy models must be trained long enough to memorize: small
# batches (many steps per epoch) and no weight decay memorize within minutes on a CPU (README, "The demo").
SCORE_DEFAULTS = {"epochs": 30, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.0, "image_size": 32, "frames": 8,
                  "audio_seconds": 1.0, "augmentations": 8, "text_tower": None}


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--modalities", help="comma-separated subset of image,text,audio,video (default: all the input has)")
    for m in ("id", "text", "image", "audio", "video", "label"):
        g.add_argument(f"--{m}-key", default=m, help=f"manifest column holding the {m}"
                       + (" (e.g. filepath for an open_clip CSV)" if m == "image" else
                          " (e.g. title for an open_clip CSV)" if m == "text" else ""))
    g.add_argument("--image-size", type=int, default=SCORE_DEFAULTS["image_size"], help="pixels the images and video frames are decoded to")
    g.add_argument("--frames", type=int, default=SCORE_DEFAULTS["frames"], help="video frames sampled evenly per clip")
    g.add_argument("--audio-seconds", type=float, default=SCORE_DEFAULTS["audio_seconds"], help="audio clip length (cropped or zero-padded)")
    g = p.add_argument_group("protocol")
    g.add_argument("--protocol", choices=["crossfit", "paper"], default="crossfit",
                   help="crossfit: K folds, every training sample scored; paper: S_S/S_C/S_I/H of the paper")
    g.add_argument("--folds", type=int, default=2, help="K for crossfit: K models, each trained without one fold")
    g.add_argument("--heldout-frac", type=float, default=0.1, help="share of samples held out as H (never trained on)")
    g.add_argument("--augmentations", type=int, default=SCORE_DEFAULTS["augmentations"], help="random views per sample in the CMC expectation")
    g = p.add_argument_group("model and training")
    g.add_argument("--image-tower", default="mm-tiny",
                   help="open_clip architecture for image (and video frames): ours (mm-tiny, mm-small) or any open_clip name")
    g.add_argument("--text-tower", default=SCORE_DEFAULTS["text_tower"],
                   help="open_clip architecture, 'minilm' (frozen all-MiniLM-L6-v2 + trained projection) or a "
                        "local sentence-transformers path (default: same as --image-tower)")
    g.add_argument("--pretrained", default=None, help="local open_clip checkpoint for the image/text towers")
    g.add_argument("--embed-dim", type=int, default=None, help="shared embedding size (default: the architecture's)")
    g.add_argument("--epochs", type=int, default=SCORE_DEFAULTS["epochs"],
                   help="passes over each model's training set (more epochs memorize more)")
    g.add_argument("--batch-size", type=int, default=SCORE_DEFAULTS["batch_size"], help="samples per step (the InfoNCE negatives)")
    g.add_argument("--lr", type=float, default=SCORE_DEFAULTS["lr"], help="peak AdamW learning rate (warm-up, then cosine)")
    g.add_argument("--weight-decay", type=float, default=SCORE_DEFAULTS["weight_decay"], help="AdamW weight decay")
    g.add_argument("--seed", type=int, default=0, help="seeds the split, the weights, the shuffles and the views")
    g.add_argument("--hflip", action="store_true",
                   help="allow horizontal flips (only when captions never mention left or right)")
    g.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    g.add_argument("--no-projection", action="store_true", help="skip the UMAP map")
    g.add_argument("--save-views", action="store_true",
                   help="also keep the augmented views the metric used (embeddings/<model>/<modality>.views.npy, "
                        "float32): `multimem import-embeddings` on them reproduces the scores")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def score_config(args, input_path: str, out: str, *, dataset_hints: dict | None = None):
    from multimem_core.augment import AugmentConfig
    from multimem_core.data.manifest import ColumnKeys
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
        keys=ColumnKeys(**{m: getattr(args, f"{m}_key") for m in ("id", "text", "image", "audio", "video", "label")}),
        protocol=protocol,
        model=ModelConfig(image_tower=args.image_tower, text_tower=args.text_tower or args.image_tower,
                          pretrained=args.pretrained, embed_dim=args.embed_dim, image_size=args.image_size),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          weight_decay=args.weight_decay,
                          augment=AugmentConfig(hflip=hflip)),
        media=MediaSpec(image_size=args.image_size, video_frames=args.frames, audio_seconds=args.audio_seconds),
        augmentations=args.augmentations, projection=not args.no_projection, device=args.device,
        progress=not args.quiet, save_views=getattr(args, "save_views", False),
    )


def run_score(cfg) -> "RunDir":
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
DEMO_PROFILES = {
    "shapes": {"samples": 1500, "epochs": 40, "batch_size": 16, "weight_decay": 0.0, "frames": 4},
    # Every emoji is unique, so clean samples are memorized too and only what carries over between emoji
    # (motion, spoken words, the picture in its clip, a pretrained text tower's sense of names) separates
    # them from injected ones. Measured MultiMem AUROC on 1,000 samples with the frozen MiniLM text tower:
    # 60 epochs 0.75, 100 epochs 0.79 with the bare emoji as image, 0.85 with the clip's key frame as image
    # (it shows the motion too); lr 0.001 0.79, lr 0.004 0.71; 1,400 samples x 72 epochs 0.76 (README, "The demo").
    "emoji": {"samples": 1000, "epochs": 100, "batch_size": 16, "weight_decay": 0.0, "frames": 4,
              "audio_seconds": 2.0, "text_tower": "minilm"},
}
DEMO_QUICK = {"samples": 400, "epochs": 8, "augmentations": 4}
PROFILE_KEYS = tuple(SCORE_DEFAULTS)


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
    for key in PROFILE_KEYS:
        if getattr(args, key) is None:
            setattr(args, key, profile.get(key, SCORE_DEFAULTS[key]))


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


SUBCOMMANDS += [
    ("demo", "build a built-in dataset with injected misalignments, score it and print the summary", add_demo, cmd_demo),
    ("score", "train the models a protocol needs and write MultiMem scores into a run directory", add_score, cmd_score),
    ("summary", "counts, time per stage, mean scores by role and injected kind, AUROC of every score", add_summary,
     cmd_summary),
]

# ---- import-embeddings / import-scores (multimem_core.importers) --------------------------------------

def add_import_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True,
                   help="the samples' manifest (or WebDataset shards folder): ids, media for the dashboard")
    p.add_argument("--out", required=True, help="run directory to write (written whole at the end, or not at all)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds something")
    for m in ("id", "text", "image", "audio", "video", "label"):
        p.add_argument(f"--{m}-key", default=m, help=f"manifest column holding the {m}")


def _import_keys(args):
    from multimem_core.data.manifest import ColumnKeys

    return ColumnKeys(**{m: getattr(args, f"{m}_key") for m in ("id", "text", "image", "audio", "video", "label")})


def add_import_embeddings(p: argparse.ArgumentParser) -> None:
    add_import_common(p)
    g = p.add_argument_group("models (a folder per model: <modality>.npy [N,d] or [A,N,d] + ids.txt, or "
                             "<modality>.parquet with id and a vector column)")
    g.add_argument("--in-model", metavar="DIR", help="paper layout: the model that trained on the scored samples (f)")
    g.add_argument("--out-model", metavar="DIR", help="paper layout: the model that did not (g)")
    g.add_argument("--crossfit", metavar="DIR", help="crossfit layout: a folder with one subfolder per fold model")
    g.add_argument("--heldout", metavar="IDS", help="ids no model trained on (H): one a line, or a table with `id`")
    g.add_argument("--roles", metavar="FILE",
                   help="table with id and role: crossfit, the model folder that did not train on the sample (or H); "
                        "paper, S_S/S_C/S_I/H (default: every sample not held out is S_C). A run's samples.parquet works")
    g.add_argument("--modalities", help="comma-separated subset (default: every modality the model folders have)")
    g.add_argument("--vector-column", help="Parquet input: the column holding the vectors (default: the only list column)")
    g = p.add_argument_group("outputs")
    g.add_argument("--temperature", type=float, default=0.07,
                   help="temperature of the loss baseline (logit scale 1/T); CLIP starts at 0.07")
    g.add_argument("--no-loss", action="store_true", help="leave the loss baseline out (its temperature is unknown)")
    g.add_argument("--no-projection", action="store_true", help="skip the UMAP map")
    g.add_argument("--seed", type=int, default=0, help="seed of the UMAP projection")


def cmd_import_embeddings(args) -> int:
    from multimem_core.data.manifest import ManifestError
    from multimem_core.importers import EmbeddingImport, ImportValidationError, import_embeddings

    cfg = EmbeddingImport(
        manifest=args.manifest, out=args.out, in_model=args.in_model, out_model=args.out_model,
        crossfit=args.crossfit, heldout=args.heldout, roles=args.roles,
        modalities=[m.strip() for m in args.modalities.split(",")] if args.modalities else None,
        keys=_import_keys(args), vector_column=args.vector_column,
        temperature=None if args.no_loss else args.temperature, projection=not args.no_projection,
        seed=args.seed, overwrite=args.overwrite)
    try:
        run = import_embeddings(cfg)
    except (ImportValidationError, ManifestError, FileNotFoundError) as e:
        raise CLIError(str(e))
    print_summary(run)
    print(f"\nopen it:  multimem app {run.path}")
    return 0


def add_import_scores(p: argparse.ArgumentParser) -> None:
    add_import_common(p)
    p.add_argument("--scores", required=True, help="CSV, TSV, JSONL or Parquet with `id` and score columns")
    p.add_argument("--multimem-column", help="the column that is MultiMem (default: `multimem`, or the only "
                                             "numeric column); other columns show as base__<name>")


def cmd_import_scores(args) -> int:
    from multimem_core.data.manifest import ManifestError
    from multimem_core.importers import ImportValidationError, ScoresImport, import_scores

    cfg = ScoresImport(manifest=args.manifest, scores=args.scores, out=args.out,
                       multimem_column=args.multimem_column, keys=_import_keys(args), overwrite=args.overwrite)
    try:
        run = import_scores(cfg)
    except (ImportValidationError, ManifestError, FileNotFoundError) as e:
        raise CLIError(str(e))
    print_summary(run)
    print(f"\nopen it:  multimem app {run.path}")
    return 0


SUBCOMMANDS += [
    ("import-embeddings", "score embeddings computed elsewhere (paper or crossfit layout) into a full run directory",
     add_import_embeddings, cmd_import_embeddings),
    ("import-scores", "turn a table of per-sample scores into a run the dashboard opens", add_import_scores,
     cmd_import_scores),
]

# ---- app / export (app/, multimem_core.review) --------------------------------------------------------

def _free_port(host: str, preferred: int) -> int:
    import socket

    for port in [preferred] + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise CLIError(f"no free port on {host}")


def add_app(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="a run directory, or a folder of runs (the app offers a picker)")
    p.add_argument("--port", type=int, default=None,
                   help="port to serve on (the next free one if taken); default: Streamlit's own setting "
                        "($STREAMLIT_SERVER_PORT, else server.port in .streamlit/config.toml, else 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; the default keeps the dashboard on this machine (0.0.0.0 exposes it)")
    p.add_argument("--data-root", default=".",
                   help="the New-run page starts runs only on manifests or shards under this folder")


def app_port(given: int | None) -> int:
    """--port, else what Streamlit itself would use: $STREAMLIT_SERVER_PORT, then its config files, then 8501."""
    import os

    if given is not None:
        return given
    env = os.environ.get("STREAMLIT_SERVER_PORT", "").strip()
    if env:
        try:
            return int(env)
        except ValueError:
            raise CLIError(f"STREAMLIT_SERVER_PORT={env!r} is not a port number; unset it or use --port") from None
    from streamlit import config

    return int(config.get_option("server.port"))


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached `multimem app`: stop the server it started, then exit."""


def _die_with_parent() -> None:
    """In the Streamlit child (Linux): get SIGTERM when `multimem app` dies, even by SIGKILL."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not glibc: the signal handlers in cmd_app still cover SIGTERM and Ctrl-C
        pass


def cmd_app(args) -> int:
    import os
    import signal
    import subprocess

    from app import streamlit_command

    wanted = app_port(args.port)
    port = _free_port(args.host, wanted)
    if port != wanted:
        print(f"port {wanted} is taken; using {port}")
    run = Path(args.run).resolve()
    cmd = streamlit_command(run, host=args.host, port=port)
    # the address as bound: "localhost" may resolve to ::1 first, where nothing listens
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    print(f"MultiMem Studio for {run}\n  open http://{shown}:{port}  (Ctrl-C stops it)", flush=True)
    env = {**os.environ, "MULTIMEM_RUN": str(run), "MULTIMEM_DATA_ROOT": str(Path(args.data_root).resolve())}

    def stop(signum, frame):
        raise _Stopped(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    # its own process group, so that stopping it takes whatever Streamlit started too
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    try:
        return proc.wait()
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="run directory")
    p.add_argument("--out", required=True, help="file to write (a folder for --format shards)")
    p.add_argument("--drop", required=True, metavar="RULE",
                   help="flagged (flagged as noisy in the dashboard), top:N (the N most suspicious by --score), "
                        "above:T or below:T (score vs threshold)")
    p.add_argument("--score", default="multimem", help="score column for top/above/below (any column of scores.parquet)")
    p.add_argument("--format", default=None,
                   choices=["csv", "tsv", "jsonl", "parquet", "shards", "ids", "ids-csv", "npy"],
                   help="csv/tsv/jsonl/parquet: the cleaned manifest with the input's own columns; shards: the kept "
                        "samples as WebDataset .tar shards in the folder --out (the default for shard input); "
                        "ids: removed ids, "
                        "one a line; ids-csv: removed ids with their score; npy: sorted removed ids (DataComp style). "
                        "Default: from --out's suffix, else the input manifest's own format")
    p.add_argument("--absolute-paths", action="store_true",
                   help="write media paths absolute (default: relative to the folder of --out, so they open "
                        "from where the cleaned manifest is written)")


def cmd_export(args) -> int:
    from multimem_core.export import build_export, default_format, parse_drop_rule, write_export
    from multimem_core.review import ReviewError
    from multimem_core.run import RunDir, RunDirError

    run = RunDir(args.run)
    try:
        rule = parse_drop_rule(args.drop, score=args.score)
        export = build_export(run, rule, format=args.format or default_format(run, args.out))
        # shards: refuses a folder that already holds shards
        out = write_export(export, args.out, absolute_paths=args.absolute_paths)
    except (ReviewError, RunDirError) as e:
        raise CLIError(str(e))
    print(f"{export.summary()}: {rule.describe()}\nwrote {out}")
    return 0


SUBCOMMANDS += [
    ("app", "open the dashboard on a run (or a folder of runs), bound to 127.0.0.1", add_app, cmd_app),
    ("export", "write the cleaned manifest (input's own format and columns) or the removed ids", add_export,
     cmd_export),
]


# ---- evaluate / mitigate (multimem_core.evaluate, multimem_core.mitigate) ------------------------------

def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="run directory (its saved models and dataset)")
    p.add_argument("--prompt", default="a {label}", help="zero-shot text prompt; {label} becomes each class name")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.add_argument("--json", action="store_true", help="print the JSON written to RUN/evaluation.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_evaluate(args) -> int:
    import json

    from multimem_core.evaluate import EvalConfig, evaluate_run, format_evaluation
    from multimem_core.run import RunDir, RunDirError

    run = RunDir(args.run)
    try:
        result = evaluate_run(run, cfg=EvalConfig(prompt=args.prompt), device=args.device, progress=not args.quiet)
    except (RunDirError, ValueError) as e:
        raise CLIError(str(e))
    print(json.dumps(result, indent=2) if args.json else "\n".join(["downstream evaluation on H", *format_evaluation(result)]))
    print(f"\nwrote {run.path / 'evaluation.json'}")
    return 0


def add_mitigate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="a complete run directory (models, scores, its dataset)")
    p.add_argument("--strategy", required=True, choices=["remove", "regroup", "augment"],
                   help="remove: drop the top N and fine-tune; regroup: in-training re-scoring, the most memorized "
                        "in batches of their own with targeted augmentations; augment: the augmentation study")
    p.add_argument("--name", default=None, help="folder under RUN/mitigation/ (default: made from the settings; "
                   "removal points with the same fine-tuning accumulate in one folder)")
    g = p.add_argument_group("remove")
    g.add_argument("--top", type=int, default=100, help="remove this many samples")
    g.add_argument("--score", default="multimem", choices=["multimem", "base__cosine", "base__clipmem", "random"],
                   help="ranking that chooses what to remove")
    g.add_argument("--sweep", default=None, metavar="N,N,…",
                   help="several counts, e.g. 0,50,100,200: fine-tune for each count and every ranking")
    g.add_argument("--rankings", default=None, metavar="R,R,…",
                   help="with --sweep: the rankings to run (default: multimem, base__cosine, base__clipmem, random)")
    g.add_argument("--random-draws", type=int, default=1,
                   help="repeat the random ranking with this many seeds (its spread is the noise floor)")
    g.add_argument("--finetune-epochs", type=int, default=5)
    g.add_argument("--finetune-lr", type=float, default=None, help="default: a quarter of the run's learning rate")
    g = p.add_argument_group("regroup and augment")
    g.add_argument("--every", type=int, default=5, help="regroup: re-score every E epochs")
    g.add_argument("--top-frac", type=float, default=0.05, help="regroup: share of training samples regrouped")
    g.add_argument("--score-views", type=int, default=2, help="regroup: views per sample when re-scoring in training")
    g.add_argument("--augment", default="noise=0.1", metavar="SPEC",
                   help="targeted augmentations, name=strength comma-separated: noise (σ on representations), "
                        "caption, crop, jitter, audio_noise, audio_shift, frame_drop")
    g.add_argument("--modalities", default=None, metavar="SUBSET",
                   help="modalities the augmentations touch, e.g. image,text (default: all); "
                        "'all-subsets' runs the augmentation study over every non-empty subset")
    g.add_argument("--epochs", type=int, default=None, help="training epochs (default: the run's, so the run is the control)")
    g = p.add_argument_group("measuring")
    g.add_argument("--views", type=int, default=None, help="views per sample in the re-score (default: the run's)")
    g.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_mitigate(args) -> int:
    from multimem_core.mitigate import MitigateConfig, MitigationError, format_metrics, mitigate, parse_sweep
    from multimem_core.run import RunDir, RunDirError
    from multimem_core.targeted import SpecError

    mods = args.modalities
    try:
        cfg = MitigateConfig(
            strategy=args.strategy, name=args.name, top=args.top, score=args.score,
            sweep=parse_sweep(args.sweep) if args.sweep else None, random_draws=args.random_draws,
            rankings=tuple(r.strip() for r in args.rankings.split(",")) if args.rankings else None,
            finetune_epochs=args.finetune_epochs,
            finetune_lr=args.finetune_lr, every=args.every, top_frac=args.top_frac, score_views=args.score_views,
            augment=args.augment, all_subsets=mods == "all-subsets",
            modalities=tuple(m.strip() for m in mods.split(",")) if mods and mods != "all-subsets" else None,
            epochs=args.epochs, views=args.views, device=args.device, progress=not args.quiet)
        metrics = mitigate(RunDir(args.run), cfg)
    except (MitigationError, SpecError, RunDirError) as e:
        raise CLIError(str(e))
    print(format_metrics(metrics))
    return 0


SUBCOMMANDS += [
    ("evaluate", "retrieval recall@1/5/10 on H, linear probe and zero-shot of a run's models (RUN/evaluation.json)",
     add_evaluate, cmd_evaluate),
    ("mitigate", "lower memorization: remove and fine-tune, regroup in training, or study augmentations "
     "(RUN/mitigation/<name>/)", add_mitigate, cmd_mitigate),
]

if __name__ == "__main__":
    sys.exit(main())
