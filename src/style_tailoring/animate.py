"""`python -m style_tailoring.animate`: a sticker and a prompt become an animated sticker.

    python -m style_tailoring.animate image=STICKER.png prompt="one red star, spinning"      # the shipped world model
    python -m style_tailoring.animate pipeline=RUN/pipeline image=STICKER.png prompt="..." out=star.webp
    python -m style_tailoring.animate pipeline=/models/sd15 motion_adapter=RUN/motion_adapter image=... prompt=...

Writes `out` (an animated WebP, lossless; or a GIF when it ends in .gif), its frames beside it (`<out stem>_frames/`)
and `<out stem>.json` (the settings, the wall time). Defaults: the world's base model with the shipped motion adapter
(assets/sticker_world/motion_adapter), 8 DPM-Solver steps. Every setting is checked before any model is loaded.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from style_tailoring.animation.sample import WORLD_ASSETS, SamplingSettings
from style_tailoring.config import ConfigError


@dataclass
class AnimateConfig(SamplingSettings):
    image: Optional[str] = None
    prompt: Optional[str] = None
    motion_adapter: Optional[str] = str(WORLD_ASSETS / "motion_adapter")
    out: str = "animation.webp"
    scheduler: str = "DPMSolverMultistepScheduler"
    fps: int = 8
    device: str = "cpu"


def parse(argv: list[str]) -> AnimateConfig:
    schema = OmegaConf.structured(AnimateConfig)
    try:
        cfg = OmegaConf.merge(schema, OmegaConf.from_dotlist(argv))
    except Exception as err:  # noqa: BLE001 - unknown key or wrong type: say which, no traceback
        raise ConfigError(getattr(err, "full_key", None) or "argv", str(err).splitlines()[0]) from None
    return OmegaConf.to_object(cfg)


def check(cfg: AnimateConfig) -> None:
    import diffusers

    from style_tailoring.data.images import check_image, parse_background

    if not cfg.image:
        raise ConfigError("image", "the sticker to animate: image=PATH.png")
    if not Path(cfg.image).is_file():
        raise ConfigError("image", f"no file at {cfg.image}")
    problem = check_image(cfg.image)
    if problem:
        raise ConfigError("image", f"{cfg.image}: {problem}")
    if not cfg.prompt or not cfg.prompt.strip():
        raise ConfigError("prompt", 'what the sticker does: prompt="one red star, spinning"')
    if not (Path(cfg.pipeline) / "model_index.json").is_file():
        raise ConfigError("pipeline", f"no diffusers pipeline at {cfg.pipeline}")
    index = json.loads((Path(cfg.pipeline) / "model_index.json").read_text())
    animated = index.get("_class_name") == "AnimateDiffPipeline"
    if not animated and not cfg.motion_adapter:
        raise ConfigError("motion_adapter", f"{cfg.pipeline} is an image pipeline: name a motion adapter "
                          "(RUN/motion_adapter) or an exported animation pipeline")
    if animated:
        cfg.motion_adapter = None
    elif not (Path(cfg.motion_adapter) / "animation.json").is_file():
        raise ConfigError("motion_adapter", f"no motion adapter (with animation.json) at {cfg.motion_adapter}")
    if cfg.steps < 1:
        raise ConfigError("steps", f"must be >= 1, got {cfg.steps}")
    if cfg.fps < 1:
        raise ConfigError("fps", f"must be >= 1, got {cfg.fps}")
    if not hasattr(diffusers, cfg.scheduler) or not cfg.scheduler.endswith("Scheduler"):
        raise ConfigError("scheduler", f"{cfg.scheduler!r} is not a diffusers scheduler class")
    if Path(cfg.out).suffix.lower() not in (".webp", ".gif"):
        raise ConfigError("out", f"must end in .webp or .gif, got {cfg.out}")
    try:
        parse_background(cfg.background)
    except ValueError:
        raise ConfigError("background", f"{cfg.background!r} is not a colour PIL knows") from None


def run(cfg: AnimateConfig) -> dict:
    import numpy as np
    import torch

    from style_tailoring.animation.sample import animate, load_animation_pipeline, to_frames
    from style_tailoring.data.images import load_rgb, parse_background
    from style_tailoring.io import atomic_dir, write_json

    check(cfg)
    pipe = load_animation_pipeline(cfg.pipeline, cfg.scheduler, cfg.motion_adapter, cfg.allow_pickle).to(cfg.device)
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
    extra = {"lossless": True} if out.suffix.lower() == ".webp" else {}
    frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=1000 // cfg.fps, loop=0, **extra)
    tmp.replace(out)
    with atomic_dir(out.with_name(f"{out.stem}_frames")) as folder:
        for k, frame in enumerate(frames):
            frame.save(folder / f"{k:02d}.png")
    result = {**OmegaConf.to_container(OmegaConf.structured(cfg)), "frames": len(frames),
              "seconds": round(seconds, 3), "conditioning": pipe.sticker_conditioning}
    write_json(out.with_suffix(".json"), result)
    return result


def main(argv=None) -> None:
    try:
        cfg = parse(sys.argv[1:] if argv is None else argv)
        result = run(cfg)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {result['out']} ({result['frames']} frames in {result['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
