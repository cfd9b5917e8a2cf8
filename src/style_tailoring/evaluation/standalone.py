"""An evaluation run of a saved pipeline, in its own run directory (what `python -m style_tailoring.evaluate` calls).

It never writes into the training run it evaluates, so one pipeline can be evaluated many ways (samplers,
guidance, steps): each evaluation is a directory with samples, grid and `metrics.json` — the pipeline path, the
sampler and settings, and the training run's strategy, split and steps copied from its `metrics.json` — which
`collect` puts in the same table as the training runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from style_tailoring.alpha.decoder import check_alpha_decoder
from style_tailoring.config import ConfigError, data_sources
from style_tailoring.data.images import parse_background
from style_tailoring.data.prepare import prepare_data
from style_tailoring.evaluation.evaluator import evaluate_pipeline, fid_cache_root, log_eval
from style_tailoring.evaluation.validate import check_eval_files, check_eval_settings, check_sampling_family
from style_tailoring.io import update_json
from style_tailoring.models.components import open_pipeline, pipeline_family
from style_tailoring.models.safe_load import weights_kwargs
from style_tailoring.provenance import portable
from style_tailoring.runtime import launch
from style_tailoring.runtime.jobs import RUN_COMPLETED

log = logging.getLogger("style_tailoring.evaluate")
# What an evaluation row borrows from the run that trained the pipeline.
SOURCE_KEYS = ("strategy", "t_split", "mixture", "steps", "seed", "model", "init_unet")


def check_paths(cfg) -> None:
    pipeline = Path(cfg.pipeline).expanduser()
    if not (pipeline / "model_index.json").is_file():
        raise ConfigError("pipeline", f"{cfg.pipeline} is not a diffusers pipeline directory (no model_index.json)")
    if cfg.unet and not (Path(cfg.unet).expanduser() / "config.json").is_file():
        raise ConfigError("unet", f"{cfg.unet} is not a UNet folder (no config.json)")
    check_alpha_decoder(cfg.model.alpha_decoder, cfg.data.background)


def source_run(pipeline) -> dict:
    """What is known of the run that made `pipeline`: its metrics.json (when the pipeline sits in a run directory)
    or the pipeline's own style_tailoring.json."""
    # Not resolved: a run reached through a link inside the repository is recorded by its repository path
    pipeline = Path(pipeline).expanduser().absolute()
    metrics_file, meta_file = pipeline.parent / "metrics.json", pipeline / "style_tailoring.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        return {"source_run": portable(pipeline.parent), **{k: metrics.get(k) for k in SOURCE_KEYS}}
    if meta_file.is_file():
        return {"strategy": json.loads(meta_file.read_text()).get("strategy")}
    return {}


def load_pipeline(path: str, unet: Optional[str] = None, allow_pickle: bool = False,
                  switch: str = "model.allow_pickle=true"):
    """A saved pipeline (and a UNet swapped in: an SD3 pipeline's transformer), safetensors only unless
    `allow_pickle` (`switch` is the setting that allows it, named when pickled weights are refused)."""
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    kwargs = {}
    if unet:
        flow = pipeline_family(json.loads((Path(path).expanduser() / "model_index.json").read_text()), path,
                               key="pipeline") == "sd3"
        cls = SD3Transformer2DModel if flow else UNet2DConditionModel
        kwargs["transformer" if flow else "unet"] = cls.from_pretrained(
            unet, **weights_kwargs(unet, allow_pickle, key="unet", switch=switch))
    pipe = open_pipeline(path, allow_pickle, switch=switch, **kwargs)
    if hasattr(pipe, "safety_checker"):
        pipe.safety_checker = None
    return pipe


def run_standalone(cfg: DictConfig) -> Optional[dict]:
    from lightning.fabric import Fabric

    check_paths(cfg)
    check_eval_settings(cfg.eval)
    index = json.loads((Path(cfg.pipeline).expanduser() / "model_index.json").read_text())
    check_sampling_family(cfg.eval, flow=pipeline_family(index, cfg.pipeline, key="pipeline") == "sd3")
    prepare_data(cfg.data)
    check_eval_files(cfg.eval)
    background = parse_background(cfg.data.background)
    if cfg.eval.prompt_suffix is None:
        meta = Path(cfg.pipeline) / "style_tailoring.json"
        cfg.eval.prompt_suffix = json.loads(meta.read_text()).get("style_prompt", "") if meta.is_file() else ""
    out_dir = Path(cfg.run_dir).resolve()
    workers = []
    if launch.needs_self_launch(cfg.trainer):
        workers = launch.start_workers(cfg, out_dir, target="style_tailoring.evaluation.standalone:run_standalone")
    try:
        trainer = cfg.trainer
        fabric = Fabric(accelerator=trainer.get("accelerator", "auto"), devices=trainer.get("devices", 1),
                        num_nodes=trainer.get("num_nodes", 1),
                        strategy="ddp" if launch.is_ddp(trainer) else "auto")
        fabric.launch()
        pipe = load_pipeline(cfg.pipeline, cfg.unet, allow_pickle=cfg.model.allow_pickle)
        if cfg.model.alpha_decoder:
            from style_tailoring.alpha.decoder import attach_alpha_decoder

            pipe.vae = attach_alpha_decoder(pipe.vae, cfg.model.alpha_decoder, background=background)
        pipe = pipe.to(fabric.device)
        denoiser = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
        resolution = cfg.resolution or denoiser.config.sample_size * pipe.vae_scale_factor
        style = data_sources(cfg.data).get("style") or {}
        weights = {"pipeline": cfg.pipeline, "unet": cfg.unet, "alpha_decoder": cfg.model.alpha_decoder}
        metrics = evaluate_pipeline(pipe, cfg.eval, out_dir, resolution=resolution, rank=fabric.global_rank,
                                    world=fabric.world_size, barrier=fabric.barrier,
                                    default_reference=style.get("dir"), cache_root=fid_cache_root(cfg.paths),
                                    background=background, weights=weights)
        if metrics is not None:
            from style_tailoring.runtime.loggers import build_logger, finish_logger

            record = {"status": RUN_COMPLETED, "kind": "evaluation", "pipeline": portable(cfg.pipeline),
                      "unet": portable(cfg.unet), **source_run(cfg.pipeline)}
            metrics = update_json(out_dir / "metrics.json", {**record, **metrics})
            log_eval(build_logger(cfg, out_dir, csv_version="eval_csv", tags=["evaluation"]), metrics, step=0,
                     grid=out_dir / "final_grid.png", samples_dir=out_dir / "samples" / "final")
            finish_logger(cfg)
            log.info("eval metrics written to %s", out_dir / "metrics.json")
        launch.wait_for(workers)
        return metrics
    finally:
        launch.cleanup(workers)
