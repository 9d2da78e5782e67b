"""The Dopamine optimizer: weight perturbation steered by reward-prediction errors, stable, convergent, scale-free."""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import dopamine_rules
from .dopamine2 import Dopamine2
from .functional import apply_noise_combination, reward_prediction_errors
from .perturbation_optimizer import GLOBAL_STATE, PerturbationOptimizer, check_number

# Knobs of the RPE signals: one loss drives every group, so they are the optimizer's, not a group's.
SIGNAL_OPTIONS = ("adaptive", "beta_rpe", "beta_loss", "gain_rate", "gain_min", "gain_max", "anneal_patience")
# A relative step never uses a parameter scale below this, so zero-initialised tensors still move (Adafactor's eps2).
MIN_PARAM_SCALE = 1e-3
# Steps without progress before sigma halves: long enough that a plateau being crossed (it keeps setting new lows)
# and minibatch noise do not trigger it (docs/algorithm.md).
DEFAULT_ANNEAL_PATIENCE = 200
NORM_CHUNK = 1 << 18  # elements whose norm is taken at once in float64 (2 MiB)
# Models with more perturbed parameters than this take a smaller step per coordinate, (WIDTH_REFERENCE / P) ** 0.25:
# the estimate's share along the gradient falls as sqrt(K / P), so at a fixed step the random part grows with P
# and walks wide recurrent weights into chaos. The quarter power is the measured one (docs/algorithm.md: the
# largest stable rate on the Lorenz RNN at 64-512 hidden units); every XOR, moons and 64-unit model is below it.
WIDTH_REFERENCE = 8192


