"""Member ranges of the fused ops (``first_member``): every backend against the reference on a range of members,
and ranges side by side equal to the whole call, bit for bit."""

import pytest
import torch
from conftest import TOLERANCES, backend_device_pairs

from dopamine_fast import ops, use_backend

SEED, STEP, SIGMA = 11, 3, 0.2
B, T, IN, OUT = 3, 4, 13, 11
TOTAL = 23  # members of the whole call: the baseline and 22 perturbed


def linear_inputs(shared, members=TOTAL, batch=B):
    g = torch.Generator().manual_seed(1)
    x = torch.randn((batch, IN) if shared else (members, batch, IN), generator=g)
    return x, torch.randn(OUT, IN, generator=g) / IN**0.5, torch.randn(OUT, generator=g)


def rnn_inputs(shared, with_h0, members=TOTAL):
    g = torch.Generator().manual_seed(2)
    x = torch.randn((B, T, IN) if shared else (members, B, T, IN), generator=g)
    h0 = torch.randn(B, OUT, generator=g) if with_h0 else None
    w_ih = torch.randn(OUT, IN, generator=g) / IN**0.5
    w_hh = torch.randn(OUT, OUT, generator=g) / OUT**0.5
    return x, h0, w_ih, w_hh, torch.randn(OUT, generator=g), torch.randn(OUT, generator=g)


def linear(x, w, b, first, count, rank, baseline, antithetic):
    xs = x if x.dim() == 2 else x[first:first + count]
    return ops.perturbed_linear(xs, w, b, SEED, STEP, 0, 1, SIGMA, count, rank, baseline, antithetic, "tanh",
                                first_member=first)


def rnn(inputs, first, count, rank, baseline, antithetic, return_sequence=False):
    x, h0, w_ih, w_hh, b_ih, b_hh = inputs
    xs = x if x.dim() == 3 else x[first:first + count]
    return ops.perturbed_rnn(xs, h0, w_ih, w_hh, b_ih, b_hh, SEED, STEP, [0, 1, 2, 3], SIGMA, count, rank, baseline,
                             antithetic, "tanh", return_sequence, first_member=first)


# Splits of the TOTAL members into ranges: the baseline alone, a range starting inside an antithetic pair (members
# 1, 2 share noise id 0 with a baseline, so [0, 2) | [2, ...) splits that pair), single members, the end.
SPLITS = [[0, TOTAL], [0, 1, TOTAL], [0, 2, 5, 6, 17, TOTAL], [0, 3, 4, 22, TOTAL], [0, 9, 10, 11, TOTAL]]
MODES = [(True, True), (True, False), (False, True)]  # (baseline, antithetic)


def assert_concatenates(parts, whole, backend, rank, context):
    """Ranges side by side are the whole call: bit for bit, except the GPU backends' low-rank paths, which leave
    the GEMM with the shared weight over all members' rows to a library GEMM (its rounding may depend on the row
    count)."""
    if backend in ("triton", "cuda") and rank:
        torch.testing.assert_close(torch.cat(parts), whole, **TOLERANCES[torch.float32])
    else:
        assert torch.equal(torch.cat(parts), whole), context


def rnn_cases(backend, cases):
    """The interpreted Triton RNN launches a kernel per step and member tile: its first case only (the baseline
    and antithetic pairs, one pair split by a range)."""
    return cases[:1] if backend == "triton" else cases


def range_pairs(op):
    """The reference, and every kernel backend on each device that runs it (compiled Triton needs CUDA tensors)."""
    return [pytest.param("reference", "cpu", id="reference-cpu")] + backend_device_pairs(op)


@pytest.mark.parametrize("rank", [0, 1, 3])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("backend,device", range_pairs("perturbed_linear"))
def test_linear_ranges_concatenate_to_the_whole_call(backend, device, shared, rank):
    x, w, b = (t.to(device) for t in linear_inputs(shared))
    for baseline, antithetic in MODES:
        with use_backend(backend):
            whole = linear(x, w, b, 0, TOTAL, rank, baseline, antithetic)
            for cuts in SPLITS:
                parts = [linear(x, w, b, a, z - a, rank, baseline, antithetic) for a, z in zip(cuts, cuts[1:])]
                assert_concatenates(parts, whole, backend, rank, (baseline, antithetic, cuts))


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("shared,with_h0", [(True, False), (False, True)])
@pytest.mark.parametrize("backend,device", range_pairs("perturbed_rnn"))
def test_rnn_ranges_concatenate_to_the_whole_call(backend, device, shared, with_h0, rank):
    inputs = [None if t is None else t.to(device) for t in rnn_inputs(shared, with_h0)]
    for baseline, antithetic in rnn_cases(backend, MODES):
        with use_backend(backend):
            whole = rnn(inputs, 0, TOTAL, rank, baseline, antithetic, return_sequence=True)
            for cuts in rnn_cases(backend, [SPLITS[2], SPLITS[1], SPLITS[3]]):
                parts = [rnn(inputs, a, z - a, rank, baseline, antithetic, return_sequence=True)
                         for a, z in zip(cuts, cuts[1:])]
                assert_concatenates(parts, whole, backend, rank, (baseline, antithetic, cuts))


@pytest.mark.parametrize("rank", [0, 1])
def test_cpp_ranges_on_the_block_grid(rank):
    """Many members of one row: the CPU kernels' blocks of members (256 rows) split by ranges at any member."""
    x, w, b = linear_inputs(False, members=600, batch=1)
    for baseline, antithetic in ((True, True), (False, False)):
        with use_backend("cpp"):
            whole = linear(x, w, b, 0, 600, rank, baseline, antithetic)
            for cuts in ([0, 256, 257, 600], [0, 1, 300, 513, 600], [0, 255, 599, 600]):
                parts = [linear(x, w, b, a, z - a, rank, baseline, antithetic) for a, z in zip(cuts, cuts[1:])]
                assert torch.equal(torch.cat(parts), whole), (rank, baseline, antithetic, cuts)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("width,batch", [(256, 1), (256, 5), (101, 3)])
