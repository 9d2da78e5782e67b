"""The package's ops, registered once with ``torch.library`` and dispatched to a backend per call.

``torch.ops.dopamine_fast.<op>`` is the public op (usable under ``torch.compile``); its body asks
``dopamine_fast.backends`` for the implementation: the compiled kernels of ``dopamine_fast._C`` (namespace
``dopamine_fast_C``, the same schemas, CPU and CUDA), the Triton kernels beside each reference, or the PyTorch
reference, which every other backend is tested against.
"""

from __future__ import annotations

import importlib
from typing import List, Optional

import torch

from .. import _native, _triton_support, backends
from . import validation
from .validation import ACTIVATIONS, NONLINEARITIES
from ..plan import member_noise_ids, num_noise_ids
from .noise import (expand_noise, low_rank_numel, noise_bits_reference, noise_reference, check_counter_args)
from .perturbed_linear import perturbed_linear_reference
from .perturbed_rnn import perturbed_rnn_reference
from .rpe_update import rpe_update_reference


# Schemas shared by the public ops and the native ones (csrc/ops.cpp declares the same strings).
SCHEMAS = {
    "noise_": "(Tensor(a!) out, int seed, int step, int stream, int first_id) -> ()",
    "noise_bits_": "(Tensor(a!) out, int seed, int step, int stream, int first_id) -> ()",
    "perturbed_linear": ("(Tensor x, Tensor weight, Tensor? bias, int seed, int step, int weight_stream, "
                         "int bias_stream, float sigma, int num_members, int rank, bool baseline, bool antithetic, "
                         "str activation) -> Tensor"),
    "perturbed_rnn": ("(Tensor x, Tensor? h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
                      "int seed, int step, int[] streams, float sigma, int num_members, int rank, bool baseline, "
                      "bool antithetic, str nonlinearity, bool return_sequence) -> Tensor"),
    "rpe_update_": ("(Tensor(a!) param, Tensor coeffs, int seed, int step, int stream, int rank, float alpha) -> ()"),
}


def _noise_into(out, seed, step, stream, first_id):
    out.copy_(noise_reference(seed, step, stream, first_id, out.shape[0], out.shape[1], device=out.device))


def _noise_bits_into(out, seed, step, stream, first_id):
    out.copy_(noise_bits_reference(seed, step, stream, first_id, out.shape[0], out.shape[1], device=out.device))


REFERENCES = {
    "noise_": _noise_into,
    "noise_bits_": _noise_bits_into,
    "perturbed_linear": perturbed_linear_reference,
    "perturbed_rnn": perturbed_rnn_reference,
    "rpe_update_": rpe_update_reference,
}

# Triton kernels live beside their references: ops/<op>_triton.py defines a function named like the op.
TRITON_MODULES = {
    "noise_": "noise_triton",
    "noise_bits_": "noise_triton",
    "perturbed_linear": "perturbed_linear_triton",
    "perturbed_rnn": "perturbed_rnn_triton",
    "rpe_update_": "rpe_update_triton",
}


def _fake_perturbed_linear(x, weight, bias, seed, step, weight_stream, bias_stream, sigma, num_members, rank,
                           baseline, antithetic, activation):
    return weight.new_empty(num_members, x.shape[-2], weight.shape[0])


def _fake_perturbed_rnn(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, seed, step, streams, sigma, num_members,
                        rank, baseline, antithetic, nonlinearity, return_sequence):
    batch, steps = x.shape[-3], x.shape[-2]
    hidden = weight_hh.shape[0]
    if return_sequence:
        return weight_hh.new_empty(num_members, batch, steps, hidden)
    return weight_hh.new_empty(num_members, batch, hidden)


def _fake_mutating(*args):
    return None


FAKES = {
    "noise_": _fake_mutating,
    "noise_bits_": _fake_mutating,
    "perturbed_linear": _fake_perturbed_linear,
    "perturbed_rnn": _fake_perturbed_rnn,
    "rpe_update_": _fake_mutating,
}

_LIB = torch.library.Library("dopamine_fast", "DEF")


def _checked_fake(op: str):
    """The fake kernel behind the argument checks: a meta tensor among real ones must not pass unnoticed."""
    check, fake = validation.CHECKS[op], FAKES[op]

    def checked(*args):
        check(*args)
        return fake(*args)
    return checked


_BODIES = {}  # op -> the public op's body


def _call(op: str, *args):
    """The public op, or in plain eager mode its body directly: the dispatcher's round trip into a Python kernel
    boxes every argument (3 to 8 us a call, more than a small kernel takes). Under torch.compile, a dispatch mode
    (make_fx, FakeTensorMode, export) or with arguments that are not tensors (an FX proxy), the op itself, so
    traced graphs hold the public op."""
    if (torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack()
            or not isinstance(args[DEVICE_ARG.get(op, 0)], torch.Tensor)):
        return getattr(torch.ops.dopamine_fast, op)(*args)
    return _BODIES[op](*args)


