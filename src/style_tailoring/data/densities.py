"""Timestep densities of a route: how the routed stream turns a sample's uniform draw into a timestep of its window.

Every density maps the sample's own counter-based uniform U (data/routed.py: a pure function of seed, sample index
and draw) through an inverse CDF, so a sample's timestep stays a pure function of (seed, sample index): a resumed run
and any split of the batch over ranks draw exactly the same timesteps, whatever the density.

- `uniform`: t uniform in [t_min, t_max) (the default, and what every built-in strategy but the soft split uses).
- `logit_normal` (SD3, Esser et al. 2024): u = sigmoid(n), n ~ N(logit_mean, logit_std), as diffusers'
  `training_utils.compute_density_for_timestep_sampling("logit_normal")` draws it (n = logit_mean + logit_std ·
  Φ⁻¹(U) here, the same distribution from the sample's uniform).
- `mode` (SD3): u = 1 - U - mode_scale · (cos²(πU/2) - 1 + U), diffusers' formula applied to the sample's uniform.
- `soft_split`: Style Tailoring's split with a logistic ramp instead of a cut: P(t) ∝ σ((t_split - ½ - t) / width)
  on side `below` (the style route), ∝ σ((t - t_split + ½) / width) on side `above` (the alignment route). At every
  timestep the two sides' weights sum to 1, so with shares in the ratio of their masses (`soft_split_mass`) the two
  routes together train every timestep equally often; width → 0 is the hard split at t_split.

The SD3 densities give u in [0, 1]; u = 0 is t_min (least noise) and u = 1 is t_max (most noise), the paper's
convention (logit_mean > 0 shifts the draws towards noise). t = t_min + min(⌊u · (t_max - t_min)⌋, t_max - t_min - 1)
in the scheduler's integer timesteps, as the uniform density always mapped its draw.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from style_tailoring.config import ConfigError
from style_tailoring.plan import UNIFORM, Density

# Each density's settings and their defaults (SD3's: logit-normal N(0, 1), mode scale 1.29); None: required.
SETTINGS: dict[str, dict] = {
    "uniform": {},
    "logit_normal": {"logit_mean": 0.0, "logit_std": 1.0},
    "mode": {"mode_scale": 1.29},
    "soft_split": {"t_split": None, "width": 100.0, "side": "below"},
}
# The mode map stays a bijection of [0, 1] (its density positive) for mode_scale in [-1, 2 / (π - 2)] (SD3, eq. 20).
MODE_SCALE_RANGE = (-1.0, 2.0 / (math.pi - 2.0))
SIDES = ("below", "above")
# The narrowest soft split, in timesteps: at 0.001 it is already the hard split to 1e-200 (σ(0.5 / 0.001)), and a
# narrower one would overflow the ramp's logits.
MIN_WIDTH = 1e-3


def _number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    return float(value)


def density_from_config(key: str, node, T: int) -> Density:
    """A route's density from its config: a name (`logit_normal`) or a mapping (`{name: mode, mode_scale: 0.5}`),
    null meaning uniform. Every value is checked, an error naming `key.<setting>`."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if plain is None or isinstance(plain, str):
        name_key, plain = key, {"name": plain or "uniform"}
    elif isinstance(plain, dict):
        name_key, plain = f"{key}.name", dict(plain)
    else:
        raise ConfigError(key, f"must be a density's name or a mapping {{name: ..., <settings>}}, got {plain!r}")
    name = plain.pop("name", None)
    if name not in SETTINGS:
        raise ConfigError(name_key, f"unknown density {name!r}; one of {sorted(SETTINGS)}" if name is not None
                          else f"is required: one of {sorted(SETTINGS)}")
    defaults = SETTINGS[name]
    for setting in plain:
        if setting not in defaults:
            raise ConfigError(f"{key}.{setting}", f"is not a setting of the {name} density (its settings: "
                              f"{sorted(defaults) or 'none'})")
    values = {**defaults, **plain}
    if name == "logit_normal":
        mean = _number(f"{key}.logit_mean", values["logit_mean"])
        std = _number(f"{key}.logit_std", values["logit_std"])
        if std <= 0:
            raise ConfigError(f"{key}.logit_std", f"must be > 0, got {std:g}")
        return Density.of(name, logit_mean=mean, logit_std=std)
    if name == "mode":
        scale = _number(f"{key}.mode_scale", values["mode_scale"])
        low, high = MODE_SCALE_RANGE
        if not low <= scale <= high:
            raise ConfigError(f"{key}.mode_scale", f"must lie in [{low:g}, {high:.4f}] (where the mode map stays "
                              f"a density), got {scale:g}")
        return Density.of(name, mode_scale=scale)
    if name == "soft_split":
        t_split = values["t_split"]
        if t_split is None:
            raise ConfigError(f"{key}.t_split", "is required: the timestep the ramp is centred on")
        if isinstance(t_split, bool) or not isinstance(t_split, int) or not 1 <= t_split <= T - 1:
            raise ConfigError(f"{key}.t_split", f"must be an integer in [1, {T - 1}] (T={T}), got {t_split!r}")
        return soft_split(f"{key}.width", t_split, values["width"], values["side"], side_key=f"{key}.side")
    return UNIFORM


