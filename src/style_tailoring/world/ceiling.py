"""What the world's metrics can reach: every evaluation metric on the renderer's own stickers of the eval prompts.

Three sets of `samples_per_prompt` images per eval prompt, scored by the same `compute_metrics` as a model's
samples under the world's evaluation config:
- `renders`: perfect sticker renders (fresh random compositions; the prompt's scene where it names one);
- `vae_round_trip`: the same renders encoded and decoded by the base model's VAE — the ceiling a model of this
  world can reach, since every sample it makes passes through that decoder;
- `one_render_repeated`: each prompt's first render repeated — the floor of every diversity measure.
`python -m style_tailoring.world only=ceiling` writes them to `assets/sticker_world/ceiling.json`; the
world study's tables (experiments/results/world_study.md, read in docs/results.md) show them beside the models'
numbers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from style_tailoring.io import write_json

log = logging.getLogger(__name__)


def world_eval_config(data_dir: Path, overrides: list[str] = ()):
    """The world's evaluation settings (`eval` of the composed default train config) with its data under
    `data_dir`."""
    from style_tailoring.config import REPO_ROOT, compose, to_run_config

    # root_dir: the repository, so the FID reference features are cached where evaluation runs cache them
    cfg = compose("train", overrides=[f"paths.root_dir={REPO_ROOT}", f"paths.data_dir={Path(data_dir).parent}",
                                      "logger=none", f"run_dir={Path(data_dir).parent}", *overrides])
    return to_run_config(cfg)


@torch.no_grad()
def round_trip(vae, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """uint8 images through the VAE's encoder (posterior mode) and decoder, back to uint8."""
    out = []
    for chunk in images.split(batch_size):
        x = chunk.float() / 127.5 - 1
        decoded = vae.decode(vae.encode(x).latent_dist.mode()).sample
        out.append(((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(out)


def measure_ceiling(data_dir: Path, base_dir: Path, out_path: Path, *, samples_per_prompt: int = 16,
                    seed: int = 1234) -> dict:
    from diffusers import AutoencoderKL

    from style_tailoring.evaluation.evaluator import compute_metrics, fid_cache_root
    from style_tailoring.sampling.generate import make_jobs
    from style_tailoring.world.grammar import parse_caption
    from style_tailoring.world.render import render

    started = time.time()
    cfg = world_eval_config(Path(data_dir), [f"eval.seeds_per_prompt={samples_per_prompt}"])
    from style_tailoring.evaluation.validate import check_eval_files

    prompts = check_eval_files(cfg.eval)
    jobs = make_jobs(prompts, samples_per_prompt)
    rng = np.random.default_rng(seed)
    renders = torch.stack([torch.from_numpy(np.array(render(parse_caption(job.prompt), "sticker", rng)))
                           .permute(2, 0, 1) for job in jobs])
    vae = AutoencoderKL.from_pretrained(Path(base_dir) / "vae", use_safetensors=True).eval()
    sets = {
        "renders": renders,
        "vae_round_trip": round_trip(vae, renders),
        "one_render_repeated": renders[::samples_per_prompt].repeat_interleave(samples_per_prompt, 0),
    }
    cache = fid_cache_root(cfg.paths)
    result = {name: compute_metrics(images, jobs, cfg.eval, cache_root=cache) for name, images in sets.items()}
    result["about"] = {"samples_per_prompt": samples_per_prompt, "prompts": len(prompts), "seed": seed,
                       "seconds": round(time.time() - started),
                       "command": "python -m style_tailoring.world only=ceiling force=true"}
    write_json(Path(out_path), result)
    log.info("ceiling: %s", {k: {m: round(v, 3) for m, v in r.items() if isinstance(v, float)}
                             for k, r in result.items() if k != "about"})
    return result