def _define_public(op: str) -> None:
    _LIB.define(op + SCHEMAS[op])
    check, native = validation.CHECKS[op], _native.native_op(op)
    device_arg = DEVICE_ARG.get(op, 0)

    def run(*args):
        impl = backends.dispatch(op, args[device_arg].device)
        if impl is not native:  # the compiled kernels run the same checks themselves (csrc/ops.cpp)
            check(*args)
        return impl(*args)

    # CompositeExplicitAutograd: one body for every device; the backend choice happens inside it.
    _LIB.impl(op, run, "CompositeExplicitAutograd")
    _BODIES[op] = run
    torch.library.register_fake("dopamine_fast::" + op, _checked_fake(op), lib=_LIB)


# The argument whose device picks the backend: the weight, or (the default, 0) the written tensor.
DEVICE_ARG = {"perturbed_rnn": 3, "perturbed_linear": 1}


def _register_backends(op: str) -> None:
    backends.register(op, "reference", REFERENCES[op])
    native = _native.native_op(op)
    if native is not None:
        backends.register(op, "cpp", native, device_types=("cpu",), available=lambda: _native.status(op, "CPU"))
        backends.register(op, "cuda", native, device_types=("cuda",),
                          available=lambda: _native.status(op, "CUDA"))
        torch.library.register_fake("dopamine_fast_C::" + op, _checked_fake(op), lib=_native.fake_library())
    if _triton_support.importable():
        try:
            module = importlib.import_module(f"{__name__}.{TRITON_MODULES[op]}")
        except ImportError:
            return
        fn = getattr(module, op, None)
        if fn is not None:
            # CPU tensors only through the interpreter (tests); compiled Triton needs a GPU.
            devices = ("cuda", "cpu") if _triton_support.interpreted() else ("cuda",)
            backends.register(op, "triton", fn, device_types=devices, auto_device_types=("cuda",),
                              available=_triton_support.status)


for _op in SCHEMAS:
    _define_public(_op)
    _register_backends(_op)


def noise(seed: int, step: int, stream: int, first_id: int, num_ids: int, numel: int, device=None,
          dtype=torch.float32) -> torch.Tensor:
    """Normals of noise ids ``first_id .. first_id+num_ids-1`` of one stream, shape [num_ids, numel]."""
    check_counter_args(seed, step, stream, first_id, num_ids, numel)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    out = torch.empty(num_ids, numel, device=device, dtype=dtype)
    _call("noise_", out, seed, step, stream, first_id)
    return out


def noise_bits(seed: int, step: int, stream: int, first_id: int, num_ids: int, numel: int, device=None):
    """Raw Philox uint32 word of each element (int64), shape [num_ids, numel]."""
    check_counter_args(seed, step, stream, first_id, num_ids, numel)
    out = torch.empty(num_ids, numel, device=device, dtype=torch.int64)
    _call("noise_bits_", out, seed, step, stream, first_id)
    return out


def perturbed_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], seed: int, step: int,
                     weight_stream: int, bias_stream: int, sigma: float, num_members: int, rank: int = 0,
                     baseline: bool = True, antithetic: bool = False, activation: str = "none") -> torch.Tensor:
    """Outputs [K, B, out] of K perturbed copies of a linear layer (see docs/noise.md for the members).

    ``x`` is [K, B, in] (one input per member) or [B, in] (shared). Member k computes
    ``act(x_k (W + s_k sigma E_k)^T + b + s_k sigma e_k)`` with ``E_k`` full rank (``rank=0``) or
    ``A_k B_k^T / sqrt(rank)``.
    """
    return _call("perturbed_linear", x, weight, bias, seed, step, weight_stream, bias_stream, float(sigma),
                 num_members, rank, baseline, antithetic, activation)


def perturbed_rnn(x: torch.Tensor, h0: Optional[torch.Tensor], weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                  bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor], seed: int, step: int,
                  streams: List[int], sigma: float, num_members: int, rank: int = 0, baseline: bool = True,
                  antithetic: bool = False, nonlinearity: str = "tanh",
                  return_sequence: bool = False) -> torch.Tensor:
    """K perturbed copies of an Elman RNN layer over a batch-first sequence.

    ``x`` is [K, B, T, in] or [B, T, in]; ``h0`` is [K, B, H], [B, H] or None (zeros); ``streams`` are the
    noise streams of (weight_ih, weight_hh, bias_ih, bias_hh). Returns the last hidden state [K, B, H], or all
    of them [K, B, T, H].
    """
    return _call("perturbed_rnn", x, h0, weight_ih, weight_hh, bias_ih, bias_hh, seed, step, list(streams),
                 float(sigma), num_members, rank, baseline, antithetic, nonlinearity, return_sequence)


def rpe_update_(param: torch.Tensor, coeffs: torch.Tensor, seed: int, step: int, stream: int, rank: int = 0,
                alpha: float = 1.0) -> torch.Tensor:
    """In place: ``param += alpha * sum_j coeffs[j] * eps_j`` over noise ids ``j = 0 .. len(coeffs)-1``."""
    _call("rpe_update_", param, coeffs, seed, step, stream, rank, float(alpha))
    return param


__all__ = ["noise", "noise_bits", "perturbed_linear", "perturbed_rnn", "rpe_update_", "member_noise_ids",
           "num_noise_ids", "low_rank_numel", "expand_noise", "noise_reference", "noise_bits_reference",
           "ACTIVATIONS", "NONLINEARITIES", "SCHEMAS"]
