"""Reading a user's module for the fused path: torch.fx traces its forward, each node becomes a fused step.

Any module works, ``nn.Sequential`` or a custom ``forward``, as long as its graph is built from supported
layers (``nn.Linear``; an Elman ``nn.RNN`` read out by ``LastHidden()``, ``h_n[-1]`` or ``output[:, -1]``;
``nn.Identity``, ``nn.Flatten``, ``nn.Dropout``), parameter-free elementwise functions (as modules, ``torch.*``,
``F.*`` or tensor methods) and sums of two activations. Anything else raises ``Unsupported`` naming the node and,
where fx recorded it, the line of the user's code.
"""

from __future__ import annotations

import operator
import re
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from .fused import (AddStep, ElementwiseStep, FlattenStep, FusedProgram, Instruction, LinearStep, RNNStep,
                    RNN_MODES, Unsupported)
from .modules import LastHidden

# Parameter-free modules that act on each element alone, so the member dimension in front changes nothing.
ELEMENTWISE_MODULES = frozenset({
    nn.Identity, nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.SELU, nn.LeakyReLU,
    nn.Softplus, nn.Softsign, nn.Mish, nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid,
    nn.Tanhshrink, nn.Dropout,
})
ELEMENTWISE_FUNCTIONS = frozenset({
    torch.tanh, torch.relu, torch.sigmoid, F.tanh, F.relu, F.sigmoid, F.gelu, F.silu, F.elu, F.celu, F.selu,
    F.leaky_relu, F.softplus, F.softsign, F.mish, F.hardtanh, F.relu6, F.hardswish, F.hardsigmoid, F.logsigmoid,
    F.tanhshrink,
})
ELEMENTWISE_METHODS = frozenset({"tanh", "relu", "sigmoid"})
# Activations the linear op applies itself, by module type, function or method name.
FUSED_ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Sigmoid: "sigmoid", torch.tanh: "tanh",
                     torch.relu: "relu", torch.sigmoid: "sigmoid", F.tanh: "tanh", F.relu: "relu",
                     F.sigmoid: "sigmoid", "tanh": "tanh", "relu": "relu", "sigmoid": "sigmoid"}
ADDS = frozenset({operator.add, torch.add})
SKIP_FRAMES = re.compile(r"[/\\](torch|dopamine_fast)[/\\]")


class _Tracer(fx.Tracer):
    """PyTorch's layers and ``LastHidden`` stay whole nodes (fx would otherwise trace into LastHidden)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) is LastHidden or super().is_leaf_module(m, qualname)


def _user_line(node: fx.Node) -> str:
    """`` (file:line: code)`` of the user's code that made ``node``, when fx recorded it."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in \w+\n\s+(.*)', node.stack_trace or "")
    frames = [f for f in frames if not SKIP_FRAMES.search(f[0])]
    if not frames:
        return ""
    path, line, code = frames[-1]
    return f" ({path.rsplit('/', 1)[-1]}:{line}: `{code.strip()}`)"


