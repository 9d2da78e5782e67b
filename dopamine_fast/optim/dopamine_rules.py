"""Dopamine's two signals as pure functions: the phasic member RPEs and the tonic gain (docs/algorithm.md).

Both are normalised by their own running scale, so multiplying the loss by any c > 0 changes nothing, and both
are bounded, so a rising loss can only lower the step. Their state is a dict of plain numbers, so that
``torch.load(..., weights_only=True)`` reads a checkpoint.
"""

from __future__ import annotations

import math

import torch


# Memory of the log-gain: without new surprises it decays back towards 0 (gain 1) with this factor per step, so
# noise cannot random-walk it to a bound and a sustained surprise settles at rate / (1 - GAIN_MEMORY) at most.
GAIN_MEMORY = 0.95
SURPRISE_FLOOR = 1e-3
# Steps whose member RPEs set the reference level (their RMS); it is frozen after them, so a later spike of the RPEs
# (a bad minibatch, a step too large) is bounded but does not slow the rest of the run.
REFERENCE_STEPS = 10
# The slow average of the unperturbed loss (about 100 steps) whose new lows count as progress for the annealing.
ANNEAL_BETA = 0.99
# The perturbation scale never falls below this fraction of sigma (10 halvings)...
MIN_NOISE_SCALE = 2.0**-10
# ...nor while the member RPEs are below this fraction of the loss: about 1000 float32 roundings, below which a
# smaller perturbation would measure rounding rather than slope.
RPE_RESOLUTION = 2.0**-13


def initial_state() -> dict:
    return {"rpe_sq": 0.0, "rpe_count": 0, "rpe_ref": 0.0, "log_gain": 0.0, "loss_level": math.nan, "loss_trend": 0.0,
            "surprise_sq": 0.0, "surprise_count": 0, **initial_anneal_state()}


def initial_anneal_state() -> dict:
    """The annealing's entries (a state saved before they existed lacks them and starts them afresh)."""
    return {"slow_loss": 0.0, "slow_count": 0, "best_slow_loss": math.inf, "since_best": 0, "noise_scale": 1.0}


def check_state(state: dict, gain_min: float, gain_max: float) -> None:
    """Raise ValueError naming the entry unless a loaded signal state could have come from training."""
    for key in ("rpe_count", "surprise_count", "slow_count", "since_best"):
        if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
            raise ValueError(f"dopamine state {key} must be an integer >= 0, got {state[key]!r}")
    for key in ("rpe_sq", "rpe_ref", "surprise_sq", "loss_trend", "log_gain", "loss_level", "slow_loss",
                "best_slow_loss", "noise_scale"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"dopamine state {key} must be a number, got {value!r}")
        if not math.isfinite(value) and not ((key == "loss_level" and math.isnan(value))
                                             or (key == "best_slow_loss" and value == math.inf)):
            raise ValueError(f"dopamine state {key} must be finite, got {value!r}")
    for key in ("rpe_sq", "rpe_ref", "surprise_sq"):
        if state[key] < 0:
            raise ValueError(f"dopamine state {key} must be >= 0, got {state[key]!r}")
    if not math.log(gain_min) - 1e-12 <= state["log_gain"] <= math.log(gain_max) + 1e-12:
        raise ValueError(f"dopamine state log_gain must lie in [log gain_min, log gain_max], got {state['log_gain']!r}")
    if math.isnan(state["loss_level"]) and state["surprise_count"]:
        raise ValueError("dopamine state loss_level is NaN after surprises were counted")
    if not MIN_NOISE_SCALE <= state["noise_scale"] <= 1:
        raise ValueError(f"dopamine state noise_scale must lie in [{MIN_NOISE_SCALE}, 1], got {state['noise_scale']!r}")


def _debiased_rms(mean_sq: float, beta: float, count: int) -> float:
    return math.sqrt(mean_sq / (1 - beta ** count))


def scaled_rpes(state: dict, delta: torch.Tensor, beta: float, gain: float = 1.0) -> torch.Tensor:
    """``z_j = a delta_j / max(s_ref, max(a, 1) s_t)``: the member RPEs in units of a reference level, times the gain.

    ``s_t = sqrt(v_t / (1 - beta^t))``, ``v_t = beta v_{t-1} + (1 - beta) mean_j delta_j^2`` is the tonic level
    (bias-corrected running RMS of the member RPEs) and ``s_ref`` the RMS of every member RPE of the first
    ``REFERENCE_STEPS`` steps, frozen after them. While the RPEs are at that level or above, ``z`` has RMS about 1
    (a bounded step); as they shrink below it, ``z`` shrinks with them, so the step becomes proportional to the WP
    estimate at the rate ``a / s_ref`` (it anneals as the fit improves). The gain ``a`` scales that rate but never
    the bounded step: ``a > 1`` lowers the level at which normalisation starts instead of enlarging the normalised
    step. A flat loss (every RPE so far zero) gives ``z = 0``: no step.
    """
    state["rpe_count"] += 1
    mean_sq = float((delta * delta).mean())
    state["rpe_sq"] = beta * state["rpe_sq"] + (1 - beta) * mean_sq
    rms = _debiased_rms(state["rpe_sq"], beta, state["rpe_count"])
    count = state["rpe_count"]
    if count <= REFERENCE_STEPS:  # the running RMS over the warm-up: an average, not a maximum of noisy levels
        state["rpe_ref"] = math.sqrt(((count - 1) * state["rpe_ref"] ** 2 + mean_sq) / count)
    level = max(state["rpe_ref"], max(gain, 1.0) * rms)
    return delta * (gain / level) if level > 0 else torch.zeros_like(delta)


