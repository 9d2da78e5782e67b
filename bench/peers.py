"""Peers: libraries evaluating the same population of the same network, EvoTorch (PyTorch) and evosax (JAX), and
MeZO's in-place zeroth-order step written plainly (``MeZO``, for the large-model benchmark).

Both are optional: ``evotorch_status()`` / ``evosax_status()`` say why one cannot be used (``None`` when it can),
and the benchmarks then record a skipped row with that reason. Install them without touching torch:
``pip install --no-deps evotorch && pip install ray cma gymnasium pandas`` and ``pip install "jax[cpu]" evosax``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import random
import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.func import vmap

from workloads import Workload


@functools.lru_cache(maxsize=None)
def evotorch_status() -> Optional[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("evotorch.algorithms")
        logging.getLogger("evotorch").setLevel(logging.WARNING)  # it logs every Problem it builds
    except Exception as err:  # any import failure means the peer is absent here
        return f"evotorch not importable ({type(err).__name__}: {err})"
    return None


@functools.lru_cache(maxsize=None)
def evosax_status() -> Optional[str]:
    try:
        importlib.import_module("jax")
        importlib.import_module("evosax.algorithms")
    except Exception as err:
        return f"jax/evosax not importable ({type(err).__name__}: {err})"
    return None


def jax_status(device: torch.device) -> Optional[str]:
    why = evosax_status()
    if why is None and device.type == "cuda":
        import jax
        if jax.default_backend() != "gpu":
            why = f"jax runs on {jax.default_backend()} here, not on the GPU: not comparable with --device cuda"
    return why


# -- EvoTorch --------------------------------------------------------------------------------------------------
class EvoTorchPeer:
    """The network as an EvoTorch problem: flat parameter vectors, a vectorised fitness (vmap over members)."""

    def __init__(self, w: Workload, k: int, sigma: float):
        """Evaluation of ``k + 1`` members (as the fused path's), a PGPE step of ``k`` samples."""
        evotorch_status()  # quiets EvoTorch's logger
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from evotorch import Problem, SolutionBatch
            from evotorch.algorithms import PGPE
            from evotorch.neuroevolution.net import make_functional_module
        fnet = make_functional_module(w.baseline_model, disable_autograd_tracking=True)
        center = torch.nn.utils.parameters_to_vector(w.baseline_model.parameters()).detach()

        def fitness(values: torch.Tensor) -> torch.Tensor:
            return vmap(lambda p: F.mse_loss(fnet(p, w.x), w.y))(values)

        device = w.x.device
        self.problem = Problem("min", fitness, solution_length=center.numel(), initial_bounds=(-0.1, 0.1),
                               dtype=torch.float32, device=device, vectorized=True)
        self.batch = SolutionBatch(self.problem, popsize=k + 1, device=device)
        self.batch.set_values(center + sigma * torch.randn(k + 1, center.numel(), device=device))
        # PGPE samples symmetric pairs, so its population is even.
        self.pgpe = PGPE(self.problem, popsize=k + k % 2, center_learning_rate=0.01,
                         stdev_learning_rate=0.1, stdev_init=sigma, center_init=center)

    def evaluate(self) -> None:
        """Evaluation of a ready population (sampled beforehand)."""
        self.problem.evaluate(self.batch)

    def pgpe_step(self) -> None:
        """One PGPE generation: sample, evaluate, update the search distribution."""
        self.pgpe.step()


# -- evosax / JAX ----------------------------------------------------------------------------------------------
def _jax_params(w: Workload):
    import jax.numpy as jnp
    return {name.replace(".", "_"): jnp.asarray(p.detach().cpu().numpy())
            for name, p in w.baseline_model.named_parameters()}


def _jax_forward(w: Workload) -> Callable:
    """The same network in jax.numpy, taking the parameter dict of ``_jax_params``."""
    import jax
    import jax.numpy as jnp

    if w.is_rnn:
        def forward(p, x):
            def cell(h, xt):
                h = jnp.tanh(xt @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"])
                return h, None
            h0 = jnp.zeros((x.shape[0], p["weight_hh"].shape[0]), x.dtype)
            h, _ = jax.lax.scan(cell, h0, jnp.swapaxes(x, 0, 1))
            return h @ p["readout_weight"].T + p["readout_bias"]
    else:
        layers = sorted({int(k.split("_")[0]) for k in _jax_params(w)})

        def forward(p, x):
            for i in layers:
                x = jnp.tanh(x @ p[f"{i}_weight"].T + p[f"{i}_bias"])
            return x
    return forward


class EvosaxPeer:
    """The network in JAX: ``jit(vmap(loss))`` over a ready population, Open-ES's step, and JAX's own floor."""

    def __init__(self, w: Workload, k: int, sigma: float, with_population: bool = True):
        """Evaluation of ``k + 1`` members and the floor on their rows; an Open-ES step of ``k`` samples.

        ``with_population=False`` builds the floor only (when K copies of the parameters would not fit).
        """
        import jax
        import jax.numpy as jnp
        import optax
        from evosax.algorithms import Open_ES

        forward = _jax_forward(w)
        params = _jax_params(w)
        x, y = jnp.asarray(w.x.cpu().numpy()), jnp.asarray(w.y.cpu().numpy())

        def loss(p, xb, yb):
            return jnp.mean((forward(p, xb) - yb) ** 2)

        self._x, self._y, self._params = x, y, params
        self._xf = jnp.repeat(x[None], k + 1, axis=0).reshape(-1, *x.shape[1:])
        self._yf = jnp.repeat(y[None], k + 1, axis=0).reshape(-1, *y.shape[1:])
        self._floor = jax.jit(loss)
        if not with_population:
            return

        key = jax.random.PRNGKey(0)
        keys = jax.random.split(key, len(params))
        self.population = {name: v + sigma * jax.random.normal(sub, (k + 1, *v.shape))
                           for sub, (name, v) in zip(keys, params.items())}
        self._eval = jax.jit(jax.vmap(loss, in_axes=(0, None, None)))
        es = Open_ES(population_size=k + k % 2, solution=params,
                     optimizer=optax.sgd(learning_rate=0.01), std_schedule=optax.constant_schedule(sigma))
        es_params = es.default_params
        self._state = es.init(key, params, es_params)

        @jax.jit
        def step(key, state):
            k_ask, k_tell = jax.random.split(key)
            pop, state = es.ask(k_ask, state, es_params)
            fitness = jax.vmap(loss, in_axes=(0, None, None))(pop, x, y)
            state, _ = es.tell(k_tell, pop, fitness, state, es_params)
            return state

        self._step, self._key = step, key

    def evaluate(self) -> None:
        self._eval(self.population, self._x, self._y).block_until_ready()

    def openes_step(self) -> None:
        import jax
        self._key, sub = jax.random.split(self._key)
        self._state = self._step(sub, self._state)
        jax.block_until_ready(self._state)

    def floor(self) -> None:
        self._floor(self._params, self._xf, self._yf).block_until_ready()


# -- MeZO --------------------------------------------------------------------------------------------------------
class MeZO:
    """MeZO's Algorithm 1 (Malladi et al. 2023, "Fine-Tuning Language Models with Just Forward Passes") as its
    paper writes it: two-point SPSA with the weights perturbed in place, the noise regenerated from a seed by
    ``torch.manual_seed`` + ``torch.normal`` per parameter (so each call allocates one parameter's noise).

    .. code-block:: text

        s <- a fresh seed
        w <- w + eps z(s);  l+ = L(w);  w <- w - 2 eps z(s);  l- = L(w);  w <- w + eps z(s)
        g = (l+ - l-) / (2 eps);  w <- w - lr g z(s)
    """

    def __init__(self, params, lr: float = 1e-6, eps: float = 1e-3, seed: int = 0):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.eps = lr, eps
        self._seeds = random.Random(seed)  # MeZO draws each step's seed with np.random.randint

    def _add_noise(self, seed: int, scale: float) -> None:
        torch.manual_seed(seed)
        for p in self.params:
            z = torch.normal(mean=0, std=1, size=p.shape, device=p.device, dtype=p.dtype)
            p.data.add_(z, alpha=scale)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> float:
        """One SPSA step (two evaluations); returns the mean of the two perturbed losses."""
        seed = self._seeds.randrange(2**31)
        self._add_noise(seed, self.eps)
        loss_plus = float(closure())
        self._add_noise(seed, -2 * self.eps)
        loss_minus = float(closure())
        self._add_noise(seed, self.eps)
        grad = (loss_plus - loss_minus) / (2 * self.eps)
        self._add_noise(seed, -self.lr * grad)
        return (loss_plus + loss_minus) / 2
