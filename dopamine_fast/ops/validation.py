"""Argument checks of the public ops: the one validation layer, in front of every backend and the fake kernels.
Each ``check_<op>_args`` takes the op's own arguments (``specs.py`` names it as the op's check).

A bad call fails with a ``ValueError`` naming the argument before any kernel reads or writes memory. The kernels
(C++, CUDA, Triton) assume checked arguments: ``torch.ops.dopamine_fast_C.<op>``, called directly, is unchecked.
Only metadata is read (shapes, dtypes, devices, strides): no device synchronisation, cheap enough for every call.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..activations import ACTIVATIONS, NONLINEARITIES
from .noise import MASK32 as MAX_WORD  # noise ids, streams and members are 32-bit counter words
from .noise import MAX_NUMEL, check_counter_args, check_int


def check_written(t: torch.Tensor, name: str) -> None:
    """A tensor an op writes into must not have elements sharing memory (an ``expand()``-ed or ``as_strided`` view).

    Its dimensions of size > 1, by increasing stride, must each step past everything the smaller ones span (the
    layouts of contiguous tensors, their transposes, slices and permutations); a layout that does not is refused
    (it may share memory; ``at::has_internal_overlap`` cannot tell for these).
    """
    if t.is_contiguous():  # the common case, and never overlapping
        return
    spanned = 0
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride <= spanned:
            raise ValueError(f"{name} has elements that share memory (an expand()-ed view?); clone() it before "
                             f"writing into it")
        spanned += (size - 1) * stride


def as_float(name: str, value) -> float:
    """``value`` as a float; TypeError naming the argument for anything but a real number (a string included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r:.50}")
    return float(value)


def check_in_place(t: torch.Tensor, name: str) -> None:
    """What every backend refuses for a tensor written in place: one autograd tracks (as ``torch``'s in-place ops
    refuse it) and one whose elements share memory."""
    if t.requires_grad and torch.is_grad_enabled():
        raise ValueError(f"{name} requires grad and grad mode is on: autograd cannot follow an in-place write; call "
                         f"it under torch.no_grad() or pass {name}.detach()")
    check_written(t, name)


def check_noise_args(out: torch.Tensor, seed: int, step: int, stream: int, first_id: int) -> None:
    _check_noise_out(out, seed, step, stream, first_id, bits=False)


def check_noise_bits_args(out: torch.Tensor, seed: int, step: int, stream: int, first_id: int) -> None:
    _check_noise_out(out, seed, step, stream, first_id, bits=True)


def _check_noise_out(out: torch.Tensor, seed: int, step: int, stream: int, first_id: int, bits: bool) -> None:
    check_counter_args(seed, step, stream)
    if out.dim() != 2:
        raise ValueError(f"out must be 2-D [num_ids, numel], got shape {list(out.shape)}")
    if bits and out.dtype != torch.int64:
        raise ValueError(f"out of noise_bits_ must be int64, got {out.dtype}")
    if not bits and not out.is_floating_point():
        raise ValueError(f"out of noise_ must be floating point, got {out.dtype}")
    if first_id < 0 or first_id + out.shape[0] > MAX_WORD + 1:
        raise ValueError(f"noise ids [{first_id}, {first_id + out.shape[0]}) must lie in [0, 2**32)")
    if out.shape[1] > MAX_NUMEL:
        raise ValueError(f"numel must be at most 2**34, got {out.shape[1]}")
    check_written(out, "out")


def _check_common(sigma: float, num_members: int, rank: int) -> None:
    check_int("num_members", num_members)
    check_int("rank", rank)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a float, got {type(sigma).__name__} {sigma!r:.50}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if num_members < 1:
        raise ValueError(f"num_members must be >= 1, got {num_members}")
    if num_members > MAX_WORD:
        raise ValueError(f"num_members must be below 2**32, got {num_members}")
    if rank < 0:
        raise ValueError(f"rank must be >= 0 (0 is full rank), got {rank}")


def _check_member_range(first_member: int, num_members: int) -> None:
    if first_member < 0 or first_member + num_members > MAX_WORD + 1:
        raise ValueError(f"members [first_member, first_member + num_members) = [{first_member}, "
                         f"{first_member + num_members}) must lie in [0, 2**32)")


