"""Contrastive training: one loop for every model a protocol needs.

Loss: the mean over every pair of modalities of the symmetric InfoNCE, one learnable temperature.
The loop is deterministic under a seed (the shuffle and the augmentations of epoch e come from a
generator seeded with (seed, e)), checkpoints after every epoch and resumes from the last one when the
same command runs again, and runs under torchrun with DDP (gloo on CPU, nccl on GPU): each rank takes
its slice of every batch, rank 0 writes.

`BatchPlan` is the hook mitigation uses to regroup samples into batches of their own and to augment
only some of them; the default is plain shuffled batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from itertools import combinations
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .augment import augment_batch
from .config import AugmentConfig, TrainConfig
from .distributed import dist_info
from .inputs import select
from .atomic import atomic_save_torch, atomic_write_json


# A checkpoint of a demo model (weights and AdamW state, 11 MB) took 70 ms to write and a progress report
# 2 ms: after every epoch and every step they cost about 4 % of `multimem demo`'s training.
CHECKPOINT_EVERY_S = 30.0
REPORT_EVERY_S = 0.5


def contrastive_loss(emb: dict[str, Tensor], logit_scale: Tensor) -> Tensor:
    """Mean symmetric InfoNCE over all modality pairs of a batch of L2-normalised embeddings."""
    mods = list(emb)
    scale = logit_scale.exp().clamp(max=100)
    target = torch.arange(next(iter(emb.values())).shape[0], device=logit_scale.device)
    losses = []
    for a, b in combinations(mods, 2):
        logits = scale * emb[a] @ emb[b].T
        losses.append((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)
    return torch.stack(losses).mean()


class BatchAugment(Protocol):
    """A per-batch augmentation richer than an AugmentConfig (mitigation's targeted augmentations):
    it augments the inputs itself (given the run's augmentation for what it leaves alone) and may
    perturb the embeddings before the loss.

    `trains_temperature` False keeps the batch's gradient off the shared logit scale: on embeddings
    carrying deliberate noise the loss is lowest with a soft temperature, and a tenth of the batches
    pulled the whole model's from 14.5 to 9.4 in regrouping (`multimem mitigate --strategy regroup`)."""

    trains_temperature: bool

    def inputs(self, batch: dict[str, Tensor], base: AugmentConfig, gen: torch.Generator) -> dict[str, Tensor]: ...

    def embeddings(self, emb: dict[str, Tensor], gen: torch.Generator) -> dict[str, Tensor]: ...


class BatchPlan(Protocol):
    def __call__(self, epoch: int, indices: np.ndarray, batch_size: int, gen: torch.Generator
                 ) -> list[tuple[np.ndarray, AugmentConfig | BatchAugment | None]]:
        """The batches of one epoch: sample indices, and an extra augmentation for that batch (or None).

        The schedule counts the batches of epoch 0; a plan that adds batches later runs its extra steps at
        the schedule's final learning rate once it passes the planned total."""


def shuffled_batches(epoch: int, indices: np.ndarray, batch_size: int, gen: torch.Generator):
    order = indices[torch.randperm(len(indices), generator=gen).numpy()]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size // 4:  # a tiny last batch has almost no negatives
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return [(b, None) for b in batches]


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay: a pure function of the step, so resuming needs no scheduler state."""
    warm = max(1, int(total * cfg.warmup_frac))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_checkpoint(path: Path, *, name: str, verbose: bool) -> dict | None:
    """The training state in `path`, or None when there is none or it cannot be used.

    Loaded with weights_only=True: a checkpoint is data, never code, so a crafted pickle is refused
    rather than run. A refused or damaged checkpoint costs a retraining of this model, not the run."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (not plain tensors), truncated file, ...
        tqdm.write(f"[{name}] ignoring {path}: not a usable checkpoint ({type(e).__name__}: "
                   f"{str(e).splitlines()[0][:200] if str(e) else ''}); training this model from the start")
        return None
    if not isinstance(state, dict):
        return None
    if verbose and state.get("key") is None:
        tqdm.write(f"[{name}] ignoring {path}: it is not one of our checkpoints")
    return state


def finished_key(out_dir: str | Path) -> str | None:
    """The fingerprint of the training whose final weights `out_dir` holds (its train.json, written once they
    are), or None: train_model skips a model whose key matches."""
    try:
        return json.loads((Path(out_dir) / "train.json").read_text()).get("key")
    except (OSError, ValueError, AttributeError):  # none yet, or a damaged one: train
        return None


def train_model(
    model: nn.Module,
    data: dict[str, Tensor],
    indices: np.ndarray,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    name: str = "model",
    plan: BatchPlan = shuffled_batches,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    progress: bool = True,
    report: Callable[..., None] | None = None,
    bar_position: int | None = None,
    data_parallel: bool = True,
) -> dict:
    """Train `model` on the rows `indices` of the prepared tensors `data`; returns training stats.

    out_dir/checkpoint.pt holds the state after each epoch (resumed if its fingerprint matches);
    out_dir/model.safetensors the final weights (training is skipped when it exists and matches).
    data_parallel False: in a torchrun group, this process trains the whole model alone, as a single
    process would (it writes the model's files; the other processes train other models).
    """
    from safetensors.torch import load_model, save_model

    rank, world = dist_info() if data_parallel else (0, 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, final_path, meta_path = out_dir / "checkpoint.pt", out_dir / "model.safetensors", out_dir / "train.json"
    key = fingerprint({"cfg": cfg.to_dict(), "n": len(indices), "idx": fingerprint(indices.tolist()),
                       "mods": sorted(data), "world": world})

    if final_path.is_file() and finished_key(out_dir) == key:
        load_model(model, final_path)
        return json.loads(meta_path.read_text())

    device = next(model.parameters()).device
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and p.requires_grad]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and p.requires_grad]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    start_epoch, history = 0, []
    state = _read_checkpoint(ckpt_path, name=name, verbose=rank == 0 and progress)
    if state is not None:
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start_epoch, history = int(state["epoch"]) + 1, json.loads(state["history"])
            if rank == 0 and progress:
                tqdm.write(f"[{name}] resuming after epoch {start_epoch} from {ckpt_path}")

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)

    steps_per_epoch = len(plan(0, indices, cfg.batch_size, torch.Generator().manual_seed(0)))
    total = steps_per_epoch * cfg.epochs
    bar = tqdm(total=total, initial=start_epoch * steps_per_epoch, desc=f"train {name}", unit="step",
               disable=not progress or rank != 0, dynamic_ncols=True, position=bar_position)
    t_start, seen = time.perf_counter(), 0
    last_report = last_checkpoint = -math.inf
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        net.train()
        epoch_loss, n_batches = 0.0, 0
        for step_in_epoch, (idx, extra_aug) in enumerate(plan(epoch, indices, cfg.batch_size, gen)):
            if world > 1:  # each rank its slice of the global batch
                idx = np.array_split(idx, world)[rank]
            batch = select(data, idx)
            aug = extra_aug or cfg.augment
            if isinstance(aug, AugmentConfig):
                batch, perturb = augment_batch(batch, aug, gen), None
            else:  # a BatchAugment
                batch, perturb = aug.inputs(batch, cfg.augment, gen), aug.embeddings
            batch = {m: x.to(device, non_blocking=True) for m, x in batch.items()}
            step = min(epoch * steps_per_epoch + step_in_epoch, total - 1)  # a plan may add a batch
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            emb = net(batch)
            if perturb is not None:
                emb = perturb(emb, gen)
            loss = contrastive_loss(emb, model.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if perturb is not None and not aug.trains_temperature:
                model.logit_scale.grad = None  # AdamW leaves a parameter without gradient untouched
            opt.step()
            loss_value = loss.item()
            epoch_loss += loss_value
            n_batches += 1
            seen += len(idx) * world
            rate = seen / max(1e-9, time.perf_counter() - t_start)
            bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{loss_value:.3f}", samples_s=f"{rate:.0f}",
                            refresh=False)  # the update below redraws, at tqdm's own pace
            bar.update(1)
            now = time.perf_counter()
            if report is not None and rank == 0 and now - last_report >= REPORT_EVERY_S:
                last_report = now
                left = (total - step - 1) * cfg.batch_size / max(rate, 1e-9)
                report(stage="train", model=name, epoch=epoch + 1, epochs=cfg.epochs, samples_per_s=round(rate, 1),
                       eta_s=round(left, 1), loss=round(loss_value, 4))
        history.append({"epoch": epoch + 1, "loss": epoch_loss / max(1, n_batches)})
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        # The first epoch and then every CHECKPOINT_EVERY_S: a resumed run replays the epochs after the last
        # checkpoint exactly (each epoch's shuffle and augmentations come from its own seed). With an
        # on_epoch_end hook (mitigation keeps state of its own per epoch) after every epoch.
        due = (epoch == start_epoch or on_epoch_end is not None
               or time.perf_counter() - last_checkpoint >= CHECKPOINT_EVERY_S)
        if rank == 0 and due:
            last_checkpoint = time.perf_counter()
            atomic_save_torch(ckpt_path, {"key": key, "epoch": epoch, "model": model.state_dict(),
                                          "optimizer": opt.state_dict(), "history": json.dumps(history)})
        if world > 1:
            dist.barrier()
    bar.close()
    stats = {"key": key, "epochs": cfg.epochs, "history": history, "samples": int(len(indices)),
             "seconds": round(time.perf_counter() - t_start, 2),
             "samples_per_s": round(seen / max(1e-9, time.perf_counter() - t_start), 1)}
    if rank == 0:  # weights first, then the marker that says they are final (a kill between leaves no marker)
        tmp = final_path.with_suffix(".tmp")
        try:
            save_model(model, str(tmp))
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk: no half file left
            raise
        os.replace(tmp, final_path)
        atomic_write_json(meta_path, stats)
    if world > 1:
        dist.barrier()
    return stats
