"""`python -m style_tailoring.hitl hitl.model=DOMAIN_RUN/pipeline [overrides]`: HITL rounds in one run directory
(the loop itself: hitl/loop.py; the rating app: `python -m style_tailoring.hitl.serve round_dir=ROUND_DIR`)."""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from style_tailoring.cli import group_spelling
from style_tailoring.config import HitlRunConfig, merge_into_schema
from style_tailoring.hitl.loop import run_hitl


def to_hitl_config(cfg: DictConfig) -> DictConfig:
    return merge_into_schema(HitlRunConfig, cfg)


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="hitl")
def main(cfg: DictConfig):
    results = run_hitl(to_hitl_config(cfg))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    group_spelling()  # hitl.rater=people works like hitl/rater=people
    main()