def _check_floating(t: torch.Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")


def _check_same_device(t: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} on {ref.device}")


def _check_vector(b: Optional[torch.Tensor], weight: torch.Tensor, n: int, name: str, weight_name: str) -> None:
    if b is None:
        return
    if b.dim() != 1 or b.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {list(b.shape)}")
    _check_floating(b, name)
    _check_same_device(b, weight, name, weight_name)


def check_activation(name: str, rnn: bool) -> None:
    if rnn and name not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got '{name}'")
    if not rnn and name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of 'none', 'tanh', 'relu', 'sigmoid', got '{name}'")


def check_perturbed_linear_args(x, weight, bias, seed, step, weight_stream, bias_stream, sigma, num_members, rank,
                                baseline, antithetic, activation, first_member=0) -> None:
    _check_common(sigma, num_members, rank)
    _check_member_range(first_member, num_members)
    check_counter_args(seed, step, weight_stream)
    check_counter_args(seed, step, bias_stream)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {list(weight.shape)}")
    _check_floating(weight, "weight")
    fan_in = weight.shape[1]
    if x.dim() not in (2, 3) or x.shape[-1] != fan_in or (x.dim() == 3 and x.shape[0] != num_members):
        raise ValueError(f"x must be [B, {fan_in}] or [{num_members}, B, {fan_in}] for weight "
                         f"{list(weight.shape)} and num_members={num_members}, got {list(x.shape)}")
    _check_floating(x, "x")
    _check_same_device(x, weight, "x", "weight")
    _check_vector(bias, weight, weight.shape[0], "bias", "weight")
    check_activation(activation, rnn=False)


def check_perturbed_rnn_args(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, seed, step, streams: Sequence[int],
                             sigma, num_members, rank, baseline, antithetic, nonlinearity, return_sequence,
                             first_member=0) -> None:
    _check_common(sigma, num_members, rank)
    _check_member_range(first_member, num_members)
    if len(streams) != 4:
        raise ValueError(f"streams must hold 4 ints (weight_ih, weight_hh, bias_ih, bias_hh), got {list(streams)}")
    for s in streams:
        check_counter_args(seed, step, s)
    if weight_hh.dim() != 2 or weight_hh.shape[0] != weight_hh.shape[1]:
        raise ValueError(f"weight_hh must be [H, H], got shape {list(weight_hh.shape)}")
    hidden = weight_hh.shape[0]
    if weight_ih.dim() != 2 or weight_ih.shape[0] != hidden:
        raise ValueError(f"weight_ih must be [{hidden}, in], got shape {list(weight_ih.shape)}")
    _check_floating(weight_hh, "weight_hh")
    _check_floating(weight_ih, "weight_ih")
    _check_same_device(weight_ih, weight_hh, "weight_ih", "weight_hh")
    fan_in = weight_ih.shape[1]
    if x.dim() not in (3, 4) or x.shape[-1] != fan_in or (x.dim() == 4 and x.shape[0] != num_members):
        raise ValueError(f"x must be [B, T, {fan_in}] or [{num_members}, B, T, {fan_in}], got {list(x.shape)}")
    _check_floating(x, "x")
    _check_same_device(x, weight_hh, "x", "weight_hh")
    if h0 is not None:
        if (h0.dim() not in (2, 3) or (h0.dim() == 3 and h0.shape[0] != num_members) or h0.shape[-1] != hidden
                or h0.shape[-2] != x.shape[-3]):
            raise ValueError(f"h0 must be [B, {hidden}] or [{num_members}, B, {hidden}], got {list(h0.shape)}")
        _check_floating(h0, "h0")
        _check_same_device(h0, weight_hh, "h0", "weight_hh")
    _check_vector(bias_ih, weight_hh, hidden, "bias_ih", "weight_hh")
    _check_vector(bias_hh, weight_hh, hidden, "bias_hh", "weight_hh")
    check_activation(nonlinearity, rnn=True)


def check_rpe_update_args(param, coeffs, seed, step, stream, rank, alpha) -> None:
    check_counter_args(seed, step, stream)
    check_int("rank", rank)
    if rank < 0:
        raise ValueError(f"rank must be >= 0 (0 is full rank), got {rank}")
    _check_floating(param, "param")
    if coeffs.dim() != 1:
        raise ValueError(f"coeffs must be 1-D (one per noise id), got shape {list(coeffs.shape)}")
    if coeffs.numel() > MAX_WORD + 1:
        raise ValueError(f"coeffs must hold at most 2**32 noise ids, got {coeffs.numel()}")
    _check_floating(coeffs, "coeffs")
    _check_same_device(coeffs, param, "coeffs", "param")
    if param.numel() > MAX_NUMEL:
        raise ValueError(f"param must have at most 2**34 elements, got {param.numel()}")
    check_written(param, "param")


def check_perturb_args(param, seed, step, stream, noise_id, rank, alpha) -> None:
    check_counter_args(seed, step, stream)
    if not 0 <= noise_id <= MAX_WORD:
        raise ValueError(f"noise_id must be in [0, 2**32), got {noise_id}")
    if rank < 0:
        raise ValueError(f"rank must be >= 0 (0 is full rank), got {rank}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    _check_floating(param, "param")
    if param.numel() > MAX_NUMEL:
        raise ValueError(f"param must have at most 2**34 elements, got {param.numel()}")
    check_written(param, "param")
