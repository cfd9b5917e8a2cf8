"""One training run, from a resolved config (what `python -m style_tailoring.train` calls).

config → validate (before any work) → data prepared (`data.prepare`) and eval files checked → sources scanned →
model built/loaded (`model.init_unet` chains a previous run) → Trainer.fit → on rank 0: `pipeline/` (stock
diffusers) and `metrics.json` in the run directory, then evaluation (all ranks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from style_tailoring.alpha.decoder import attach_alpha_decoder
from style_tailoring.config import ConfigError, data_sources, encodes_text_live
from style_tailoring.data.datamodule import RoutedDataModule
from style_tailoring.data.images import parse_background
from style_tailoring.data.prepare import prepare_data
from style_tailoring.evaluation.evaluator import evaluate_pipeline, fid_cache_root, log_eval
from style_tailoring.io import atomic_dir, update_json
from style_tailoring.models.components import build_components, export_pipeline, make_pipeline
from style_tailoring.plan import Plan
from style_tailoring.provenance import digest, digests, portable, process_cpu_seconds, repository_state
from style_tailoring.runtime import launch
from style_tailoring.runtime.fsdp import fsdp_strategy
from style_tailoring.runtime.jobs import RUN_COMPLETED, RUN_EVALUATING, RUN_EVALUATION_FAILED
from style_tailoring.runtime.loggers import build_logger, finish_logger
from style_tailoring.training.callbacks import Heartbeat, PeakMemory, PeriodicEval, StageExport, StepProgressBar
from style_tailoring.training.card import write_model_card
from style_tailoring.training.checkpoints import SafeCheckpointIO, resume_checkpoint
from style_tailoring.training.module import DiffusionFinetune
from style_tailoring.training.strategies import build_plan, recorded_t_split, strategy_class
from style_tailoring.training.validate import check_files, validate

log = logging.getLogger("style_tailoring.train")


class EvaluationFailed(RuntimeError):
    """Training finished and its outputs are written; the evaluation after it failed (metrics.json says so)."""


def run_tags(cfg) -> list[str]:
    tags = [f"strategy:{cfg.strategy.name}"]
    if recorded_t_split(cfg) is not None:
        tags.append(f"t_split:{recorded_t_split(cfg)}")
    return tags


def build_trainer(cfg: DictConfig, run_dir: Path, plan: Plan, extra_callbacks=()) -> L.Trainer:
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="step-{step:06d}", auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint.every_n_steps, save_last=True,
        save_top_k=cfg.checkpoint.keep, monitor="step", mode="max",  # Lightning's "step" = global_step
    )
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if launch.is_fsdp(cfg.trainer):  # FSDP2 through Lightning (runtime/fsdp.py), with the collective timeout
        kwargs["strategy"] = fsdp_strategy(launch.world_size(cfg.trainer), cfg.launch.timeout_s)
    elif "strategy" in kwargs:  # DDP with the collective timeout of launch.timeout_s
        kwargs["strategy"] = launch.ddp_strategy(cfg.trainer, cfg.launch.timeout_s)
    # PeakMemory first: its reading at a step's end comes before that step's stage export and checkpoint
    callbacks = [PeakMemory(), checkpoints, StageExport(plan, run_dir), *extra_callbacks]
    if launch.is_ddp(cfg.trainer):
        callbacks.append(Heartbeat(run_dir))
    if kwargs.get("enable_progress_bar", True):
        callbacks.append(StepProgressBar(plan))
    return L.Trainer(**kwargs, default_root_dir=str(run_dir), logger=build_logger(cfg, run_dir, tags=run_tags(cfg)),
                     callbacks=callbacks, plugins=[SafeCheckpointIO()])


def run(cfg: DictConfig) -> dict:
    """One training run from a resolved config; returns the metrics written to metrics.json (rank 0)."""
    T = validate(cfg)
    strategy = strategy_class(cfg)
    plan = build_plan(cfg, T)
    run_dir = Path(cfg.run_dir).resolve()
    resume = resume_checkpoint(cfg.ckpt_path, run_dir) if strategy.trains else None
    prepare_data(cfg.data)
    check_files(cfg)
    workers = []
    if strategy.trains and launch.needs_self_launch(cfg.trainer):
        launch.clear_progress(run_dir)
        workers = launch.start_workers(cfg, run_dir, target="style_tailoring.training.run:run")
    try:
        with launch.Watchdog(workers, run_dir, grace=min(cfg.launch.timeout_s, 60.0)):
            metrics = _run(cfg, strategy, plan, run_dir, resume)
            launch.wait_for(workers)
    except Exception as err:
        timed_out = launch.timed_out(err)
        dead = launch.failed_ranks(workers, grace=2.0 if timed_out else 10.0)
        if dead:  # the peer's end is the news, not the collective that noticed it
            raise launch.RankDied(f"{'; '.join(dead)}, so rank 0 stopped too ({type(err).__name__}); resume the "
                                  f"run with ckpt_path=last") from err
        if timed_out and launch.is_ddp(cfg.trainer):  # a peer alive but silent: say which (it is killed below)
            rank = launch.rank()
            stalled = launch.stalled_ranks(run_dir, launch.world_size(cfg.trainer), rank)
            raise launch.RankHung(f"{'; '.join(stalled)}, so rank {rank}'s collective timed out after "
                                  f"launch.timeout_s={cfg.launch.timeout_s:g} s and it stopped the run; resume the "
                                  "run with ckpt_path=last") from err
        raise
    finally:
        launch.cleanup(workers)
    return metrics


def _run(cfg, strategy, plan: Plan, run_dir: Path, resume: Optional[str]) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    datamodule, motion = None, cfg.model.motion
    if strategy.trains:
        cache_root = cfg.data.cache.dir or Path(cfg.paths.get("cache_dir", ".cache")) / "latents"
        datamodule = RoutedDataModule(cfg.data, plan, cfg.model.resolution, cfg.seed, cache_root,
                                      frames=motion.frames if motion.enabled else 0)
        datamodule.load_sources()  # bad data fails here, before the model is built
    comps = build_components(cfg.model, cfg.seed)
    if cfg.model.alpha_decoder:
        comps.alpha_vae = attach_alpha_decoder(comps.vae, cfg.model.alpha_decoder,
                                               background=parse_background(cfg.data.background))
    metrics = {
        "status": RUN_EVALUATING if cfg.eval.enabled else RUN_COMPLETED,
        "kind": "training",
        "strategy": cfg.strategy.name,
        "t_split": recorded_t_split(cfg),
        "mixture": _style_share(plan),
        "steps": plan.total_steps,
        "seed": cfg.seed,
        "model": cfg.model.name,
        "init_unet": portable(cfg.model.init_unet),
        "plan": plan.describe(),
    }
    trainer, sources = None, {}
    if strategy.trains:
        sources = describe_sources(cfg, datamodule)
        metrics.update({f"data/{name}/captions_truncated": count
                        for name, count in datamodule.truncated_captions(comps.tokenizer).items()})
        ico = cfg.strategy.get("ico")
        ico_sizes = {name: len(datamodule.sources[name]) for name in ico.sources} if ico and ico.enabled else None
        for name in ico_sizes or ():
            if getattr(datamodule.sources[name], "streaming", False):
                raise ConfigError("strategy.ico.sources", f"{name} is a streaming shard source; per-image "
                                  "contexts need a folder source (its items are numbered)")
        module = DiffusionFinetune(comps, plan, cfg, cached_latents=cfg.data.cache.enabled,
                                   cached_text=cfg.data.cache.enabled and cfg.data.cache.text
                                   and not encodes_text_live(cfg), ico_sizes=ico_sizes)
        periodic = []
        if cfg.eval.enabled and cfg.eval.every_n_steps:
            def evaluate_now(trainer, step):
                scores = run_eval(cfg, comps, run_dir, trainer, step=step)
                if trainer.is_global_zero:
                    log_eval(trainer.logger, scores, step, run_dir / f"step-{step:06d}_grid.png",
                             samples_dir=run_dir / "samples" / f"step-{step:06d}")

            periodic = [PeriodicEval(cfg.eval.every_n_steps, evaluate_now)]
        trainer = build_trainer(cfg, run_dir, plan, periodic)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        metrics["steps"] = trainer.global_step
        metrics.update(module.restored_train_metrics)  # overwritten by any step run here
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
        # this process's peaks (a resumed run's: its last process's), not training numbers
        memory = next(c for c in trainer.callbacks if isinstance(c, PeakMemory))
        metrics.update({f"memory/{kind}_mb/rank{rank}": mb for kind, peaks in memory.per_rank.items()
                        for rank, mb in enumerate(peaks)})
        if module.is_lora and trainer.is_global_zero:
            with atomic_dir(run_dir / "lora") as tmp:
                module.save_trained_weights(tmp)
        if module.contexts is not None and trainer.is_global_zero:  # inspectable; not part of the pipeline
            module.contexts.save(run_dir / "ico", {name: datamodule.file_names(name) for name in ico_sizes})
        module.finalize_weights(everywhere=cfg.eval.enabled)  # FSDP: whole on every rank only if all sample
    rank_zero = trainer is None or trainer.is_global_zero
    if rank_zero:
        export_pipeline(comps, run_dir / "pipeline",
                        metadata={"strategy": cfg.strategy.name, "style_prompt": cfg.strategy.style_prompt,
                                  "init_unet": cfg.model.init_unet, "alpha_decoder": cfg.model.alpha_decoder,
                                  **({"motion": dict(motion)} if motion.enabled else {})})
        if motion.enabled and motion.train == "motion":  # the image model + this adapter = the trained model
            from style_tailoring.models.motion import save_motion_adapter

            with atomic_dir(run_dir / "motion_adapter") as tmp:
                save_motion_adapter(comps.unet, tmp, heads=motion.heads, conditioning=motion.conditioning,
                                    frames=motion.frames)
        # The budget: CPU seconds of this process and the children it reaped (on rank 0; a resumed run counts its
        # last process only, so the sum over its processes is the run's cost).
        metrics["cpu_seconds"] = round(process_cpu_seconds(), 1)
        metrics["provenance"] = {**repository_state(), "weights": digests({"pipeline": run_dir / "pipeline"}),
                                 "init_unet": digest(cfg.model.init_unet)}
        metrics = update_json(run_dir / "metrics.json", metrics)
        write_model_card(cfg, run_dir, plan, metrics, sources)
    if cfg.eval.enabled:
        try:
            scores = run_eval(cfg, comps, run_dir, trainer)
        except Exception as err:
            if rank_zero:  # the model is trained and exported: say so, and say the evaluation failed
                failed = update_json(run_dir / "metrics.json", {"status": RUN_EVALUATION_FAILED,
                                                                "error": f"{type(err).__name__}: {err}"})
                write_model_card(cfg, run_dir, plan, failed, sources)
            raise EvaluationFailed(f"training finished ({run_dir / 'pipeline'}), evaluation failed: "
                                   f"{type(err).__name__}: {err}") from err
        if rank_zero:
            metrics = update_json(run_dir / "metrics.json", {
                **scores, "cpu_seconds_eval": round(process_cpu_seconds() - metrics.get("cpu_seconds", 0.0), 1),
                "status": RUN_COMPLETED})
            write_model_card(cfg, run_dir, plan, metrics, sources)  # now with the numbers
            log_eval(trainer.logger if trainer else None, scores, metrics["steps"], run_dir / "final_grid.png",
                     samples_dir=run_dir / "samples" / "final")
    if rank_zero:
        log.info("wrote %s and %s", run_dir / "pipeline", run_dir / "metrics.json")
    finish_logger(cfg)
    return metrics


def run_eval(cfg, comps, run_dir: Path, trainer=None, step=None) -> Optional[dict]:
    """Evaluate the in-memory model on every rank (each samples its shard); rank 0 gets the numbers."""
    if trainer is None:  # nothing trained (prompt engineering): sample where the config says, not on the CPU
        device, rank, world, barrier = launch.sampling_device(cfg.trainer), 0, 1, (lambda: None)
    else:
        device, rank, world = trainer.strategy.root_device, trainer.global_rank, trainer.world_size
        barrier = trainer.strategy.barrier
    pipe = make_pipeline(comps).to(device)
    style = data_sources(cfg.data).get("style") or {}
    weights = {"pipeline": run_dir / "pipeline"} if step is None else None  # the final model is the exported one
    return evaluate_pipeline(pipe, cfg.eval, run_dir, resolution=cfg.model.resolution, rank=rank, world=world,
                             barrier=barrier, step=step, default_reference=style.get("dir"),
                             cache_root=fid_cache_root(cfg.paths), background=parse_background(cfg.data.background),
                             weights=weights)


def describe_sources(cfg, datamodule) -> dict[str, dict]:
    """What each source of the plan is, for the model card: its directory, kind and number of samples."""
    configured = data_sources(cfg.data)
    out = {}
    for name, source in datamodule.sources.items():
        folder = getattr(source, "source", source)  # a cached source wraps its folder
        samples = getattr(folder, "samples", None)
        out[name] = {"dir": configured[name]["dir"], "kind": getattr(folder, "kind", type(folder).__name__),
                     "samples": len(samples) if samples is not None else len(folder)}
    return out


def _style_share(plan: Plan):
    shares = [r.share for s in plan.stages for r in s.routes if r.source == "style"]
    return shares[0] if len(plan.stages) == 1 and shares else None
