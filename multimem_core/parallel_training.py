"""Training the protocol's models: in this process, in worker processes (CPU: one per model, up to one per
core), or across the processes of a torchrun group (whole models per process, distributed.py).

Wherever a model trains, it trains as a single process would (same seed, data, batches and fingerprint), so
its checkpoint resumes anywhere and the run's scores do not depend on how the work was shared.

Embedding the trained models runs side by side in the same way (`for_each_model`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from .config import ScoreConfig
from .inputs import decode, prepare_cached, read_input
from .models.factory import create_model
from .planting import PlantPlan, with_planted
from .distributed import barrier, dist_info, owned
from .protocol import Assignment
from .run import RunDir
from .stages import Stages
from .runlock import die_with_parent
from .train import resolve_device, train_model


def train_protocol(cfg: ScoreConfig, model_cfg, data: dict, training: Assignment, run: RunDir, stages: Stages, *,
                   device, progress: bool, distributed: bool, planted: PlantPlan | None,
                   feature_keys: dict[str, str] | None = None) -> dict:
    """Every model of `training`, trained or resumed: name -> (model, stats) in the lead process ({} in the
    others of a torchrun group, which train their share and leave). `feature_keys`: those `data`'s cached
    features were prepared under (inputs.feature_keys), for the worker processes to open them by."""
    names = list(training.all_train_sets)
    lead = dist_info()[0] == 0
    if distributed:
        for name in owned(names):
            _fit(cfg, model_cfg, data, training, name, run, device, progress, stages if lead else None)
        barrier()
        if not lead:
            return {}
    else:
        workers = train_workers(cfg, len(names), distributed)
        if workers > 1:
            train_in_processes(cfg, training, workers, progress, planted, feature_keys)
    # the models trained elsewhere (workers, other processes) are only loaded here (train_model skips done work)
    return {name: _fit(cfg, model_cfg, data, training, name, run, device, progress, stages) for name in names}


def _fit(cfg: ScoreConfig, model_cfg, data: dict, training: Assignment, name: str, run: RunDir, device,
         progress: bool, stages: Stages | None):
    """Model `name` trained (or loaded when it is done): (model, stats)."""
    train_cfg = replace(cfg.train, seed=training.seed_of(name, cfg.train.seed))
    torch.manual_seed(train_cfg.seed)  # every model of a split starts from the same weights
    model = create_model(model_cfg).to(device)
    report = _reporter(stages, name, training, cfg.train.epochs) if stages is not None else None
    stats = train_model(model, data, training.all_train_sets[name], train_cfg, run.models_dir / name, name=name,
                        progress=progress, report=report, data_parallel=False)
    return model, stats


def _reporter(stages: Stages, name: str, assignment: Assignment, epochs: int):
    """Progress of model `name` of the protocol, with the time left for the whole training stage.

    train_model knows the time left for its own model; the models after it train on sets of known size at
    about the same rate, so their time is their sample count over the current rate."""
    names = list(assignment.all_train_sets)
    index = names.index(name)
    later = sum(len(assignment.all_train_sets[m]) for m in names[index + 1:]) * epochs

    def report(**fields):
        rate = fields.get("samples_per_s") or 0
        total = fields.get("eta_s", 0) + (later / rate if rate > 0 else 0)
        stages.report(**fields, model_index=index + 1, models_total=len(names), eta_train_s=round(total, 1))

    return report


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


def for_each_model(fn: Callable[[str], None], names: list[str], device: torch.device) -> None:
    """fn(name) for every model; on a CPU with several cores, side by side in threads, one core each.

    The small towers' operations do not keep two threads busy (see train_workers); torch's operations
    release the GIL, so two threads of one intra-op thread each embedded the emoji demo's two models (8 views)
    in 0.47 and 0.61 of the time of one after the other on two intra-op threads (two runs on a busy machine,
    docs/SPEED.md)."""
    workers = min(len(names), os.cpu_count() or 1) if device.type == "cpu" else 1
    if workers <= 1:
        for name in names:
            fn(name)
        return
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(fn, name) for name in names]:
                future.result()  # re-raises a model's error here
    finally:
        torch.set_num_threads(threads)


def train_in_processes(cfg: ScoreConfig, assignment: Assignment, workers: int, progress: bool,
                       planted: PlantPlan | None = None, feature_keys: dict[str, str] | None = None) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # a fresh interpreter: forking after torch has started threads can hang
    # die_with_parent: a killed `multimem score` takes its workers with it at once (they write checkpoints).
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        futures = [pool.submit(_train_one, cfg, name, idx, threads, progress, k, planted, feature_keys,
                               assignment.seed_of(name, cfg.train.seed))
                   for k, (name, idx) in enumerate(assignment.all_train_sets.items())]
        for f in futures:
            f.result()  # re-raises a worker's error here
    except BaseException:
        # One model failed (or we were interrupted): stop the others now instead of waiting for them to
        # finish training into a run that is failing anyway.
        for proc in mp.active_children():
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _train_one(cfg: ScoreConfig, name: str, train_idx: np.ndarray, threads: int, progress: bool, position: int,
               planted: PlantPlan | None, feature_keys: dict[str, str] | None, seed: int):
    """One model in a worker process: reopen the decoded cache (no media is read again) and the cached features
    by the lead's keys (a frozen tower's decoded media are not even read), append the planted rows the way
    score_run does, and train."""
    torch.set_num_threads(threads)
    run = RunDir(cfg.out)
    source = read_input(cfg.input, keys=cfg.keys, modalities=cfg.modalities)
    modalities = list(cfg.modalities or source.modalities)
    model_cfg = cfg.model_config(modalities)
    torch.manual_seed(cfg.train.seed)
    # the decoded media go out of scope here: a frozen tower's pixels are not kept mapped during training
    data = prepare_cached(create_model(model_cfg), decode(source, modalities, cfg.media, run.cache_dir,
                                                          progress=False).arrays, run.cache_dir, keys=feature_keys)
    if planted is not None:
        data = with_planted(data, planted)
    torch.manual_seed(seed)
    model = create_model(model_cfg)
    stages = Stages(run, True)
    report = lambda **fields: stages.report(**{**fields, "parallel_models": True})  # noqa: E731
    train_model(model, data, train_idx, replace(cfg.train, seed=seed), run.models_dir / name, name=name,
                progress=progress, report=report, bar_position=position)
