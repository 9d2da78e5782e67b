"""The fused path: an ``nn.Sequential`` of supported layers run for all members at once on the fused ops.

The first layer reads the shared input [B, ...]; every tensor after it carries the member dimension first,
[M, B, ...]. The ops regenerate each member's noise from the plan, so no member holds its own weights.
Supported: ``nn.Linear`` (a directly following Tanh, ReLU or Sigmoid is fused into it), parameter-free
elementwise activations, ``nn.Identity``, ``nn.Flatten``, ``nn.Dropout`` in eval mode, and an Elman ``nn.RNN``
(tanh or relu, any number of layers, batch_first either way, biases or not) followed by ``LastHidden``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from .. import ops
from ..optim.functional import ParamNoise, PerturbationPlan
from .modules import LastHidden

FUSED_ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Sigmoid: "sigmoid"}

# Parameter-free modules that act on each element alone, so the member dimension in front changes nothing.
ELEMENTWISE = frozenset({
    nn.Identity, nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.SELU, nn.LeakyReLU,
    nn.Softplus, nn.Softsign, nn.Mish, nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid,
    nn.Tanhshrink, nn.Dropout,
})

RNN_MODES = {"RNN_TANH", "RNN_RELU"}


class Unsupported(Exception):
    """The fused path cannot run this model (or not with this plan); the message says why."""


@dataclass(frozen=True)
class Members:
    """What every layer needs to evaluate one plan's members."""

    plan: PerturbationPlan
    noise: Dict[int, ParamNoise]  # id(parameter) -> its noise; parameters outside the plan stay unperturbed
    inputs_shape: tuple

    def layer_noise(self, module: nn.Module, tensors: Sequence[Optional[torch.Tensor]]):
        """``(sigma, rank, streams)`` of a fused layer's tensors: a fused op takes one sigma and one rank."""
        pns = [None if t is None else self.noise.get(id(t)) for t in tensors]
        present = [(t, pn) for t, pn in zip(tensors, pns) if t is not None]
        sigmas = {pn.sigma if pn else 0.0 for _, pn in present}
        ranks = {pn.rank for t, pn in present if pn and t.dim() >= 2}
        if len(sigmas) > 1 or len(ranks) > 1:
            raise Unsupported(f"the tensors of {module} have different sigmas or ranks in the optimizer (or only "
                              f"some are trained), and its fused op takes one of each")
        return sigmas.pop(), (ranks.pop() if ranks else 0), [pn.stream if pn else 0 for pn in pns]


def _shape_error(index: int, module: nn.Module, h: torch.Tensor, shared: bool, expected: str,
                 members: Members) -> ValueError:
    shape = tuple(h.shape if shared else h.shape[1:])
    return ValueError(f"layer {index} ({module}) expects inputs of shape {expected}, got {shape}; the model's "
                      f"inputs have shape {members.inputs_shape}")


class LinearStep:
    def __init__(self, index: int, module: nn.Linear, activation: str):
        self.index, self.module, self.activation = index, module, activation

    def check(self, members: Members) -> None:
        members.layer_noise(self.module, [self.module.weight, self.module.bias])

    def __call__(self, h, shared, members):
        m, plan = self.module, members.plan
        if h.dim() < 1 + (not shared) or h.shape[-1] != m.in_features:
            raise _shape_error(self.index, m, h, shared, f"[..., {m.in_features}]", members)
        sigma, rank, (weight_stream, bias_stream) = members.layer_noise(m, [m.weight, m.bias])
        count = plan.num_members
        lead = h.shape[:-1] if shared else h.shape[1:-1]
        # The op takes [B, in] or [M, B, in]: any further leading dimensions fold into the batch.
        x = h.reshape(-1, m.in_features) if shared else h.reshape(count, -1, m.in_features)
        y = ops.perturbed_linear(x, m.weight, m.bias, plan.seed, plan.step, weight_stream, bias_stream, sigma,
                                 count, rank, True, plan.antithetic, self.activation)
        return y.reshape(count, *lead, m.out_features), False


