"""Evaluate a pipeline: sample the eval prompts through the configured sampler, then compute every metric.

The same function runs at the end of training, every `eval.every_n_steps` during it, and in a standalone
evaluation run (style_tailoring.evaluation.standalone). Ranks sample their shard of the (prompt, seed) jobs; rank 0
then computes every metric from the saved PNGs, so no rank waits on a collective while rank 0 computes. A metric
whose weights are not on disk is skipped with one line naming the key to set.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from style_tailoring.evaluation.metrics import MetricUnavailable
from style_tailoring.evaluation.validate import build_sampler, check_eval_files
from style_tailoring.io import write_jsonl
from style_tailoring.provenance import digests, paths_in, portable, repository_state
from style_tailoring.sampling.generate import (
    generate,
    make_jobs,
    read_samples,
    set_scheduler,
    write_index,
    write_samples,
)

log = logging.getLogger("style_tailoring.evaluate")


def eval_settings(ev, prompts: list[str], suffix: str) -> dict:
    """What a number was measured with, recorded beside it (guidance, steps, scheduler, prompts)."""
    return {"guidance_scale": ev.sample.guidance_scale, "num_inference_steps": ev.sample.num_inference_steps,
            "scheduler": ev.sample.scheduler, "seeds_per_prompt": ev.seeds_per_prompt, "seed": ev.seed,
            "prompts": portable(ev.prompts), "num_prompts": len(prompts), "prompt_suffix": suffix}


def eval_provenance(ev, weights: Optional[dict] = None, default_reference: Optional[str] = None) -> dict:
    """What scored an evaluation, recorded beside its numbers: the repository commit, and digests of the evaluated
    weights (`weights`: {name: folder}), the judges (every file or folder their config names), the FID references,
    the metric weights (CLIP, Inception) and the eval prompts. Two runs with equal digests were scored alike."""
    references = {"fid": ev.fid.reference or default_reference} if ev.fid.enabled else {}
    references.update({f"fid_{name}": path for name, path in (ev.fid.references or {}).items()
                       if path is not None and ev.fid.enabled})
    return {
        **repository_state(),
        "weights": digests(weights or {}),
        **digests({"judges": paths_in(ev.judges), "sampler": paths_in(ev.sampler), "eval_prompts": ev.prompts}),
        "fid_references": digests(references),
        "metric_weights": digests({"clip": ev.clip.model_path, "inception": ev.fid.weights_path}),
    }


def evaluate_pipeline(pipe, ev, out_dir: Path, *, resolution: int, rank: int = 0, world: int = 1,
                      barrier: Callable[[], None] = lambda: None, step: Optional[int] = None,
                      default_reference: Optional[str] = None, cache_root=None,
                      background: tuple[int, int, int] = (255, 255, 255),
                      weights: Optional[dict] = None) -> Optional[dict]:
    """Sample this rank's shard, then (rank 0) compute the metrics. Returns `eval/...` entries on rank 0: numbers,
    plus `eval/sampler` and `eval/settings` (what they were measured with) and `eval/provenance` (what scored them:
    `eval_provenance`, with `weights` the folders of the evaluated model). An alpha decoder's RGBA samples are kept
    under samples/.../rgba and scored as composites onto `background`."""
    prompts = check_eval_files(ev)[: ev.max_prompts or None]
    jobs = make_jobs(prompts, ev.seeds_per_prompt, ev.seed)
    samples_dir = out_dir / "samples" / (f"step-{step:06d}" if step is not None else "final")
    suffix = ev.prompt_suffix or ""
    sampler = build_sampler(ev)
    set_scheduler(pipe, ev.sample.scheduler)
    pipe.set_progress_bar_config(disable=True)
    # Whole batches are dealt to ranks, so every image is computed in the same batch whatever the rank count.
    size = ev.sample.batch_size
    batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    mine = [job for batch in batches[rank::world] for job in batch]
    sampler.prepare(pipe)
    try:
        images = generate(pipe, mine, suffix=suffix, resolution=resolution,
                          num_inference_steps=ev.sample.num_inference_steps,
                          guidance_scale=ev.sample.guidance_scale, batch_size=size, sampler=sampler)
    finally:
        sampler.release(pipe)
    write_samples(samples_dir, mine, images, background)
    barrier()
    if rank != 0:
        return None
    write_index(samples_dir, jobs, suffix)
    samples = read_samples(samples_dir, jobs)
    save_grid(samples, len(prompts), ev.seeds_per_prompt, out_dir / f"{samples_dir.name}_grid.png")
    metrics = compute_metrics(samples, jobs, ev, default_reference, cache_root=cache_root, samples_dir=samples_dir)
    metrics["eval/num_samples"] = len(jobs)
    metrics["eval/sampler"] = sampler.describe()
    metrics["eval/settings"] = eval_settings(ev, prompts, suffix)
    metrics["eval/provenance"] = eval_provenance(ev, weights, default_reference)
    return metrics


# FID's bias shrinks like 1/N: below a few thousand samples only comparisons at equal N mean anything (KID is
# unbiased at any N). Real-data evaluations should sample at least this many; the world's 384 are compared at equal N.
FID_MIN_SAMPLES = 2048


@dataclass
class MetricRun:
    """Collects metric values and the one-line reasons of those that were skipped."""

    values: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    def attempt(self, name: str, fn: Callable[[], dict]) -> None:
        try:
            self.values.update({f"eval/{k}": float(v) for k, v in fn().items()})
        except MetricUnavailable as err:
            log.warning("eval: %s skipped: %s (set %s)", name, err, err.key)
            self.skipped[name] = f"set {err.key}: {err}"


def compute_metrics(samples: torch.Tensor, jobs, ev, default_reference=None, cache_root=None,
                    samples_dir: Optional[Path] = None) -> dict:
    run = MetricRun()
    prompts = [job.prompt for job in jobs]  # alignment is judged against the content prompt, without the suffix
    n_prompts = max(job.prompt_index for job in jobs) + 1
    k = ev.seeds_per_prompt

    def fidelity(reference, name: str = ""):
        if not reference:
            raise MetricUnavailable("eval.fid.reference", "no reference image folder")
        from style_tailoring.evaluation.metrics.fidelity import fid_kid

        cache_name = (ev.fid.cache_name if not name else None) or _cache_name(
            reference, ev.fid.feature_extractor, ev.fid.weights_path, samples.shape[-1])
        values = fid_kid(samples, reference, feature_extractor=ev.fid.feature_extractor,
                         weights_path=ev.fid.weights_path, cache_name=cache_name, cache_root=cache_root,
                         kid_subset_size=ev.fid.kid_subset_size)
        values["fid_samples"] = len(samples)
        if len(samples) < FID_MIN_SAMPLES and not name:  # said once per evaluation
            log.warning("eval: FID on %d samples is biased upwards (it needs thousands: compare runs at equal "
                        "sample counts, or read KID, which is unbiased); raise eval.seeds_per_prompt for real data",
                        len(samples))
        return {f"{key}_{name}" if name else key: value for key, value in values.items()}

    def clip_score():
        from style_tailoring.evaluation.metrics.clip import clip_dir_or_raise, make_clip_score

        score = make_clip_score(clip_dir_or_raise(ev.clip.model_path, "eval.clip.model_path"))
        score.update(samples, prompts)
        return {"clip_score": score.compute()}

    def diversity():
        if k < 2:
            raise MetricUnavailable("eval.seeds_per_prompt", "scene diversity needs at least 2 samples per prompt")
        from style_tailoring.evaluation.metrics.clip import image_embeddings, load_clip
        from style_tailoring.evaluation.metrics.diversity import pairwise_cosine_diversity, vendi_score

        model, processor = load_clip(ev.clip.model_path)
        emb = image_embeddings(model, processor, samples, batch_size=64).reshape(n_prompts, k, -1)
        return {"diversity": pairwise_cosine_diversity(emb), "vendi": vendi_score(emb)}

    def judges():
        if ev.judges is None:
            raise MetricUnavailable("eval.judges", "this data set has no judges")
        from style_tailoring.evaluation.judges import build_judges, mean_scores

        judge = build_judges(ev.judges)
        per_sample = judge.score(samples, prompts)
        if samples_dir is not None:
            labels = judge.labels(samples) if hasattr(judge, "labels") else {}
            _write_scores(samples_dir, jobs, per_sample, labels)
        extra = judge.diversity(samples, prompts, k) if hasattr(judge, "diversity") and k >= 2 else {}
        return {**mean_scores(per_sample), **extra}

    if ev.fid.enabled:
        run.attempt("fid/kid", lambda: fidelity(ev.fid.reference or default_reference))
        for name, reference in (ev.fid.references or {}).items():
            if reference is None:  # a data config's way to drop an inherited reference
                continue
            run.attempt(f"fid/kid {name}", lambda reference=reference, name=name: fidelity(reference, name))
    run.attempt("clip_score", clip_score)
    run.attempt("diversity", diversity)
    run.attempt("judges", judges)
    if run.skipped:
        run.values["eval/skipped"] = run.skipped
    return run.values


def _write_scores(samples_dir: Path, jobs, per_sample: dict[str, torch.Tensor],
                  labels: Optional[dict[str, list[str]]] = None) -> None:
    """Each image's judge scores beside it (`judge_scores.jsonl`, one row per sample file), and the classes the
    judge predicted for it (`labels/<name>`) where the judge gives them."""
    columns = {name: torch.as_tensor(values, dtype=torch.float64).tolist() for name, values in per_sample.items()}
    rows = [{"file_name": job.file_name, "prompt": job.prompt, "seed": job.seed,
             **{name: (None if np.isnan(v[i]) else v[i]) for name, v in columns.items()},
             **{f"labels/{name}": v[i] for name, v in (labels or {}).items()}}
            for i, job in enumerate(jobs)]
    write_jsonl(samples_dir / "judge_scores.jsonl", rows)


def fid_cache_root(paths) -> Path:
    """Reference features live beside the latent cache, shared by every run and sweep job."""
    return Path(paths.get("cache_dir", ".cache")) / "fid"


def _stamp(path) -> str:
    """Name, size and modification time of every file under `path`: changes when the files are rewritten (a
    rebuilt reference set or retrained feature weights at the same path), so stale cached features are not reused."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
    return ";".join(f"{p.relative_to(path) if path.is_dir() else p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                    for p in files)


def _cache_name(reference: str, extractor: str, weights, size: int) -> str:
    """Keyed by what changes the features: the reference set, the extractor and its weights (their files, not only
    their paths), the resolution."""
    key = (f"{Path(reference).resolve()}|{Path(weights).resolve() if weights else ''}|{_stamp(reference)}|"
           f"{_stamp(weights) if weights else ''}")
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"ref-{Path(reference).name}-{digest}-{extractor}-{size}px"


def save_grid(samples: torch.Tensor, n_prompts: int, k: int, path: Path, max_rows: int = 16) -> Path:
    """Rows: prompts; columns: seeds."""
    rows = min(n_prompts, max_rows)
    grid = samples[: rows * k].reshape(rows, k, *samples.shape[1:])  # P,K,C,H,W
    grid = grid.permute(0, 3, 1, 4, 2).reshape(rows * samples.shape[2], k * samples.shape[3], 3)
    Image.fromarray(grid.numpy().astype(np.uint8)).save(path)
    return path


def log_eval(logger, metrics: dict, step: int, grid: Optional[Path] = None, samples_dir: Optional[Path] = None) -> None:
    """Numbers under eval/..., and where the logger takes media (wandb) the grid as an image and `eval/samples_table`:
    a `wandb.Table` of every sample of `samples_dir` (prompt, seed, image, and each of its judge scores, as
    judge_scores.jsonl holds them)."""
    if not logger:
        return
    logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
    logger.save()
    if grid is not None and hasattr(logger, "log_image"):
        logger.log_image("eval/samples", [str(grid)], step=step)
    if samples_dir is not None and hasattr(logger, "log_table"):
        columns, rows = samples_table(samples_dir)
        if rows:
            logger.log_table("eval/samples_table", columns=columns, data=rows, step=step)


def samples_table(samples_dir: Path) -> tuple[list[str], list[list]]:
    """(columns, rows) of an evaluation's samples for a `wandb.Table`: file, prompt, seed, the image
    (`wandb.Image`), then every judge score (`judge_scores.jsonl`; without judges, `index.jsonl` alone)."""
    import wandb

    from style_tailoring.io import read_jsonl

    samples_dir = Path(samples_dir)
    scored, index = samples_dir / "judge_scores.jsonl", samples_dir / "index.jsonl"
    rows = read_jsonl(scored) if scored.is_file() else read_jsonl(index) if index.is_file() else []
    fixed = ["file_name", "prompt", "seed"]
    ignored = {"index", "prompt_index", "suffix"}
    scores = sorted({k for row in rows for k in row if k not in fixed and k not in ignored})
    columns = [*fixed, "image", *scores]
    data = [[row.get("file_name"), row.get("prompt"), row.get("seed"),
             wandb.Image(str(samples_dir / row["file_name"]), caption=row.get("prompt")),
             *(row.get(k) for k in scores)] for row in rows if (samples_dir / row["file_name"]).is_file()]
    return columns, data
