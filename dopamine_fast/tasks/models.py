"""The paper's networks: a 2-H-1 MLP for XOR and an Elman RNN with a linear readout for forecasting."""

from __future__ import annotations

import torch
from torch import nn

HIDDEN_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class XorMLP(nn.Module):
    """``inputs -> hidden (tanh or sigmoid) -> 1 sigmoid output``: the output is P(class 1)."""

    def __init__(self, hidden: int = 2, activation: str = "tanh", inputs: int = 2):
        super().__init__()
        if activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(HIDDEN_ACTIVATIONS)}, got {activation!r}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.net = nn.Sequential(nn.Linear(inputs, hidden), HIDDEN_ACTIVATIONS[activation](),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ElmanForecaster(nn.Module):
    """``nn.RNN`` (tanh, batch first) over a look-back window; a linear readout of the last hidden state."""

    def __init__(self, inputs: int, hidden: int = 512, outputs: int = None):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.rnn = nn.RNN(inputs, hidden, batch_first=True, nonlinearity="tanh")
        self.readout = nn.Linear(hidden, inputs if outputs is None else outputs)

    @property
    def recurrent_weight(self) -> torch.Tensor:
        """The matrix whose spectral radius the Dopamine-2 recipe rescales after every step."""
        return self.rnn.weight_hh_l0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[batch, lookback, inputs]`` -> next value ``[batch, outputs]``."""
        out, _ = self.rnn(x)
        return self.readout(out[:, -1])
