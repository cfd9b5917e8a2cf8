"""Evaluate a pipeline: `python -m style_tailoring.evaluate pipeline=RUN_DIR/pipeline [overrides]`.

The same function runs at the end of training, every `eval.every_n_steps` during it, and standalone (on a trained
run, a stage's UNet, or an untouched base model for the prompt-engineering baseline). Ranks sample their shard of
the (prompt, seed) jobs; rank 0 then computes every metric from the saved PNGs, so no rank waits on a collective
while rank 0 computes. A metric whose weights are not on disk is skipped with one line naming the key to set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from style_tailoring.config import ConfigError, DataConfig, EvalConfig, LoggerConfig
from style_tailoring.io import update_json
from style_tailoring.sampling import generate, load_prompts, make_jobs, read_samples, set_scheduler, write_index, \
    write_samples

log = logging.getLogger("style_tailoring.evaluate")


def evaluate_pipeline(pipe, ev: EvalConfig, out_dir: Path, *, resolution: int, rank: int = 0, world: int = 1,
                      barrier: Callable[[], None] = lambda: None, step: Optional[int] = None,
                      default_reference: Optional[str] = None, cache_root=None) -> Optional[dict]:
    """Sample this rank's shard, then (rank 0) compute the metrics. Returns `eval/...` numbers on rank 0."""
    if not ev.prompts:
        raise ConfigError("eval.prompts", "no eval prompt file (set eval.prompts or data.eval_prompts)")
    prompts = load_prompts(ev.prompts)[: ev.max_prompts or None]
    jobs = make_jobs(prompts, ev.seeds_per_prompt, ev.seed)
    samples_dir = out_dir / "samples" / (f"step-{step:06d}" if step is not None else "final")
    suffix = ev.prompt_suffix or ""
    set_scheduler(pipe, ev.sample.scheduler)
    pipe.set_progress_bar_config(disable=True)
    # Whole batches are dealt to ranks, so every image is computed in the same batch whatever the rank count.
    size = ev.sample.batch_size
    batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    mine = [job for batch in batches[rank::world] for job in batch]
    images = generate(pipe, mine, suffix=suffix, resolution=resolution,
                      num_inference_steps=ev.sample.num_inference_steps, guidance_scale=ev.sample.guidance_scale,
                      batch_size=size)
    write_samples(samples_dir, mine, images)
    barrier()
    if rank != 0:
        return None
    write_index(samples_dir, jobs, suffix)
    samples = read_samples(samples_dir, jobs)
    save_grid(samples, len(prompts), ev.seeds_per_prompt, out_dir / f"{samples_dir.name}_grid.png")
    metrics = compute_metrics(samples, jobs, ev, default_reference, cache_root=cache_root)
    metrics["eval/num_samples"] = len(jobs)
    return metrics


@dataclass
class MetricRun:
    """Collects metric values and the one-line reasons of those that were skipped."""

    values: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    def attempt(self, name: str, fn: Callable[[], dict]) -> None:
        from style_tailoring.metrics import MetricUnavailable

        try:
            self.values.update({f"eval/{k}": float(v) for k, v in fn().items()})
        except MetricUnavailable as err:
            log.warning("eval: %s skipped: %s (set %s)", name, err, err.key)
            self.skipped[name] = f"set {err.key}: {err}"


def compute_metrics(samples: torch.Tensor, jobs, ev: EvalConfig, default_reference=None, cache_root=None) -> dict:
    from style_tailoring.metrics import MetricUnavailable

    run = MetricRun()
    prompts = [job.prompt for job in jobs]  # alignment is judged against the content prompt, without the suffix
    n_prompts = max(job.prompt_index for job in jobs) + 1
    k = ev.seeds_per_prompt

    def fidelity():
        reference = ev.fid.reference or default_reference
        if not reference:
            raise MetricUnavailable("eval.fid.reference", "no reference image folder")
        from style_tailoring.metrics.fidelity import fid_kid

        cache_name = ev.fid.cache_name or _cache_name(reference, ev.fid.feature_extractor, ev.fid.weights_path,
                                                      samples.shape[-1])
        return fid_kid(samples, reference, feature_extractor=ev.fid.feature_extractor, weights_path=ev.fid.weights_path,
                       cache_name=cache_name, cache_root=cache_root, kid_subset_size=ev.fid.kid_subset_size)

    def clip():
        if not ev.clip.model_path:
            raise MetricUnavailable("eval.clip.model_path", "no CLIP model directory configured")
        from style_tailoring.metrics.clip import image_embeddings, load_clip, make_clip_score
        from style_tailoring.metrics.diversity import pairwise_cosine_diversity, vendi_score

        score = make_clip_score(ev.clip.model_path)
        score.update(samples, prompts)
        model, processor = load_clip(ev.clip.model_path)
        emb = image_embeddings(model, processor, samples, batch_size=64).reshape(n_prompts, k, -1)
        return {"clip_score": score.compute(), "diversity": pairwise_cosine_diversity(emb), "vendi": vendi_score(emb)}

    def judges():
        if not ev.judges.path:
            raise MetricUnavailable("eval.judges.path", "this data set has no judges")
        from style_tailoring.world.judges import load_judges

        judge = load_judges(ev.judges.path)
        out = dict(judge.prompt_alignment(samples, prompts))
        out["style_score"] = judge.style_score(samples).float().mean()
        return out

    if ev.fid.enabled:
        run.attempt("fid/kid", fidelity)
    run.attempt("clip_score/diversity", clip)
    run.attempt("alignment/style_score", judges)
    if run.skipped:
        run.values["eval/skipped"] = run.skipped
    return run.values


