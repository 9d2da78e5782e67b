"""Scale-out on torch.distributed: 2 gloo processes on the CPU against one process, the drift guard, sharding."""

import dataclasses
import faulthandler
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import dopamine_fast as df
from dopamine_fast.distributed import (DriftError, Parallel, as_parallel, atomic_save, batch_range, bit_hash,
                                       member_ranges)

WORLD = 2
STEPS = 10
ROWS = 11  # odd, so the data-parallel shards (5 and 6 rows) have different weights
OPTIMIZERS = {"wp": df.WeightPerturbation, "dopamine": df.Dopamine}
# (optimizer, evaluation path, mode, K, antithetic): odd member counts, so the member shares are uneven too.
# Member shares on the closure path compute every loss exactly as one process does, so even float32 agrees bitwise.
EXACT_CASE = ("dopamine", "closure", "members", 6, True)
# Member shares on the population path run on the fused ops (a range of members each): bitwise too.
FUSED_CASE = ("dopamine", "population", "members", 6, True)
CASES = [(opt, path, mode, k, anti) for opt in OPTIMIZERS for path in ("closure", "population")
         for mode in ("members", "data") for k, anti in ((6, True), (5, False))]


def _problem(dtype=torch.float64):
    # float64: member RPEs are differences of nearly equal losses, which amplify float32 rounding (a shard's
    # mean differs from the full batch's in the last bit) to ~1e-5 after 10 steps; the sharding itself is exact.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)
    x, y = torch.randn(ROWS, 3, dtype=dtype), torch.randn(ROWS, 2, dtype=dtype)
    return model, x, y


def _train(case, parallel=None, perturb_at=None, dtype=torch.float64, paths=None):
    """Final parameters after STEPS steps of ``case``, on this rank's members or batch shard (``paths`` collects
    the population's path of each step)."""
    name, path, mode, k, antithetic = case
    model, x, y = _problem(dtype)
    if parallel is not None and mode == "data":
        rows = batch_range(ROWS, parallel.world_size, parallel.rank)
        x, y = x[rows.start:rows.stop], y[rows.start:rows.stop]
        parallel.shard_size = len(rows)
    opt = OPTIMIZERS[name](model.parameters(), lr=0.1, sigma=0.05, num_perturbations=k, antithetic=antithetic,
                           seed=7, process_group=parallel)
    pop = df.Population(model, loss="mse")
    for step in range(STEPS):
        if step == perturb_at:
            with torch.no_grad():
                model[0].bias[0] += 1e-6
        if path == "population":
            opt.step(population=pop, inputs=x, targets=y)
            if paths is not None:
                paths.append(pop.last_path)
        else:
            opt.step(lambda: F.mse_loss(model(x), y))
    return [p.detach().clone() for p in model.parameters()]