def test_cpp_full_rank_ranges_at_layer_widths(width, batch, shared):
    """Widths where MKL threads a GEMM by itself when it runs outside a parallel region: a call of one member (or one
    antithetic pair) runs one task, and must still give the bits of the whole call (2 threads, as users run)."""
    g = torch.Generator().manual_seed(7)
    k = 41
    x = torch.randn((batch, width) if shared else (k, batch, width), generator=g)
    w, b = torch.randn(width, width, generator=g) / width**0.5, torch.randn(width, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with use_backend("cpp"):
            whole = linear(x, w, b, 0, k, 0, True, True)
            for cuts in ([0, 1, 4, 5, 41], [0, 2, 7, 20, 41], [0, 40, 41]):
                parts = [linear(x, w, b, a, z - a, 0, True, True) for a, z in zip(cuts, cuts[1:])]
                assert torch.equal(torch.cat(parts), whole), cuts
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("shared", [True, False])
def test_cpp_full_rank_rnn_ranges_over_several_blocks_of_rows(shared):
    """Batch 300: the CPU full-rank RNN splits it into blocks of 128 rows (the last one partial), and a call of one
    member runs its blocks on both threads; every range still gives the whole call's bits."""
    g = torch.Generator().manual_seed(8)
    k, batch, hidden = 9, 300, 64
    x = torch.randn((batch, T, IN) if shared else (k, batch, T, IN), generator=g)
    inputs = (x, None, torch.randn(hidden, IN, generator=g) / IN**0.5,
              torch.randn(hidden, hidden, generator=g) / hidden**0.5, torch.randn(hidden, generator=g), None)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with use_backend("cpp"):
            whole = rnn(inputs, 0, k, 0, True, True, return_sequence=True)
            for cuts in ([0, 1, 2, 9], [0, 4, 5, 9], [0, 8, 9]):
                parts = [rnn(inputs, a, z - a, 0, True, True, return_sequence=True) for a, z in zip(cuts, cuts[1:])]
                assert torch.equal(torch.cat(parts), whole), cuts
        with use_backend("reference"):
            expected = rnn(inputs, 0, k, 0, True, True, return_sequence=True)
        torch.testing.assert_close(whole, expected, **TOLERANCES[torch.float32])
    finally:
        torch.set_num_threads(threads)

@pytest.mark.parametrize("rank", [0, 1, 3])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_linear"))
def test_linear_range_matches_reference(backend, device, rank):
    for shared in (True, False):
        x, w, b = linear_inputs(shared)
        for baseline, antithetic in MODES:
            for first, count in ((0, 5), (2, 7), (17, 6)):
                with use_backend("reference"):
                    expected = linear(x, w, b, first, count, rank, baseline, antithetic)
                with use_backend(backend):
                    got = linear(x.to(device), w.to(device), b.to(device), first, count, rank, baseline, antithetic)
                torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize("rank", [0, 2])
@pytest.mark.parametrize("backend,device", backend_device_pairs("perturbed_rnn"))
def test_rnn_range_matches_reference(backend, device, rank):
    for shared, with_h0 in ((True, False), (False, True)):
        inputs = rnn_inputs(shared, with_h0)
        for baseline, antithetic in rnn_cases(backend, MODES):
            for first, count in rnn_cases(backend, ((2, 7), (0, 4), (20, 3))):
                with use_backend("reference"):
                    expected = rnn(inputs, first, count, rank, baseline, antithetic)
                with use_backend(backend):
                    got = rnn([t if t is None else t.to(device) for t in inputs], first, count, rank, baseline,
                              antithetic)
                torch.testing.assert_close(got.cpu(), expected, **TOLERANCES[torch.float32])


def test_range_members_are_the_whole_calls_members():
    """The reference itself: a range is the slice of the whole call (members carry their own noise ids)."""
    x, w, b = linear_inputs(True)
    with use_backend("reference"):
        whole = linear(x, w, b, 0, TOTAL, 0, True, True)
        torch.testing.assert_close(linear(x, w, b, 6, 5, 0, True, True), whole[6:11], rtol=0, atol=0)


def test_opcheck_with_a_range():
    x, w, b = linear_inputs(False, members=4)
    torch.library.opcheck(torch.ops.dopamine_fast.perturbed_linear,
                          (x, w, b, SEED, STEP, 0, 1, SIGMA, 4, 1, True, True, "tanh", 7))
    x, h0, w_ih, w_hh, b_ih, b_hh = rnn_inputs(False, True, members=4)
    torch.library.opcheck(torch.ops.dopamine_fast.perturbed_rnn,
                          (x, h0, w_ih, w_hh, b_ih, b_hh, SEED, STEP, [0, 1, 2, 3], SIGMA, 4, 0, True, False, "tanh",
                           False, 5))


@pytest.mark.parametrize("first,count", [(-1, 3), (2**32 - 2, 3)])
@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_bad_member_range(backend, first, count):
    x, w, b = linear_inputs(True)
    inputs = rnn_inputs(True, False)
    with use_backend(backend):
        with pytest.raises(ValueError, match=r"members \[first_member, first_member \+ num_members\)"):
            linear(x, w, b, first, count, 0, True, False)
        with pytest.raises(ValueError, match=r"members \[first_member, first_member \+ num_members\)"):
            rnn(inputs, first, count, 0, True, False)