def _describe(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return f"layer {node.target} ({type(root.get_submodule(node.target)).__name__})"
    if node.op == "call_function":
        return f"`{getattr(node.target, '__name__', node.target)}`"
    if node.op == "call_method":
        return f"method `.{node.target}()`"
    if node.op == "get_attr":
        return f"tensor `{node.target}` used outside a layer"
    return f"{node.op} `{node.target}`"


def _unsupported(node: fx.Node, root: nn.Module, why: str = "has no fused form") -> Unsupported:
    return Unsupported(f"{_describe(node, root)} {why}{_user_line(node)}")


class _RNNOutput:
    """An RNN's output before its readout: ``part`` None (the tuple), 0 (all states) or 1 (h_n)."""

    def __init__(self, step: RNNStep, source: int, part: Optional[int] = None):
        self.step, self.source, self.part = step, source, part


def _is_last_state_index(index, output: _RNNOutput) -> bool:
    """Whether ``[index]`` picks the final hidden state: ``h_n[-1]``, or ``output[:, -1]`` (``output[-1]``
    when the RNN is not batch-first)."""
    if output.part == 1:
        return index == -1
    if output.step.module.batch_first:
        return index == (slice(None), -1)
    return index == -1


class _Compiler:
    def __init__(self, root: nn.Module):
        self.root = root
        self.values: Dict[fx.Node, object] = {}  # node -> value slot (int) or an _RNNOutput awaiting its readout
        self.instructions: List[Instruction] = []
        self.producers: Dict[int, Instruction] = {}
        self.batch_dims = set()

    def slot(self, arg, node: fx.Node) -> int:
        value = self.values.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(value, int):
            return value
        if isinstance(value, _RNNOutput):
            raise _unsupported(node, self.root, "reads an RNN's output other than its final hidden state "
                                                "(LastHidden(), h_n[-1] or output[:, -1])")
        raise _unsupported(node, self.root, f"takes {arg!r} where the fused path needs an activation")

    def emit(self, node: fx.Node, step, *inputs: int) -> None:
        out = len(self.values) + 1
        ins = Instruction(step, tuple(inputs), out)
        self.instructions.append(ins)
        self.producers[out] = ins
        self.values[node] = out
        if 0 in inputs:  # where the model's inputs hold their batch: dim 1 for a sequence-first RNN
            self.batch_dims.add(int(isinstance(step, RNNStep) and not step.module.batch_first))

    def constants_only(self, node: fx.Node, args, kwargs) -> None:
        if any(isinstance(a, fx.Node) for a in list(args) + list(kwargs.values())):
            raise _unsupported(node, self.root, "takes more than one activation")

    def compile(self, graph: fx.Graph) -> FusedProgram:
        output = None
        for node in graph.nodes:
            if node.op == "placeholder":
                if self.values:
                    raise Unsupported(f"forward takes more than one input (`{node.target}`)")
                self.values[node] = 0
            elif node.op == "output":
                if not isinstance(node.args[0], fx.Node):
                    raise Unsupported("forward returns more than one tensor")
                output = self.slot(node.args[0], node)
            elif node.op == "call_module":
                self.module(node, self.root.get_submodule(node.target))
            elif node.op in ("call_function", "call_method"):
                self.function(node)
            else:
                raise _unsupported(node, self.root)
        batch_dim = self.batch_dims.pop() if len(self.batch_dims) == 1 else None
        return FusedProgram(self.instructions, output, batch_dim)

    def module(self, node: fx.Node, module: nn.Module) -> None:
        kind, name = type(module), str(node.target)
        if node.kwargs or len(node.args) != 1:
            raise _unsupported(node, self.root, "is called with more than one argument")
        if kind is LastHidden:
            self.readout(node, node.args[0], lambda output: output.part is None)
            return
        source = self.slot(node.args[0], node)
        if kind is nn.Linear:
            self.emit(node, LinearStep(name, module), source)
        elif kind is nn.RNN:
            if module.mode not in RNN_MODES or module.bidirectional:
                raise _unsupported(node, self.root, "is not a unidirectional Elman RNN")
            self.values[node] = _RNNOutput(RNNStep(name, module), source)
        elif kind is nn.Flatten:
            self.emit(node, FlattenStep(name, module), source)
        elif kind in ELEMENTWISE_MODULES:
            if not self.fuse_activation(node, source, FUSED_ACTIVATIONS.get(kind)):
                self.emit(node, ElementwiseStep(name, module), source)
        else:
            raise _unsupported(node, self.root)

    def function(self, node: fx.Node) -> None:
        target, args, kwargs = node.target, node.args, node.kwargs
        if target is operator.getitem and isinstance(self.values.get(args[0]), _RNNOutput):
            output = self.values[args[0]]
            if output.part is None and args[1] in (0, 1):
                self.values[node] = _RNNOutput(output.step, output.source, args[1])
            else:
                self.readout(node, args[0], lambda out: out.part is not None and _is_last_state_index(args[1], out))
            return
        method = node.op == "call_method"
        if (target in ADDS or (method and target == "add")) and len(args) == 2 and not kwargs:
            self.emit(node, AddStep(node.name), self.slot(args[0], node), self.slot(args[1], node))
            return
        if (method and target in ELEMENTWISE_METHODS) or (not method and target in ELEMENTWISE_FUNCTIONS):
            source = self.slot(args[0], node)
            self.constants_only(node, args[1:], kwargs)
            fused = not args[1:] and not kwargs and self.fuse_activation(node, source, FUSED_ACTIVATIONS[target]
                                                                          if target in FUSED_ACTIVATIONS else None)
            if not fused:
                fn = (lambda h, *a, _name=target, **k: getattr(h, _name)(*a, **k)) if method else target
                self.emit(node, ElementwiseStep(node.name, fn, tuple(args[1:]), dict(kwargs)), source)
            return
        raise _unsupported(node, self.root)

    def fuse_activation(self, node: fx.Node, source: int, activation: Optional[str]) -> bool:
        """Folds ``activation`` into the linear layer that made ``source`` when nothing else reads its output."""
        producer = self.producers.get(source)
        if activation is None or producer is None or not isinstance(producer.step, LinearStep):
            return False
        source_node = next(n for n, v in self.values.items() if v == source)
        if producer.step.activation != "none" or len(source_node.users) != 1:
            return False
        producer.step.activation = activation
        self.values[node] = source
        return True

    def readout(self, node: fx.Node, arg, fits) -> None:
        output = self.values.get(arg)
        if not isinstance(output, _RNNOutput) or not fits(output):
            raise _unsupported(node, self.root, "is not a readout of an RNN's final hidden state")
        self.emit(node, output.step, output.source)


def unwrap(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile``d model (an OptimizedModule) wraps; the model itself otherwise."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule" else model


def compile_model(model: nn.Module) -> FusedProgram:
    """Raises ``Unsupported`` naming the first node the fused path cannot run."""
    tracer = _Tracer()
    tracer.record_stack_traces = True
    # A lone layer is a one-layer model (fx would trace into its forward).
    root = nn.Sequential(model) if tracer.is_leaf_module(model, "") else model
    try:
        graph = tracer.trace(root)
    except Exception as err:  # noqa: BLE001  (whatever stops the trace, the generic path can still run the model)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise Unsupported(f"torch.fx cannot trace {type(model).__name__} ({reason})") from None
    return _Compiler(root).compile(graph)


__all__ = ["compile_model", "unwrap"]