class RNNStep:
    """An Elman ``nn.RNN`` and the ``LastHidden`` after it: all members' final hidden states [M, B, H]."""

    def __init__(self, index: int, module: nn.RNN):
        self.index, self.module = index, module

    def layer_tensors(self, layer: int) -> List[Optional[torch.Tensor]]:
        rnn = self.module
        names = [f"weight_ih_l{layer}", f"weight_hh_l{layer}", f"bias_ih_l{layer}", f"bias_hh_l{layer}"]
        return [getattr(rnn, n) if rnn.bias or n.startswith("weight") else None for n in names]

    def check(self, members: Members) -> None:
        rnn = self.module
        if rnn.training and rnn.dropout > 0 and rnn.num_layers > 1:
            raise Unsupported(f"{rnn} applies dropout between layers in training mode (call model.eval())")
        for layer in range(rnn.num_layers):
            members.layer_noise(rnn, self.layer_tensors(layer))

    def __call__(self, h, shared, members):
        rnn, plan = self.module, members.plan
        shape = h.shape if shared else h.shape[1:]
        if len(shape) != 3 or shape[-1] != rnn.input_size:
            layout = "[batch, seq, {}]" if rnn.batch_first else "[seq, batch, {}]"
            raise _shape_error(self.index, rnn, h, shared, layout.format(rnn.input_size), members)
        x = h if rnn.batch_first else h.transpose(-3, -2)  # the op reads batch-first sequences
        for layer in range(rnn.num_layers):
            tensors = self.layer_tensors(layer)
            sigma, rank, streams = members.layer_noise(rnn, tensors)
            x = ops.perturbed_rnn(x.contiguous(), None, *tensors, plan.seed, plan.step, streams, sigma,
                                  plan.num_members, rank, True, plan.antithetic, rnn.nonlinearity,
                                  layer < rnn.num_layers - 1)
        return x, False


class ElementwiseStep:
    def __init__(self, index: int, module: nn.Module):
        self.index, self.module = index, module

    def check(self, members: Members) -> None:
        m = self.module
        if isinstance(m, nn.Dropout) and m.training and m.p > 0:
            raise Unsupported(f"layer {self.index} ({m}) is in training mode (call model.eval())")

    def __call__(self, h, shared, members):
        return self.module(h), shared


class FlattenStep:
    def __init__(self, index: int, module: nn.Flatten):
        self.index, self.module = index, module

    def check(self, members: Members) -> None:
        pass

    def __call__(self, h, shared, members):
        if shared:
            return self.module(h), shared
        # Non-negative dims count from the batch dimension, which the member dimension pushed one place right.
        start, end = self.module.start_dim, self.module.end_dim
        return h.flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end), shared


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _layers(module: nn.Module) -> List[nn.Module]:
    """The layers of nested plain Sequentials in call order (a lone layer is a one-layer model)."""
    if _is_plain_sequential(module):
        return [layer for child in module for layer in _layers(child)]
    return [module]


def _check_rnn(index: int, rnn: nn.Module, following: Optional[nn.Module]) -> None:
    if rnn.mode not in RNN_MODES:
        raise Unsupported(f"layer {index} ({rnn}) is not an Elman RNN")
    if rnn.bidirectional:
        raise Unsupported(f"layer {index} ({rnn}) is bidirectional")
    if type(following) is not LastHidden:
        raise Unsupported(f"layer {index} ({rnn}) must be followed by dopamine_fast.LastHidden() (a readout of "
                          f"the final hidden state)")


class FusedProgram:
    """A model compiled into fused steps; ``program(inputs, members)`` gives the outputs of all members."""

    def __init__(self, steps):
        self.steps = steps

    @classmethod
    def compile(cls, model: nn.Module) -> "FusedProgram":
        """Raises ``Unsupported`` naming the first layer the fused path cannot run."""
        layers = _layers(model)
        steps, i = [], 0
        while i < len(layers):
            layer = layers[i]
            following = layers[i + 1] if i + 1 < len(layers) else None
            kind = type(layer)
            if kind is nn.Linear:
                activation = FUSED_ACTIVATIONS.get(type(following))
                steps.append(LinearStep(i, layer, activation or "none"))
                i += 1 if activation else 0
            elif kind is nn.RNN:
                _check_rnn(i, layer, following)
                steps.append(RNNStep(i, layer))
                i += 1  # LastHidden is part of the step
            elif kind is nn.Flatten:
                steps.append(FlattenStep(i, layer))
            elif kind in ELEMENTWISE:
                steps.append(ElementwiseStep(i, layer))
            else:
                where = f"layer {i} " if len(layers) > 1 else ""
                raise Unsupported(f"{where}{kind.__name__} has no fused form")
            i += 1
        return cls(steps)

    def check(self, members: Members) -> None:
        """Raises ``Unsupported`` when this plan or the modules' modes rule the fused path out."""
        for step in self.steps:
            step.check(members)

    def __call__(self, inputs: torch.Tensor, members: Members) -> torch.Tensor:
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
        h, shared = inputs, True
        for step in self.steps:
            h, shared = step(h, shared, members)
        return h
