"""`multimem import-embeddings`: embeddings computed elsewhere -> a run scored as `multimem score` scores."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ColumnKeys
from ..inputs import dataset_info, manifest_config, read_input, samples_table
from ..run import RunDir
from ..config import CLIP_TEMPERATURE
from .embedding_files import ImportValidationError, check_vectors, shown_ids, read_model
from .layout import StagingDir, build_assignment, check_same_ids, natural_order, read_ids, read_roles


@dataclass
class EmbeddingImport:
    """Options of `multimem import-embeddings` (one of the two layouts)."""

    manifest: str                        # manifest file or shards folder: the media the dashboard shows
    out: str
    in_model: str | None = None          # paper layout
    out_model: str | None = None
    crossfit: str | None = None          # crossfit layout: one subfolder per model
    heldout: str | None = None           # ids of H: text (one a line) or a table with `id`
    roles: str | None = None             # table with id, role
    modalities: list[str] | None = None  # default: every modality the models share
    keys: ColumnKeys = field(default_factory=ColumnKeys)
    vector_column: str | None = None     # Parquet input: the column holding the vectors
    temperature: float | None = CLIP_TEMPERATURE  # loss baseline at logit scale 1/T; None leaves it out
    projection: bool = True
    seed: int = 0
    chunk_size: int = 4096
    overwrite: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keys"] = asdict(self.keys)
        return d


def import_embeddings(cfg: EmbeddingImport, *, progress: bool = False) -> RunDir:
    """Embeddings computed elsewhere -> a complete run directory, scored like `multimem score` scores."""
    from ..metric import streamed_cmc_terms
    from ..stages import Stages
    from ..score import package_versions, write_scored

    t0 = time.perf_counter()
    paper = cfg.in_model is not None or cfg.out_model is not None
    if paper == (cfg.crossfit is not None) or (paper and (cfg.in_model is None or cfg.out_model is None)):
        raise ImportValidationError("give either --in-model DIR --out-model DIR (paper layout) or --crossfit DIR "
                                    "(one folder per fold model), not both and not neither.")
    if paper:
        folders = {"f": Path(cfg.in_model).expanduser(), "g": Path(cfg.out_model).expanduser()}
        layout = "paper"
    else:
        root = Path(cfg.crossfit).expanduser()
        if not root.is_dir():
            raise ImportValidationError(f"{root}: not a folder. --crossfit takes a folder with one subfolder per "
                                        "fold model.")
        subs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: natural_order(p.name))
        folders = {p.name: p for p in subs}
        layout = "crossfit"
        if len(folders) < 2:
            raise ImportValidationError(f"{root}: {len(folders)} model folder(s) ({', '.join(folders) or 'none'}); "
                                        "crossfit needs two or more, one per fold.")
        if cfg.roles is None:
            raise ImportValidationError("the crossfit layout needs --roles FILE: per id, the name of the model folder "
                                        "that did not train on it (or H). A run's samples.parquet is such a file.")
    models = {name: read_model(folder, name=name, modalities=cfg.modalities, vector_column=cfg.vector_column)
              for name, folder in folders.items()}
    mods_of = {name: m.modalities for name, m in models.items()}
    if len({tuple(v) for v in mods_of.values()}) > 1:
        listed = "; ".join(f"{models[n].folder}: {', '.join(v)}" for n, v in mods_of.items())
        raise ImportValidationError(f"the models have embeddings of different modalities ({listed}). Give the same "
                                    "modalities for every model, or choose the shared ones with --modalities.")
    modalities = next(iter(mods_of.values()))
    check_same_ids(models)
    for m in models.values():
        check_vectors(m, chunk=cfg.chunk_size)

    source = read_input(cfg.manifest, keys=cfg.keys)
    manifest_ids = source.table["id"].astype(str).tolist()
    embedded = set(next(iter(models.values())).ids)
    stray = [i for i in next(iter(models.values())).ids if i not in set(manifest_ids)]
    if stray:
        raise ImportValidationError(f"{source.path}: {len(stray)} embedded ids are not in the manifest "
                                    f"({shown_ids(stray)}). Embed the manifest's samples, with its ids.")
    keep = [i for i, sid in enumerate(manifest_ids) if sid in embedded]
    ids = [manifest_ids[i] for i in keep]
    rows = source.table["row"].to_numpy()[keep]
    for m in models.values():
        m.align(ids)

    roles = read_roles(cfg.roles) if cfg.roles else None
    heldout = read_ids(cfg.heldout) if cfg.heldout else []
    assignment = build_assignment(ids, list(models), layout=layout, roles=roles, heldout=heldout,
                                  roles_path=str(cfg.roles or "--roles"), heldout_path=str(cfg.heldout or "--heldout"))
    if cfg.temperature is not None and not cfg.temperature > 0:
        raise ImportValidationError(f"--temperature {cfg.temperature}: must be positive (CLIP's is {CLIP_TEMPERATURE}); leave "
                                    "the loss baseline out with --no-loss instead.")
    logit_scales = ({name: 1.0 / cfg.temperature for name in models} if cfg.temperature is not None else None)
    n = len(ids)
    unembedded = [i for i in range(len(manifest_ids)) if manifest_ids[i] not in embedded]
    errors = pd.DataFrame({"id": [manifest_ids[i] for i in unembedded],
                           "row": source.table["row"].to_numpy()[unembedded].astype(int),
                           "modality": "", "path": str(next(iter(folders.values()))),
                           "reason": "no embeddings"}, columns=["id", "row", "modality", "path", "reason"])

    staging = StagingDir(cfg.out, overwrite=cfg.overwrite, command="multimem import-embeddings",
                         inputs=[cfg.manifest, cfg.in_model, cfg.out_model, cfg.crossfit, cfg.heldout, cfg.roles])
    with staging as run:
        stages = Stages(run, True)
        base = {**cfg.to_dict(), "out": str(staging.out), "source": "import-embeddings", "modalities": modalities,
                "protocol": {"name": layout, **({"folds": len(models)} if layout == "crossfit" else {})},
                "views": max(m.n_views for m in models.values()), "status": "running",
                "versions": package_versions(), **manifest_config(source), "dataset": dataset_info(source),
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "baselines": {"base__cosine": "mean pairwise cosine under the models that saw the sample",
                              "base__loss": (f"per-sample contrastive loss at temperature {cfg.temperature} "
                                             "(logit scale 1/T), negatives from H") if logit_scales else
                              "left out: no temperature given (--temperature T to include it)"}}
        run.write_config(base)
        run.write_errors(errors)
        run.write_samples(samples_table(source, ids=ids, rows=rows, roles=assignment.roles))
        terms, clean = {}, {}
        with stages("embed"):
            for name, model in models.items():
                folder = run.embeddings_dir / name
                folder.mkdir(parents=True, exist_ok=True)
                clean[name] = {m: np.lib.format.open_memmap(folder / f"{m}.npy", mode="w+", dtype=np.float16,
                                                            shape=(n, model.dim)) for m in modalities}
                chunks = -(-n // cfg.chunk_size)

                def on_chunk(idx, _views, heldout_pass, name=name, model=model):
                    if heldout_pass:
                        return
                    for m in modalities:
                        clean[name][m][idx] = model.clean(idx, m).astype(np.float16)
                    stages.report(stage="embed", model=name, chunk=int(idx[0]) // cfg.chunk_size + 1, chunks=chunks)

                def views_of(idx, key, model=model):  # the H pass (key < 0) reads the saved H-pass views
                    return model.views(idx, modalities, heldout_pass=key < 0)

                terms[name] = streamed_cmc_terms(views_of, n=n, heldout=assignment.reference(name),
                                                 chunk=cfg.chunk_size, on_chunk=on_chunk)
                for arr in clean[name].values():
                    arr.flush()
                (folder / "ids.txt").write_text("\n".join(ids) + "\n")
        scores = write_scored(run, stages, ids=ids, assignment=assignment, terms=terms, clean=clean,
                              modalities=modalities, logit_scales=logit_scales,
                              projection_model=next(iter(models)) if cfg.projection else None, seed=cfg.seed)
        run.write_config({
            **base, "status": "complete", "n_samples": n, "n_scored": int(len(scores)),
            "confidence": scores.attrs["confidence"],
            "n_skipped": int(len(errors)), "seconds": round(time.perf_counter() - t0, 2),
            "models": {name: {"source": str(model.folder.resolve()), "views": model.n_views, "dim": model.dim,
                              "trained_on": sorted(set(assignment.roles[assignment.train_sets[name]])),
                              "n_train": int(len(assignment.train_sets[name]))} for name, model in models.items()}})
        run.write_progress(stage="done")
    return RunDir(staging.out)
