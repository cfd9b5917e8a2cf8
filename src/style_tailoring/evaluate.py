"""Evaluate a saved pipeline in a run directory of its own:
`python -m style_tailoring.evaluate pipeline=RUN_DIR/pipeline [unet=...] [eval/sampler=NAME] [eval.* overrides]`
(the run itself: evaluation/standalone.py)."""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from style_tailoring.cli import group_spelling
from style_tailoring.config import EvaluateConfig, merge_into_schema
from style_tailoring.evaluation.standalone import run_standalone


def to_evaluate_config(cfg: DictConfig) -> DictConfig:
    return merge_into_schema(EvaluateConfig, cfg)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig):
    metrics = run_standalone(to_evaluate_config(cfg))
    if metrics:
        print(json.dumps({k: v for k, v in metrics.items() if k.startswith("eval/")}, indent=2, default=str))


if __name__ == "__main__":
    group_spelling()  # eval.sampler=NAME works like eval/sampler=NAME, settings after it included
    main()
