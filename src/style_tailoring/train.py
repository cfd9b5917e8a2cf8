"""Train one strategy: `python -m style_tailoring.train [hydra overrides]`.

config → validate (before any work) → data sources scanned → model built/loaded → Trainer.fit → on rank 0:
`pipeline/` (stock diffusers) and `metrics.json` in the run directory, then evaluation (all ranks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from style_tailoring import launch
from style_tailoring.config import to_run_config, validate
from style_tailoring.data.datamodule import RoutedDataModule
from style_tailoring.io import atomic_dir, update_json
from style_tailoring.loggers import build_logger, finish_logger
from style_tailoring.evaluate import evaluate_pipeline, fid_cache_root, log_eval
from style_tailoring.models import build_components, export_pipeline, make_pipeline
from style_tailoring.module import DiffusionFinetune
from style_tailoring.strategies import STRATEGIES, Plan, build_plan, recorded_t_split

log = logging.getLogger("style_tailoring.train")


class StageExport(Callback):
    """Keeps each stage's UNet (`stages/<k>-<name>/unet`) when the step counter crosses the stage's end."""

    def __init__(self, plan: Plan, run_dir: Path):
        self.plan, self.run_dir = plan, run_dir
        self.ends = {start + stage.steps: (k, stage.name)
                     for k, (start, stage) in enumerate(zip(plan.stage_starts(), plan.stages))}

    def stage_dir(self, k: int, name: str) -> Path:
        return self.run_dir / "stages" / f"{k + 1}-{name}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        end = self.ends.get(trainer.global_step)
        if end is not None and trainer.is_global_zero and not self.stage_dir(*end).exists():
            with atomic_dir(self.stage_dir(*end) / ("lora" if pl_module.is_lora else "unet")) as tmp:
                pl_module.save_unet_weights(tmp)


def build_trainer(cfg: DictConfig, run_dir: Path, plan: Plan, extra_callbacks=()) -> L.Trainer:
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="step-{step:06d}", auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint.every_n_steps, save_last=True,
        save_top_k=cfg.checkpoint.keep, monitor="step", mode="max",  # Lightning's "step" = global_step
    )
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    return L.Trainer(**kwargs, default_root_dir=str(run_dir), logger=build_logger(cfg, run_dir),
                     callbacks=[checkpoints, StageExport(plan, run_dir), *extra_callbacks])


def run(cfg: DictConfig) -> dict:
    """One training run from a resolved config; returns the metrics written to metrics.json (rank 0)."""
    T = validate(cfg)
    strategy = STRATEGIES[cfg.strategy.name]
    plan = build_plan(cfg, T)
    run_dir = Path(cfg.run_dir).resolve()
    if cfg.data.build_world:
        _build_world_data(cfg)
    workers = launch.start_workers(cfg, run_dir) if strategy.trains and launch.needs_self_launch(cfg.trainer) else []
    try:
        metrics = _run(cfg, strategy, plan, run_dir)
        launch.wait_for(workers)
    finally:
        launch.cleanup(workers)
    return metrics


def _build_world_data(cfg) -> None:
    """data=sticker_world: generate the world's data sets on first use (cached; a no-op when they exist)."""
    from style_tailoring.world.datasets import build_datasets

    roots = {Path(cfg.data[f"{s}_dir"]).parent for s in ("domain", "alignment", "style") if cfg.data[f"{s}_dir"]}
    for root in roots:
        build_datasets(root, seed=0)


