"""`multimem evaluate` and `mitigate` (multimem_core.evaluate, multimem_core.mitigation)."""

from __future__ import annotations

import argparse

from .common import CLIError, existing_path


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
    from multimem_core.mitigation.settings import MitigateConfig, MitigationError, parse_sweep
    from multimem_core.mitigation.results import format_metrics
    from multimem_core.mitigation import mitigate
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


COMMANDS = [
    ("evaluate", "retrieval recall@1/5/10 on H, linear probe and zero-shot of a run's models (RUN/evaluation.json)",
     add_evaluate, cmd_evaluate),
    ("mitigate", "lower memorization: remove and fine-tune, regroup in training, or study augmentations "
     "(RUN/mitigation/<name>/)", add_mitigate, cmd_mitigate),
]
