"""`python -m style_tailoring.evaluate`: an evaluation run of a saved pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from style_tailoring.config.train import DataConfig, EvalConfig, LoggerConfig


@dataclass
class EvaluateModelConfig:
    # An alpha decoder folder swapped in as the pipeline's VAE: samples are RGBA (see ModelConfig.alpha_decoder).
    alpha_decoder: Optional[str] = None
    # Load a pickled (.bin) pipeline or UNet (see ModelConfig.allow_pickle).
    allow_pickle: bool = False


@dataclass
class EvaluateConfig:
    """`python -m style_tailoring.evaluate`: one evaluation run of a saved pipeline, in a run directory of its own."""

    pipeline: str = "???"
    # Optional UNet directory swapped into the pipeline (e.g. RUN_DIR/stages/1-alignment/unet; an SD3 pipeline's:
    # a transformer directory, RUN_DIR/stages/1-alignment/transformer).
    unet: Optional[str] = None
    model: EvaluateModelConfig = field(default_factory=EvaluateModelConfig)
    run_dir: str = "outputs/eval"
    # Sampling resolution; null: the pipeline's own (UNet sample size x VAE scale factor).
    resolution: Optional[int] = None
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, Any] = field(default_factory=dict)
