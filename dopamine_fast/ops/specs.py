"""One spec per op, the single place that says what the op is: its schema, its PyTorch reference, its fake
(meta) kernel, its argument checks, the argument whose device picks the backend, and its Triton launcher.

``dopamine_fast.ops`` defines the public op ``dopamine_fast::<name>`` from each spec, and
``dopamine_fast.backends.register_op`` defines the compiled op ``dopamine_fast_C::<name>`` from the same schema
(C++ registers per-device kernels only) and registers the reference, the compiled kernels and the Triton launcher.
CONTRIBUTING.md lists the steps of adding an op.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from ..backends import triton as triton_backend
from . import validation
from .noise import noise_bits_into_reference, noise_into_reference
from .perturb import perturb_reference
from .perturbed_linear import perturbed_linear_reference
from .perturbed_rnn import perturbed_rnn_reference
from .rpe_update import rpe_update_reference

try:  # each op's Triton launcher; where Triton cannot be imported, the other backends serve
    from ..backends.triton.noise import noise_ as noise_triton
    from ..backends.triton.noise import noise_bits_ as noise_bits_triton
    from ..backends.triton.perturb import perturb_ as perturb_triton
    from ..backends.triton.perturbed_linear import perturbed_linear as perturbed_linear_triton
    from ..backends.triton.perturbed_rnn import perturbed_rnn as perturbed_rnn_triton
    from ..backends.triton.rpe_update import rpe_update_ as rpe_update_triton
except ImportError as err:
    triton_backend.import_failed(err)
    noise_triton = noise_bits_triton = perturb_triton = perturbed_linear_triton = perturbed_rnn_triton = None
    rpe_update_triton = None


@dataclass(frozen=True)
class OpSpec:
    name: str
    schema: str  # "(arguments) -> returns", as torch.library writes it after the name
    reference: Callable  # the PyTorch implementation every other backend is tested against
    fake: Callable  # output metadata from the arguments, for torch.compile and meta tensors
    check: Callable  # raises ValueError naming the bad argument; called with the op's arguments
    device_arg: str  # the tensor argument whose device picks the backend
    triton: Optional[Callable] = None  # the Triton launcher (dopamine_fast.backends.triton), None without one

    @functools.cached_property
    def device_index(self) -> int:
        """Position of ``device_arg`` among the arguments."""
        names = [a.name for a in torch._C.parse_schema(self.name + self.schema).arguments]
        return names.index(self.device_arg)

    def checked_fake(self, *args):
        """The fake kernel behind the argument checks: a meta tensor among real ones must not pass unnoticed."""
        self.check(*args)
        return self.fake(*args)


def _fake_mutating(*args) -> None:
    return None


def _fake_perturbed_linear(x, weight, bias, seed, step, weight_stream, bias_stream, sigma, num_members, rank,
                           baseline, antithetic, activation, first_member=0):
    return weight.new_empty(num_members, x.shape[-2], weight.shape[0])


def _fake_perturbed_rnn(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, seed, step, streams, sigma, num_members,
                        rank, baseline, antithetic, nonlinearity, return_sequence, first_member=0):
    batch, steps = x.shape[-3], x.shape[-2]
    hidden = weight_hh.shape[0]
    if return_sequence:
        return weight_hh.new_empty(num_members, batch, steps, hidden)
    return weight_hh.new_empty(num_members, batch, hidden)


SPECS: Dict[str, OpSpec] = {spec.name: spec for spec in (
    OpSpec("noise_", "(Tensor(a!) out, int seed, int step, int stream, int first_id) -> ()",
           noise_into_reference, _fake_mutating, validation.check_noise_args, "out", noise_triton),
    OpSpec("noise_bits_", "(Tensor(a!) out, int seed, int step, int stream, int first_id) -> ()",
           noise_bits_into_reference, _fake_mutating, validation.check_noise_bits_args, "out", noise_bits_triton),
    OpSpec("perturbed_linear",
           "(Tensor x, Tensor weight, Tensor? bias, int seed, int step, int weight_stream, int bias_stream, "
           "float sigma, int num_members, int rank, bool baseline, bool antithetic, str activation, "
           "int first_member=0) -> Tensor",
           perturbed_linear_reference, _fake_perturbed_linear, validation.check_perturbed_linear_args, "weight",
           perturbed_linear_triton),
    OpSpec("perturbed_rnn",
           "(Tensor x, Tensor? h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, int seed, "
           "int step, int[] streams, float sigma, int num_members, int rank, bool baseline, bool antithetic, "
           "str nonlinearity, bool return_sequence, int first_member=0) -> Tensor",
           perturbed_rnn_reference, _fake_perturbed_rnn, validation.check_perturbed_rnn_args, "weight_hh",
           perturbed_rnn_triton),
    OpSpec("rpe_update_",
           "(Tensor(a!) param, Tensor coeffs, int seed, int step, int stream, int rank, float alpha) -> ()",
           rpe_update_reference, _fake_mutating, validation.check_rpe_update_args, "param", rpe_update_triton),
    OpSpec("perturb_",
           "(Tensor(a!) param, int seed, int step, int stream, int noise_id, int rank, float alpha) -> ()",
           perturb_reference, _fake_mutating, validation.check_perturb_args, "param", perturb_triton),
)}
