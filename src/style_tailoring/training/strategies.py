"""Strategies as data: each one is a class here and a yaml in conf/strategy/ that names it as `_target_`.

The class is both the strategy's settings (a dataclass extending StrategyConfig: to_run_config merges the yaml's
node into it, so a setting of another strategy is refused by name) and its behaviour: `check(cfg, T)` checks its
part of the config before any work, `plan(cfg, T)` compiles it into a `Plan` (style_tailoring.plan), whose routes
name sources of `data.sources` (the `data.<name>_dir` shorthands included). A strategy is never a fork of the
training step. `strategy=custom` takes the stages and routes from the config itself. Adding one: a class here and
conf/strategy/NAME.yaml with `_target_`, `name` and its settings (and the sources it reads, so
`data.sources.<name>.dir=...` needs no `+`); the yaml files are the names the commands accept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from omegaconf import DictConfig

from style_tailoring.config import CONF_DIR, SHORTHAND_SOURCES, ConfigError, StageConfig, StrategyConfig, data_sources
from style_tailoring.data.densities import MIN_WIDTH, SIDES, density_from_config, soft_split, soft_split_mass
from style_tailoring.plan import Plan, Route, Stage


def _max_steps(cfg: DictConfig) -> int:
    steps = cfg.trainer.get("max_steps", -1)
    if steps is None or steps < 1:
        raise ConfigError("trainer.max_steps", f"a training strategy needs trainer.max_steps >= 1, got {steps}")
    return int(steps)


def _mixture(cfg: DictConfig, default: float) -> float:
    return default if cfg.data.mixture is None else float(cfg.data.mixture)


def require_sources(cfg: DictConfig, names) -> None:
    """Every source a route reads must have a directory; the error names the key that gives it one."""
    sources = data_sources(cfg.data)
    for name in names:
        if not (sources.get(name) or {}).get("dir"):
            shorthand = f" (or data.{name}_dir)" if name in SHORTHAND_SOURCES else ""
            raise ConfigError(f"data.sources.{name}.dir", f"strategy {cfg.strategy.name} reads the source {name!r}, "
                              f"which has no directory; set data.sources.{name}.dir{shorthand}")


def _stage(cfg, name: str, steps: int, routes) -> Stage:
    """A built-in strategy's stage: routes with no samples dropped, exact composition as configured."""
    return Stage(name, steps, tuple(r for r in routes if r.share > 0), exact=bool(cfg.strategy.exact_composition))


@dataclass
class PromptEngineering(StrategyConfig):
    """No training: the base model, with `strategy.style_prompt` appended to prompts when sampling."""

    trains: ClassVar[bool] = False
    splits_timesteps: ClassVar[bool] = False

    @staticmethod
    def check(cfg, T):
        pass

    @staticmethod
    def to_plan(cfg, T) -> Plan:
        return Plan(stages=())


@dataclass
class Trained(StrategyConfig):
    """A strategy that trains (every one but prompt engineering)."""

    trains: ClassVar[bool] = True
    splits_timesteps: ClassVar[bool] = False


@dataclass
class Base(Trained):
    """Domain alignment: the large weakly labelled set over all timesteps."""

    @staticmethod
    def check(cfg, T):
        _max_steps(cfg)
        require_sources(cfg, ["domain"])

    @staticmethod
    def to_plan(cfg, T) -> Plan:
        return Plan((_stage(cfg, "domain", _max_steps(cfg), [Route("domain", 0, T, 1.0)]),))


@dataclass
class Sequential(Trained):
    """HITL finetune: each source of `strategy.stages` in turn, over all timesteps; weights kept per stage."""

    # Sources trained one after another: names of data.sources.
    stages: list[str] = field(default_factory=lambda: ["alignment", "style"])
    # Optimizer steps per stage; null splits trainer.max_steps evenly.
    stage_steps: Optional[list[int]] = None
    # Each stage after the first starts with a fresh optimizer (AdamW moments cleared, warmup restarted), as
    # separate finetunes chained through model.init_unet do; false carries the moments across stages.
    fresh_optimizer: bool = False

    @staticmethod
    def check(cfg, T):
        stages = list(cfg.strategy.stages)
        if not stages:
            raise ConfigError("strategy.stages", "needs at least one source")
        require_sources(cfg, stages)
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
    def to_plan(cfg, T) -> Plan:
        names = list(cfg.strategy.stages)
        total = _max_steps(cfg)
        steps = list(cfg.strategy.stage_steps or []) or _even_split(total, len(names))
        return Plan(tuple(_stage(cfg, n, s, [Route(n, 0, T, 1.0)]) for n, s in zip(names, steps)))


