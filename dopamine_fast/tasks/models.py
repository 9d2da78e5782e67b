"""The paper's networks: a 2-H-1 MLP for XOR and an Elman RNN with a linear readout for forecasting."""

from __future__ import annotations

import torch
from torch import nn

from ..population import LastHidden

HIDDEN_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class XorMLP(nn.Sequential):
    """``inputs -> hidden (tanh or sigmoid) -> 1 sigmoid output``: the output is P(class 1).

    A plain ``nn.Sequential`` (no forward of its own), so ``dopamine_fast.Population`` runs it on the fused ops.
    """

    def __init__(self, hidden: int = 2, activation: str = "tanh", inputs: int = 2):
        if activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(HIDDEN_ACTIVATIONS)}, got {activation!r}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        super().__init__(nn.Linear(inputs, hidden), HIDDEN_ACTIVATIONS[activation](), nn.Linear(hidden, 1),
                         nn.Sigmoid())


class ElmanForecaster(nn.Sequential):
    """``nn.RNN`` (tanh, batch first) over a look-back window; a linear readout of the last hidden state.

    ``[batch, lookback, inputs]`` -> next value ``[batch, outputs]``; a plain ``nn.Sequential`` of
    ``(nn.RNN, LastHidden, nn.Linear)``, so ``dopamine_fast.Population`` runs it on the fused ops.
    """

    def __init__(self, inputs: int, hidden: int = 512, outputs: int = None):
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        super().__init__(nn.RNN(inputs, hidden, batch_first=True, nonlinearity="tanh"), LastHidden(),
                         nn.Linear(hidden, inputs if outputs is None else outputs))

    @property
    def rnn(self) -> nn.RNN:
        return self[0]

    @property
    def readout(self) -> nn.Linear:
        return self[2]

    @property
    def recurrent_weight(self) -> torch.Tensor:
        """The matrix whose spectral radius the Dopamine-2 recipe rescales after every step."""
        return self.rnn.weight_hh_l0