def keep_gloo_on_loopback():
    """Gloo binds to the interface the hostname resolves to unless told otherwise: keep it on the loopback."""
    if "lo" in {name for _, name in socket.if_nameindex()}:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def _worker(rank, init_file, out_dir):
    # This rank's stderr, and the Python stack of every thread should it crash (abort, segfault), go to a log
    # the fixture reports: a crash is otherwise only "terminated with signal ..." in the test's output.
    log = open(os.path.join(out_dir, f"rank{rank}.log"), "w")
    os.dup2(log.fileno(), 2)
    faulthandler.enable(log)
    keep_gloo_on_loopback()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the generic-path notice, once per rank
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {case: _train(case, Parallel(mode=case[2])) for case in CASES}
        float32 = _train(EXACT_CASE, Parallel(), dtype=torch.float32)
        fused_paths = []
        fused32 = _train(FUSED_CASE, Parallel(), dtype=torch.float32, paths=fused_paths)
        drift = {}
        for label, perturb_at in (("perturbed at step 3", 3), ("different start", 0)):
            try:
                _train(("wp", "closure", "members", 4, True), Parallel(check_every=5),
                       perturb_at=perturb_at if rank == 1 else None)
                drift[label] = None
            except DriftError as err:
                drift[label] = str(err)
        torch.save({"results": results, "float32": float32, "fused32": fused32, "fused_paths": fused_paths,
                    "drift": drift}, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # no rank tears its connections down while another still reads from them
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of 2 gloo processes ended with, for every case (one spawn for the whole module)."""
    crashes = []
    for _ in range(2):
        tmp = tmp_path_factory.mktemp("dist")
        try:
            mp.spawn(_worker, args=(str(tmp / "rendezvous"), str(tmp)), nprocs=WORLD, join=True)
            break
        except mp.ProcessExitedException as err:
            logs = "\n".join(f"--- rank {r} ---\n{(tmp / f'rank{r}.log').read_text()[-4000:]}" for r in range(WORLD)
                             if (tmp / f"rank{r}.log").exists())
            crashes.append(f"{err}\n{logs}")
    else:
        raise AssertionError("both spawns of the gloo processes crashed:\n" + "\n".join(crashes))
    if crashes:
        # A process killed by a signal once in a few full-suite CI runs (SIGABRT, never reproduced locally): the
        # rerun must pass, and the first crash stays visible in the warnings summary with each rank's log.
        warnings.warn(f"gloo processes crashed once and passed on the rerun: {crashes[0]}")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_two_processes_match_one(ranks, case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = _train(case)
    rank0, rank1 = (r["results"][case] for r in ranks)
    for a, b in zip(rank0, rank1):
        assert torch.equal(a, b), "the ranks' weights must be bit-identical"
    start = _problem()[0].parameters()
    moved = max(float((s - p0.detach()).abs().max()) for s, p0 in zip(single, start))
    assert moved > 1e-3, "the run must move the weights for the comparison to mean anything"
    for a, s in zip(rank0, single):
        assert float((a - s).norm() / s.norm()) < 1e-5


def test_member_shares_on_the_closure_path_are_bit_exact_in_float32(ranks):
    single = _train(EXACT_CASE, dtype=torch.float32)
    for r in ranks:
        for a, s in zip(r["float32"], single):
            assert a.dtype == torch.float32 and torch.equal(a, s)


def test_member_shares_on_the_fused_path_are_bit_exact_in_float32(ranks):
    paths = []
    single = _train(FUSED_CASE, dtype=torch.float32, paths=paths)
    assert set(paths) == {"fused"}
    for r in ranks:
        assert set(r["fused_paths"]) == {"fused"}, "each rank's share of the members runs on the fused ops"
        for a, s in zip(r["fused32"], single):
            assert a.dtype == torch.float32 and torch.equal(a, s)


def test_drift_guard_names_the_rank_that_drifted(ranks):
    for r in ranks:
        message = r["drift"]["perturbed at step 3"]
        assert message is not None and "rank(s) [1] drifted" in message and "at step 5" in message


def test_drift_guard_catches_different_starting_weights(ranks):
    for r in ranks:
        message = r["drift"]["different start"]
        assert message is not None and "at step 0" in message


@pytest.mark.parametrize("members,world,antithetic", [(7, 2, True), (17, 3, True), (6, 4, False), (1, 2, False),
                                                      (3, 4, True), (65537, 512, True), (100, 7, False)])
def test_member_ranges_cover_balance_and_keep_pairs(members, world, antithetic):
    shares = member_ranges(members, world, antithetic)
    assert len(shares) == world
    assert [m for s in shares for m in s] == list(range(members))
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= (2 if antithetic else 1)
    if antithetic:
        assert all(s.start == 0 or s.start % 2 == 1 for s in shares if len(s))


def test_batch_range_splits_rows_evenly():
    shares = [batch_range(11, 3, r) for r in range(3)]
    assert [len(s) for s in shares] == [3, 4, 4] and [i for s in shares for i in s] == list(range(11))
    with pytest.raises(ValueError, match="rank"):
        batch_range(11, 3, 3)


def test_bit_hash_sees_one_ulp_and_order():
    a = torch.randn(1000)
    b = a.clone()
    b[500] = torch.nextafter(b[500], torch.tensor(float("inf")))
    assert bit_hash([a]) != bit_hash([b])
    assert bit_hash([a]) != bit_hash([a.flip(0)])
    assert bit_hash([a, a.double()]) == bit_hash([a.clone(), a.double().clone()])


def test_atomic_save_leaves_no_partial_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"x": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unpicklable()}, path)
    assert torch.load(path) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_bad_process_group_arguments():
    with pytest.raises(TypeError, match="process_group"):
        df.Dopamine(nn.Linear(2, 1).parameters(), process_group="world")
    with pytest.raises(ValueError, match="init_process_group"):
        as_parallel(Parallel())
    with pytest.raises(ValueError, match="mode"):
        Parallel(mode="pipeline")
    with pytest.raises(ValueError, match="check_every"):
        Parallel(check_every=-1)


@pytest.mark.parametrize("antithetic", [True, False])
@torch.no_grad()
def test_a_share_of_members_gives_the_same_losses_as_all_members(antithetic):
    model, x, y = _problem()
    opt = df.WeightPerturbation(model.parameters(), num_perturbations=6, antithetic=antithetic, seed=3)
    pop = df.Population(model, loss="mse")
    plan = opt.plan()
    full_pop = pop(plan, x, y)
    full_closure = opt._evaluate_in_place(lambda: F.mse_loss(model(x), y), plan)
    for share in (range(0, 3), range(3, 7), range(5, 5)):
        local = dataclasses.replace(plan, members=share)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.testing.assert_close(pop(local, x, y), full_pop[share.start:share.stop].to(full_pop.dtype))
        torch.testing.assert_close(opt._evaluate_in_place(lambda: F.mse_loss(model(x), y), local),
                                   full_closure[share.start:share.stop])


def test_one_process_group_of_one_changes_nothing(tmp_path):
    keep_gloo_on_loopback()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        case = ("dopamine", "population", "members", 6, True)
        assert isinstance(as_parallel(dist.group.WORLD), Parallel)
        grouped = _train(case, as_parallel(dist.group.WORLD))
    finally:
        dist.destroy_process_group()
    for a, b in zip(grouped, _train(case)):
        assert torch.equal(a, b)
