"""The fused path: a model read as a graph of supported layers (graph.py), run for all members at once.

Values the graph computes are either shared, [B, ...] (nothing perturbed has touched them yet), or carry the
member dimension first, [M, B, ...]. The ops regenerate each member's noise from the plan, so no member holds its
own weights. Steps: ``nn.Linear`` (a directly following tanh, relu or sigmoid is fused into it), an Elman
``nn.RNN`` read out at its final hidden state, parameter-free elementwise functions, ``nn.Flatten`` and the sum
of two activations of one shape (a residual connection).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import ops
from ..plan import ParamNoise, PerturbationPlan

RNN_MODES = {"RNN_TANH", "RNN_RELU"}
# The CPU RNN kernel's blocks (perturbed_rnn.cpp's kFullRankRows and kBlockRows; a test checks them against it).
RNN_FULL_RANK_ROWS = 128  # batch rows per task of the full-rank kernel
RNN_LOW_RANK_BLOCK_ROWS = 256  # rows of a block of the low-rank kernel

Value = Tuple[torch.Tensor, bool]  # (tensor, shared)


class Unsupported(Exception):
    """The fused path cannot run this model (or not with this plan); the message says why."""


# Members per chunk are a power of two below this and a multiple of it above: chunk boundaries then fall on the
# compiled CPU kernels' grid of member blocks (csrc/cpu/member_blocks.h), so no chunk pads a block.
MEMBER_ALIGN = 256


def member_chunks(members: range, size: int) -> List[range]:
    """``members`` cut at member ids ``1 + j * size`` (j >= 1): chunks of ``size`` perturbed members, the first
    chunk of an evaluation also holding the unperturbed member 0 (alone when ``size`` is 1). Members that fit in
    one chunk stay one."""
    if len(members) <= size:
        return [members]
    chunks, m = [], members.start
    while m < members.stop:
        stop = min(members.stop, 1 + max(size > 1, (m - 1) // size + 1) * size)
        chunks.append(range(m, stop))
        m = stop
    return chunks


def aligned_chunk(size: int) -> int:
    """The largest chunk size <= ``size`` (>= 1) that ``member_chunks`` aligns: a power of two below MEMBER_ALIGN,
    else a multiple of it."""
    if size >= MEMBER_ALIGN:
        return size // MEMBER_ALIGN * MEMBER_ALIGN
    return 1 << (max(1, size).bit_length() - 1)


@dataclass(frozen=True)
class FusedCall:
    """The context of one fused evaluation, which every step reads: the plan, each parameter's noise, the
    shape of the inputs (for error messages), and the members this run evaluates (None: the plan's local ones)."""

    plan: PerturbationPlan
    noise: Dict[int, ParamNoise]  # id(parameter) -> its noise; parameters outside the plan stay unperturbed
    inputs_shape: tuple
    chunk: Optional[range] = None

    @property
    def members(self) -> range:
        """The members the ops evaluate in this run, in order."""
        return self.plan.local_members if self.chunk is None else self.chunk

    def narrow(self, members: range) -> "FusedCall":
        return replace(self, chunk=members)

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


def _detached(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach()  # the ops are not differentiable: no autograd history goes in


def _shape_error(name: str, module: nn.Module, h: torch.Tensor, shared: bool, expected: str,
                 call: FusedCall) -> ValueError:
    shape = tuple(h.shape if shared else h.shape[1:])
    return ValueError(f"layer {name} ({module}) expects inputs of shape {expected}, got {shape}; the model's "
                      f"inputs have shape {call.inputs_shape}")


class Step:
    """One node of the program. ``row_numel`` and ``scratch_numel`` size it per batch row for the memory budget:
    elements of one member's output, and ``(once, per_member)`` elements its kernel holds besides its inputs and
    output; ``member_numel`` the elements its kernel holds per member whatever the rows (noise factors, perturbed
    biases); ``fixed_numel`` those it holds per call that are not per member and row alike (per-thread scratch, a
    projection all members share). A step that perturbs nothing keeps shared inputs shared."""

    perturbs = False

    def check(self, call: FusedCall) -> None:
        pass

    def row_numel(self, inputs: Sequence[int]) -> int:
        return inputs[0]

    def scratch_numel(self, inputs: Sequence[int], threads: int, call: FusedCall) -> Tuple[int, int]:
        return 0, 0

    def member_numel(self, call: FusedCall) -> int:
        return 0

    def fixed_numel(self, inputs: Sequence[int], members: int, rows: int, threads: int, call: FusedCall) -> int:
        return 0


class LinearStep(Step):
    perturbs = True

    def __init__(self, name: str, module: nn.Linear):
        self.name, self.module, self.activation = name, module, "none"

    def check(self, call: FusedCall) -> None:
        call.layer_noise(self.module, [self.module.weight, self.module.bias])

    def row_numel(self, inputs):
        return inputs[0] // self.module.in_features * self.module.out_features

    def scratch_numel(self, inputs, threads, call):
        return self.row_numel(inputs), 0  # x W^T of a shared input, held once for all members (low rank)

    def member_numel(self, call):
        m = self.module
        _, rank, _ = call.layer_noise(m, [m.weight, m.bias])
        return (m.in_features + m.out_features) * rank + m.out_features  # low-rank factors, perturbed bias

    def __call__(self, value: Value, call: FusedCall) -> Value:
        (h, shared), m, plan = value, self.module, call.plan
        if h.dim() < 1 + (not shared) or h.shape[-1] != m.in_features:
            raise _shape_error(self.name, m, h, shared, f"[..., {m.in_features}]", call)
        sigma, rank, (weight_stream, bias_stream) = call.layer_noise(m, [m.weight, m.bias])
        count = len(call.members)
        lead = h.shape[:-1] if shared else h.shape[1:-1]
        # The op takes [B, in] or [M, B, in]: any further leading dimensions fold into the batch.
        x = h.reshape(-1, m.in_features) if shared else h.reshape(count, -1, m.in_features)
        y = ops.perturbed_linear(x, m.weight.detach(), _detached(m.bias), plan.seed, plan.step, weight_stream,
                                 bias_stream, sigma, count, rank, True, plan.antithetic, self.activation,
                                 first_member=call.members.start)
        return y.reshape(count, *lead, m.out_features), False


class RNNStep(Step):
    """An Elman ``nn.RNN`` read out at its final hidden state: all members' last states [M, B, H]."""

    perturbs = True

    def __init__(self, name: str, module: nn.RNN):
        self.name, self.module = name, module

    def layer_tensors(self, layer: int) -> List[Optional[torch.Tensor]]:
        rnn = self.module
        names = [f"weight_ih_l{layer}", f"weight_hh_l{layer}", f"bias_ih_l{layer}", f"bias_hh_l{layer}"]
        return [getattr(rnn, n) if rnn.bias or n.startswith("weight") else None for n in names]

    def check(self, call: FusedCall) -> None:
        rnn = self.module
        if rnn.training and rnn.dropout > 0 and rnn.num_layers > 1:
            raise Unsupported(f"{rnn} applies dropout between layers in training mode (call model.eval())")
        for layer in range(rnn.num_layers):
            call.layer_noise(rnn, self.layer_tensors(layer))

    def row_numel(self, inputs):
        return self.module.hidden_size

    def _low_rank(self, call: FusedCall) -> bool:
        return any(call.layer_noise(self.module, self.layer_tensors(layer))[1] > 0
                   for layer in range(self.module.num_layers))

    def scratch_numel(self, inputs, threads, call):
        # Between stacked layers, every member's sequence of hidden states, in and out. Low rank also holds each CPU
        # thread's block of states, or on CUDA the shared input's projection of a row's whole sequence. CUDA writes
        # every member's states to a spare buffer besides the output (low rank also to a step's products). The zero
        # initial state is never materialised.
        steps, hidden = inputs[0] // self.module.input_size, self.module.hidden_size
        low_rank, cuda = self._low_rank(call), self.module.weight_hh_l0.is_cuda
        once = (steps if cuda else 2 * threads) * hidden if low_rank else 0
        per_member = (2 * steps * hidden if self.module.num_layers > 1 else 0) + cuda * (1 + low_rank) * hidden
        return once, per_member

    def fixed_numel(self, inputs, members, rows, threads, call):
        # On the CPU, full rank: each busy thread's perturbed weights, their noise and two blocks of states, whatever
        # the rows (a task is a member, or antithetic pair, and a block of rows). Low rank: the shared input's
        # projection, of every step while the batch fits one block (kBlockRows), else of one step per busy thread.
        rnn, widest = self.module, 0
        if rnn.weight_hh_l0.is_cuda:
            return 0
        if self._low_rank(call):
            if rows <= RNN_LOW_RANK_BLOCK_ROWS:
                return rows * inputs[0] // rnn.input_size * rnn.hidden_size
            return min(threads, members) * rows * rnn.hidden_size
        for layer in range(rnn.num_layers):
            w_ih, w_hh = self.layer_tensors(layer)[:2]
            widest = max(widest, 2 * (w_ih.numel() + w_hh.numel()))
        block = min(rows, RNN_FULL_RANK_ROWS)
        busy = min(threads, members * -(-rows // RNN_FULL_RANK_ROWS))
        return busy * (widest + 2 * block * rnn.hidden_size)

    def member_numel(self, call):
        rnn, total = self.module, 0
        for layer in range(rnn.num_layers):
            w_ih, w_hh = self.layer_tensors(layer)[:2]
            _, rank, _ = call.layer_noise(rnn, self.layer_tensors(layer))
            total = max(total, (w_ih.shape[0] + w_ih.shape[1] + 2 * w_hh.shape[0]) * rank + w_hh.shape[0])
        return total  # the low-rank factors and the perturbed biases of one layer at a time

    def __call__(self, value: Value, call: FusedCall) -> Value:
        (h, shared), rnn, plan = value, self.module, call.plan
        shape = h.shape if shared else h.shape[1:]
        if len(shape) != 3 or shape[-1] != rnn.input_size:
            layout = "[batch, seq, {}]" if rnn.batch_first else "[seq, batch, {}]"
            raise _shape_error(self.name, rnn, h, shared, layout.format(rnn.input_size), call)
        x = h if rnn.batch_first else h.transpose(-3, -2)  # the op reads batch-first sequences
        if x.shape[-2] == 0:  # no final hidden state to read out; nn.RNN refuses it too
            raise ValueError(f"layer {self.name} ({rnn}) got a sequence of length 0; like nn.RNN, the fused path "
                             f"needs at least one time step (the model's inputs have shape {call.inputs_shape})")
        for layer in range(rnn.num_layers):
            tensors = self.layer_tensors(layer)
            sigma, rank, streams = call.layer_noise(rnn, tensors)
            x = ops.perturbed_rnn(x.contiguous(), None, *map(_detached, tensors), plan.seed, plan.step, streams,
                                  sigma, len(call.members), rank, True, plan.antithetic, rnn.nonlinearity,
                                  layer < rnn.num_layers - 1, first_member=call.members.start)
        return x, False


class ElementwiseStep(Step):
    """A parameter-free function of each element alone (a module or ``fn(h, *constants)``)."""

    def __init__(self, name: str, fn: Callable, args: tuple = (), kwargs: Optional[dict] = None):
        self.name, self.fn, self.args, self.kwargs = name, fn, args, kwargs or {}

    def check(self, call: FusedCall) -> None:
        if isinstance(self.fn, nn.Dropout) and self.fn.training and self.fn.p > 0:
            raise Unsupported(f"layer {self.name} ({self.fn}) is in training mode (call model.eval())")

    def __call__(self, value: Value, call: FusedCall) -> Value:
        h, shared = value
        return self.fn(h, *self.args, **self.kwargs), shared


class FlattenStep(Step):
    def __init__(self, name: str, module: nn.Flatten):
        self.name, self.module = name, module

    def __call__(self, value: Value, call: FusedCall) -> Value:
        h, shared = value
        if shared:
            return self.module(h), shared
        # Non-negative dims count from the batch dimension, which the member dimension pushed one place right.
        start, end = self.module.start_dim, self.module.end_dim
        return h.flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end), shared


class AddStep(Step):
    """``a + b`` of two activations of one shape per member (a residual connection)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, a: Value, b: Value, call: FusedCall) -> Value:
        (x, x_shared), (y, y_shared) = a, b
        x_shape, y_shape = (x.shape if x_shared else x.shape[1:]), (y.shape if y_shared else y.shape[1:])
        if x_shape != y_shape:
            raise ValueError(f"{self.name} adds activations of shapes {tuple(x_shape)} and {tuple(y_shape)}; the "
                             f"fused path adds activations of one shape only (the model's inputs have shape "
                             f"{call.inputs_shape})")
        return x + y, x_shared and y_shared  # a shared [B, ...] broadcasts over the members' [M, B, ...]


@dataclass
class Instruction:
    step: Step
    inputs: Tuple[int, ...]  # value slots read
    output: int  # value slot written
    frees: Tuple[int, ...] = ()  # slots read for the last time here


class FusedProgram:
    """A model compiled into fused steps (graph.compile); ``program(inputs, call)`` gives the outputs of all
    members, [M, B, ...]. Slot 0 holds the inputs, ``batch_dim`` is where their batch lies (None: unknown)."""

    def __init__(self, instructions: List[Instruction], output: int, batch_dim: Optional[int]):
        self.instructions, self.output, self.batch_dim = instructions, output, batch_dim
        for i, ins in enumerate(instructions):
            later = {slot for later_ins in instructions[i + 1:] for slot in later_ins.inputs}
            ins.frees = tuple(s for s in set(ins.inputs) if s not in later and s != output and s != 0)

    def check(self, call: FusedCall) -> None:
        """Raises ``Unsupported`` when this plan or the modules' modes rule the fused path out."""
        for ins in self.instructions:
            ins.step.check(call)

    def __call__(self, inputs: torch.Tensor, call: FusedCall, max_rows: Optional[int] = None) -> torch.Tensor:
        """All members' outputs; with ``max_rows``, computed for at most that many batch rows at a time."""
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
        rows = self.rows(inputs)
        if max_rows is None or self.batch_dim is None or rows <= max_rows:
            return self._run(inputs, call)
        # Each row's outputs depend on that row alone, so row chunks give the same outputs, side by side.
        outputs = None
        for r0 in range(0, rows, max_rows):
            count = min(max_rows, rows - r0)
            chunk = self._run(inputs.narrow(self.batch_dim, r0, count), call)
            if outputs is None:
                outputs = chunk.new_empty(chunk.shape[0], rows, *chunk.shape[2:])
            outputs.narrow(1, r0, count).copy_(chunk)
        return outputs

    def rows(self, inputs: torch.Tensor) -> int:
        """The batch size of ``inputs`` (1 where the program cannot tell where the batch lies)."""
        if self.batch_dim is None or inputs.dim() <= self.batch_dim:
            return 1
        return inputs.shape[self.batch_dim]

    def _run(self, inputs: torch.Tensor, call: FusedCall) -> torch.Tensor:
        values: Dict[int, Value] = {0: (inputs, True)}
        for ins in self.instructions:
            values[ins.output] = ins.step(*[values[s] for s in ins.inputs], call)
            for slot in ins.frees:
                del values[slot]  # the next steps' activations replace it, never sit beside it
        h, shared = values[self.output]
        return h.expand(len(call.members), *h.shape) if shared else h

    def footprint(self, inputs: torch.Tensor, call: FusedCall, num_members: int, rows: int, itemsize: int,
                  threads: int) -> Tuple[int, int]:
        """A run of ``num_members`` members on ``rows`` batch rows: the most memory it takes at any point (live
        activations plus the kernels' scratch), in bytes, and the elements of one member's outputs per row."""
        numel: Dict[int, int] = {0: inputs.numel() // max(1, self.rows(inputs))}
        shared: Dict[int, bool] = {0: True}
        live, peak = {0}, 0
        for ins in self.instructions:
            in_numel = [numel[s] for s in ins.inputs]
            numel[ins.output] = ins.step.row_numel(in_numel)
            shared[ins.output] = not ins.step.perturbs and all(shared[s] for s in ins.inputs)
            once, per_member = ins.step.scratch_numel(in_numel, threads, call)
            live.add(ins.output)
            held = sum(numel[s] * (1 if shared[s] else num_members) for s in live - {0})
            peak = max(peak, (held + once + per_member * num_members) * rows + ins.step.member_numel(call) * num_members
                       + ins.step.fixed_numel(in_numel, num_members, rows, threads, call))
            live -= set(ins.frees)
        return peak * itemsize, numel[self.output]
