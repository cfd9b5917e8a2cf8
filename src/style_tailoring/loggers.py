"""Experiment trackers: wandb (offline unless WANDB_MODE says otherwise), CSV, or none; chosen by `logger=`."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def build_logger(cfg: DictConfig, run_dir: Path, csv_version: str = "csv"):
    kind = cfg.logger.name
    if kind in (None, "none"):
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="", version=csv_version)
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", "offline")  # online only when the user asks for it
        from style_tailoring.strategies import recorded_t_split

        tags = list(cfg.logger.tags) + [f"strategy:{cfg.strategy.name}"]
        if recorded_t_split(cfg) is not None:
            tags.append(f"t_split:{recorded_t_split(cfg)}")
        return WandbLogger(project=cfg.logger.project, save_dir=str(run_dir), group=cfg.logger.group, tags=tags,
                           name=run_dir.name, config=OmegaConf.to_container(cfg, resolve=True))
    raise ValueError(f"logger.name: unknown logger {kind!r} (csv, wandb or none)")


def finish_logger(cfg) -> None:
    if cfg.logger.name == "wandb":  # a multirun must not reuse the previous job's wandb run
        import wandb

        wandb.finish()
