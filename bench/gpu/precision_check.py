"""Full-rank ``perturbed_linear`` at tiny sigma: do the kernels keep the members' loss differences?

Full-rank kernels that form ``W + s*sigma*E`` in float32 round the perturbation at W's precision: at sigma = 1e-5
only two or three digits of ``sigma*E`` survive. What the optimizer uses is each member's loss minus the
unperturbed one's, ``d_k = L_k - L_0``; this script measures, per backend and sigma, the relative error of ``d_k``
in float32 against the float64 reference, beside the float32 reference's own error (the reference computes
``x W^T + s*sigma*(x E^T)``, the alternative the issue names). A backend is ``ok`` when its error is at most
twice the float32 reference's, or under 1 % (far below the sampling noise of the optimizer's estimate);
otherwise (``loses``) the kernel should switch to the reference's formulation.
Writes ``precision.csv``.

    python bench/gpu/precision_check.py [--device cuda] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for common (which finds the package)

import common  # noqa: E402
from dopamine_fast import backends, ops, use_backend  # noqa: E402

SIGMAS = (1e-2, 1e-3, 1e-4, 1e-5)
SIZES = {"quick": (64, 8, 16), "full": (1024, 32, 64)}  # width, batch, K


def member_loss_differences(backend: str, x, w, b, y, sigma: float, k: int) -> torch.Tensor:
    """``L_k - L_0`` for the K perturbed members, losses summed in float64 from the backend's outputs."""
    with use_backend(backend):
        out = ops.perturbed_linear(x, w, b, 7, 3, 0, 1, sigma, k + 1, 0, True, True, "tanh")
    losses = (out.double() - y.double()).pow(2).mean(dim=(1, 2))
    return losses[1:] - losses[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(common.DEFAULT_OUT))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    width, batch, k = SIZES["quick" if args.quick else "full"]
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(width, width, generator=gen) / width**0.5).to(device)
    b = (0.1 * torch.randn(width, generator=gen)).to(device)
    x = torch.randn(batch, width, generator=gen).to(device)
    y = torch.randn(batch, width, generator=gen).tanh().to(device)
    names = [n for n in backends.available_backends("perturbed_linear", device)
             if not (n == "triton" and device.type == "cpu")]  # the interpreter is a test tool
    rows = []
    for sigma in SIGMAS:
        exact = member_loss_differences("reference", x.double(), w.double(), b.double(), y, sigma, k)
        scale = exact.abs().max().item()
        errors = {}
        for name in names:
            got = member_loss_differences(name, x, w, b, y, sigma, k)
            errors[name] = (got - exact).abs().max().item() / scale
        for name in names:
            ok = errors[name] <= max(2 * errors["reference"], 1e-2)
            rows.append(dict(device=str(device), width=width, batch=batch, K=k, sigma=sigma, backend=name,
                             max_abs_difference=f"{scale:.3g}", relative_error=f"{errors[name]:.3g}",
                             reference_float32_error=f"{errors['reference']:.3g}", verdict="ok" if ok else "loses"))
            print(f"sigma={sigma:g} {name:9s} relative error of L_k - L_0: {errors[name]:.3g} "
                  f"(float32 reference {errors['reference']:.3g}) {rows[-1]['verdict']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "precision.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out / 'precision.csv'}")


if __name__ == "__main__":
    main()
