"""EvoTorch's PGPE (functional API) on a model's flattened parameters: the evolution-strategy peer.

Each step evaluates the centre (the loss it reports, as the other optimizers report the unperturbed loss) and
``popsize`` symmetric samples around it, so it costs ``popsize + 1`` loss evaluations.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .stepper import Stepper


def pgpe_popsize(hp: dict) -> int:
    """The samples per step that ``hp`` asks for, checked (a step costs this plus one evaluation)."""
    popsize = int(hp.get("popsize", 8))
    if popsize < 2 or popsize % 2:
        raise ValueError(f"pgpe needs an even popsize >= 2 (samples come in +/- pairs), got {popsize}")
    return popsize


def pgpe_stepper(model: torch.nn.Module, task, hp: dict) -> Stepper:
    from evotorch.algorithms.functional import pgpe, pgpe_ask, pgpe_tell

    popsize = pgpe_popsize(hp)
    params = list(model.parameters())
    center_lr = float(hp.get("center_lr", 0.01))
    state = pgpe(center_init=parameters_to_vector(params).detach().clone(), center_learning_rate=center_lr,
                 stdev_learning_rate=float(hp.get("stdev_lr", 0.1)), objective_sense="min", optimizer="adam",
                 stdev_init=float(hp.get("stdev_init", 0.01)), symmetric=True)

    def loss_at(vector, x, y) -> torch.Tensor:
        vector_to_parameters(vector, params)
        return task.loss(model, x, y)

    def step(x, y):
        nonlocal state
        with torch.no_grad():
            center = state.optimizer_state.center
            loss = float(loss_at(center, x, y))
            values = pgpe_ask(state, popsize=popsize)  # torch's global generator, seeded by the run
            evals = torch.stack([loss_at(v, x, y) for v in values])
            state = pgpe_tell(state, values, evals)
            vector_to_parameters(state.optimizer_state.center, params)
        return loss

    return Stepper(step, popsize + 1, lambda: center_lr)
