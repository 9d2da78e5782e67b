"""Scale-out on torch.distributed (gloo, CPU): bytes on the wire and step time with 1 and 2 processes.

Dopamine's ranks exchange the K + 1 member losses (members mode) or K + 2 weighted sums (data mode) per step;
DistributedDataParallel all-reduces the P gradients. Both are measured on the same MLP: the payload each rank
hands to its collectives per step (counted at the call, for DDP by a communication hook) and, for a ring
algorithm, the bytes each rank sends, 2 (W-1)/W x payload for an all-reduce and (W-1) x payload for an
all-gather. Step times are medians; on a busy machine with 2 cores they are only indicative.

    python bench/bench_distributed.py [--steps 20] [--out bench/results]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dopamine_fast as df  # noqa: E402
from dopamine_fast.distributed import Parallel, batch_range  # noqa: E402

IN, HIDDEN, OUT, BATCH, K = 32, 256, 10, 256, 64
COLUMNS = ["method", "processes", "path", "mode", "params", "K", "batch", "step_ms_median", "step_ms_min",
           "payload_bytes_per_step", "ring_bytes_sent_per_rank_per_step"]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                         nn.Linear(HIDDEN, OUT))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, IN, generator=g), torch.randn(BATCH, OUT, generator=g)


def _time_steps(step, steps: int):
    step()  # warm-up
    times = []
    for _ in range(steps):
        if dist.is_initialized():
            dist.barrier()  # every rank starts the step together: the slowest one sets the time
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def _ring_bytes(payload: float, world: int, collective: str) -> float:
    if world == 1:
        return 0.0
    return payload * (2 * (world - 1) / world if collective == "all_reduce" else world - 1)


def _dopamine_row(world, rank, path, mode, steps):
    model = _model()
    x, y = _data()
    parallel = None
    if world > 1:
        parallel = Parallel(mode=mode, check_every=0)
        if mode == "data":
            rows = batch_range(BATCH, world, rank)
            x, y = x[rows.start:rows.stop], y[rows.start:rows.stop]
    opt = df.Dopamine(model.parameters(), num_perturbations=K, process_group=parallel)
    pop = df.Population(model, loss="mse")
    if path == "population":
        def step():
            opt.step(population=pop, inputs=x, targets=y)
    else:
        def step():
            opt.step(lambda: F.mse_loss(model(x), y))
    median, fastest = _time_steps(step, steps)
    payload = parallel.payload_bytes / (steps + 1) if parallel else 0.0
    collective = "all_reduce" if mode == "data" else "all_gather"
    return {"method": "dopamine", "processes": world, "path": f"{path} ({pop.last_path})" if pop.last_path
            else path, "mode": mode if world > 1 else "-", "params": sum(p.numel() for p in model.parameters()),
            "K": K, "batch": BATCH, "step_ms_median": median, "step_ms_min": fastest,
            "payload_bytes_per_step": payload, "ring_bytes_sent_per_rank_per_step": _ring_bytes(payload, world,
                                                                                                collective)}


def _ddp_row(world, rank, steps):
    model = _model()
    x, y = _data()
    rows = batch_range(BATCH, world, rank)
    x, y = x[rows.start:rows.stop], y[rows.start:rows.stop]
    counted = {"bytes": 0}
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)

        def counting_allreduce(state, bucket):
            counted["bytes"] += bucket.buffer().numel() * bucket.buffer().element_size()
            return default_hooks.allreduce_hook(None, bucket)

        model.register_comm_hook(None, counting_allreduce)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        opt.step()

    median, fastest = _time_steps(step, steps)
    payload = counted["bytes"] / (steps + 1)
    return {"method": "DDP + SGD (backprop)", "processes": world, "path": "forward+backward", "mode": "data",
            "params": sum(p.numel() for p in model.parameters()), "K": "-", "batch": BATCH,
            "step_ms_median": median, "step_ms_min": fastest, "payload_bytes_per_step": payload,
            "ring_bytes_sent_per_rank_per_step": _ring_bytes(payload, world, "all_reduce")}


def _worker(rank, world, init_file, out_file, steps):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = []
        for path in ("closure", "population"):
            for mode in (("members", "data") if world > 1 else ("members",)):
                rows.append(_dopamine_row(world, rank, path, mode, steps))
        rows.append(_ddp_row(world, rank, steps))
        if rank == 0:
            torch.save(rows, out_file)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in (1, 2):
            out_file = os.path.join(tmp, f"rows{world}.pt")
            mp.spawn(_worker, args=(world, os.path.join(tmp, f"rdzv{world}"), out_file, args.steps), nprocs=world)
            rows += torch.load(out_file, weights_only=False)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "distributed_cpu.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"wrote {args.out / 'distributed_cpu.csv'}")


if __name__ == "__main__":
    main()
