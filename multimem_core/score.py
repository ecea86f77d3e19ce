"""`score_run`: a dataset in, a run directory of MultiMem scores out (the pipeline of `multimem score`).

    read input → decode once (cached) → assign roles (protocol) → train each model (resumable)
    → embed every sample under every model, A augmented views, in chunks → metric → baselines
    → write scores, diagnostics, embeddings, projection

Memory grows with the model and the chunk, not the dataset: decoded media are memory-mapped, embeddings
stream to .npy memmaps, and per sample only two n×n matrices per model are kept (metric.CMCTerms).
"""

from __future__ import annotations

import platform
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__, diagnose
from .config import AugmentConfig, ScoreConfig, SelfCheckConfig
from .confidence import heldout_confidence
from .inputs import (dataset_info, decode, feature_keys, features_cached, manifest_config, prepare_cached, read_input,
                     samples_table, select)
from .metric import CMCTerms, streamed_cmc_terms
from .models.factory import create_model
from .parallel_training import for_each_model, train_protocol
from .names import HELDOUT
from .planting import PlantPlan, plan_planted, plan_virtual, with_planted
from .protocol import Assignment, assign, sampled_reference, training_assignment
from .score_table import score_table
from .atomic import allocated_memmap, atomic_save_npy, atomic_write_parquet
from .run import RunDir, describe_skipped, stored_paths
from .stages import Stages
from .runlock import RunLock
from .selfcheck import (CANDIDATES, RANKING_COLUMN, VIRTUAL_CANDIDATES, VIRTUAL_FILE, mean_rank, oriented,
                        run_selfcheck)
