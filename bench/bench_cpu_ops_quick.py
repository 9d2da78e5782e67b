"""Quick CPU timing of each op: the C++ kernels (cpp backend) against the PyTorch reference and the floor.

The floor is one plain forward of the unperturbed layer on the same K*B rows (``F.linear``, ``nn.RNN``). Prints the
median of ``--repeats`` runs in milliseconds; a rough check while developing, not the project's benchmark.

    python bench/bench_cpu_ops_quick.py [--members 1024] [--batch 32] [--width 256] [--skip-reference]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dopamine_fast import ops, use_backend


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8, help="RNN sequence length")
    parser.add_argument("--noise-numel", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-reference", action="store_true", help="time the cpp backend only")
    args = parser.parse_args()
    k, b, n, t = args.members, args.batch, args.width, args.steps
    g = torch.Generator().manual_seed(0)
    x = torch.randn(k, b, n, generator=g)
    w = torch.randn(n, n, generator=g) / n**0.5
    bias = torch.randn(n, generator=g)
    xs = torch.randn(k, b, t, n, generator=g)
    rnn_params = [w, w.clone() * 0.5, bias, bias.clone()]
    rnn = torch.nn.RNN(n, n, batch_first=True).requires_grad_(False)
    coeffs = torch.randn(k, generator=g)
    noise_out = torch.empty(k, args.noise_numel)

    cases = {
        "floor: F.linear on K*B rows": (lambda: torch.nn.functional.linear(x, w, bias), False),
        "perturbed_linear full rank": (lambda: ops.perturbed_linear(x, w, bias, 1, 2, 0, 1, 0.01, k, rank=0), True),
        "perturbed_linear rank 1": (lambda: ops.perturbed_linear(x, w, bias, 1, 2, 0, 1, 0.01, k, rank=1), True),
        "perturbed_linear full rank, shared x": (
            lambda: ops.perturbed_linear(x[0], w, bias, 1, 2, 0, 1, 0.01, k, rank=0), True),
        "rpe_update_ full rank": (lambda: ops.rpe_update_(w.clone(), coeffs, 1, 2, 0, rank=0, alpha=1e-3), True),
        "rpe_update_ rank 1": (lambda: ops.rpe_update_(w.clone(), coeffs, 1, 2, 0, rank=1, alpha=1e-3), True),
        f"noise_ {k} x {args.noise_numel}": (
            lambda: torch.ops.dopamine_fast.noise_(noise_out, 1, 2, 0, 0), True),
        f"floor: nn.RNN on K*B rows, T={t}": (lambda: rnn(xs.view(k * b, t, n)), False),
        f"perturbed_rnn full rank, T={t}": (
            lambda: ops.perturbed_rnn(xs, None, *rnn_params, 1, 2, [0, 1, 2, 3], 0.01, k, rank=0), True),
        f"perturbed_rnn rank 1, T={t}": (
            lambda: ops.perturbed_rnn(xs, None, *rnn_params, 1, 2, [0, 1, 2, 3], 0.01, k, rank=1), True),
    }
    print(f"K={k} B={b} width={n} threads={torch.get_num_threads()} (median of {args.repeats}, ms)")
    print(f"{'case':48s} {'cpp':>10s} {'reference':>10s}")
    for name, (fn, has_backends) in cases.items():
        if not has_backends:
            print(f"{name:48s} {median_ms(fn, args.repeats):10.1f}")
            continue
        with use_backend("cpp"):
            cpp = median_ms(fn, args.repeats)
        ref = float("nan")
        if not args.skip_reference:
            with use_backend("reference"):
                ref = median_ms(fn, args.repeats)
        print(f"{name:48s} {cpp:10.1f} {ref:10.1f}")


if __name__ == "__main__":
    main()
