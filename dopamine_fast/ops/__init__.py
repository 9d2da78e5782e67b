"""The package's ops: ``torch.ops.dopamine_fast.<op>`` (usable under ``torch.compile``) and the Python functions
below, which call them.

Each op is described once, in ``specs.py``; ``library.py`` defines the public op from that spec, and its body asks
``dopamine_fast.backends`` for the implementation: the compiled kernels of ``dopamine_fast._C`` (namespace
``dopamine_fast_C``, the same schemas, CPU and CUDA), the Triton kernels (``dopamine_fast.backends.triton``), or
the PyTorch reference beside each spec, which every other backend is tested against.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ..activations import ACTIVATIONS, NONLINEARITIES
from ..plan import low_rank_numel, member_noise_ids, num_noise_ids
from .library import call
from .noise import check_counter_args, expand_noise, noise_bits_reference, noise_reference
from .specs import SPECS, OpSpec
from .validation import as_float, check_in_place


def noise(seed: int, step: int, stream: int, first_id: int, num_ids: int, numel: int, device=None,
          dtype=torch.float32) -> torch.Tensor:
    """Normals of noise ids ``first_id .. first_id+num_ids-1`` of one stream, shape [num_ids, numel]."""
    check_counter_args(seed, step, stream, first_id, num_ids, numel)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    out = torch.empty(num_ids, numel, device=device, dtype=dtype)
    call("noise_", out, seed, step, stream, first_id)
    return out


def noise_bits(seed: int, step: int, stream: int, first_id: int, num_ids: int, numel: int, device=None):
    """Raw Philox uint32 word of each element (int64), shape [num_ids, numel]."""
    check_counter_args(seed, step, stream, first_id, num_ids, numel)
    out = torch.empty(num_ids, numel, device=device, dtype=torch.int64)
    call("noise_bits_", out, seed, step, stream, first_id)
    return out


def perturbed_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], seed: int, step: int,
                     weight_stream: int, bias_stream: int, sigma: float, num_members: int, rank: int = 0,
                     baseline: bool = True, antithetic: bool = False, activation: str = "none",
                     first_member: int = 0) -> torch.Tensor:
    """Outputs [K, B, out] of K perturbed copies of a linear layer (see docs/noise.md for the members).

    The K members are ``first_member .. first_member + K - 1`` (``K = num_members``), so a range of members can be
    evaluated alone: ranges side by side give the outputs of the whole call, bit for bit. ``x`` is [K, B, in] (one
    input per member of the range) or [B, in] (shared). Member k computes
    ``act(x_k (W + s_k sigma E_k)^T + b + s_k sigma e_k)`` with ``E_k`` full rank (``rank=0``) or
    ``A_k B_k^T / sqrt(rank)``.
    """
    return call("perturbed_linear", x, weight, bias, seed, step, weight_stream, bias_stream, as_float("sigma", sigma),
                 num_members, rank, baseline, antithetic, activation, first_member)


def perturbed_rnn(x: torch.Tensor, h0: Optional[torch.Tensor], weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                  bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor], seed: int, step: int,
                  streams: List[int], sigma: float, num_members: int, rank: int = 0, baseline: bool = True,
                  antithetic: bool = False, nonlinearity: str = "tanh",
                  return_sequence: bool = False, first_member: int = 0) -> torch.Tensor:
    """K perturbed copies of an Elman RNN layer over a batch-first sequence: members ``first_member ..
    first_member + K - 1`` (``K = num_members``; ranges side by side give the whole call's outputs bit for bit).

    ``x`` is [K, B, T, in] or [B, T, in]; ``h0`` is [K, B, H], [B, H] or None (zeros, never materialised for
    every member); ``streams`` are the noise streams of (weight_ih, weight_hh, bias_ih, bias_hh). Returns the last
    hidden state [K, B, H], or all of them [K, B, T, H].
    """
    return call("perturbed_rnn", x, h0, weight_ih, weight_hh, bias_ih, bias_hh, seed, step, list(streams),
                 as_float("sigma", sigma), num_members, rank, baseline, antithetic, nonlinearity, return_sequence,
                 first_member)


def rpe_update_(param: torch.Tensor, coeffs: torch.Tensor, seed: int, step: int, stream: int, rank: int = 0,
                alpha: float = 1.0) -> torch.Tensor:
    """In place: ``param += alpha * sum_j coeffs[j] * eps_j`` over noise ids ``j = 0 .. len(coeffs)-1``.

    Like torch's in-place ops it refuses a ``param`` that requires grad while grad mode is on, on every backend."""
    check_in_place(param, "param")
    call("rpe_update_", param, coeffs, seed, step, stream, rank, as_float("alpha", alpha))
    return param


def perturb_(param: torch.Tensor, seed: int, step: int, stream: int, noise_id: int, rank: int = 0,
             alpha: float = 1.0) -> torch.Tensor:
    """In place: ``param += alpha * eps_j`` for the one noise id ``j = noise_id`` (low rank: ``A_j B_j^T / sqrt(r)``).

    One pass over the parameter, the noise regenerated inside the kernel (nothing of the parameter's size is
    allocated for a contiguous parameter): the drop-in step's lean mode perturbs, flips and restores with it.
    """
    call("perturb_", param, seed, step, stream, noise_id, rank, float(alpha))
    return param


__all__ = ["noise", "noise_bits", "perturbed_linear", "perturbed_rnn", "rpe_update_", "perturb_", "member_noise_ids",
           "num_noise_ids", "low_rank_numel", "expand_noise", "noise_reference", "noise_bits_reference",
           "ACTIVATIONS", "NONLINEARITIES", "SPECS", "OpSpec"]
