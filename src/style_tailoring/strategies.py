"""Strategies as data: each one compiles the config into a `Plan` — stages × routes (source, timestep range, share).

The training step never asks which strategy is running. The data stream reads the plan to decide, per sample,
which source it comes from and which timestep it is trained at; the module only sees samples and timesteps.
Adding a method (e.g. StyleForge's dual binding: two routes with a loss weight) means adding a small class here.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from omegaconf import DictConfig

from style_tailoring.config import SOURCES, ConfigError


@dataclass(frozen=True)
class Route:
    """Samples of `source` train timesteps in [t_min, t_max), making up `share` of every batch (in expectation)."""

    source: str
    t_min: int
    t_max: int
    share: float


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source the plan reads, in a fixed order (the route index space of the data stream)."""
        used = {route.source for stage in self.stages for route in stage.routes}
        return tuple(s for s in SOURCES if s in used)

    def stage_starts(self) -> list[int]:
        starts, step = [], 0
        for stage in self.stages:
            starts.append(step)
            step += stage.steps
        return starts

    def stage_index(self, step: int) -> int:
        """The stage that optimizer step `step` belongs to (the last stage past the end)."""
        return min(bisect.bisect_right(self.stage_starts(), step) - 1, len(self.stages) - 1)

    def describe(self) -> list[dict]:
        return [
            {"stage": s.name, "steps": s.steps, "routes": [r.__dict__ for r in s.routes]} for s in self.stages
        ]


def _max_steps(cfg: DictConfig) -> int:
    steps = cfg.trainer.get("max_steps", -1)
    if steps is None or steps < 1:
        raise ConfigError("trainer.max_steps", f"a training strategy needs trainer.max_steps >= 1, got {steps}")
    return int(steps)


def _mixture(cfg: DictConfig, default: float) -> float:
    return default if cfg.data.mixture is None else float(cfg.data.mixture)


def _require_dirs(cfg: DictConfig, sources) -> None:
    for source in sources:
        if not cfg.data.get(f"{source}_dir"):
            raise ConfigError(f"data.{source}_dir", f"strategy {cfg.strategy.name} trains on the {source} set")


class PromptEngineering:
    """No training: the base model, with `strategy.style_prompt` appended to prompts when sampling."""

    trains = False

    @staticmethod
    def check(cfg, T):
        pass

    @staticmethod
    def plan(cfg, T) -> Plan:
        return Plan(stages=())


class Base:
    """Domain alignment: the large weakly labelled set over all timesteps."""

    trains = True

    @staticmethod
    def check(cfg, T):
        _max_steps(cfg)
        _require_dirs(cfg, ["domain"])

    @staticmethod
    def plan(cfg, T) -> Plan:
        return Plan((Stage("domain", _max_steps(cfg), (Route("domain", 0, T, 1.0),)),))


class Sequential:
    """HITL finetune: each source of `strategy.stages` in turn, over all timesteps; weights kept per stage."""

    trains = True

    @staticmethod
    def check(cfg, T):
        stages = list(cfg.strategy.stages)
        if not stages:
            raise ConfigError("strategy.stages", "needs at least one source")
        for name in stages:
            if name not in SOURCES:
                raise ConfigError("strategy.stages", f"unknown source {name!r}; one of {list(SOURCES)}")
        _require_dirs(cfg, stages)
        total = _max_steps(cfg)
        steps = cfg.strategy.stage_steps
        if steps is not None:
            if len(steps) != len(stages) or any(s < 1 for s in steps):
                raise ConfigError("strategy.stage_steps",
                                  f"needs {len(stages)} positive step counts, got {list(steps)}")
            if sum(steps) != total:
                raise ConfigError("strategy.stage_steps", f"sums to {sum(steps)} but trainer.max_steps is {total}")
        elif total < len(stages):
            raise ConfigError("trainer.max_steps", f"{total} steps cannot cover {len(stages)} stages")

    @staticmethod
    def plan(cfg, T) -> Plan:
        names = list(cfg.strategy.stages)
        total = _max_steps(cfg)
        steps = list(cfg.strategy.stage_steps or [])
        if not steps:  # even split, the remainder going to the first stages
            steps = [total // len(names) + (i < total % len(names)) for i in range(len(names))]
        return Plan(tuple(Stage(n, s, (Route(n, 0, T, 1.0),)) for n, s in zip(names, steps)))


class Mixture:
    """Control: alignment and style samples mixed, every sample over all timesteps."""

    trains = True

    @staticmethod
    def check(cfg, T):
        _max_steps(cfg)
        _require_dirs(cfg, ["alignment", "style"])

    @staticmethod
    def plan(cfg, T) -> Plan:
        m = _mixture(cfg, 0.5)
        routes = (Route("alignment", 0, T, 1.0 - m), Route("style", 0, T, m))
        return Plan((Stage("mixture", _max_steps(cfg), tuple(r for r in routes if r.share > 0)),))


class StyleTailoring:
    """Content (alignment) data trains t >= t_split, style data trains t < t_split, in one joint finetune.

    With the default share t_split / T for the style set, the marginal timestep density stays uniform over [0, T),
    so the only change from plain finetuning is which data each timestep sees.
    """

    trains = True
    splits_timesteps = True

    @staticmethod
    def check(cfg, T):
        t_split = cfg.strategy.t_split
        if t_split is None:
            raise ConfigError("strategy.t_split", "Style Tailoring needs a split timestep")
        if not 1 <= t_split <= T - 1:
            raise ConfigError("strategy.t_split", f"must lie in [1, {T - 1}] (T={T}), got {t_split}")
        _max_steps(cfg)
        _require_dirs(cfg, ["alignment", "style"])

    @staticmethod
    def plan(cfg, T) -> Plan:
        t_split = int(cfg.strategy.t_split)
        m = _mixture(cfg, t_split / T)
        routes = (Route("alignment", t_split, T, 1.0 - m), Route("style", 0, t_split, m))
        return Plan((Stage("style_tailoring", _max_steps(cfg), tuple(r for r in routes if r.share > 0)),))


def recorded_t_split(cfg: DictConfig):
    """strategy.t_split if the chosen strategy uses it, else None: a sweep grid such as
    `strategy=mixture,style_tailoring strategy.t_split=250,500` must not label mixture runs with a split they ignore."""
    uses = getattr(STRATEGIES.get(cfg.strategy.name), "splits_timesteps", False)
    return cfg.strategy.t_split if uses else None


STRATEGIES = {
    "prompt_engineering": PromptEngineering,
    "base": Base,
    "alignment_only": Sequential,  # sequential with stages [alignment] (conf/strategy/alignment_only.yaml)
    "sequential": Sequential,
    "mixture": Mixture,
    "style_tailoring": StyleTailoring,
}


def build_plan(cfg: DictConfig, T: int) -> Plan:
    return STRATEGIES[cfg.strategy.name].plan(cfg, T)
