"""Running one command as several processes (torchrun): joining the group, and who does which share.

`multimem score` under torchrun gives every process whole units of work that a single process would do the
same way, so that the run it writes does not depend on how many processes made it:

  features   the rows of each frozen encoder, in blocks that one process would also encode as blocks
             (inputs.prepare_cached): each process writes its part beside the cache, the lead merges them
  training   whole models of the protocol (rank r trains models r, r + W, ...), each with the seeds and data
             a single process gives it
  the rest   the lead (rank 0): decoding, embedding, scores and every file of the run but the models' own

Several machines need the run directory on a filesystem they share (the decoded cache and the models are
read back from it). Without torchrun (no WORLD_SIZE, or 1) every function here is the single-process case.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): nccl with one GPU per process
    (LOCAL_RANK), gloo on CPU. Returns whether this process is in a group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return True


def barrier() -> None:
    if dist_info()[1] > 1:
        dist.barrier()


def from_lead(value: Any) -> Any:
    """The lead's `value` in every process (a decision all of them must take the same way)."""
    if dist_info()[1] <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def owned(items: Sequence, rank: int | None = None, world: int | None = None) -> list:
    """The items this process takes: rank r of W takes items r, r + W, r + 2W, ..."""
    if rank is None or world is None:
        rank, world = dist_info()
    return list(items)[rank::world]