def soft_split(width_key: str, t_split: int, width, side: str, *, side_key: str = "side") -> Density:
    """The soft split's density of one side, its width checked (naming `width_key`)."""
    width = _number(width_key, width)
    if width < MIN_WIDTH:
        raise ConfigError(width_key, f"must be >= {MIN_WIDTH:g} timesteps (narrower is the hard split), got {width:g}")
    if side not in SIDES:
        raise ConfigError(side_key, f"must be one of {list(SIDES)}, got {side!r}")
    return Density.of("soft_split", t_split=int(t_split), width=width, side=side)


def _log_weights(t_split: int, width: float, side: str, t) -> np.ndarray:
    x = (t_split - 0.5 - np.asarray(t, dtype=np.float64)) / width  # finite: width >= MIN_WIDTH
    return -np.logaddexp(0.0, x if side == "above" else -x)  # log σ(x) below, log σ(-x) above


def soft_split_weights(t_split: int, width: float, side: str, t) -> np.ndarray:
    """P(side | t) of the soft split: σ((t_split - ½ - t) / width) below, its complement above."""
    return np.exp(_log_weights(t_split, width, side, t))


def soft_split_mass(t_split: int, width: float, T: int, side: str = "below") -> float:
    """Σ_t P(side | t) over [0, T): the share of samples that keeps the two sides' combined density uniform is this
    over T (t_split / T when the ramp lies inside [0, T))."""
    return float(soft_split_weights(t_split, width, side, np.arange(T)).sum())


@functools.lru_cache(maxsize=64)
def _soft_split_cdf(density: Density, t_min: int, t_max: int) -> np.ndarray:
    """The soft split's CDF over the window's timesteps (log-space weights: never all zero, even for a window far
    on the other side of a narrow ramp, where the mass goes to the timestep nearest t_split)."""
    log_weights = _log_weights(density.get("t_split"), density.get("width"), density.get("side"),
                               np.arange(t_min, t_max))
    cdf = np.cumsum(np.exp(log_weights - log_weights.max()))
    cdf /= cdf[-1]
    cdf.flags.writeable = False
    return cdf


def unit_draws(density: Density, u: np.ndarray) -> np.ndarray:
    """The SD3 densities' u in [0, 1] from the samples' uniforms U in [0, 1)."""
    if density.name == "logit_normal":
        from scipy.special import expit, ndtri

        return expit(density.get("logit_mean") + density.get("logit_std") * ndtri(u))
    if density.name == "mode":
        scale = density.get("mode_scale")
        return np.clip(1.0 - u - scale * (np.cos(np.pi * u / 2.0) ** 2 - 1.0 + u), 0.0, 1.0)
    if density.name == "uniform":
        return u
    raise ValueError(f"density {density.name!r} draws no u in [0, 1]")


def draw_timesteps(density: Density, t_min: int, t_max: int, u: np.ndarray) -> np.ndarray:
    """Integer timesteps in [t_min, t_max) of `density`, one per uniform U in [0, 1) of `u`."""
    width = t_max - t_min
    if density.name == "soft_split":
        index = np.searchsorted(_soft_split_cdf(density, t_min, t_max), u, side="right")
        return t_min + np.minimum(index, width - 1).astype(np.int64)
    return t_min + np.minimum((unit_draws(density, u) * width).astype(np.int64), width - 1)
