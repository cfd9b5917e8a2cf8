"""Generate: K seeds per training prompt from the current model(s), written as an imagefolder with provenance.

`candidates/metadata.jsonl` rows: file_name, text (the bare prompt, what a curated set trains on), prompt, seed,
model, round, teacher. Seeds differ per (round, prompt, k), so no two candidates share an initial noise and a
second round draws new ones. The folder is written beside its final place and renamed, so it is there complete or
not at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from style_tailoring.config import ConfigError
from style_tailoring.io import atomic_dir, read_jsonl, write_jsonl
from style_tailoring.sampling.generate import Job, generate, load_prompts, read_images, set_scheduler

log = logging.getLogger("style_tailoring.hitl")
# Seeds of round r lie in [r * ROUND_SEEDS, (r + 1) * ROUND_SEEDS): rounds never reuse a noise.
ROUND_SEEDS = 1_000_000


@dataclass(frozen=True)
class Generator:
    """One model candidates come from: a pipeline directory, optionally with LoRA weights on its UNet."""

    name: str
    model: str
    lora: Optional[str] = None
    allow_pickle: bool = False  # hitl.allow_pickle: pickled (.bin) weights may load

    def describe(self) -> str:
        return f"{self.model}+lora:{self.lora}" if self.lora else self.model


def training_prompts(path, eval_prompts_path) -> list[str]:
    """The training prompts; any overlap with the evaluation prompts is an error naming both files."""
    try:
        prompts = load_prompts(path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError("hitl.prompts", str(err).removeprefix("eval.prompts: ")) from None
    if eval_prompts_path:
        held_out = set(load_prompts(eval_prompts_path))
        overlap = sorted(set(prompts) & held_out)
        if overlap:
            raise ConfigError("hitl.prompts", f"{len(overlap)} prompt(s) of {path} are also evaluation prompts in "
                              f"{eval_prompts_path} (e.g. {overlap[0]!r}): curating on them would leak the test set")
    return list(dict.fromkeys(prompts))


def candidate_jobs(prompts: list[str], k: int, base_seed: int, round_index: int) -> list[Job]:
    start = base_seed + round_index * ROUND_SEEDS
    return [Job(i * k + j, i, p, start + i * k + j) for i, p in enumerate(prompts) for j in range(k)]


def load_generator(gen: Generator, device="cpu"):
    from style_tailoring.evaluation.standalone import load_pipeline
    from style_tailoring.models.safe_load import weights_kwargs

    switch = "hitl.allow_pickle=true"
    pipe = load_pipeline(gen.model, allow_pickle=gen.allow_pickle, switch=switch)
    if gen.lora:
        pipe.load_lora_weights(gen.lora, adapter_name=gen.name,
                               **weights_kwargs(gen.lora, gen.allow_pickle, key="hitl.teachers.lora", switch=switch))
        pipe.set_adapters([gen.name])
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate_candidates(out_dir: Path, generators: list[Generator], prompts: list[str], settings, sampler,
                        round_index: int, device="cpu") -> Path:
    """Write `out_dir` (an imagefolder) with every generator's candidates for every (prompt, seed)."""
    jobs = candidate_jobs(prompts, settings.seeds_per_prompt, settings.seed, round_index)
    rows = []
    with atomic_dir(out_dir) as tmp:
        for gen in generators:
            pipe = load_generator(gen, device)
            set_scheduler(pipe, settings.sample.scheduler)
            resolution = pipe.unet.config.sample_size * pipe.vae_scale_factor
            sampler.prepare(pipe)
            try:
                images = generate(pipe, jobs, suffix=settings.prompt_suffix, resolution=resolution,
                                  num_inference_steps=settings.sample.num_inference_steps,
                                  guidance_scale=settings.sample.guidance_scale,
                                  batch_size=settings.sample.batch_size, sampler=sampler)
            finally:
                sampler.release(pipe)
            prefix = f"{gen.name}-" if len(generators) > 1 else ""
            for job, image in zip(jobs, images):
                name = f"{prefix}{job.prompt_index:04d}-{job.seed}.png"
                Image.fromarray(image).save(tmp / name)
                rows.append({"file_name": name, "text": job.prompt, "prompt": job.prompt, "seed": job.seed,
                             "model": gen.describe(), "teacher": gen.name, "round": round_index})
            log.info("generated %d candidates from %s", len(jobs), gen.describe())
            del pipe
        write_jsonl(tmp / "metadata.jsonl", rows)
    return out_dir


def read_candidates(folder: Path) -> list[dict]:
    return read_jsonl(Path(folder) / "metadata.jsonl")


def load_images(folder: Path, rows: list[dict], background=(255, 255, 255)) -> torch.Tensor:
    """The candidates' pixels as uint8 N×3×H×W (transparent candidates composited onto `background`)."""
    return read_images(folder, [r["file_name"] for r in rows], background)