class Dopamine(PerturbationOptimizer):
    r"""Weight perturbation driven by reward-prediction errors (RPEs): phasic member RPEs, a tonic gain.

    Our reconstruction of Nambusubramaniyan et al., arXiv 2510.22178 (docs/algorithm.md says what is the paper's,
    what a third party's and what ours, and the measurements behind the defaults):

    .. code-block:: text

        input: params w, base lr eta (group["lr"]), sigma, K, beta_rpe, beta_loss, gain_rate, [gain_min, gain_max]
        for t = 0, 1, ...:
            L_t = L(w);  delta_j = L(w + sigma eps_j) - L(w)   (antithetic: (L(w+sigma eps_j) - L(w-sigma eps_j)) / 2)
            v_t = beta_rpe v_{t-1} + (1 - beta_rpe) mean_j delta_j^2;   s_t = sqrt(v_t / (1 - beta_rpe^(t+1)))
            s_ref = RMS of every delta_j of steps 0..t while t < 10, then frozen   (the reference RPE level)
            if adaptive and t > 0:                              (temporal RPE of the unperturbed loss)
                r_t = (l_{t-1} + b_{t-1}) - L_t                 (predicted by level l and trend b, Holt)
                q_t = beta_loss q_{t-1} + (1 - beta_loss) r_t^2;  rho_t = max(sqrt(q_t / (1 - beta_loss^t)),
                                                                               1e-3 |l_{t-1} + b_{t-1}|)
                log a_t = clamp(0.95 log a_{t-1} + gain_rate tanh(r_t / rho_t), log gain_min, log gain_max)
                l_t = beta_loss (l_{t-1} + b_{t-1}) + (1 - beta_loss) L_t;  b_t = beta_loss b_{t-1}
                      + (1 - beta_loss) (l_t - l_{t-1})                                       (l_0 = L_0, b_0 = 0)
            z_j = a_t delta_j / max(s_ref, max(a_t, 1) s_t)     (phasic RPEs against the reference level; the gain
                                                                 raises the rate below it, never the bounded step)
            u = sqrt(n) mean_j z_j eps_j                        (n noise ids; coordinates of order 1 at most)
            u <- u * min(1, max_grad_norm / ||u||)              (only with max_grad_norm, per group)
            w_p <- w_p - eta f r_p u_p                          (per tensor p; r_p = max(RMS(w_p), 1e-3) measured
                                                                 once, at its first step; r_p = 1 if not relative;
                                                                 f = min(1, (8192 / P)^(1/4)), P parameters in all)
            m_t = 0.99 m_{t-1} + 0.01 L_t  (bias-corrected)     (annealing: a slow average of the loss)
            if m_t has set no new low for anneal_patience steps (and s_t > 2^-13 |L_t|):
                sigma <- max(sigma / 2, sigma_0 / 1024)         (the next steps' perturbations; count restarts)

    In WP terms the step is ``eta_t g`` with ``g`` the WP estimate and the rate
    ``eta_t = eta a_t f r_p sigma sqrt(n) / max(s_ref, max(a_t, 1) s_t)``. The width factor ``f`` shrinks the step
    of models above 8192 parameters: the estimate's share along the gradient falls as ``sqrt(K / P)``, so at a fixed
    step size the random part of the step grows with the model and, on a 256-unit RNN, walked the recurrent weights
    into chaos within 20 steps; ``f`` is 1 for every XOR, moons and 64-unit model, 0.42 at the paper's 512-unit RNN.
    While the member RPEs are at their early level or above, the step is normalised (bounded, about ``eta f r_p``
    per coordinate whatever the gain: a gain above 1 in an excursion would only enlarge the steps that carry it, and
    those steps carried the worst chaotic runs off course); as the fit improves and the RPEs fall below that level,
    the rate is fixed (times the gain) and the step shrinks in proportion to the estimate, as WP's does, so the rule
    converges instead of jittering at a constant step size. Nothing reads the weights' current size: ``r_p`` is
    measured once, so growing weights cannot grow the step. The gain ``a_t`` rises while the loss beats its own
    prediction and falls while it misses it (slowing progress lowers it, which anneals the step on noisy
    minibatches). Once the loss stops reaching new lows (its slow average, for ``anneal_patience`` steps) the run
    only moves about a floor set by the step and by the smoothing of the finite differences (whose minimum lies
    O(sigma^2) off the loss's own); sigma then halves, which halves the RPEs against their reference level (so the
    step) and quarters that offset, so the loss converges instead of jittering and rising again. Both signals are
    divided by their own scale, so multiplying the loss by c > 0 leaves the trajectory unchanged, and a rising loss
    can only lower ``a_t``: there is no positive feedback, through the loss or through the weights. ``a_0 = 1`` and
    ``z`` has RMS 1 at the first step, so the first step moves each tensor by ``lr f`` times its RMS per coordinate
    (``lr`` up to 8192 parameters); ``group["lr"]`` stays the user's base rate, which ``a_t`` multiplies below the
    reference level, so ``torch.optim.lr_scheduler`` composes. ``adaptive=False`` freezes ``a_t = 1`` (the
    ablation).
    ``Dopamine.preset("dopamine2", params)`` is the third-party "Dopamine-2" form (``Dopamine2``).

    One set of defaults serves every task measured (docs/algorithm.md): XOR MLPs 2-2-1 to 2-16-1 in 0/1 and
    +-1 coding, two moons, 64-512-unit RNNs on chaotic series (there with ``sigma=1e-3``, as their small weights
    need). The signals' state lives in ``state["global"]["dopamine"]``, each tensor's ``r_p`` in
    ``state[p]["step_scale"]``; both round-trip through ``state_dict``.

    Args:
        params: parameters or parameter groups (groups may set ``lr``, ``sigma``, ``rank``, ``max_grad_norm``).
        lr: base learning rate eta (>= 0): the first step per coordinate, relative to the tensor's initial RMS
            (times the width factor ``f`` above 8192 parameters).
        sigma: perturbation scale (> 0).
        num_perturbations: K (>= 1; even when antithetic).
        antithetic: evaluate pairs ``+eps, -eps``.
        rank: 0 for full-rank noise, r >= 1 for rank-r noise on matrices.
        adaptive: let the tonic gain move (False: ``a_t = 1``).
        beta_rpe: smoothing of the tonic RPE level, in [0, 1).
        beta_loss: smoothing of the loss prediction and of its error's scale, in [0, 1).
        gain_rate: largest change of ``log a_t`` per step (>= 0).
        gain_min, gain_max: bounds of the gain (0 < gain_min <= 1 <= gain_max).
        anneal_patience: steps without a new low of the loss's slow average before sigma halves (integer >= 0;
            0: sigma stays). ``current_sigma`` reports the first group's sigma after annealing.
        relative: size each tensor's step by its initial RMS (False: ``lr`` is an absolute step per coordinate).
        seed: noise seed in [0, 2**63).
        max_grad_norm: clip each group's update direction ``u`` to this norm (None: no clipping).
        on_divergence: "restore" (best weights back, lr halved, a warning), "warn" or "raise" when the loss stays
            far above the best seen; None (default): "restore", or "warn" with ``memory="lean"`` (no weight copy).
        process_group: None (one process), a ``torch.distributed`` ProcessGroup or a
            ``dopamine_fast.distributed.Parallel``: ranks share the members (or the batch) and exchange losses.
        memory: "exact" or "lean" (no weight copy, for large models), as for ``WeightPerturbation``.
    """

    def __init__(self, params, lr: float = 0.2, sigma: float = 0.05, num_perturbations: int = 16,
                 antithetic: bool = True, rank: int = 0, adaptive: bool = True, beta_rpe: float = 0.9,
                 beta_loss: float = 0.9, gain_rate: float = 0.1, gain_min: float = 0.25, gain_max: float = 4.0,
                 anneal_patience: int = DEFAULT_ANNEAL_PATIENCE, relative: bool = True, seed: int = 0,
                 max_grad_norm: Optional[float] = None, on_divergence: Optional[str] = None, process_group=None,
                 memory: str = "exact"):
        options = dict(adaptive=adaptive, beta_rpe=beta_rpe, beta_loss=beta_loss, gain_rate=gain_rate,
                       gain_min=gain_min, gain_max=gain_max, anneal_patience=anneal_patience)
        check_signal_options(options)
        defaults = dict(lr=lr, sigma=sigma, rank=rank, max_grad_norm=max_grad_norm, relative=relative)
        super().__init__(params, defaults, num_perturbations, antithetic, seed, on_divergence,
                         process_group, memory)
        self.state[GLOBAL_STATE]["dopamine"] = {"options": options, **dopamine_rules.initial_state()}

    @classmethod
    def preset(cls, name: str, params, **overrides):
        """An optimizer with a named preset's settings (``PRESETS``), any of them overridden."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        factory, settings = PRESETS[name]
        return factory(params, **{**settings, **overrides})

    @property
    def gain(self) -> float:
        """The tonic gain ``a_t`` the next step's learning rate is multiplied by."""
        return math.exp(self.state[GLOBAL_STATE]["dopamine"]["log_gain"])

    @property
    def current_lr(self) -> float:
        """The first group's learning rate while the member RPEs are below their reference level, ``lr * gain`` (the
        bounded step above it stays ``lr``)."""
        return self.param_groups[0]["lr"] * self.gain

    @property
    def current_sigma(self) -> float:
        """The first group's perturbation scale after annealing, ``sigma * noise_scale``."""
        return self.param_groups[0]["sigma"] * self._noise_scale()

    def _noise_scale(self) -> float:
        return self.state[GLOBAL_STATE]["dopamine"]["noise_scale"]

    def _check_group(self, group) -> None:
        super()._check_group(group)
        if not isinstance(group.get("relative"), bool):
            raise ValueError(f"relative must be True or False, got {group.get('relative')!r}")

    PARAM_STATE = ("step_scale",)

    def _check_state_dict(self, state_dict) -> None:
        super()._check_state_dict(state_dict)
        for key, entry in state_dict["state"].items():
            if key != GLOBAL_STATE and isinstance(entry, dict) and "step_scale" in entry:
                check_number(f"step_scale of parameter {key}", entry["step_scale"], low=0, low_open=True)

    def _check_global_state(self, saved: dict) -> None:
        signals = saved["dopamine"]
        if isinstance(signals, dict) and "rpe_sq" in signals and "rpe_ref" not in signals:
            raise ValueError("the state was saved by an earlier version of Dopamine, whose step followed the "
                             "weights' current size and never annealed; this rule cannot continue it: load the "
                             "model's weights and start a fresh optimizer")
        if (not isinstance(signals, dict) or set(signals) != {"options", *dopamine_rules.initial_state()}
                or not isinstance(signals["options"], dict) or set(signals["options"]) != set(SIGNAL_OPTIONS)):
            raise ValueError(f"the state's 'dopamine' entry must hold the options {SIGNAL_OPTIONS} and the signals "
                             f"{sorted(dopamine_rules.initial_state())}, got {signals!r:.200}")
        check_signal_options(signals["options"])
        dopamine_rules.check_state(signals, signals["options"]["gain_min"], signals["options"]["gain_max"])

    def load_state_dict(self, state_dict) -> None:
        try:  # a state saved before the annealing existed gets its entries, then is checked like any other
            saved = state_dict["state"][GLOBAL_STATE]
            upgraded = _with_annealing_added(saved["dopamine"])
        except (TypeError, KeyError):
            upgraded = None  # malformed: the checks below say what is wrong
        if upgraded is not None and upgraded is not saved["dopamine"]:
            state_dict = {**state_dict, "state": {**state_dict["state"], GLOBAL_STATE: {**saved, "dopamine": upgraded}}}
        super().load_state_dict(state_dict)

    def _update(self, plan, losses):
        signals = self.state[GLOBAL_STATE]["dopamine"]
        options = signals["options"]
        delta = reward_prediction_errors(losses, plan.antithetic)
        gain = 1.0
        if options["adaptive"]:
            gain = dopamine_rules.tonic_gain(signals, float(losses[0]), options["beta_loss"], options["gain_rate"],
                                             options["gain_min"], options["gain_max"])
        z = dopamine_rules.scaled_rpes(signals, delta, options["beta_rpe"], gain)
        dopamine_rules.anneal_noise(signals, float(losses[0]), options["anneal_patience"], options["beta_rpe"])
        coeffs = z * (width_factor(sum(pn.param.numel() for pn in plan.params)) / math.sqrt(z.numel()))
        for group, pns in self._group_params(plan):
            scales = self._step_scales(pns) if group["relative"] and pns else None
            apply_noise_combination(plan, pns, coeffs, -group["lr"], group["max_grad_norm"], scales)

    def _step_scales(self, pns) -> tuple:
        """Each tensor's step scale, measured once (its RMS the first time it is updated), never re-read."""
        new = [pn.param for pn in pns if "step_scale" not in self.state[pn.param]]
        if new:
            for p, scale in zip(new, param_scales(new)):
                self.state[p]["step_scale"] = scale
        return tuple(self.state[pn.param]["step_scale"] for pn in pns)