def tonic_gain(state: dict, loss: float, beta: float, rate: float, low: float, high: float) -> float:
    """The learning-rate factor for this step, driven by the temporal RPE of the unperturbed loss.

    The loss is predicted from a running level and trend (Holt's linear smoothing, weight ``1 - beta``), so steady
    progress is expected. The temporal RPE ``r_t = predicted - L_t`` is positive when the loss came out better than
    predicted; divided by its running RMS (never by less than ``SURPRISE_FLOOR`` times the prediction, so the
    vanishing residuals of a deterministic loss are no surprise) and squashed by tanh, it moves ``log gain`` by at
    most ``rate`` per step, the log-gain otherwise decaying towards 0 by ``GAIN_MEMORY``, clamped to
    ``[log low, log high]``. A loss worse than predicted can only lower the gain; progress that slows below its own
    trend lowers it too, which anneals the step on noisy minibatches. The gain is 1 until there is a prediction.
    """
    if math.isnan(state["loss_level"]):
        state["loss_level"] = loss
        return math.exp(state["log_gain"])
    predicted = state["loss_level"] + state["loss_trend"]
    surprise = predicted - loss
    state["surprise_count"] += 1
    state["surprise_sq"] = beta * state["surprise_sq"] + (1 - beta) * surprise * surprise
    scale = max(_debiased_rms(state["surprise_sq"], beta, state["surprise_count"]), SURPRISE_FLOOR * abs(predicted))
    signal = math.tanh(surprise / scale) if scale > 0 else 0.0
    state["log_gain"] = min(max(GAIN_MEMORY * state["log_gain"] + rate * signal, math.log(low)), math.log(high))
    level = beta * predicted + (1 - beta) * loss
    state["loss_trend"] = beta * state["loss_trend"] + (1 - beta) * (level - state["loss_level"])
    state["loss_level"] = level
    return math.exp(state["log_gain"])


def anneal_noise(state: dict, loss: float, patience: int, beta_rpe: float) -> float:
    """The perturbation scale of the next steps, as a fraction of ``sigma``: halved whenever the loss stalls.

    ``m_t = ANNEAL_BETA m_{t-1} + (1 - ANNEAL_BETA) L_t`` (bias-corrected) is a slow average of the unperturbed loss.
    When it has not reached a new low for ``patience`` steps, the run is no longer making progress, only moving
    about a noise floor, and the scale halves (and the count starts again). That floor has two causes, and halving
    sigma shrinks both: the member RPEs halve with sigma while their reference level stays, so the step halves;
    and antithetic differences follow the loss smoothed over the perturbations, whose minimum lies off the loss's
    own by O(sigma^2), so that offset falls 4x. A slow, steady descent (a plateau being crossed) keeps setting
    new lows and is not annealed. The scale stops at ``MIN_NOISE_SCALE``, and while the member RPEs (RMS ``s_t``)
    are below ``RPE_RESOLUTION`` of the loss, where halving would measure rounding. ``patience = 0``: never.
    """
    if patience == 0:
        return state["noise_scale"]
    state["slow_count"] += 1
    state["slow_loss"] = ANNEAL_BETA * state["slow_loss"] + (1 - ANNEAL_BETA) * loss
    slow = state["slow_loss"] / (1 - ANNEAL_BETA ** state["slow_count"])
    if slow < state["best_slow_loss"]:
        state["best_slow_loss"], state["since_best"] = slow, 0
        return state["noise_scale"]
    state["since_best"] += 1
    rpe_rms = _debiased_rms(state["rpe_sq"], beta_rpe, state["rpe_count"]) if state["rpe_count"] else 0.0
    if (state["since_best"] >= patience and state["noise_scale"] > MIN_NOISE_SCALE
            and rpe_rms > RPE_RESOLUTION * abs(loss)):
        state["noise_scale"] = max(state["noise_scale"] / 2, MIN_NOISE_SCALE)
        state["since_best"] = 0
    return state["noise_scale"]
