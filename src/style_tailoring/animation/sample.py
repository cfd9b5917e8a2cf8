"""Sampling an animation: a sticker and a prompt → a clip, with an exported animation pipeline.

diffusers' `AnimateDiffPipeline` samples text-to-video; it has no input for a conditioning image joined to the
latents, so the loop is written here over the pipeline's own parts: `encode_prompt`, the scheduler (any diffusers
scheduler, e.g. DPM-Solver for few steps), the `UNetMotionModel` and `decode_latents`. Classifier-free guidance is
on the text; the sticker conditions both branches, as at training.
"""

from __future__ import annotations

import logging

import torch
from PIL import Image

from style_tailoring.models.motion import frame_embeddings, model_input

log = logging.getLogger(__name__)


def is_animation_pipeline(path) -> bool:
    """An exported animation pipeline (RUN/pipeline of a `model.motion.enabled` run: an AnimateDiffPipeline), as
    opposed to an image pipeline a motion adapter or a motion UNet goes on."""
    import json
    from pathlib import Path

    index = Path(path) / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name") == "AnimateDiffPipeline"


def motion_weights(path, motion_adapter=None, unet=None) -> dict:
    """What `load_animation_pipeline(path, ...)` reads beside `path`: {} when `path` is an exported animation
    pipeline (its own UNet holds its motion modules and conv_in: an adapter or a UNet named beside it is ignored,
    since mixing one run's conv_in and settings into another's motion modules is neither model); else
    {"motion_adapter": ...} when an adapter is given; else {"unet": ...} when a motion UNet is. The one precedence
    every animation command follows: the world's default is a motion UNet, so an adapter named on the command line
    comes before it."""
    if is_animation_pipeline(path):
        return {}
    if motion_adapter is not None:
        return {"motion_adapter": motion_adapter}
    if unet is not None:
        return {"unet": unet}
    return {}


def load_animation_pipeline(path, scheduler: str | None = None, motion_adapter=None, allow_pickle: bool = False,
                            unet=None):
    """An animation pipeline: an exported one (RUN/pipeline of a `model.motion.enabled` run), an image pipeline
    with a trained motion adapter (RUN/motion_adapter, `save_motion_adapter`), whose conv_in replaces the image
    UNet's whole, or an image pipeline with a whole motion UNet swapped in (`unet`: a `UNetMotionModel` folder, e.g.
    RUN/pipeline/unet of a `model.motion.train=all` run, or the world's shipped one; its `animation.json`, or the
    run's `style_tailoring.json` beside it, says how the sticker is given). `scheduler`: another diffusers
    scheduler class, its config carried over. Which of them is read: `motion_weights`. The pipeline's
    `sticker_conditioning` says how the sticker is given.
    Weights are safetensors only unless `allow_pickle` (the commands' allow_pickle=true)."""
    import json
    from pathlib import Path

    import diffusers
    from diffusers import AnimateDiffPipeline, MotionAdapter, UNetMotionModel

    from style_tailoring.models.safe_load import weights_kwargs

    weights = weights_kwargs(path, allow_pickle, key="pipeline", switch="allow_pickle=true")
    settings = {}
    chosen = motion_weights(path, motion_adapter, unet)
    if motion_adapter is not None and "motion_adapter" not in chosen:
        log.warning("%s is an exported animation pipeline: it animates with its own UNet, not the motion adapter %s",
                    path, motion_adapter)
    if "unet" in chosen:
        motion_unet = UNetMotionModel.from_pretrained(unet, **weights_kwargs(
            unet, allow_pickle, key="unet", switch="allow_pickle=true"))
        pipe = AnimateDiffPipeline.from_pretrained(path, unet=motion_unet, motion_adapter=None, **weights)
        own, run = Path(unet) / "animation.json", Path(unet).parent / "style_tailoring.json"
        settings = (json.loads(own.read_text()) if own.is_file() else
                    (json.loads(run.read_text()) if run.is_file() else {}).get("motion") or {})
    elif "motion_adapter" in chosen:
        adapter = MotionAdapter.from_pretrained(motion_adapter, **weights_kwargs(
            motion_adapter, allow_pickle, key="motion_adapter", switch="allow_pickle=true"))
        # from_unet2d adopts the adapter's conv_in module and overwrites its image channels with the image UNet's:
        # keep the trained weights to put back
        conv_in = {k: v.clone() for k, v in adapter.conv_in.state_dict().items()} if adapter.conv_in else None
        pipe = AnimateDiffPipeline.from_pretrained(path, motion_adapter=adapter, **weights)
        if conv_in is not None:
            pipe.unet.conv_in.load_state_dict(conv_in)
        settings = json.loads((Path(motion_adapter) / "animation.json").read_text())
    else:
        pipe = AnimateDiffPipeline.from_pretrained(path, motion_adapter=None, **weights)
        meta = Path(path) / "style_tailoring.json"
        settings = (json.loads(meta.read_text()) if meta.is_file() else {}).get("motion") or {}
    if scheduler:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.sticker_conditioning = settings.get("conditioning") or conditioning_mode(pipe.unet)
    pipe.frames = int(settings.get("frames") or 8)
    return pipe


