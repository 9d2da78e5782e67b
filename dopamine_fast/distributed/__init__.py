"""Scale-out on ``torch.distributed``: members (or batch shards) over ranks, only member losses on the wire.

    import torch.distributed as dist
    import dopamine_fast as df

    dist.init_process_group("gloo")                       # torchrun sets the environment; "nccl" on GPUs
    opt = df.Dopamine(model.parameters(), num_perturbations=256, process_group=dist.group.WORLD)
    # or process_group=df.distributed.Parallel(mode="data", check_every=100) with this rank's batch shard
    for step, (x, y) in enumerate(loader):
        opt.step(population=pop, inputs=x, targets=y)         # every rank: the same update, bit for bit
        if step % 100 == 99:
            df.distributed.save_checkpoint("ckpt.pt", model, opt)

docs/scaling.md gives the traffic and the expected efficiency at scale.
"""

from .checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .checksum import bit_hash
from .parallel import MODES, DriftError, Parallel, as_parallel
from .sharding import batch_range, member_ranges

__all__ = ["Parallel", "DriftError", "MODES", "as_parallel", "member_ranges", "batch_range", "save_checkpoint",
           "load_checkpoint", "atomic_save", "bit_hash"]
