"""`python -m style_tailoring.world [only=[STEP,...]] [force=true] [seed=0] [dry_run=true]`: build the Sticker
World's artifacts (settings: conf/world.yaml, `--help` lists them; the steps: world/build.py)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from style_tailoring.config import ConfigError, WorldConfig, merge_into_schema
from style_tailoring.world.build import build


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="world")
def main(cfg: DictConfig) -> None:
    if isinstance(cfg.get("only"), str):  # only=judges: one step
        cfg.only = [cfg.only]
    try:
        cfg = merge_into_schema(WorldConfig, cfg)
        build(cfg.data_dir, cfg.assets_dir, only=None if cfg.only is None else list(cfg.only), force=cfg.force,
              seed=cfg.seed, dry_run=cfg.dry_run)
    except ConfigError as err:  # a wrong setting: one line naming it, no traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