from .targeted import embed_views, view_generator
from .virtual import SourceViews, virtual_cmc, virtual_table
from .distributed import dist_info, init_distributed
from .train import finished_key, resolve_device


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "multimem": __version__}
    for name in ("torch", "torchvision", "open-clip-torch", "numpy", "pandas", "umap-learn", "faiss-cpu"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


@torch.no_grad()
def embed_terms(model, data: dict[str, torch.Tensor], *, heldout: np.ndarray, n: int, views: int,
                aug: AugmentConfig, seed: int, chunk: int, device, clean_out: dict[str, np.ndarray] | None,
                progress: bool, desc: str, views_out: dict[str, np.ndarray] | None = None,
                heldout_views_out: dict[str, np.ndarray] | None = None,
                report: Callable[..., None] | None = None, name: str = "", kept: int | None = None,
                watch: Callable[[np.ndarray, torch.Tensor, bool], None] | None = None) -> CMCTerms:
    """CMC terms of all n samples under one model; also fills `clean_out` (modality -> [kept, d]) if given.
    `kept` (default n): only the first `kept` rows go to clean_out and views_out (the rows after them are
    planted rows, scored and then set apart).

    The embedding (A augmented views of each chunk, seeded by `seed` and the chunk) lives here; the
    terms and the held-out rule are metric.streamed_cmc_terms.
    `views_out` (modality -> [A, n, d]) receives the views of every sample, `heldout_views_out` (modality ->
    [A, len(heldout), d], in `heldout` order) those of the H pass, the ones H's mean is made of: together
    they reproduce the terms exactly (`multimem import-embeddings`). `watch(idx, views, reference_pass)` sees
    every chunk's views too (virtual.SourceViews keeps those of the virtual swaps' source rows).
    """
    model.eval()
    mods = model.modalities

    def views_of(idx: np.ndarray, key: int) -> torch.Tensor:  # [A, B, n, d]
        return embed_views(model, select(data, idx), base=aug, views=views, gen=view_generator(seed, key))

    h_pos = np.full(n, -1)
    h_pos[heldout] = np.arange(len(heldout))
    kept = n if kept is None else kept
    chunks = -(-n // chunk)
    bar = tqdm(total=chunks, desc=desc, unit="chunk", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()

    def on_chunk(idx: np.ndarray, v: torch.Tensor, heldout_pass: bool) -> None:
        if watch is not None:
            watch(idx, v, heldout_pass)
        if heldout_pass:
            if heldout_views_out is not None:
                for j, m in enumerate(mods):
                    heldout_views_out[m][:, h_pos[idx]] = v[:, :, j].numpy()
            return
        keep = idx < kept
        if views_out is not None and keep.any():
            for j, m in enumerate(mods):
                views_out[m][:, idx[keep]] = v[:, keep, j].numpy()
        bar.update(1)
        if report is not None:
            done = int(idx[-1]) + 1
            rate = done / max(1e-9, time.perf_counter() - t0)
            report(stage="embed", model=name, chunk=-(-done // chunk), chunks=chunks, samples_per_s=round(rate, 1),
                   eta_s=round((n - done) / max(rate, 1e-9), 1))
        if clean_out is not None and keep.any():
            emb = model({m: x.to(device) for m, x in select(data, idx[keep]).items()})
            for m in mods:
                clean_out[m][idx[keep]] = emb[m].cpu().numpy().astype(np.float16)

    try:
        return streamed_cmc_terms(views_of, n=n, heldout=heldout, chunk=chunk, on_chunk=on_chunk)
    finally:
        bar.close()


def resolve_media(cfg: ScoreConfig) -> ScoreConfig:
    """The config with the image decode size filled in: None means the image tower's own (160 px for the
    frozen EfficientNet-Lite towers, 32 px for mm-tiny)."""
    from .models.frozen_image import native_image_size

    if cfg.media.image_size is not None:
        return cfg
    return replace(cfg, media=replace(cfg.media, image_size=native_image_size(cfg.model.image_tower)))


def score_run(cfg: ScoreConfig) -> RunDir:
    """Score `cfg.input` into the run directory `cfg.out`, holding its lock (one writer per run).

    A run that stops with an error is marked failed (config.json status, progress.json stage) before
    the error goes on; a killed one keeps status "running" without a lock holder. Either way only a
    run whose status is "complete" counts as complete (RunDir.is_complete)."""
    from .outputs import OutputError, check_output

    # never into the dataset it reads, over a file or into a folder of something else than a run
    check_output(cfg.out, inputs=[cfg.input], writes="run")
    cfg = resolve_media(cfg)
    distributed = init_distributed()
    rank, _ = dist_info()
    run = RunDir(cfg.out)
    if rank != 0:  # in torchrun, the lead rank holds the lock for all of them
        return _score_run(cfg, run, distributed)
    with RunLock(run.path, "multimem score"):
        try:
            return _score_run(cfg, run, distributed)
        except OutputError:  # refused before writing: the run in --out stays as it was
            raise
        except BaseException as e:
            run.mark_failed(e)
            raise


def _score_run(cfg: ScoreConfig, run: RunDir, distributed: bool) -> RunDir:
    from .outputs import check_resumable

    rank, world = dist_info()
    lead = rank == 0
    t_read = time.perf_counter()
    source = read_input(cfg.input, keys=cfg.keys, modalities=cfg.modalities)
    modalities = list(cfg.modalities or source.modalities)
    # before this command writes into --out: a run there is resumed only by the command that made it
    check_resumable(run.path, replace(cfg, modalities=modalities), source.sha256)
    run.path.mkdir(parents=True, exist_ok=True)
    stages = Stages(run, lead)
    stages.record("read", time.perf_counter() - t_read)
    device = resolve_device(cfg.device)
    progress = cfg.progress and lead
    base_config = {
        **cfg.to_dict(), "modalities": modalities, "status": "running", "versions": package_versions(),
        **manifest_config(source), "dataset": dataset_info(source), "world_size": world, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    # absolute, and relative to the run: the dashboard and `mitigate` may start anywhere (RunDir.stored_path)
    paths = stored_paths(run.path, input=cfg.input, dataset_root=source.root, manifest=source.path)
    base_config.update(input=paths["input"], dataset_root=paths["dataset_root"], paths_from_run=paths["paths_from_run"])
    if lead:
        run.write_config(base_config)

    with stages("decode") as stage:
        if lead:
            decoded = decode(source, modalities, cfg.media, run.cache_dir, progress=progress)
        if distributed:
            torch.distributed.barrier()
        if not lead:
            decoded = decode(source, modalities, cfg.media, run.cache_dir, progress=False)
        stage.reused = decoded.cache_hit
    n = len(decoded.ids)
    if lead:
        run.write_errors(decoded.errors)
        if len(decoded.errors):
            tqdm.write(describe_skipped(decoded.errors, total=n + decoded.errors["id"].nunique(),
                                        where=run.errors_path))

    try:
        assignment = assign(n, cfg.protocol)
    except ValueError as e:  # too few samples left: say which input, and what was skipped
        skipped = f"; {decoded.errors['id'].nunique()} were skipped (see {run.errors_path})" if len(decoded.errors) else ""
        raise ValueError(f"{source.path}: {e}{skipped}") from e
    if lead:
        run.write_samples(samples_table(source, ids=decoded.ids, rows=decoded.rows, roles=assignment.roles))
    crossfit_roles = assignment.roles if assignment.name == "crossfit" else assignment.roles[:0]
    plan = plan_planted(crossfit_roles, modalities, cfg.selfcheck)
    virtual = plan_virtual(crossfit_roles, modalities, cfg.selfcheck) if len(plan) else plan
    training = training_assignment(assignment, plan)

    model_cfg = cfg.model_config(modalities)
    with stages("prepare") as stage:
        torch.manual_seed(cfg.train.seed)
        proto = create_model(model_cfg)
        keys = feature_keys(proto, decoded.arrays)
        stage.reused = features_cached(run.cache_dir, keys)
        data = prepare_cached(proto, decoded.arrays, run.cache_dir, keys=keys)  # once, shared by every model
        decoded.arrays.clear()  # a frozen tower's pixels are not needed again: unmap them
        data = with_planted(data, plan)
    with stages("train") as stage:
        done = {name: finished_key(run.models_dir / name) for name in training.all_train_sets}
        models = train_protocol(cfg, model_cfg, data, training, run, stages, device=device, progress=progress,
                                distributed=distributed, planted=plan, feature_keys=keys)
        # every model's final weights were there before this command: it trained none
        stage.reused = bool(models) and all(done[k] == stats["key"] for k, (_, stats) in models.items())
    if not lead:
        return run

    with stages("embed"):
        terms, clean = {}, {}
        # virtual swaps are formed in split 0's folds: its models score them
        sources = {name: SourceViews.of(virtual, name) for name in assignment.train_sets} if len(virtual) else {}

        def embed_model(name: str) -> None:
            model = models[name][0]
            folder = run.embeddings_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            clean[name] = {m: allocated_memmap(folder / f"{m}.npy", np.float16, (n, model.embed_dim))
                           for m in modalities}
            views = ({m: allocated_memmap(folder / f"{m}.views.npy", np.float32, (cfg.views, n, model.embed_dim))
                      for m in modalities} if cfg.save_views else None)
            h = assignment.reference(name)
            h_views = ({m: allocated_memmap(folder / f"{m}.heldout.views.npy", np.float32,
                                            (cfg.views, len(h), model.embed_dim))
                        for m in modalities} if cfg.save_views else None)
            # planted rows (after the n real ones) are embedded in the same pass; only real rows are kept on disk
            terms[name] = embed_terms(model, data, heldout=h, n=n + len(plan), views=cfg.views,
                                      aug=cfg.train.augment, seed=assignment.seed_of(name, cfg.train.seed),
                                      chunk=cfg.chunk_size,
                                      device=device, clean_out=clean[name], progress=progress,
                                      desc=f"embed {name} ×{cfg.views} views", views_out=views,
                                      heldout_views_out=h_views, report=stages.report, name=name, kept=n,
                                      watch=sources.get(name))
            for arr in [*clean[name].values(), *(views or {}).values(), *(h_views or {}).values()]:
                arr.flush()
            (folder / "ids.txt").write_text("\n".join(decoded.ids) + "\n")
            if cfg.save_views:
                (folder / "heldout.ids.txt").write_text("\n".join(decoded.ids[i] for i in h) + "\n")

        for_each_model(embed_model, list(models), device)
        terms, clean = {k: terms[k] for k in models}, {k: clean[k] for k in models}  # the protocol's order

    logit_scales = {name: float(model.logit_scale.detach().exp().clamp(max=100)) for name, (model, _) in models.items()}
    scores = write_scored(run, stages, ids=decoded.ids, assignment=assignment, terms=terms, clean=clean,
                          modalities=modalities, logit_scales=logit_scales,
                          projection_model=next(iter(models)) if cfg.projection else None,
                          seed=cfg.train.seed, projection_per_modality=cfg.projection_per_modality,
                          plan=plan, selfcheck=cfg.selfcheck,
                          virtual=(virtual, virtual_cmc(virtual, modalities, sources)) if sources else None)

    final = {**base_config, "status": "complete", "n_samples": n, "n_scored": int(len(scores)),
             "confidence": scores.attrs["confidence"], "selfcheck": scores.attrs.get("selfcheck", {}),
             "ranking": scores.attrs.get("selfcheck", {}).get("ranking", "multimem"),
             "n_skipped": int(decoded.errors["id"].nunique()) if len(decoded.errors) else 0,
             "models": {name: {"trained_on": sorted(set(assignment.roles[idx])), "n_train": int(len(idx)),
                               **{k: v for k, v in models[name][1].items() if k != "key"}}
                        for name, idx in assignment.train_sets.items()},
             # a small set's crossfit splits (split 0's models above; the others' in models/ as r<r>-fold<k>)
             "splits": len(assignment.splits)}
    run.write_config(final)
    run.write_progress(stage="done")
    return run


def write_scored(run: RunDir, stages: Stages, *, ids: list[str], assignment: Assignment,
                 terms: dict[str, CMCTerms], clean: dict[str, dict[str, np.ndarray]], modalities: list[str],
                 logit_scales: dict[str, float] | None, projection_model: str | None, seed: int = 0,
                 projection_per_modality: bool = False, plan: PlantPlan | None = None,
                 selfcheck: SelfCheckConfig = SelfCheckConfig(),
                 virtual: tuple[PlantPlan, np.ndarray] | None = None) -> pd.DataFrame:
    """The scoring and writing step every path shares (our own runs and `import-embeddings`).

    From each model's CMC terms and clean embeddings (rows in `ids` order, then the planted rows of `plan`
    if any): scores.parquet with the baselines and the mean-rank column, diagnostics/sim_in.npy and
    sim_out.npy, projection.parquet from `projection_model`'s embeddings (None: no projection), and with
    planted rows the self-check (selfcheck.parquet; its figures in attrs["selfcheck"]), with `virtual` (the
    virtual swaps' plan and their cmc_out) for the rankings of the out-model alone. `logit_scales`
    (model -> exp of the learned temperature) feed the loss baseline; None leaves that column out. Returns
    the scores table, with the confidence figure (confidence.heldout_confidence) in attrs["confidence"].
    """
    with stages("score"):
        scores, sim_in, sim_out = score_table(ids, assignment, terms, clean, modalities, logit_scales=logit_scales,
                                              heldout_rows=True)
        scores[RANKING_COLUMN] = mean_rank(scores, scores)
        references = {name: sampled_reference(assignment.reference(name)) for name in terms}
        scores.attrs["confidence"] = heldout_confidence(clean, references, modalities=modalities)
        if plan is not None and len(plan):
            # planted rows train in split 0 only: its models score them
            first = {name: terms[name] for name in assignment.train_sets}
            scores.attrs["selfcheck"] = _selfcheck(run, ids, scores, first, plan, modalities, selfcheck, virtual)
        elif plan is not None:
            scores.attrs["selfcheck"] = {"skipped": plan.skipped}
        run.write_scores(scores)
        scores = scores[scores["role"] != HELDOUT]
        atomic_save_npy(run.diagnostics_dir / "sim_in.npy", sim_in)
        atomic_save_npy(run.diagnostics_dir / "sim_out.npy", sim_out)
        diagnose.write_reasons(run)  # the one-line reason every card and table row shows
    if projection_model is not None:
        with stages("projection"):
            run.write_projection(projection_table(ids, clean[projection_model], modalities, seed=seed,
                                                  per_modality=projection_per_modality))
    return scores


def _selfcheck(run: RunDir, ids: list[str], scores: pd.DataFrame, terms: dict[str, CMCTerms], plan: PlantPlan,
               modalities: list[str], cfg: SelfCheckConfig, virtual: tuple[PlantPlan, np.ndarray] | None) -> dict:
    """Score the planted rows (terms rows n ..), write them to selfcheck.parquet and the virtual swaps to
    selfcheck_virtual.parquet, measure every candidate (on the virtual swaps where they stand in)."""
    from .protocol import assignment_from_roles

    n = len(ids)
    planted_ids = [f"planted-{k}" for k in range(len(plan))]
    pa = assignment_from_roles(plan.roles, "crossfit", models=list(terms))
    pterms = {k: CMCTerms(t.gram[n:], t.cross[n:]) for k, t in terms.items()}
    table, _, _ = score_table(planted_ids, pa, pterms, None, modalities, logit_scales=None)
    table[RANKING_COLUMN] = mean_rank(table, scores)
    table.insert(2, "kind", plan.kinds)
    table.insert(3, "donor", [ids[i] for i in plan.donors])
    table.insert(4, "partner", [ids[i] for i in plan.partners])
    atomic_write_parquet(run.path / "selfcheck.parquet", table)
    real = scores[np.isfinite(scores["multimem"].to_numpy(dtype=np.float64))]
    paired = {c: oriented(table, c) for c in CANDIDATES}  # every candidate on the same trained planted rows
    planted = dict(paired)
    if virtual is not None and len(virtual[0]):
        vtable = virtual_table(virtual[0], ids, virtual[1])
        atomic_write_parquet(run.path / VIRTUAL_FILE, vtable)
        planted.update({c: oriented(vtable, c) for c in VIRTUAL_CANDIDATES})
    figures = run_selfcheck(planted, {c: oriented(real, c) for c in CANDIDATES}, bootstrap=cfg.bootstrap,
                            seed=cfg.seed, paired=paired)
    figures["kinds"] = sorted(set(plan.kinds.tolist()))
    return figures


def projection_table(ids, clean: dict[str, np.ndarray], modalities, *, seed: int = 0,
                     per_modality: bool = False) -> pd.DataFrame:
    """UMAP of the joint embedding (normalised sum over modalities) of one model: id, x, y (+ x__m, y__m)."""
    from .diagnose import umap_projection

    joint = sum(np.asarray(clean[m], dtype=np.float32) for m in modalities)
    joint /= np.linalg.norm(joint, axis=1, keepdims=True) + 1e-8
    xy = umap_projection(joint, seed=seed)
    out = pd.DataFrame({"id": ids, "x": xy[:, 0], "y": xy[:, 1]})
    if per_modality:
        for m in modalities:
            xy_m = umap_projection(np.asarray(clean[m], dtype=np.float32), seed=seed)
            out[f"x__{m}"], out[f"y__{m}"] = xy_m[:, 0], xy_m[:, 1]
    return out
