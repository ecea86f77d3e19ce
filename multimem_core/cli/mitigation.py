"""`multimem evaluate` and `mitigate` (multimem_core.evaluate, multimem_core.mitigation)."""

from __future__ import annotations

import argparse

from multimem_core.config import DEVICES

from .common import CLIError, existing_path


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="run directory (its saved models and dataset)")
    p.add_argument("--prompt", default="a {label}", help="zero-shot text prompt; {label} becomes each class name")
    p.add_argument("--device", default="auto", choices=DEVICES, help="cpu, cuda, or auto")
    p.add_argument("--json", action="store_true", help="print the JSON written to RUN/evaluation.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_evaluate(args) -> int:
    import json

    from multimem_core.evaluate import EVALUATION_FILE, EvalConfig, evaluate_run, format_evaluation
    from multimem_core.label_noise import compare, format_comparison
    from multimem_core.atomic import atomic_write_json
    from multimem_core.run import RunDir, RunDirError
    from multimem_core.runlock import RunLock

    run = RunDir(args.run)
    with RunLock(run.path, "multimem evaluate"):  # one writer per run: not beside a score or mitigate of it
        try:
            result = evaluate_run(run, cfg=EvalConfig(prompt=args.prompt), device=args.device,
                                  progress=not args.quiet, write=False)
        except (RunDirError, ValueError) as e:
            raise CLIError(str(e))
        # where the dataset has labels: cleanlab's label issues on the frozen features beside MultiMem's top rows
        result["label_noise"] = compare(run)
        atomic_write_json(run.path / EVALUATION_FILE, result)
    print(json.dumps(result, indent=2) if args.json else "\n".join([
        "downstream evaluation on the rows each model never trained on", *format_evaluation(result),
        "label noise (cleanlab) beside MultiMem", *format_comparison(result["label_noise"])]))
    print(f"\nwrote {run.path / EVALUATION_FILE}")
    return 0


def add_mitigate(p: argparse.ArgumentParser) -> None:
    from multimem_core.mitigation.settings import MitigateConfig
    from multimem_core.options import add_options

    p.add_argument("run", type=existing_path, help="a complete run directory (models, scores, its dataset)")
    add_options(p, MitigateConfig)


def cmd_mitigate(args) -> int:
    from multimem_core.mitigation.settings import MitigateConfig, MitigationError
    from multimem_core.mitigation.results import format_metrics
    from multimem_core.mitigation import mitigate
    from multimem_core.options import option_fields
    from multimem_core.run import RunDir, RunDirError
    from multimem_core.targeted import SpecError

    given = vars(args)
    values = {o.path[0]: (not given[o.dest]) if o.option.negate else given[o.dest]
              for o in option_fields(MitigateConfig)}
    try:
        metrics = mitigate(RunDir(args.run), MitigateConfig(**values))
    except (MitigationError, SpecError, RunDirError) as e:
        raise CLIError(str(e))
    print(format_metrics(metrics))
    return 0


COMMANDS = [
    ("evaluate", "retrieval recall@1/5/10, linear probe and zero-shot of a run's models (RUN/evaluation.json)",
     add_evaluate, cmd_evaluate),
    ("mitigate", "lower memorization: remove and fine-tune, regroup in training, or study augmentations "
     "(RUN/mitigation/<name>/)", add_mitigate, cmd_mitigate),
]