def width_factor(num_params: int) -> float:
    """The step's factor for a model of ``num_params`` perturbed parameters: 1 up to ``WIDTH_REFERENCE``, then
    ``(WIDTH_REFERENCE / num_params) ** 0.25``."""
    return min(1.0, (WIDTH_REFERENCE / max(num_params, 1)) ** 0.25)


def param_scales(params) -> tuple:
    """``max(RMS(p), MIN_PARAM_SCALE)`` per tensor: a relative step moves each in proportion to its own size.

    The norms are read back together, so a GPU step waits for the device once per group, not once per tensor.
    They are summed in float64 chunk by chunk through one small buffer: a float64 copy of a whole tensor (or one per
    chunk, which the heap may not reuse) would cost more memory than ``memory="lean"`` allows.
    """
    if not params:
        return ()
    buffer = torch.empty(NORM_CHUNK, dtype=torch.float64, device=params[0].device)
    norms = torch.stack([_sum_of_squares(p.detach(), buffer) for p in params]).sqrt().tolist()
    return tuple(max(n / math.sqrt(max(p.numel(), 1)), MIN_PARAM_SCALE) for n, p in zip(norms, params))


def _sum_of_squares(p: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64, device=p.device)
    for chunk in p.reshape(-1).split(NORM_CHUNK):
        b = buffer[:chunk.numel()].copy_(chunk)
        total += torch.dot(b, b)
    return total


