"""Checks of every `eval.*` value, run before any training or sampling, each naming its key."""

from __future__ import annotations

import inspect

from style_tailoring.config import ConfigError, target_object
from style_tailoring.models.safe_load import weights_kwargs


def build_sampler(ev, key: str = "eval.sampler"):
    """The configured sampler (`ev.sampler`, named `key` in errors), constructed: its own checks run here, its
    weights load later."""
    from hydra.utils import instantiate

    from style_tailoring.sampling.samplers import Sampler

    spec = dict(ev.sampler)
    if not spec.get("_target_"):
        raise ConfigError(f"{key}._target_", "is required: choose a sampler with eval/sampler=NAME")
    check_target(key, spec)
    try:
        sampler = instantiate(spec, _convert_="all")
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - Hydra wraps import and argument errors alike
        cause = err.__cause__ or err
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(key, f"cannot build {spec['_target_']}: {cause}") from None
    if not isinstance(sampler, Sampler):
        raise ConfigError(f"{key}._target_", f"{spec['_target_']} is not a style_tailoring Sampler")
    return sampler


def check_eval_settings(ev) -> None:
    if not ev.enabled:
        return
    if ev.seeds_per_prompt < 1:
        raise ConfigError("eval.seeds_per_prompt", f"must be >= 1, got {ev.seeds_per_prompt}")
    if ev.max_prompts is not None and ev.max_prompts < 1:
        raise ConfigError("eval.max_prompts", f"must be >= 1 or null, got {ev.max_prompts}")
    if ev.every_n_steps is not None and ev.every_n_steps < 1:
        raise ConfigError("eval.every_n_steps", f"must be >= 1 or null, got {ev.every_n_steps}")
    sample = ev.sample
    if sample.num_inference_steps < 1:
        raise ConfigError("eval.sample.num_inference_steps", f"must be >= 1, got {sample.num_inference_steps}")
    if sample.guidance_scale < 0:
        raise ConfigError("eval.sample.guidance_scale", f"must be >= 0, got {sample.guidance_scale}")
    if sample.batch_size < 1:
        raise ConfigError("eval.sample.batch_size", f"must be >= 1, got {sample.batch_size}")
    if sample.scheduler is not None:
        import diffusers
        from diffusers import SchedulerMixin

        cls = getattr(diffusers, sample.scheduler, None)
        if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
            raise ConfigError("eval.sample.scheduler", f"{sample.scheduler!r} is not a diffusers scheduler class "
                              "(e.g. DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler; null keeps "
                              "the pipeline's own)")
    if ev.fid.enabled:
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        import style_tailoring.evaluation.metrics.fidelity  # noqa: F401 - registers clip-local

        if ev.fid.feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
            raise ConfigError("eval.fid.feature_extractor", f"unknown extractor {ev.fid.feature_extractor!r}; one "
                              f"of {sorted(FEATURE_EXTRACTORS_REGISTRY)}")
        if ev.fid.kid_subset_size < 2:
            raise ConfigError("eval.fid.kid_subset_size", f"must be >= 2, got {ev.fid.kid_subset_size}")
    # A CLIP directory with pickled weights only is refused when it loads; say so now, not after training.
    clip_dirs = {"eval.clip.model_path": ev.clip.model_path,
                 "eval.fid.weights_path": ev.fid.weights_path if ev.fid.feature_extractor == "clip-local" else None}
    for key, path in clip_dirs.items():
        if path:
            weights_kwargs(path, key=key, switch=None)
    check_target("eval.judges", ev.judges)
    build_sampler(ev)


def check_sampling_family(ev, flow: bool) -> None:
    """The sampler and `eval.sample.scheduler` must sample the evaluated model's family: a flow-matching (SD3-family)
    pipeline takes a FlowMatch* scheduler or null (its own), a UNet pipeline's DDPM-family schedulers any other.
    Swapped the other way, diffusers would build the scheduler from the wrong config and sample noise."""
    if not ev.enabled:
        return
    sampler = build_sampler(ev)
    family = "sd3" if flow else "unet"
    if family not in sampler.families:
        raise ConfigError("eval.sampler", f"{sampler.name} samples {' and '.join(sampler.families)} pipelines; "
                          f"this is a{'n SD3-family' if flow else ' UNet'} model")
    name = ev.sample.scheduler
    if name is None or str(name).startswith("FlowMatch") == flow:
        return
    if flow:
        raise ConfigError("eval.sample.scheduler", f"{name} samples DDPM-family (UNet) models; this is an SD3-family "
                          "(flow-matching) model: set eval.sample.scheduler=null (the pipeline's own "
                          "FlowMatchEulerDiscreteScheduler) or a FlowMatch* scheduler")
    raise ConfigError("eval.sample.scheduler", f"{name} samples flow-matching (SD3-family) models; this is a UNet "
                      "model: name a DDPM-family scheduler (DDIMScheduler, ...) or null")


def check_target(key: str, node) -> None:
    """A `_target_` node (or null) must name something importable; it is instantiated later, after the checks."""
    if node is None:
        return
    target = node.get("_target_") if hasattr(node, "get") else None
    target_callable = target_object(key, target)
    # Hydra would say "unexpected keyword argument" naming neither the key nor, for a class, the argument.
    try:
        parameters = inspect.signature(target_callable).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): instantiating will tell
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    names = {p.name for p in parameters}
    for name in node:
        if not str(name).startswith("_") and name not in names:
            raise ConfigError(f"{key}.{name}", f"is not an argument of {target} (it takes {sorted(names)})")


def check_eval_files(ev) -> list[str]:
    """The eval prompts, read and checked (a missing or malformed file fails here, not after training)."""
    from style_tailoring.sampling.generate import load_prompts

    if not ev.prompts:
        raise ConfigError("eval.prompts", "no eval prompt file (set eval.prompts or data.eval_prompts, or "
                          "eval.enabled=false)")
    try:
        return load_prompts(ev.prompts)
    except (OSError, ValueError) as err:
        raise ConfigError("eval.prompts", str(err).removeprefix("eval.prompts: ")) from None
