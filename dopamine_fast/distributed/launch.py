"""``dopamine-fast train ... --distributed``: one rank of a ``torchrun`` job, checkpointed every N steps.

    torchrun --nproc-per-node 2 --max-restarts 3 -m dopamine_fast train --task lorenz --optimizer dopamine \\
        --distributed --checkpoint-every 50 --out runs/lorenz-dist

Every rank builds the same model from the seed, evaluates its share of the members (or, with
``--distributed data``, all members on its shard of the batch) and applies the same update. Rank 0 writes
``checkpoint.pt`` atomically every ``--checkpoint-every`` steps; a (re)started job resumes from it, so a run
that lost a worker and was restarted by torchrun ends with the same weights, bit for bit, as one that did not.
Minibatches are drawn from (seed, step), never from a generator's history, so they too resume exactly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..experiments.optimizers import perturbation_setup
from .checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .parallel import Parallel
from .sharding import batch_range

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.pt"


def batch_at(task, batch_size: int, seed: int, step: int):
    """The minibatch of ``step``: the whole training set, or ``batch_size`` rows drawn from (seed, step)."""
    n = task.num_train
    if batch_size <= 0 or batch_size >= n:
        return task.x_train, task.y_train
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % 2**63)
    idx = torch.randint(0, n, (batch_size,), generator=g).to(task.device)
    return task.x_train[idx], task.y_train[idx]


def _init_process_group(device: torch.device) -> torch.device:
    """Join the torchrun job (env:// rendezvous); on GPUs each rank takes cuda:LOCAL_RANK and NCCL."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError("--distributed: run under torchrun, e.g. torchrun --nproc-per-node 2 -m dopamine_fast "
                         "train --task xor --optimizer dopamine --distributed")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # torchrun may hand a restarted job the store of the failed attempt; keys under a per-attempt prefix keep
        # a new rank from reading a dead peer's address (seen as gloo "connection refused" after a restart).
        store, rank, world_size = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                store=dist.PrefixStore(f"dopamine_fast/attempt{attempt}", store))
    return device


def train_distributed(task, optimizer: str, hp: dict, *, steps: int, seed: int, hidden, batch_size: int,
                      mode: str, checkpoint_every: int, out: Path) -> dict:
    """Train on this rank; returns a summary (rank 0 also writes ``out/weights.pt``)."""
    device = _init_process_group(task.device)
    task.to(device)
    torch.manual_seed(seed)
    model = task.build_model(hidden)
    parallel = Parallel(mode=mode)
    opt, population = perturbation_setup(optimizer, model, {**hp, "process_group": parallel}, seed)
    resumed = load_checkpoint(out / CHECKPOINT, model, opt)
    if resumed is not None and resumed["optimizer_name"] != optimizer:
        raise ValueError(f"{out / CHECKPOINT} holds a {resumed['optimizer_name']} run, not {optimizer}: use "
                         f"another --out")
    first = 0 if resumed is None else resumed["step"]
    loss, start = float("nan"), time.perf_counter()
    for step in range(first, steps):
        x, y = batch_at(task, batch_size, seed, step)
        if mode == "data":
            rows = batch_range(len(x), parallel.world_size, parallel.rank)
            x, y = x[rows.start:rows.stop], y[rows.start:rows.stop]
        loss = opt.step(population=population, inputs=x, targets=y)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save_checkpoint(out / CHECKPOINT, model, opt, step=step + 1, optimizer_name=optimizer)
    seconds = time.perf_counter() - start
    if parallel.rank == 0:
        atomic_save(model.state_dict(), out / WEIGHTS)
    done = steps - first
    summary = {"ranks": parallel.world_size, "mode": mode, "resumed from step": first, "steps run": done,
               "final train loss": loss, "seconds": seconds,
               "bytes sent per step (this rank)": parallel.payload_bytes / max(1, done)}
    summary.update(task.evaluate(model))
    dist.destroy_process_group()
    return summary
