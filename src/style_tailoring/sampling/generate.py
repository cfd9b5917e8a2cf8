"""Batched, seeded, rank-sharded generation of the evaluation samples through a stock diffusers pipeline and a
sampler (style_tailoring.sampling.samplers).

Every (prompt, seed) pair is a job with a fixed index; jobs are cut into batches and rank r of N takes batches
r, r+N, ... Each image comes from its own generator seeded by the job's seed, and its batch is the same whatever
the rank count, so 1 process and N processes give the same pixels. Ranks write
their PNGs into one samples directory; rank 0 writes the index once every rank is done.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from style_tailoring.io import write_jsonl


@dataclass(frozen=True)
class Job:
    index: int
    prompt_index: int
    prompt: str
    seed: int

    @property
    def file_name(self) -> str:
        return f"{self.prompt_index:04d}-{self.seed}.png"


def load_prompts(path) -> list[str]:
    """Eval prompts from a .jsonl file (`prompt` or `text` field per line) or a plain .txt file (one per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eval.prompts: no prompt file at {path}")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        prompts = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"eval.prompts: {path}:{lineno} is not JSON ({err.msg})") from None
            text = row.get("prompt", row.get("text")) if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"eval.prompts: {path}:{lineno} has no 'prompt' text")
            prompts.append(text.strip())
    else:
        prompts = [line.strip() for line in lines]
    if not prompts:
        raise ValueError(f"eval.prompts: {path} holds no prompts")
    return prompts


def make_jobs(prompts: list[str], seeds_per_prompt: int, base_seed: int = 0) -> list[Job]:
    """Job i·k + j samples prompt i from the noise of seed `base_seed + i·k + j`: every (prompt, sample) pair has
    its own initial noise, so samples of different prompts are not clustered by a shared noise list (and a model
    comparison stays paired: the same jobs give every model the same noises)."""
    return [
        Job(i * seeds_per_prompt + k, i, prompt, base_seed + i * seeds_per_prompt + k)
        for i, prompt in enumerate(prompts)
        for k in range(seeds_per_prompt)
    ]


def set_scheduler(pipe, name) -> None:
    if name:
        import diffusers

        pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config)


@torch.no_grad()
def generate(pipe, jobs: list[Job], *, suffix: str, resolution: int, num_inference_steps: int,
             guidance_scale: float, batch_size: int, sampler=None) -> list[np.ndarray]:
    """uint8 H×W×3 images for `jobs`, in order, drawn by `sampler` (default: the pipeline's plain call); H×W×4
    (straight-alpha RGBA) when the pipeline's VAE has an alpha decoder. An SD3-family pipeline is called with the
    T5 length its model was trained with (`sampling_kwargs`)."""
    from style_tailoring.models.components import sampling_kwargs
    from style_tailoring.sampling.samplers import PlainSampler

    sampler = sampler or PlainSampler()
    images = []
    device = pipe.device
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        out = sampler(
            pipe,
            prompt=[job.prompt + suffix for job in batch],
            generator=[torch.Generator(device).manual_seed(job.seed) for job in batch],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            height=resolution,
            width=resolution,
            output_type="np",
            **sampling_kwargs(pipe),
        )
        images.extend((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8))
    return images


def write_samples(out_dir: Path, jobs: list[Job], images: list[np.ndarray],
                  background: tuple[int, int, int] = (255, 255, 255)) -> None:
    """One PNG per job. RGBA images (an alpha decoder's) are written as they are under `rgba/`, and composited onto
    `background` (data.background: the colour training composited transparency onto) for the metrics."""
    from style_tailoring.data.images import split_rgba

    out_dir.mkdir(parents=True, exist_ok=True)
    if not images:
        return
    rgb, rgba = split_rgba(np.stack(images), background)
    if rgba is not None:
        (out_dir / "rgba").mkdir(exist_ok=True)
    for i, job in enumerate(jobs):
        Image.fromarray(rgb[i]).save(out_dir / job.file_name)
        if rgba is not None:
            Image.fromarray(rgba[i]).save(out_dir / "rgba" / job.file_name)


def write_index(out_dir: Path, jobs: list[Job], suffix: str) -> None:
    rows = [dict(asdict(job), file_name=job.file_name, suffix=suffix) for job in jobs]
    write_jsonl(out_dir / "index.jsonl", rows)


def read_samples(out_dir: Path, jobs: list[Job]) -> torch.Tensor:
    """All jobs' images as a uint8 N×3×H×W tensor; a missing file means a rank dropped work, so it is an error."""
    missing = [job.file_name for job in jobs if not (out_dir / job.file_name).is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} eval sample(s) missing in {out_dir}, e.g. {missing[:3]}")
    return read_images(out_dir, [job.file_name for job in jobs])


def read_images(folder: Path, file_names: list[str],
                background: tuple[int, int, int] = (255, 255, 255)) -> torch.Tensor:
    """The named images of `folder` as a uint8 N×3×H×W tensor; transparent ones (an alpha decoder's candidates)
    composited onto `background`, never read as their raw colour channels."""
    from style_tailoring.data.images import load_rgb

    arrays = [np.asarray(load_rgb(Path(folder) / name, background)) for name in file_names]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