def _run(cfg, strategy, plan: Plan, run_dir: Path) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = None
    if strategy.trains:
        cache_root = cfg.data.cache.dir or Path(cfg.paths.get("cache_dir", ".cache")) / "latents"
        datamodule = RoutedDataModule(cfg.data, plan, cfg.model.resolution, cfg.seed, cache_root)
        datamodule.load_sources()  # bad data fails here, before the model is built
    comps = build_components(cfg.model, cfg.seed)
    metrics = {
        "status": "completed",
        "strategy": cfg.strategy.name,
        "t_split": recorded_t_split(cfg),
        "mixture": _style_share(plan),
        "steps": plan.total_steps,
        "seed": cfg.seed,
        "model": cfg.model.name,
        "plan": plan.describe(),
    }
    trainer = None
    if strategy.trains:
        module = DiffusionFinetune(comps, plan, cfg, cached_latents=cfg.data.cache.enabled,
                                   cached_text=cfg.data.cache.enabled and cfg.data.cache.text)
        periodic = [PeriodicEval(cfg, comps, run_dir)] if cfg.eval.enabled and cfg.eval.every_n_steps else []
        trainer = build_trainer(cfg, run_dir, plan, periodic)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        metrics["steps"] = trainer.global_step
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
        if module.is_lora and trainer.is_global_zero:
            with atomic_dir(run_dir / "lora") as tmp:
                module.save_unet_weights(tmp)
        module.finalize_weights()
    rank_zero = trainer is None or trainer.is_global_zero
    if rank_zero:
        export_pipeline(comps, run_dir / "pipeline",
                        metadata={"strategy": cfg.strategy.name, "style_prompt": cfg.strategy.style_prompt})
        metrics = update_json(run_dir / "metrics.json", metrics)
    if cfg.eval.enabled:
        scores = run_eval(cfg, comps, run_dir, trainer)
        if rank_zero:
            metrics = update_json(run_dir / "metrics.json", scores)
            log_eval(trainer.logger if trainer else None, scores, metrics["steps"], run_dir / "final_grid.png")
    if rank_zero:
        log.info("wrote %s and %s", run_dir / "pipeline", run_dir / "metrics.json")
    finish_logger(cfg)
    return metrics


def run_eval(cfg, comps, run_dir: Path, trainer=None, step=None) -> Optional[dict]:
    """Evaluate the in-memory model on every rank (each samples its shard); rank 0 gets the numbers."""
    device = trainer.strategy.root_device if trainer else torch.device("cpu")
    pipe = make_pipeline(comps).to(device)
    if trainer is None:
        rank, world, barrier = 0, 1, (lambda: None)
    else:
        rank, world, barrier = trainer.global_rank, trainer.world_size, trainer.strategy.barrier
    return evaluate_pipeline(pipe, cfg.eval, run_dir, resolution=cfg.model.resolution, rank=rank, world=world,
                             barrier=barrier, step=step, default_reference=cfg.data.style_dir,
                             cache_root=fid_cache_root(cfg))


class PeriodicEval(Callback):
    """`eval.every_n_steps`: the same evaluation during training, every rank sampling its shard."""

    def __init__(self, cfg, comps, run_dir: Path):
        self.cfg, self.comps, self.run_dir, self.every = cfg, comps, run_dir, cfg.eval.every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not self.every or step % self.every or step == trainer.max_steps or step == self._last:
            return
        self._last = step
        pl_module.unet.eval()
        with pl_module.averaged_weights():
            scores = run_eval(self.cfg, self.comps, self.run_dir, trainer, step=step)
        pl_module.unet.train()
        if trainer.is_global_zero:
            log_eval(trainer.logger, scores, step, self.run_dir / f"step-{step:06d}_grid.png")

    _last = -1


def _style_share(plan: Plan):
    shares = [r.share for s in plan.stages for r in s.routes if r.source == "style"]
    return shares[0] if len(plan.stages) == 1 and shares else None


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(to_run_config(cfg))
    except Exception as err:
        # Recorded where the collector looks; in a multirun the other jobs go on (Hydra would stop the sweep).
        update_json(run_dir / "metrics.json", {"status": "failed", "error": f"{type(err).__name__}: {err}"})
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        log.exception("job failed; the sweep continues")
        return None
    return metrics.get("eval/alignment")


if __name__ == "__main__":
    main()
