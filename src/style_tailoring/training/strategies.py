"""Strategies as data: each one checks its part of the config and compiles it into a `Plan` (style_tailoring.plan).

Routes name sources of `data.sources` (the `data.<name>_dir` shorthands included), so a strategy is a small class
here and never a fork of the training step. `strategy=custom` takes the stages and routes from the config itself.
"""

from __future__ import annotations

from omegaconf import DictConfig

from style_tailoring.config import SHORTHAND_SOURCES, ConfigError, data_sources
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
        require_sources(cfg, ["domain"])

    @staticmethod
    def plan(cfg, T) -> Plan:
        return Plan((_stage(cfg, "domain", _max_steps(cfg), [Route("domain", 0, T, 1.0)]),))


class Sequential:
    """HITL finetune: each source of `strategy.stages` in turn, over all timesteps; weights kept per stage."""

    trains = True

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
    def plan(cfg, T) -> Plan:
        names = list(cfg.strategy.stages)
        total = _max_steps(cfg)
        steps = list(cfg.strategy.stage_steps or []) or _even_split(total, len(names))
        return Plan(tuple(_stage(cfg, n, s, [Route(n, 0, T, 1.0)]) for n, s in zip(names, steps)))


def _even_split(total: int, parts: int) -> list[int]:
    """`total` steps in `parts` stages, the remainder going to the first stages."""
    return [total // parts + (i < total % parts) for i in range(parts)]


class Mixture:
    """Control: alignment and style samples mixed, every sample over all timesteps."""

    trains = True

    @staticmethod
    def check(cfg, T):
        _max_steps(cfg)
        require_sources(cfg, ["alignment", "style"])

    @staticmethod
    def plan(cfg, T) -> Plan:
        m = _mixture(cfg, 0.5)
        routes = (Route("alignment", 0, T, 1.0 - m), Route("style", 0, T, m))
        return Plan((_stage(cfg, "mixture", _max_steps(cfg), routes),))


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
        require_sources(cfg, ["alignment", "style"])

    @staticmethod
    def plan(cfg, T) -> Plan:
        t_split = int(cfg.strategy.t_split)
        m = _mixture(cfg, t_split / T)
        routes = (Route("alignment", t_split, T, 1.0 - m), Route("style", 0, t_split, m))
        return Plan((_stage(cfg, "style_tailoring", _max_steps(cfg), routes),))


class StyleForge:
    """StyleForge's dual binding (DreamBooth's prior-preservation form): StyleRef images train "[V] style", Aux images
    (what helps the style: people, backgrounds) train "style"; loss(StyleRef) + λ·loss(Aux), λ = strategy.aux_weight,
    every batch holding exactly its share of each (strategy.aux_share of it Aux). λ = 0 is plain DreamBooth on
    StyleRef alone (every sample StyleRef). The captions are the sources' (conf/strategy/styleforge.yaml sets the
    fixed prompts; a template such as '{text}, sks style' keeps the files' own captions)."""

    trains = True
    pairs = (("styleref", "aux", "identifier"),)

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
    def plan(cls, cfg, T) -> Plan:
        share, weight = float(cfg.strategy.aux_share), float(cfg.strategy.aux_weight)
        aux = cls.uses_aux(cfg)
        routes = []
        for styleref, aux_name, _ in cls.pairs:
            routes.append(Route(styleref, 0, T, (1 - share) if aux else 1.0, 1.0))
            if aux:
                routes.append(Route(aux_name, 0, T, share, weight))
        return Plan((Stage(cfg.strategy.name, _max_steps(cfg), tuple(routes), exact=True),))


class MultiStyleForge(StyleForge):
    """Multi-StyleForge: StyleRef split into characters ("[V] style", data.sources.styleref) and backgrounds ("[W]
    style", data.sources.styleref_bg, [W] = strategy.identifier_bg), each with its own Aux set (aux, aux_bg); the
    pairs share every batch equally and their losses add up."""

    pairs = (("styleref", "aux", "identifier"), ("styleref_bg", "aux_bg", "identifier_bg"))


class Custom:
    """`strategy.plan` as written: stages of routes over named sources, with their own timestep windows, shares and
    loss weights (e.g. four sources, two weighted, in one stage with exact per-batch composition)."""

    trains = True

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
            if sum(r.share for r in stage.routes) <= 0:
                raise ConfigError(f"{key}.routes", "the shares of a stage must not all be 0")
        fixed = sum(s.steps for s in stages if s.steps is not None)
        open_stages = sum(s.steps is None for s in stages)
        if (open_stages and total - fixed < open_stages) or (not open_stages and fixed != total):
            raise ConfigError("strategy.plan", f"stage steps ({[s.steps for s in stages]}) do not add up to "
                              f"trainer.max_steps={total}")
        require_sources(cfg, [r.source for s in stages for r in s.routes])

    @staticmethod
    def plan(cfg, T) -> Plan:
        stages = cfg.strategy.plan
        fixed = sum(s.steps for s in stages if s.steps is not None)
        open_steps = iter(_even_split(_max_steps(cfg) - fixed, max(1, sum(s.steps is None for s in stages))))
        return Plan(tuple(
            Stage(stage.name, stage.steps if stage.steps is not None else next(open_steps),
                  tuple(Route(r.source, r.t_min, T if r.t_max is None else r.t_max, float(r.share), float(r.weight))
                        for r in stage.routes if r.share > 0),
                  exact=bool(stage.exact or cfg.strategy.exact_composition))
            for stage in stages))


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
    "custom": Custom,
    "styleforge": StyleForge,
    "multi_styleforge": MultiStyleForge,
}


def build_plan(cfg: DictConfig, T: int) -> Plan:
    return STRATEGIES[cfg.strategy.name].plan(cfg, T)
