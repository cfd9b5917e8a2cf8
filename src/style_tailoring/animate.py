"""`python -m style_tailoring.animate`: a sticker and a prompt become an animated sticker.

    python -m style_tailoring.animate image=STICKER.png 'prompt="one red star, spinning"'      # the shipped world model
    python -m style_tailoring.animate pipeline=RUN/pipeline image=STICKER.png prompt="..." out=star.webp
    python -m style_tailoring.animate pipeline=/models/sd15 motion_adapter=RUN/motion_adapter image=... prompt=...
    python -m style_tailoring.animate pipeline=BASE unet=RUN/pipeline/unet image=... prompt=...   # a whole motion UNet

Writes `out` (an animated WebP, lossless; or a GIF when it ends in .gif), its frames beside it (`<out stem>_frames/`)
and `<out stem>.json` (the settings, the wall time). Defaults (conf/animate.yaml, conf/animation/sticker_world.yaml):
the world's base model with the shipped motion UNet (assets/sticker_world/animation_unet), 8 DPM-Solver steps.
Every setting is checked before any model is loaded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from style_tailoring.config import AnimateConfig, ConfigError, merge_into_schema


def check(cfg) -> None:
    import diffusers

    from style_tailoring.animation.sample import is_animation_pipeline, motion_weights
    from style_tailoring.data.images import check_image, parse_background

    if not Path(cfg.image).is_file():
        raise ConfigError("image", f"no file at {cfg.image}")
    problem = check_image(cfg.image)
    if problem:
        raise ConfigError("image", f"{cfg.image}: {problem}")
    if not cfg.prompt or not cfg.prompt.strip():
        raise ConfigError("prompt", "what the sticker does: 'prompt=\"one red star, spinning\"'")
    if not (Path(cfg.pipeline) / "model_index.json").is_file():
        raise ConfigError("pipeline", f"no diffusers pipeline at {cfg.pipeline}")
    # An exported animation pipeline brings its own UNet; on an image pipeline a motion adapter given comes before
    # the motion UNet (the world's default)
    chosen = motion_weights(cfg.pipeline, cfg.motion_adapter, cfg.unet)
    if "motion_adapter" in chosen:
        if not (Path(cfg.motion_adapter) / "animation.json").is_file():
            raise ConfigError("motion_adapter", f"no motion adapter (with animation.json) at {cfg.motion_adapter}")
    elif "unet" in chosen:
        if not (Path(cfg.unet) / "config.json").is_file():
            raise ConfigError("unet", f"no motion UNet (config.json) at {cfg.unet}")
        if json.loads((Path(cfg.unet) / "config.json").read_text()).get("_class_name") != "UNetMotionModel":
            raise ConfigError("unet", f"{cfg.unet} is not a motion UNet (UNetMotionModel): an image UNet animates "
                              "with a motion adapter (motion_adapter=RUN/motion_adapter)")
    elif not is_animation_pipeline(cfg.pipeline):
        raise ConfigError("motion_adapter", f"{cfg.pipeline} is an image pipeline: name a motion adapter "
                          "(RUN/motion_adapter), a motion UNet (unet=RUN/pipeline/unet) or an exported animation "
                          "pipeline")
    if cfg.steps < 1:
        raise ConfigError("steps", f"must be >= 1, got {cfg.steps}")
    if cfg.fps < 1:
        raise ConfigError("fps", f"must be >= 1, got {cfg.fps}")
    if cfg.scheduler is not None and (not hasattr(diffusers, cfg.scheduler) or not cfg.scheduler.endswith("Scheduler")):
        raise ConfigError("scheduler", f"{cfg.scheduler!r} is not a diffusers scheduler class")
    if Path(cfg.out).suffix.lower() not in (".webp", ".gif"):
        raise ConfigError("out", f"must end in .webp or .gif, got {cfg.out}")
    try:
        parse_background(cfg.background)
    except ValueError:
        raise ConfigError("background", f"{cfg.background!r} is not a colour PIL knows") from None


def run(cfg) -> dict:
    import numpy as np
    import torch

    from style_tailoring.animation.sample import (
        animate,
        load_animation_pipeline,
        motion_weights,
        save_clip,
        to_frames,
    )
    from style_tailoring.data.images import load_rgb, parse_background
    from style_tailoring.io import atomic_dir, write_json

    check(cfg)
    chosen = motion_weights(cfg.pipeline, cfg.motion_adapter, cfg.unet)
    adapter, unet = chosen.get("motion_adapter"), chosen.get("unet")
    pipe = load_animation_pipeline(cfg.pipeline, cfg.scheduler, cfg.motion_adapter, cfg.allow_pickle,
                                   unet=cfg.unet).to(cfg.device)
    size = pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    sticker = load_rgb(cfg.image, parse_background(cfg.background)).resize((size, size))
    pixels = torch.from_numpy(np.array(sticker)).permute(2, 0, 1)[None].float() / 127.5 - 1
    started = time.perf_counter()
    clip = animate(pipe, pixels, [cfg.prompt], frames=pipe.frames, steps=cfg.steps,
                   guidance_scale=cfg.guidance_scale, generator=torch.Generator().manual_seed(cfg.seed))[0]
    seconds = time.perf_counter() - started
    frames = to_frames(clip)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    save_clip(frames, tmp, cfg.fps)
    tmp.replace(out)
    with atomic_dir(out.with_name(f"{out.stem}_frames")) as folder:
        for k, frame in enumerate(frames):
            frame.save(folder / f"{k:02d}.png")
    result = {**OmegaConf.to_container(cfg), "motion_adapter": adapter, "unet": unet, "frames": len(frames),
              "seconds": round(seconds, 3), "conditioning": pipe.sticker_conditioning}
    write_json(out.with_suffix(".json"), result)
    return result


@hydra.main(version_base="1.3", config_path="../../conf", config_name="animate")
def main(cfg: DictConfig) -> None:
    try:
        result = run(merge_into_schema(AnimateConfig, cfg))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {result['out']} ({result['frames']} frames in {result['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
