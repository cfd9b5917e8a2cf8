"""The flow-matching family (Stable Diffusion 3 / 3.5): a route's integer timestep as a noise level, and the training
step's noisy input, target and loss weight, from diffusers' own pieces (`FlowMatchEulerDiscreteScheduler`'s training
scale, `training_utils.compute_loss_weighting_for_sd3`).

**The scale.** Routes draw integer timesteps t in [0, T), T = the scheduler's `num_train_timesteps`, high t = high
noise, as for the UNet family. A fresh `FlowMatchEulerDiscreteScheduler` holds its training scale as two arrays
indexed from the noisiest end: `sigmas[i] = shift·s / (1 + (shift − 1)·s)` with `s = (T − i) / T` (unshifted when
the scheduler shifts dynamically at sampling time), and `timesteps[i] = sigmas[i]·T`, the value its pipeline hands
the transformer. Route timestep t is scheduler index i = T − 1 − t:

    σ(t) = shift·s / (1 + (shift − 1)·s),   s = (t + 1) / T;      the transformer's timestep: σ(t)·T

σ is increasing in t, from σ(0) (the least noise the scheduler trains: 1/T unshifted) to σ(T − 1) = 1 (pure noise).
A route window [t_min, t_max) is the noise band [σ(t_min), σ(t_max − 1)], so `strategy.t_split` keeps its meaning:
alignment (layout) trains σ ≥ σ(t_split), style σ < σ(t_split). This is the scale diffusers' SD3 training script
draws from (`timesteps[⌊u·T⌋]` for u in [0, 1)) read from the other end: uniform draws give the same σ distribution,
and u here is 1 − u there (the SD3 paper's convention, data/densities.py: logit_mean > 0 means more noise).

**The step** (rectified flow, Esser et al. 2024): x_σ = (1 − σ)·x₀ + σ·ε, the transformer predicts the velocity
ε − x₀, at timestep σ·T exactly as the pipeline passes it when sampling; the loss weight is diffusers'
`compute_loss_weighting_for_sd3` of σ (`loss.weighting_scheme`: none, sigma_sqrt, cosmap).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

# compute_loss_weighting_for_sd3's schemes ("none" is its uniform weight: the plain velocity MSE).
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "cosmap")


def _scheduler_index(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Route timesteps t (integers in [0, T)) as indices of the scheduler's arrays, which run from most noise."""
    return (scheduler.config.num_train_timesteps - 1 - timesteps.long()).cpu()


def flow_sigmas(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """σ(t) of route timesteps t: the training scheduler's `sigmas` at index T − 1 − t (on t's device)."""
    return scheduler.sigmas[_scheduler_index(scheduler, timesteps)].to(timesteps.device)


def flow_model_timesteps(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """The transformer's timestep input for route timesteps t: the scheduler's own `timesteps` (σ(t)·T) at index
    T − 1 − t, the values its pipeline passes when it denoises at that noise level."""
    return scheduler.timesteps[_scheduler_index(scheduler, timesteps)].to(timesteps.device)


def flow_inputs(scheduler, latents: torch.Tensor, noise: torch.Tensor,
                timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents (1 − σ)·x₀ + σ·ε, the transformer's timesteps σ·T, the velocity target ε − x₀)."""
    sigmas = flow_sigmas(scheduler, timesteps).to(latents.dtype)
    sigmas = sigmas.view(-1, *(1,) * (latents.ndim - 1))
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    return noisy, flow_model_timesteps(scheduler, timesteps), noise - latents


def flow_loss_weights(scheduler, timesteps: torch.Tensor, scheme: str) -> Optional[torch.Tensor]:
    """Each sample's loss weight under diffusers' `compute_loss_weighting_for_sd3(scheme, σ)`; None for `none`
    (uniform weights: nothing to multiply)."""
    if scheme == "none":
        return None
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    return compute_loss_weighting_for_sd3(scheme, flow_sigmas(scheduler, timesteps).float())


def switch_timestep(scheduler_config, t_switch: int) -> float:
    """Where route timestep `t_switch` lies in a flow pipeline's own timesteps (σ·T): a sampling step at pipeline
    timestep τ is below the switch exactly when τ < this (the style side of a split at `t_switch`, as training cut
    it). `t_switch` >= T is above every step (infinity)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    T = scheduler_config["num_train_timesteps"]
    if t_switch >= T:
        return math.inf
    training = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)  # fresh: the training scale
    return float(flow_model_timesteps(training, torch.tensor([t_switch]))[0])