def fid_cache_root(cfg) -> Path:
    """Reference features live beside the latent cache, shared by every run and sweep job."""
    return Path(cfg.paths.get("cache_dir", ".cache")) / "fid"


def _cache_name(reference: str, extractor: str, weights, size: int) -> str:
    """Keyed by what changes the features: the reference set, the extractor and its weights, the resolution."""
    key = f"{Path(reference).resolve()}|{Path(weights).resolve() if weights else ''}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"ref-{Path(reference).name}-{digest}-{extractor}-{size}px"


def save_grid(samples: torch.Tensor, n_prompts: int, k: int, path: Path, max_rows: int = 16) -> Path:
    """Rows: prompts; columns: seeds."""
    rows = min(n_prompts, max_rows)
    grid = samples[: rows * k].reshape(rows, k, *samples.shape[1:])  # P,K,C,H,W
    grid = grid.permute(0, 3, 1, 4, 2).reshape(rows * samples.shape[2], k * samples.shape[3], 3)
    Image.fromarray(grid.numpy().astype(np.uint8)).save(path)
    return path


def log_eval(logger, metrics: dict, step: int, grid: Optional[Path] = None) -> None:
    """Numbers under eval/..., and the grid as an image where the logger takes images (wandb)."""
    if not logger:
        return
    logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
    logger.save()
    if grid is not None and hasattr(logger, "log_image"):
        logger.log_image("eval/samples", [str(grid)], step=step)


# -- standalone entry point --------------------------------------------------------------------------------------
@dataclass
class EvaluateConfig:
    pipeline: str = "???"
    # Optional UNet directory swapped into the pipeline (e.g. RUN_DIR/stages/1-alignment/unet).
    unet: Optional[str] = None
    run_dir: str = "outputs/eval"
    # Where metrics.json is merged: null = the run dir owning `pipeline` if it is one, else run_dir.
    output_dir: Optional[str] = None
    resolution: Optional[int] = None
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, Any] = field(default_factory=dict)


def load_pipeline(path: str, unet: Optional[str] = None):
    from diffusers import DiffusionPipeline, UNet2DConditionModel

    if Path(path).expanduser().exists() and not (Path(path).expanduser() / "model_index.json").is_file():
        raise ConfigError("pipeline", f"{path} is not a diffusers pipeline directory (no model_index.json)")
    kwargs = {"unet": UNet2DConditionModel.from_pretrained(unet)} if unet else {}
    pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
    if hasattr(pipe, "safety_checker"):
        pipe.safety_checker = None
    return pipe


def output_dir_for(cfg) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    parent = Path(cfg.pipeline).expanduser().resolve().parent
    return parent if (parent / "metrics.json").is_file() else Path(cfg.run_dir)


def run_standalone(cfg: DictConfig) -> Optional[dict]:
    from lightning.fabric import Fabric

    from style_tailoring import launch

    if cfg.eval.prompt_suffix is None:
        meta = Path(cfg.pipeline) / "style_tailoring.json"
        cfg.eval.prompt_suffix = json.loads(meta.read_text()).get("style_prompt", "") if meta.is_file() else ""
    out_dir = output_dir_for(cfg).resolve()
    workers = launch.start_workers(cfg, out_dir, entry="evaluate") if launch.needs_self_launch(cfg.trainer) else []
    try:
        trainer = cfg.trainer
        fabric = Fabric(accelerator=trainer.get("accelerator", "auto"), devices=trainer.get("devices", 1),
                        num_nodes=trainer.get("num_nodes", 1),
                        strategy="ddp" if launch.is_ddp(trainer) else "auto")
        fabric.launch()
        pipe = load_pipeline(cfg.pipeline, cfg.unet).to(fabric.device)
        resolution = cfg.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
        metrics = evaluate_pipeline(pipe, cfg.eval, out_dir, resolution=resolution, rank=fabric.global_rank,
                                    world=fabric.world_size, barrier=fabric.barrier,
                                    default_reference=cfg.data.style_dir, cache_root=fid_cache_root(cfg))
        if metrics is not None:
            from style_tailoring.loggers import build_logger, finish_logger

            metrics = update_json(out_dir / "metrics.json", {**metrics, "eval/pipeline": str(cfg.pipeline)})
            log_eval(build_logger(cfg, out_dir, csv_version="eval_csv"), metrics, step=0,
                     grid=out_dir / "final_grid.png")
            finish_logger(cfg)
            log.info("eval metrics written to %s", out_dir / "metrics.json")
        launch.wait_for(workers)
        return metrics
    finally:
        launch.cleanup(workers)


def to_evaluate_config(cfg: DictConfig) -> DictConfig:
    from style_tailoring.config import merge_into_schema

    return merge_into_schema(EvaluateConfig, cfg)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig):
    metrics = run_standalone(to_evaluate_config(cfg))
    if metrics:
        print(json.dumps({k: v for k, v in metrics.items() if k.startswith("eval/")}, indent=2, default=str))


if __name__ == "__main__":
    main()
