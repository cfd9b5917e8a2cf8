"""Experiment trackers: wandb (offline unless WANDB_MODE says otherwise), CSV, or none; chosen by `logger=`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def build_logger(cfg: DictConfig, run_dir: Path, csv_version: str = "csv", tags=()):
    """The run's logger; `tags` are added to `logger.tags` (wandb), e.g. strategy:style_tailoring."""
    kind = cfg.logger.name
    if kind in (None, "none"):
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="", version=csv_version)
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", "offline")  # online only when the user asks for it
        _stage_media_in(run_dir)
        return WandbLogger(project=cfg.logger.project, save_dir=str(run_dir), group=cfg.logger.group,
                           tags=[*cfg.logger.tags, *tags],
                           name=run_dir.name, config=OmegaConf.to_container(cfg, resolve=True),
                           **_wandb_resume(cfg, run_dir))
    raise ValueError(f"logger.name: unknown logger {kind!r} (csv, wandb or none)")


# Set when this library chose WANDB_DATA_DIR (a child process inherits both: it chooses again for its own run).
_OURS = "STYLE_TAILORING_WANDB_DATA_DIR"


def _stage_media_in(run_dir: Path) -> None:
    """wandb stages a table's images (and other artifact files) under WANDB_DATA_DIR, by default the user's
    ~/.local/share/wandb, outside the run: an offline run copied elsewhere to be synced would lose them. Unless
    the user set it, they are staged in RUN_DIR/wandb, beside the offline run that names them."""
    if "WANDB_DATA_DIR" in os.environ and os.environ.get(_OURS) != os.environ["WANDB_DATA_DIR"]:
        return  # the user's own choice
    staging = str(Path(run_dir).resolve() / "wandb")
    os.environ["WANDB_DATA_DIR"] = os.environ[_OURS] = staging


def _wandb_resume(cfg, run_dir: Path) -> dict:
    """A resumed run (ckpt_path, or a SLURM requeue that left hpc_ckpt_*.ckpt) continues its wandb run rather than
    starting a second one: the run's id is kept in RUN_DIR/wandb_run_id. Only rank 0 owns a wandb run."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return {}
    from style_tailoring.io import atomic_write_text

    id_file = run_dir / "wandb_run_id"
    resuming = cfg.get("ckpt_path") or any(run_dir.glob("hpc_ckpt_*.ckpt"))
    if resuming and id_file.is_file():
        return {"id": id_file.read_text().strip(), "resume": "allow"}
    run_id = secrets.token_hex(8)  # wandb's id alphabet is [a-z0-9]
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(id_file, run_id + "\n")
    return {"id": run_id}


def finish_logger(cfg) -> None:
    if cfg.logger.name == "wandb":  # a multirun must not reuse the previous job's wandb run
        import wandb

        wandb.finish()
