"""Small modules that let users write recurrent models as a plain ``nn.Sequential`` the fused path can read."""

from __future__ import annotations

import torch
from torch import nn


class LastHidden(nn.Module):
    """The final hidden state of an RNN's last layer, ``h_n[-1]``: [batch, hidden].

    ``nn.RNN`` returns ``(output, h_n)``, which a following layer cannot take; this module picks the state a
    readout needs, so ``nn.Sequential(nn.RNN(...), LastHidden(), nn.Linear(hidden, out))`` is an ordinary model
    (trainable by any optimizer) and, for an Elman ``nn.RNN``, one that ``Population`` runs on the fused ops.
    For ``nn.LSTM`` it takes ``h_n`` of ``(h_n, c_n)``. Meant for unidirectional RNNs.
    """

    def forward(self, rnn_output) -> torch.Tensor:
        _, h_n = rnn_output
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]
        return h_n[-1]
