"""Every hitl.* value of a HITL run checked before any work, each error naming its key."""

from __future__ import annotations

import re
from pathlib import Path

from style_tailoring.config import ConfigError
from style_tailoring.training.strategies import check_strategy_names


def validate_hitl(cfg) -> None:
    """Every hitl.* value, before any work, each error naming its key."""
    from style_tailoring.evaluation.validate import build_sampler, check_target

    h = cfg.hitl
    if h.rounds < 1:
        raise ConfigError("hitl.rounds", f"must be >= 1, got {h.rounds}")
    if h.finetune_from not in ("domain", "previous"):
        raise ConfigError("hitl.finetune_from", f"must be 'domain' or 'previous', got {h.finetune_from!r}")
    if h.on_unrated not in ("error", "skip"):
        raise ConfigError("hitl.on_unrated", f"must be 'error' or 'skip', got {h.on_unrated!r}")
    check_strategy_names("hitl.strategies", h.strategies)
    for name, overrides in (h.get("strategy_overrides") or {}).items():
        if name not in h.strategies:
            raise ConfigError(f"hitl.strategy_overrides.{name}", f"names no strategy of hitl.strategies "
                              f"{list(h.strategies)}")
        if any(not isinstance(o, str) or "=" not in o for o in overrides):
            raise ConfigError(f"hitl.strategy_overrides.{name}", f"must be a list of key=value overrides, got "
                              f"{list(overrides)}")
    if h.rounds > 1 and not h.teachers:
        if not h.strategies and h.generate_with != "domain":
            raise ConfigError("hitl.strategies", "later rounds generate from a finetuned model: name at least one "
                              "(or hitl.generate_with=domain)")
        if h.generate_with != "domain" and (h.generate_with or h.strategies[0]) not in h.strategies:
            raise ConfigError("hitl.generate_with", f"{h.generate_with!r} is neither 'domain' nor one of "
                              f"hitl.strategies {list(h.strategies)}")
    _check_pipeline("hitl.model", h.model)
    g = h.generate
    for key, value, low in (("seeds_per_prompt", g.seeds_per_prompt, 1), ("sample.num_inference_steps",
                            g.sample.num_inference_steps, 1), ("sample.batch_size", g.sample.batch_size, 1)):
        if value < low:
            raise ConfigError(f"hitl.generate.{key}", f"must be >= {low}, got {value}")
    if g.sample.guidance_scale < 0:
        raise ConfigError("hitl.generate.sample.guidance_scale", f"must be >= 0, got {g.sample.guidance_scale}")
    build_sampler(g, key="hitl.generate.sampler")
    from style_tailoring.hitl.raters import build_rater

    check_target("hitl.rater", h.rater)
    build_rater(cfg).check(cfg)
    c = h.curation
    if c.per_prompt_cap < 1:
        raise ConfigError("hitl.curation.per_prompt_cap", f"must be >= 1, got {c.per_prompt_cap}")
    if not 1 <= c.style_min <= 5:
        raise ConfigError("hitl.curation.style_min", f"must lie in 1..5, got {c.style_min}")
    names = [t.name for t in h.teachers]
    for i, t in enumerate(h.teachers):
        if not re.fullmatch(r"[A-Za-z0-9_.]+", t.name or "") or names.count(t.name) > 1:
            raise ConfigError(f"hitl.teachers[{i}].name", f"{t.name!r}: a unique name of letters, digits, _ and .")
        if t.model:
            _check_pipeline(f"hitl.teachers[{i}].model", t.model)
        if t.lora:
            from style_tailoring.models.components import unet_source_kind

            if unet_source_kind(t.lora, key=f"hitl.teachers[{i}].lora") != "lora":
                raise ConfigError(f"hitl.teachers[{i}].lora", f"{t.lora} is not a LoRA folder")
        if not t.model and not t.lora:
            raise ConfigError(f"hitl.teachers[{i}]", "give a pipeline (model) or LoRA weights on hitl.model (lora)")
    if h.student.base:
        if not h.teachers:
            raise ConfigError("hitl.student.base", "a student learns from an ensemble: set hitl.teachers too")
        _check_pipeline("hitl.student.base", h.student.base)


def _check_pipeline(key: str, path) -> None:
    if not path or not (Path(path).expanduser() / "model_index.json").is_file():
        raise ConfigError(key, f"{path!r} is not a diffusers pipeline directory (no model_index.json); "
                          "e.g. a training run's RUN_DIR/pipeline")
