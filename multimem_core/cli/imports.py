"""`multimem import-embeddings` and `import-scores` (multimem_core.importing)."""

from __future__ import annotations

import argparse

from multimem_core.config import CLIP_TEMPERATURE

from .common import CLIError, add_key_options, app_command, column_keys
from .score import print_summary


def add_import_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True,
                   help="the samples' manifest (or WebDataset shards folder): ids, media for the dashboard")
    p.add_argument("--out", required=True, help="run directory to write (written whole at the end, or not at all)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds something")
    add_key_options(p)


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
    g.add_argument("--temperature", type=float, default=CLIP_TEMPERATURE,
                   help=f"temperature of the loss baseline (logit scale 1/T); CLIP starts at {CLIP_TEMPERATURE}")
    g.add_argument("--no-loss", action="store_true", help="leave the loss baseline out (its temperature is unknown)")
    g.add_argument("--no-projection", action="store_true", help="skip the UMAP map")
    g.add_argument("--seed", type=int, default=0, help="seed of the UMAP projection")


def cmd_import_embeddings(args) -> int:
    from multimem_core.importing.embeddings import EmbeddingImport, import_embeddings

    cfg = EmbeddingImport(
        manifest=args.manifest, out=args.out, in_model=args.in_model, out_model=args.out_model,
        crossfit=args.crossfit, heldout=args.heldout, roles=args.roles,
        modalities=[m.strip() for m in args.modalities.split(",")] if args.modalities else None,
        keys=column_keys(args), vector_column=args.vector_column,
        temperature=None if args.no_loss else args.temperature, projection=not args.no_projection,
        seed=args.seed, overwrite=args.overwrite)
    return run_import(import_embeddings, cfg)


def run_import(importer, cfg) -> int:
    """Both importers: a clear one-line error for bad input, else the run's summary and how to open it."""
    from multimem_core.data.manifest import ManifestError
    from multimem_core.importing.embedding_files import ImportValidationError

    try:
        run = importer(cfg)
    except (ImportValidationError, ManifestError, FileNotFoundError) as e:
        raise CLIError(str(e))
    print_summary(run)
    print(f"\nopen it:  {app_command(run)}")
    return 0


def add_import_scores(p: argparse.ArgumentParser) -> None:
    add_import_common(p)
    p.add_argument("--scores", required=True, help="CSV, TSV, JSONL or Parquet with `id` and score columns")
    p.add_argument("--multimem-column", help="the column that is MultiMem (default: `multimem`, or the only "
                                             "numeric column); other columns show as base__<name>")


def cmd_import_scores(args) -> int:
    from multimem_core.importing.scores import ScoresImport, import_scores

    cfg = ScoresImport(manifest=args.manifest, scores=args.scores, out=args.out,
                       multimem_column=args.multimem_column, keys=column_keys(args), overwrite=args.overwrite)
    return run_import(import_scores, cfg)


COMMANDS = [
    ("import-embeddings", "score embeddings computed elsewhere (paper or crossfit layout) into a full run directory",
     add_import_embeddings, cmd_import_embeddings),
    ("import-scores", "turn a table of per-sample scores into a run the dashboard opens", add_import_scores,
     cmd_import_scores),
]