def _even_split(total: int, parts: int) -> list[int]:
    """`total` steps in `parts` stages, the remainder going to the first stages."""
    return [total // parts + (i < total % parts) for i in range(parts)]


@dataclass
class Mixture(Trained):
    """Control: alignment and style samples mixed, every sample over all timesteps."""

    @staticmethod
    def check(cfg, T):
        _max_steps(cfg)
        require_sources(cfg, ["alignment", "style"])

    @staticmethod
    def to_plan(cfg, T) -> Plan:
        m = _mixture(cfg, 0.5)
        routes = (Route("alignment", 0, T, 1.0 - m), Route("style", 0, T, m))
        return Plan((_stage(cfg, "mixture", _max_steps(cfg), routes),))


@dataclass
class StyleTailoring(Trained):
    """Content (alignment) data trains t >= t_split, style data trains t < t_split, in one joint finetune.

    With the default share t_split / T for the style set, the marginal timestep density stays uniform over [0, T),
    so the only change from plain finetuning is which data each timestep sees.

    `split_width` > 0 softens the cut into a logistic ramp: both routes span [0, T), and a sample at timestep t is a
    style sample with probability σ((t_split - ½ - t) / split_width), an alignment sample otherwise (each route's
    `soft_split` density, data/densities.py). The default style share is then the ramp's mass over T (t_split / T
    while the ramp lies inside [0, T)), which again keeps the marginal density uniform.
    """

    splits_timesteps: ClassVar[bool] = True
    # First timestep of the content (alignment) range; style samples get [0, t_split).
    t_split: Optional[int] = 500
    # 0: the hard split. > 0: the soft split's logistic scale, in timesteps (the two routes overlap around t_split:
    # at t_split ± split_width a sample is a style sample with probability 73% / 27%, at ± 3 split_width 95% / 5%).
    split_width: float = 0.0

    @staticmethod
    def check(cfg, T):
        t_split = cfg.strategy.t_split
        if t_split is None:
            raise ConfigError("strategy.t_split", "Style Tailoring needs a split timestep")
        if not 1 <= t_split <= T - 1:
            raise ConfigError("strategy.t_split", f"must lie in [1, {T - 1}] (T={T}), got {t_split}")
        width = cfg.strategy.split_width
        if not (math.isfinite(width) and (width == 0 or width >= MIN_WIDTH)):
            raise ConfigError("strategy.split_width", f"must be 0 (the hard split) or a finite number of timesteps "
                              f">= {MIN_WIDTH:g} (the soft split's ramp), got {width}")
        _max_steps(cfg)
        require_sources(cfg, ["alignment", "style"])

    @staticmethod
    def to_plan(cfg, T) -> Plan:
        t_split, width = int(cfg.strategy.t_split), float(cfg.strategy.split_width)
        if width == 0:
            m = _mixture(cfg, t_split / T)
            routes = (Route("alignment", t_split, T, 1.0 - m), Route("style", 0, t_split, m))
        else:
            m = _mixture(cfg, soft_split_mass(t_split, width, T) / T)
            densities = {side: soft_split("strategy.split_width", t_split, width, side) for side in SIDES}
            routes = (Route("alignment", 0, T, 1.0 - m, density=densities["above"]),
                      Route("style", 0, T, m, density=densities["below"]))
        return Plan((_stage(cfg, "style_tailoring", _max_steps(cfg), routes),))


@dataclass
class StyleForge(Trained):
    """StyleForge's dual binding (DreamBooth's prior-preservation form): StyleRef images train "[V] style", Aux images
    (what helps the style: people, backgrounds) train "style"; loss(StyleRef) + λ·loss(Aux), λ = strategy.aux_weight,
    every batch holding exactly its share of each (strategy.aux_share of it Aux). λ = 0 is plain DreamBooth on
    StyleRef alone (every sample StyleRef). The captions are the sources' (conf/strategy/styleforge.yaml sets the
    fixed prompts; a template such as '{text}, sks style' keeps the files' own captions)."""

    pairs: ClassVar[tuple] = (("styleref", "aux", "identifier"),)
    # The rare token bound to the style ("[V]"), the Aux loss weight λ (0: plain DreamBooth on StyleRef alone) and
    # each Aux source's share of its StyleRef/Aux pair in every batch.
    identifier: str = "sks"
    aux_weight: float = 1.0
    aux_share: float = 0.5

    @classmethod
    def check(cls, cfg, T):
        _max_steps(cfg)
        strategy = cfg.strategy
        if strategy.aux_weight < 0:
            raise ConfigError("strategy.aux_weight", f"must be >= 0, got {strategy.aux_weight}")
        if not 0 <= strategy.aux_share < 1:
            raise ConfigError("strategy.aux_share", f"must lie in [0, 1), got {strategy.aux_share}")
        sources = data_sources(cfg.data)
        for styleref, aux, identifier_key in cls.pairs:
            identifier = str(strategy[identifier_key]).strip()
            if not identifier or len(identifier.split()) != 1:
                raise ConfigError(f"strategy.{identifier_key}", f"must be one word, got {identifier!r}")
            caption = (sources.get(styleref) or {}).get("caption") or ""
            if identifier not in caption.split() and f"{identifier}," not in caption:
                raise ConfigError(f"data.sources.{styleref}.caption", f"must contain the identifier "
                                  f"strategy.{identifier_key}={identifier!r} (the word the style is bound to), "
                                  f"got {caption!r}")
        require_sources(cfg, cls.read_sources(cfg))

    @staticmethod
    def uses_aux(cfg) -> bool:
        return cfg.strategy.aux_weight > 0 and cfg.strategy.aux_share > 0

    @classmethod
    def read_sources(cls, cfg) -> list[str]:
        aux = cls.uses_aux(cfg)
        return [name for styleref, aux_name, _ in cls.pairs for name in ((styleref, aux_name) if aux else (styleref,))]

    @classmethod
    def to_plan(cls, cfg, T) -> Plan:
        share, weight = float(cfg.strategy.aux_share), float(cfg.strategy.aux_weight)
        aux = cls.uses_aux(cfg)
        routes = []
        for styleref, aux_name, _ in cls.pairs:
            routes.append(Route(styleref, 0, T, (1 - share) if aux else 1.0, 1.0))
            if aux:
                routes.append(Route(aux_name, 0, T, share, weight))
        return Plan((Stage(cfg.strategy.name, _max_steps(cfg), tuple(routes), exact=True),))


@dataclass
class MultiStyleForge(StyleForge):
    """Multi-StyleForge: StyleRef split into characters ("[V] style", data.sources.styleref) and backgrounds ("[W]
    style", data.sources.styleref_bg, [W] = strategy.identifier_bg), each with its own Aux set (aux, aux_bg); the
    pairs share every batch equally and their losses add up."""

    pairs: ClassVar[tuple] = (("styleref", "aux", "identifier"), ("styleref_bg", "aux_bg", "identifier_bg"))
    identifier_bg: str = "pxq"


@dataclass
class Custom(Trained):
    """`strategy.plan` as written: stages of routes over named sources, with their own timestep windows and
    densities, shares and loss weights (e.g. four sources, two weighted, in one stage with exact per-batch
    composition)."""

    plan: list[StageConfig] = field(default_factory=list)
    fresh_optimizer: bool = False

    @staticmethod
    def check(cfg, T):
        stages = cfg.strategy.plan
        total = _max_steps(cfg)
        if not stages:
            raise ConfigError("strategy.plan", "strategy=custom needs at least one stage with routes")
        for i, stage in enumerate(stages):
            key = f"strategy.plan.{i}"
            if not stage.routes:
                raise ConfigError(f"{key}.routes", "a stage needs at least one route")
            if stage.steps is not None and stage.steps < 1:
                raise ConfigError(f"{key}.steps", f"must be >= 1 (or null), got {stage.steps}")
            for j, route in enumerate(stage.routes):
                rkey = f"{key}.routes.{j}"
                t_max = T if route.t_max is None else route.t_max
                if not 0 <= route.t_min < t_max <= T:
                    raise ConfigError(f"{rkey}.t_min", f"the window [t_min, t_max) must satisfy 0 <= t_min < t_max "
                                      f"<= {T} (T), got [{route.t_min}, {t_max})")
                if route.share < 0:
                    raise ConfigError(f"{rkey}.share", f"must be >= 0, got {route.share}")
                if route.weight < 0:
                    raise ConfigError(f"{rkey}.weight", f"must be >= 0, got {route.weight}")
                density_from_config(f"{rkey}.density", route.density, T)
            if sum(r.share for r in stage.routes) <= 0:
                raise ConfigError(f"{key}.routes", "the shares of a stage must not all be 0")
        fixed = sum(s.steps for s in stages if s.steps is not None)
        open_stages = sum(s.steps is None for s in stages)
        if (open_stages and total - fixed < open_stages) or (not open_stages and fixed != total):
            raise ConfigError("strategy.plan", f"stage steps ({[s.steps for s in stages]}) do not add up to "
                              f"trainer.max_steps={total}")
        require_sources(cfg, [r.source for s in stages for r in s.routes])

    @staticmethod
    def to_plan(cfg, T) -> Plan:
        stages = cfg.strategy.plan
        fixed = sum(s.steps for s in stages if s.steps is not None)
        open_steps = iter(_even_split(_max_steps(cfg) - fixed, max(1, sum(s.steps is None for s in stages))))
        return Plan(tuple(
            Stage(stage.name, stage.steps if stage.steps is not None else next(open_steps),
                  tuple(Route(r.source, r.t_min, T if r.t_max is None else r.t_max, float(r.share), float(r.weight),
                              density_from_config(f"strategy.plan.{i}.routes.{j}.density", r.density, T))
                        for j, r in enumerate(stage.routes) if r.share > 0),
                  exact=bool(stage.exact or cfg.strategy.exact_composition))
            for i, stage in enumerate(stages)))


def strategy_class(cfg: DictConfig) -> type:
    """The class a run's strategy node names (`strategy._target_`, checked by to_run_config)."""
    from hydra.utils import get_object

    return get_object(cfg.strategy._target_)


def recorded_t_split(cfg: DictConfig):
    """strategy.t_split if the chosen strategy splits timesteps, else None."""
    return cfg.strategy.t_split if strategy_class(cfg).splits_timesteps else None


def strategy_names() -> list[str]:
    """The strategies the commands accept: the yaml files of conf/strategy/ (each names its class)."""
    return sorted(p.stem for p in (CONF_DIR / "strategy").glob("*.yaml"))


def check_strategy_names(key: str, names) -> None:
    """Every name is a strategy (conf/strategy/NAME.yaml), so a typo fails before any run starts."""
    known = strategy_names()
    for name in names:
        if name not in known:
            raise ConfigError(key, f"unknown strategy {name!r}; one of {known}")


def strategy_node(name: str, **settings) -> DictConfig:
    """Strategy NAME's node as conf/strategy/NAME.yaml gives it, `settings` on top, merged into its class (for code
    that builds a run config without composing one, such as the benchmarks)."""
    from omegaconf import OmegaConf

    from style_tailoring.config import target_settings

    node = OmegaConf.load(CONF_DIR / "strategy" / f"{name}.yaml")
    node = node.strategy if "strategy" in node else node  # a yaml that also declares its sources (package _global_)
    return target_settings(OmegaConf.merge(node, settings), "strategy")


def build_plan(cfg: DictConfig, T: int) -> Plan:
    return strategy_class(cfg).to_plan(cfg, T)
