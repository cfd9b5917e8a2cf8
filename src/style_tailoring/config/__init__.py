"""Structured configs: one schema per command, the schema every Hydra config of that command is merged into.

The YAML files under conf/ give values; these dataclasses give types and names. Merging a composed config into its
schema makes a typo or a wrong type fail with the key's name. Range and consistency checks that types cannot
express live beside what they check (`training/validate.py`, `evaluation/validate.py`, `hitl/validate.py`) and all
run before any work. The lowest room of the package: it imports nothing else from it.

  core.py       REPO_ROOT, ConfigError, merge_into_schema, build_target (what every schema shares)
  train.py      train: RunConfig and its parts (model, data, strategy, optim, eval, ...), reused by the others
  evaluate.py   evaluate      hitl.py  hitl      recipe.py  recipe
  animation.py  animate, animation.evaluate, hitl.teachers
  commands.py   bench, collect, data.shards, hitl.serve, world, alpha
Every name is importable from `style_tailoring.config` itself.
"""

from style_tailoring.config.animation import (
    AnimateConfig,
    AnimationEvalConfig,
    AnimationSettings,
    TeachersConfig,
)
from style_tailoring.config.commands import (
    AlphaConfig,
    BenchConfig,
    CollectConfig,
    ServeConfig,
    ShardsConfig,
    WorldConfig,
)
from style_tailoring.config.core import (
    CONF_DIR,
    PLAIN_SAMPLER,
    REPO_ROOT,
    ConfigError,
    build_target,
    compose,
    config_path,
    merge_into_schema,
    target_object,
    target_settings,
)
from style_tailoring.config.evaluate import EvaluateConfig, EvaluateModelConfig
from style_tailoring.config.hitl import (
    HitlConfig,
    HitlCurationConfig,
    HitlGenerateConfig,
    HitlRunConfig,
    StudentConfig,
    TeacherConfig,
)
from style_tailoring.config.recipe import RecipeConfig, RecipeRunConfig
from style_tailoring.config.train import (
    DEFAULT_STRATEGY,
    SHORTHAND_SOURCES,
    CacheConfig,
    CheckpointConfig,
    ClipConfig,
    DataConfig,
    EmaConfig,
    EvalConfig,
    FidConfig,
    IcoConfig,
    LaunchConfig,
    LoggerConfig,
    LoraConfig,
    LossConfig,
    ModelConfig,
    MotionConfig,
    OptimConfig,
    RouteConfig,
    RunConfig,
    SampleConfig,
    SourceConfig,
    StageConfig,
    StrategyConfig,
    TinyModelConfig,
    data_sources,
    encodes_text_live,
    to_run_config,
)

__all__ = [
    "CONF_DIR", "DEFAULT_STRATEGY", "PLAIN_SAMPLER", "REPO_ROOT", "SHORTHAND_SOURCES", "AlphaConfig", "AnimateConfig",
    "AnimationEvalConfig", "AnimationSettings", "BenchConfig", "CacheConfig", "CheckpointConfig", "ClipConfig",
    "CollectConfig", "ConfigError", "DataConfig", "EmaConfig", "EvalConfig", "EvaluateConfig", "EvaluateModelConfig",
    "FidConfig", "HitlConfig", "HitlCurationConfig", "HitlGenerateConfig", "HitlRunConfig",
    "IcoConfig", "LaunchConfig", "LoggerConfig", "LoraConfig", "LossConfig", "ModelConfig", "MotionConfig",
    "OptimConfig", "RecipeConfig", "RecipeRunConfig", "RouteConfig", "RunConfig", "SampleConfig", "ServeConfig",
    "ShardsConfig", "SourceConfig", "StageConfig", "StrategyConfig", "StudentConfig", "TeacherConfig", "TeachersConfig",
    "TinyModelConfig", "WorldConfig", "build_target", "compose", "config_path", "data_sources", "encodes_text_live",
    "merge_into_schema", "target_object", "target_settings", "to_run_config",
]