def check_signal_options(options: dict) -> None:
    """Raise ValueError naming the option unless Dopamine's signal options are valid."""
    if not isinstance(options.get("adaptive"), bool):
        raise ValueError(f"adaptive must be True or False, got {options.get('adaptive')!r}")
    check_number("beta_rpe", options.get("beta_rpe"), low=0, high=1, high_open=True)
    check_number("beta_loss", options.get("beta_loss"), low=0, high=1, high_open=True)
    check_number("gain_rate", options.get("gain_rate"), low=0, high=10)
    check_number("gain_min", options.get("gain_min"), low=0, low_open=True, high=1)
    check_number("gain_max", options.get("gain_max"), low=1, high=1e6)
    check_number("anneal_patience", options.get("anneal_patience"), low=0, integer=True)


def _with_annealing_added(signals: dict) -> dict:
    """A signal state saved before the annealing existed, with its entries added: sigma starts unannealed and
    ``anneal_patience`` at its default (any other state is returned as it is)."""
    anneal = dopamine_rules.initial_anneal_state()
    if (not isinstance(signals, dict) or not isinstance(signals.get("options"), dict)
            or set(signals) != {"options", *dopamine_rules.initial_state()} - set(anneal)):
        return signals
    options = signals["options"]
    if set(options) == set(SIGNAL_OPTIONS) - {"anneal_patience"}:
        options = {**options, "anneal_patience": DEFAULT_ANNEAL_PATIENCE}
    return {**signals, **anneal, "options": options}


# name -> (class, settings). The third-party "Dopamine-2" reimplementation's settings (docs/algorithm.md): one
# perturbation, the unnormalised update and its learning-rate rule, sigma 1e-4 (Lorenz), betas 0.9998, eta_0 1e-2.
PRESETS = {
    "dopamine2": (Dopamine2, dict(lr=1e-2, sigma=1e-4, num_perturbations=1, antithetic=False, beta_s=0.9998,
                                  beta_lr=0.9998)),
}
