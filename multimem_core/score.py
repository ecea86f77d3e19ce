"""`score_run`: a dataset in, a run directory of MultiMem scores out (the pipeline of `multimem score`).

    read input → decode once (cached) → assign roles (protocol) → train each model (resumable)
    → embed every sample under every model, A augmented views, in chunks → metric → baselines
    → write scores, diagnostics, embeddings, projection

Memory grows with the model and the chunk, not the dataset: decoded media are memory-mapped, embeddings
stream to .npy memmaps, and per sample only two n×n matrices per model are kept (metric.CMCTerms).
"""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__, diagnose
from .augment import AugmentConfig, augment_batch
from .data.manifest import ColumnKeys
from .data.media import MediaSpec
from .metric import CMCTerms, cmc_from_terms, contrastive_loss_per_sample, mean_pair_cosine, scores_from_terms
from .models.factory import ModelConfig, create_model
from .protocol import Assignment, ProtocolConfig, assign
from .run import HELDOUT, RunDir, atomic_save_npy, stored_paths
from .train import TrainConfig, dist_info, init_distributed, select, train_model


@dataclass
class ScoreConfig:
    input: str                                  # manifest file or folder of WebDataset shards
    out: str
    modalities: list[str] | None = None         # None: every modality the input has
    keys: ColumnKeys = field(default_factory=ColumnKeys)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    media: MediaSpec = field(default_factory=MediaSpec)
    augmentations: int = 8                      # A: random views in the CMC's first term
    chunk_size: int = 256
    projection: bool = True
    projection_per_modality: bool = False
    device: str = "auto"
    progress: bool = True
    # also keep the A augmented views the metric used: RUN/embeddings/<model>/<modality>.views.npy [A, N, d]
    # float32, so that `multimem import-embeddings` on them reproduces this run's scores exactly
    save_views: bool = False
    train_workers: int | None = None  # None: one process per model up to the number of cores (CPU only)

    def to_dict(self) -> dict:
        return {
            "input": str(self.input), "out": str(self.out), "modalities": self.modalities,
            "keys": asdict(self.keys), "protocol": self.protocol.to_dict(), "model": self.model.to_dict(),
            "train": self.train.to_dict(), "media": asdict(self.media), "augmentations": self.augmentations,
            "chunk_size": self.chunk_size, "projection": self.projection,
            "projection_per_modality": self.projection_per_modality, "device": self.device,
            "save_views": self.save_views,
        }


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "multimem": __version__}
    for name in ("torch", "torchvision", "open-clip-torch", "numpy", "pandas", "umap-learn", "faiss-cpu"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


class Stages:
    """Times each stage into RUN/timings.json and reports it in RUN/progress.json."""

    def __init__(self, run: RunDir, enabled: bool):
        self.run, self.enabled = run, enabled

    @contextmanager
    def __call__(self, name: str):
        if self.enabled:
            self.run.write_progress(stage=name)
        t = time.perf_counter()
        yield
        if self.enabled:
            self.run.record_timing(name, time.perf_counter() - t)

    def report(self, **fields):
        if self.enabled:
            self.run.write_progress(**fields)


def read_input(cfg: ScoreConfig):
    from .data.manifest import read_manifest

    path = Path(cfg.input).expanduser()
    if path.is_dir() or str(path).endswith(".tar"):
        from .data.shards import read_shards

        return read_shards(path, keys=cfg.keys, modalities=cfg.modalities)
    return read_manifest(path, keys=cfg.keys, modalities=cfg.modalities)


def _decode(source, modalities, spec, cache_dir, progress):
    if getattr(source, "format", None) == "webdataset":
        from .data.shards import decode_shards

        return decode_shards(source, modalities, spec, cache_dir, progress=progress)
    from .data.decode import decode_manifest

    return decode_manifest(source, modalities, spec, cache_dir, progress=progress)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def embed_terms(model, data: dict[str, torch.Tensor], *, heldout: np.ndarray, n: int, views: int,
                aug: AugmentConfig, seed: int, chunk: int, device, clean_out: dict[str, np.ndarray] | None,
                progress: bool, desc: str, views_out: dict[str, np.ndarray] | None = None,
                report: Callable[..., None] | None = None, name: str = "") -> CMCTerms:
    """CMC terms of all n samples under one model; also fills `clean_out` (modality -> [n, d]) if given.

    H is embedded first (its mean over views and samples is all the second term needs), then every
    sample in chunks of `chunk`: A augmented views → gram, view mean · H mean → cross.
    `views_out` (modality -> [A, n, d]) receives the views themselves; H rows keep the views of the first
    pass, the ones its mean was computed from, so that the saved views reproduce the terms exactly.
    """
    model.eval()
    mods = model.modalities
    is_heldout = np.zeros(n, dtype=bool)
    is_heldout[heldout] = True

    def views_of(idx: np.ndarray, start: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 7919 + start)  # same views whatever the chunk order
        batch = select(data, idx)
        out = []
        for _ in range(views):
            emb = model({m: x.to(device) for m, x in augment_batch(batch, aug, gen).items()})
            out.append(torch.stack([emb[m] for m in mods], dim=1).cpu())
        return torch.stack(out)  # [A, B, n, d]

    h_sum = torch.zeros(len(mods), model.embed_dim)
    h_pos = np.full(n, -1)
    h_pos[heldout] = np.arange(len(heldout))
    h_own = torch.zeros(len(heldout), len(mods), model.embed_dim)  # each H sample's share of h_sum, left out below
    for s in range(0, len(heldout), chunk):
        v = views_of(heldout[s:s + chunk], -1 - s)
        h_sum += v.mean(0).sum(0)
        h_own[s:s + chunk] = v.mean(0)
        if views_out is not None:
            for j, m in enumerate(mods):
                views_out[m][:, heldout[s:s + chunk]] = v[:, :, j].numpy()
    h_mean = h_sum / max(1, len(heldout))

    gram = torch.zeros(n, len(mods), len(mods))
    cross = torch.zeros(n, len(mods), len(mods))
    t0, chunks = time.perf_counter(), -(-n // chunk)
    for k, s in enumerate(tqdm(range(0, n, chunk), desc=desc, unit="chunk", disable=not progress,
                               dynamic_ncols=True)):
        idx = np.arange(s, min(n, s + chunk))
        v = views_of(idx, s)
        gram[idx] = torch.einsum("vimd,vind->imn", v, v) / v.shape[0]
        cross[idx] = torch.einsum("imd,nd->imn", v.mean(0), h_mean)
        own = is_heldout[idx]
        if own.any() and len(heldout) > 1:  # an H sample's unrelated set is the rest of H, not itself
            h_rest = (h_sum - h_own[h_pos[idx[own]]]) / (len(heldout) - 1)
            cross[idx[own]] = torch.einsum("imd,ind->imn", v.mean(0)[own], h_rest)
        if views_out is not None:
            keep = ~is_heldout[idx]
            for j, m in enumerate(mods):
                views_out[m][:, idx[keep]] = v[:, keep, j].numpy()
        if report is not None:
            rate = (s + len(idx)) / max(1e-9, time.perf_counter() - t0)
            report(stage="embed", model=name, chunk=k + 1, chunks=chunks, samples_per_s=round(rate, 1),
                   eta_s=round((n - s - len(idx)) / max(rate, 1e-9), 1))
        if clean_out is not None:
            emb = model({m: x.to(device) for m, x in select(data, idx).items()})
            for m in mods:
                clean_out[m][idx] = emb[m].cpu().numpy().astype(np.float16)
    return CMCTerms(gram, cross)


def prepare_cached(model, arrays: dict, cache_dir: Path) -> dict[str, torch.Tensor]:
    """Each tower's prepare() on the decoded arrays; frozen pretrained features are cached on disk.

    A frozen encoder (e.g. MiniLM) is the expensive part of preparing: its features are kept in
    cache_dir keyed by the encoder and the exact texts, so a rerun or a resumed run never recomputes them.
    """
    import hashlib

    from safetensors.torch import load_file, save_file

    out = {}
    for m in model.modalities:
        tower = model.towers[m]
        encoder = getattr(tower, "encoder_name", None)
        if encoder is None:
            out[m] = tower.prepare(arrays[m])
            continue
        key = hashlib.sha256(json.dumps([encoder, list(arrays[m])]).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"features_{m}_{key}.safetensors"
        if path.is_file():
            out[m] = load_file(path)["features"]
        else:
            out[m] = tower.prepare(arrays[m])
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"features": out[m].contiguous()}, str(path))
    return out


def train_workers(cfg: ScoreConfig, n_models: int, distributed: bool) -> int:
    """How many models to train at once: one process per model, up to one per core, on CPU only.

    The models of a protocol are independent; on a small CPU two single-threaded trainings run about
    twice as fast as one two-threaded training (small batches do not keep two threads busy).
    """
    if cfg.train_workers is not None:
        return max(1, min(cfg.train_workers, n_models))
    if distributed or resolve_device(cfg.device).type != "cpu":
        return 1
    return max(1, min(n_models, os.cpu_count() or 1))


def _train_in_processes(cfg: ScoreConfig, assignment: Assignment, workers: int, progress: bool) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # a fresh interpreter: forking after torch has started threads can hang
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futures = [pool.submit(_train_one, cfg, name, idx, threads, progress, k)
                   for k, (name, idx) in enumerate(assignment.train_sets.items())]
        for f in futures:
            f.result()  # re-raises a worker's error here


def _exit_with_parent() -> None:
    """A killed `multimem score` must not leave its training workers running: watch the parent."""
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _train_one(cfg: ScoreConfig, name: str, train_idx: np.ndarray, threads: int, progress: bool, position: int):
    """One model in a worker process: reopen the decoded cache (no media is read again) and train."""
    _exit_with_parent()
    torch.set_num_threads(threads)
    run = RunDir(cfg.out)
    source = read_input(cfg)
    modalities = list(cfg.modalities or source.modalities)
    decoded = _decode(source, modalities, cfg.media, run.cache_dir, False)
    model_cfg = ModelConfig(**{**cfg.model.to_dict(), "modalities": modalities,
                               "video_frames": cfg.media.video_frames,
                               "audio_sample_rate": cfg.media.audio_sample_rate})
    torch.manual_seed(cfg.train.seed)
    data = prepare_cached(create_model(model_cfg), decoded.arrays, run.cache_dir)
    torch.manual_seed(cfg.train.seed)
    model = create_model(model_cfg)
    stages = Stages(run, True)
    report = lambda **fields: stages.report(**{**fields, "parallel_models": True})  # noqa: E731
    train_model(model, data, train_idx, cfg.train, run.models_dir / name, name=name, progress=progress,
                report=report, bar_position=position)


def score_run(cfg: ScoreConfig) -> RunDir:
    distributed = init_distributed()
    rank, world = dist_info()
    run = RunDir(cfg.out)
    run.path.mkdir(parents=True, exist_ok=True)
    lead = rank == 0
    stages = Stages(run, lead)
    device = resolve_device(cfg.device)
    progress = cfg.progress and lead

    with stages("read"):
        source = read_input(cfg)
    modalities = list(cfg.modalities or source.modalities)
    # absolute, and relative to the run: the dashboard and `mitigate` may start anywhere (RunDir.stored_path)
    paths = stored_paths(run.path, input=cfg.input, dataset_root=source.root, manifest=source.path)
    base_config = {
        **cfg.to_dict(), "modalities": modalities, "status": "running", "versions": package_versions(),
        "input": paths["input"], "dataset_root": paths["dataset_root"], "paths_from_run": paths["paths_from_run"],
        "manifest": {"path": paths["manifest"], "format": source.format, "sha256": source.sha256,
                     "source_columns": source.source_columns},
        "dataset": _dataset_info(source), "world_size": world, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if lead:
        run.write_config(base_config)

    with stages("decode"):
        if lead:
            decoded = _decode(source, modalities, cfg.media, run.cache_dir, progress)
        if distributed:
            torch.distributed.barrier()
        if not lead:
            decoded = _decode(source, modalities, cfg.media, run.cache_dir, False)
    n = len(decoded.ids)
    if lead:
        run.write_errors(decoded.errors)
        if len(decoded.errors):
            tqdm.write(f"skipped {decoded.errors['id'].nunique()} samples that could not be loaded "
                       f"(reasons in {run.errors_path})")

    assignment = assign(n, cfg.protocol)
    if lead:
        run.write_samples(_samples_table(source, decoded, assignment))

    model_cfg = ModelConfig(**{**cfg.model.to_dict(), "modalities": modalities,
                               "video_frames": cfg.media.video_frames,
                               "audio_sample_rate": cfg.media.audio_sample_rate})
    with stages("prepare"):
        torch.manual_seed(cfg.train.seed)
        proto = create_model(model_cfg)
        data = prepare_cached(proto, decoded.arrays, run.cache_dir)  # once, shared by every model
    models = {}
    with stages("train"):
        workers = train_workers(cfg, len(assignment.train_sets), distributed)
        if workers > 1:
            _train_in_processes(cfg, assignment, workers, progress)
        for i, (name, train_idx) in enumerate(assignment.train_sets.items()):
            torch.manual_seed(cfg.train.seed)  # every model starts from the same weights
            model = create_model(model_cfg).to(device)
            report = _train_reporter(stages, i, assignment, cfg.train.epochs) if lead else None
            # after _train_in_processes this only loads the finished weights (train_model skips done work)
            stats = train_model(model, data, train_idx, cfg.train, run.models_dir / name, name=name,
                                progress=progress, report=report)
            models[name] = (model, stats)
    if not lead:
        return run

    with stages("embed"):
        terms, clean = {}, {}
        for name, (model, _) in models.items():
            folder = run.embeddings_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            clean[name] = {m: np.lib.format.open_memmap(folder / f"{m}.npy", mode="w+", dtype=np.float16,
                                                        shape=(n, model.embed_dim)) for m in modalities}
            views = ({m: np.lib.format.open_memmap(folder / f"{m}.views.npy", mode="w+", dtype=np.float32,
                                                   shape=(cfg.augmentations, n, model.embed_dim))
                      for m in modalities} if cfg.save_views else None)
            terms[name] = embed_terms(model, data, heldout=assignment.heldout, n=n, views=cfg.augmentations,
                                      aug=cfg.train.augment, seed=cfg.train.seed, chunk=cfg.chunk_size,
                                      device=device, clean_out=clean[name], progress=progress,
                                      desc=f"embed {name} ×{cfg.augmentations} views", views_out=views,
                                      report=stages.report, name=name)
            for arr in [*clean[name].values(), *(views or {}).values()]:
                arr.flush()
            (folder / "ids.txt").write_text("\n".join(decoded.ids) + "\n")

    logit_scales = {name: float(model.logit_scale.detach().exp().clamp(max=100)) for name, (model, _) in models.items()}
    scores = write_scored(run, stages, ids=decoded.ids, assignment=assignment, terms=terms, clean=clean,
                          modalities=modalities, logit_scales=logit_scales,
                          projection_model=next(iter(models)) if cfg.projection else None,
                          seed=cfg.train.seed, projection_per_modality=cfg.projection_per_modality)

    final = {**base_config, "status": "complete", "n_samples": n, "n_scored": int(len(scores)),
             "n_skipped": int(decoded.errors["id"].nunique()) if len(decoded.errors) else 0,
             "models": {name: {"trained_on": sorted(set(assignment.roles[idx])), "n_train": int(len(idx)),
                               **{k: v for k, v in stats.items() if k != "key"}}
                        for (name, (_, stats)), idx in zip(models.items(), assignment.train_sets.values())}}
    run.write_config(final)
    run.write_progress(stage="done")
    return run


def _dataset_info(source) -> dict | None:
    info = Path(source.root) / "dataset.json"
    return json.loads(info.read_text()) if info.is_file() else None


def _samples_table(source, decoded, assignment: Assignment) -> pd.DataFrame:
    table = source.table.set_index("row", drop=False).loc[decoded.rows].reset_index(drop=True)
    table["id"] = decoded.ids
    table.insert(1, "role", assignment.roles)
    if "injected" not in table:
        table["injected"] = ""
    table["injected"] = table["injected"].fillna("").astype(str)
    return table


def _train_reporter(stages: Stages, index: int, assignment: Assignment, epochs: int) -> Callable[..., None]:
    """Progress of model `index` of the protocol, with the time left for the whole training stage.

    train_model knows the time left for its own model; the models after it train on sets of known size at
    about the same rate, so their time is their sample count over the current rate."""
    names = list(assignment.train_sets)
    later = sum(len(assignment.train_sets[m]) for m in names[index + 1:]) * epochs

    def report(**fields):
        rate = fields.get("samples_per_s") or 0
        total = fields.get("eta_s", 0) + (later / rate if rate > 0 else 0)
        stages.report(**fields, model_index=index + 1, models_total=len(names), eta_train_s=round(total, 1))

    return report


def write_scored(run: RunDir, stages: Stages, *, ids: list[str], assignment: Assignment,
                 terms: dict[str, CMCTerms], clean: dict[str, dict[str, np.ndarray]], modalities: list[str],
                 logit_scales: dict[str, float] | None, projection_model: str | None, seed: int = 0,
                 projection_per_modality: bool = False) -> pd.DataFrame:
    """The scoring and writing step every path shares (our own runs and `import-embeddings`).

    From each model's CMC terms and clean embeddings (rows in `ids` order): scores.parquet with the
    baselines, diagnostics/sim_in.npy and sim_out.npy, and projection.parquet from `projection_model`'s
    embeddings (None: no projection). `logit_scales` (model -> exp of the learned temperature) feed the loss
    baseline; None leaves that column out. Returns the scores table.
    """
    with stages("score"):
        scores, sim_in, sim_out = score_table(ids, assignment, terms, clean, modalities, logit_scales=logit_scales,
                                              heldout_rows=True)
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


def score_table(ids, assignment: Assignment, terms: dict[str, CMCTerms], clean, modalities, *,
                logit_scales: dict[str, float] | None, heldout_rows: bool = False):
    """Scores of every scored sample; the models that saw it and the one that did not depend on its role.

    heldout_rows: also one row per H sample, after the scored rows, with role "H" and only `cmc_out`
    (its mean CMC under every model, none of which saw it): H has no memorization score, but a user
    auditing a dataset still learns how consistent each of its samples is. sim_in/sim_out cover the
    scored rows only.
    """
    frames, sims_in, sims_out, order = [], [], [], []
    h = assignment.heldout
    for role, in_models in assignment.in_models.items():
        idx = np.flatnonzero(assignment.roles == role)
        if len(idx) == 0:
            continue
        t_in = terms[in_models[0]]
        t_in = CMCTerms(t_in.gram[idx], t_in.cross[idx])
        for name in in_models[1:]:
            t_in = t_in + CMCTerms(terms[name].gram[idx], terms[name].cross[idx])
        t_in = t_in / len(in_models)
        t_out = CMCTerms(terms[assignment.out_model[role]].gram[idx], terms[assignment.out_model[role]].cross[idx])
        cols = scores_from_terms(t_in, t_out, modalities=modalities)
        cols["base__cosine"] = mean_pair_cosine(t_in.gram)
        if "image" in modalities and "text" in modalities:
            cols["base__clipmem"] = cols["pair__image__text"]
        if logit_scales is not None:
            losses = []
            for name in in_models:
                emb = torch.stack([torch.from_numpy(np.asarray(clean[name][m][idx], dtype=np.float32))
                                   for m in modalities], 1)
                ref = torch.stack([torch.from_numpy(np.asarray(clean[name][m][h], dtype=np.float32))
                                   for m in modalities], 1)
                losses.append(contrastive_loss_per_sample(emb, ref, logit_scale=logit_scales[name]))
            cols["base__loss"] = torch.stack(losses).mean(0)
        frame = pd.DataFrame({k: v.numpy().astype(np.float64) for k, v in cols.items()})
        frame.insert(0, "role", role)
        frame.insert(0, "id", [ids[i] for i in idx])
        frames.append(frame)
        sims_in.append(t_in.gram.numpy())
        sims_out.append(t_out.gram.numpy())
        order.append(idx)
    order = np.concatenate(order)
    sort = np.argsort(order, kind="stable")  # rows in dataset order
    scores = pd.concat(frames, ignore_index=True).iloc[sort].reset_index(drop=True)
    if heldout_rows and len(h):
        t_h = CMCTerms(sum(t.gram[h] for t in terms.values()), sum(t.cross[h] for t in terms.values()))
        held = pd.DataFrame({c: np.nan for c in scores.columns if c not in ("id", "role")}, index=range(len(h)))
        held["cmc_out"] = cmc_from_terms(t_h / len(terms)).numpy().astype(np.float64)
        held.insert(0, "role", HELDOUT)
        held.insert(0, "id", [ids[i] for i in h])
        scores = pd.concat([scores, held], ignore_index=True)
    return scores, np.concatenate(sims_in)[sort].astype(np.float32), np.concatenate(sims_out)[sort].astype(np.float32)


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
