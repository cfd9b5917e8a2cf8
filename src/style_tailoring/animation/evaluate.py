"""Evaluating an animation model on a folder of conditioning stickers and prompts (the animated world's
`video_eval`: metadata.jsonl rows with file_name, prompt): every sticker animated `seeds_per_prompt` times, the
clips scored by `animation_scores`, means written with the clips.

    python -m style_tailoring.animation.evaluate [pipeline=RUN/pipeline] [motion_adapter=...] [eval_dir=...] out=DIR

Settings: conf/animation_evaluate.yaml (the world's model, folders and judges by default, through config).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig


def read_eval_dir(eval_dir, background, frames: int = 8) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """The stickers (N, 3, H, W) uint8 and prompts of an eval folder, and its reference clips (N, F, 3, H, W) uint8
    when every row names one (`clip`: the sticker moving as its prompt says; the world's are the renders), else
    None."""
    from style_tailoring.data.images import load_clip, load_rgb
    from style_tailoring.io import read_jsonl

    folder = Path(eval_dir)
    rows = read_jsonl(folder / "metadata.jsonl")
    as_tensor = lambda image: torch.from_numpy(np.array(image)).permute(2, 0, 1)  # noqa: E731
    stickers = torch.stack([as_tensor(load_rgb(folder / r["file_name"], background)) for r in rows])
    references = None
    if rows and all(r.get("clip") for r in rows):
        references = torch.stack([torch.stack([as_tensor(f) for f in load_clip(folder / r["clip"], background,
                                                                                 frames)]) for r in rows])
    return stickers, [r["prompt"] for r in rows], references


def evaluate_animation(pipe, stickers: torch.Tensor, prompts: list[str], *, seeds_per_prompt: int, steps: int,
                       guidance_scale: float, seed: int, motion_judge=None, judges=None,
                       clip_dir=None, references: torch.Tensor | None = None) -> tuple[dict, torch.Tensor, dict]:
    """(mean scores, clips (N · seeds, F, 3, H, W) uint8, per-clip scores); clip k animates sticker k // seeds with
    noise seed `seed + k`. `animation/seconds_per_clip` is the sampling wall time (judges excluded). With
    `references` (one clip per sticker), frame fidelity is scored too, and the references themselves are scored by
    the same metrics as `renders/<metric>`: the ceiling a model's numbers are read against."""
    from style_tailoring.animation.metrics import animation_scores
    from style_tailoring.animation.sample import animate

    index = [i for i in range(len(prompts)) for _ in range(seeds_per_prompt)]
    clips = []
    began = time.perf_counter()
    for k, i in enumerate(index):  # one clip at a time, each with its own seed: clips do not depend on batching
        clip = animate(pipe, stickers[i][None].float() / 127.5 - 1, [prompts[i]], frames=pipe.frames, steps=steps,
                       guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed + k))
        clips.append((clip * 255).round().to(torch.uint8))
    seconds = time.perf_counter() - began
    clips = torch.cat(clips)
    expanded = stickers[index]
    per_clip = animation_scores(clips, expanded, [prompts[i] for i in index], motion_judge=motion_judge,
                                judges=judges, clip_dir=clip_dir,
                                references=None if references is None else references[index])
    means = {f"animation/{k}": float(np.nanmean(v.numpy())) for k, v in per_clip.items()}
    if references is not None:
        renders = animation_scores(references, stickers, prompts, motion_judge=motion_judge, judges=judges,
                                   clip_dir=clip_dir, references=references)
        means.update({f"renders/{k}": float(np.nanmean(v.numpy())) for k, v in renders.items()})
    means["animation/seconds_per_clip"] = seconds / len(index)
    means["animation/clips"] = len(index)
    return means, clips, per_clip


def build(spec):
    """A judge (or a data builder) from its `_target_` node; None stays None."""
    if spec is None:
        return None
    from hydra.utils import instantiate

    return instantiate(dict(spec), _convert_="all")


def animation_provenance(cfg) -> dict:
    """What scored an animation evaluation: the repository commit, and digests of the evaluated weights (pipeline,
    motion adapter, motion UNet), the judges (every file or folder their config names), the CLIP weights and the
    eval folder (stickers, prompts and reference clips)."""
    from style_tailoring.animation.sample import motion_weights
    from style_tailoring.provenance import digests, paths_in, repository_state

    weights = {"pipeline": cfg.pipeline, **motion_weights(cfg.pipeline, cfg.motion_adapter, cfg.unet)}  # those read
    return {**repository_state(),
            "weights": digests(weights),
            **digests({"judges": paths_in(cfg.judges), "motion_judge": paths_in(cfg.motion_judge),
                       "clip": cfg.clip, "eval_dir": cfg.eval_dir})}


def run_evaluation(cfg) -> dict:
    from style_tailoring.animation.sample import load_animation_pipeline, save_clip, to_frames
    from style_tailoring.config import ConfigError
    from style_tailoring.data.images import parse_background
    from style_tailoring.io import atomic_dir, write_json, write_jsonl
    from style_tailoring.provenance import portable_paths

    build(cfg.prepare)
    if not (Path(cfg.eval_dir) / "metadata.jsonl").is_file():
        raise ConfigError("eval_dir", f"no metadata.jsonl in {cfg.eval_dir}")
    pipe = load_animation_pipeline(cfg.pipeline, cfg.scheduler, cfg.motion_adapter, cfg.allow_pickle, unet=cfg.unet)
    stickers, prompts, references = read_eval_dir(cfg.eval_dir, parse_background(cfg.background), pipe.frames)
    means, clips, per_clip = evaluate_animation(
        pipe, stickers, prompts, seeds_per_prompt=cfg.seeds_per_prompt, steps=cfg.steps,
        guidance_scale=cfg.guidance_scale, seed=cfg.seed, motion_judge=build(cfg.motion_judge),
        judges=build(cfg.judges), clip_dir=cfg.clip, references=references)
    with atomic_dir(Path(cfg.out)) as tmp:
        rows = []
        for i, clip in enumerate(clips):
            name = f"{i:05d}.webp"
            save_clip(to_frames(clip.float() / 255), tmp / name)
            rows.append({"file_name": name, "prompt": prompts[i // cfg.seeds_per_prompt], "seed": cfg.seed + i,
                         **{k: (None if np.isnan(float(v[i])) else float(v[i])) for k, v in per_clip.items()}})
        write_jsonl(tmp / "scores.jsonl", rows)
        from omegaconf import OmegaConf

        from style_tailoring.runtime.jobs import RUN_COMPLETED

        write_json(tmp / "metrics.json", {"status": RUN_COMPLETED, "kind": "animation_evaluation", **means,
                                          "settings": portable_paths(OmegaConf.to_container(cfg)),
                                          "provenance": animation_provenance(cfg)})
    return means


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="animation_evaluate")
def main(cfg: DictConfig) -> None:
    from style_tailoring.config import AnimationEvalConfig, ConfigError, merge_into_schema

    try:
        means = run_evaluation(merge_into_schema(AnimationEvalConfig, cfg))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(means, indent=2))


if __name__ == "__main__":
    main()