def conditioning_mode(unet) -> str:
    """"none" when conv_in has no extra channels, else "middle" (the default; exports record theirs)."""
    return "none" if unet.config.in_channels == unet.config.out_channels else "middle"


@torch.no_grad()
def encode_stickers(pipe, stickers: torch.Tensor) -> torch.Tensor:
    """Stickers (B, 3, H, W) in [-1, 1] → their scaled latents (posterior mode: the sticker as it is)."""
    vae = pipe.vae
    latents = vae.encode(stickers.to(vae.dtype)).latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


@torch.no_grad()
def animate(pipe, stickers: torch.Tensor, prompts: list[str], *, frames: int = 8, steps: int = 8,
            guidance_scale: float = 3.0, generator: torch.Generator | None = None,
            conditioning: str | None = None, negative_prompt: str = "") -> torch.Tensor:
    """Clips (B, frames, 3, H, W) in [0, 1] of the stickers (B, 3, H, W) in [-1, 1] moving as the prompts say."""
    device = pipe.unet.device
    conditioning = conditioning or getattr(pipe, "sticker_conditioning", None) or conditioning_mode(pipe.unet)
    batch = len(prompts)
    guided = guidance_scale > 1
    positive, negative = pipe.encode_prompt(prompts, device, 1, guided, [negative_prompt] * batch)
    embeddings = torch.cat([negative, positive]) if guided else positive
    condition = encode_stickers(pipe, stickers.to(device))
    if guided:
        condition = torch.cat([condition, condition])
    _, channels, height, width = condition.shape
    latents = torch.randn((batch, channels, frames, height, width), generator=generator, device="cpu")
    latents = latents.to(device) * pipe.scheduler.init_noise_sigma
    pipe.scheduler.set_timesteps(steps, device=device)
    for t in pipe.scheduler.timesteps:
        noisy = torch.cat([latents, latents]) if guided else latents
        noisy = pipe.scheduler.scale_model_input(noisy, t)
        prediction = pipe.unet(model_input(noisy, condition, conditioning), t,
                               encoder_hidden_states=frame_embeddings(embeddings, frames)).sample
        if guided:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance_scale * (cond - uncond)
        latents = pipe.scheduler.step(prediction, t, latents).prev_sample
    video = pipe.decode_latents(latents)  # (B, 3, F, H, W) in [-1, 1]
    return ((video.permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1).cpu()


def to_frames(clip: torch.Tensor) -> list[Image.Image]:
    """One clip (frames, 3, H, W) in [0, 1] as PIL images."""
    return [Image.fromarray((frame.permute(1, 2, 0).numpy() * 255).round().astype("uint8")) for frame in clip]


def save_clip(frames: list[Image.Image], path, fps: int = 8) -> None:
    """A loop of frames as a lossless animated WebP (exact pixels), or a GIF when `path` ends in .gif."""
    extra = {} if str(path).lower().endswith(".gif") else {"lossless": True}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=1000 // fps, loop=0, **extra)
