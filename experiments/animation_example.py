"""The animated examples of docs/animation.md: stickers animated by the shipped world motion model and by the
previous default, beside the renders' own clips.

    python experiments/animation_example.py     # → experiments/results/figures_animation/{example,plain}.gif (seed i)

Rows: the conditioning stickers; the reference clips (each sticker moved as its prompt says); the previous default
(the weak-video motion adapter, assets/sticker_world/motion_adapter: the sticker on the middle frame, motion modules
only); the shipped default (assets/sticker_world/animation_unet: the sticker on every frame, the whole UNet). 8-frame
animations, 8 DPM-Solver steps, upscaled 3× with nearest neighbours. example.gif: the animated world's held-out
motion × content stickers; plain.gif: plain bordered stickers the renderer never drew (world/plain_stickers.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from style_tailoring.animation.evaluate import read_eval_dir
from style_tailoring.animation.sample import animate, load_animation_pipeline, to_frames
from style_tailoring.config import REPO_ROOT
from style_tailoring.data.images import parse_background
from style_tailoring.world.motion import build_animated
from style_tailoring.world.plain_stickers import build_plain_stickers

ASSETS = REPO_ROOT / "assets" / "sticker_world"
OUT = REPO_ROOT / "experiments" / "results" / "figures_animation"


def figure(eval_dir: Path, name: str, pipes: list, count: int = 6, scale: int = 3) -> Path:
    stickers, prompts, renders = read_eval_dir(eval_dir, parse_background("#dee0e6"))
    rows = [[to_frames(animate(pipe, stickers[i][None].float() / 127.5 - 1, [prompts[i]], steps=8,
                                generator=torch.Generator().manual_seed(i))[0]) for i in range(count)]
            for pipe in pipes]
    size, height = stickers.shape[-1], 2 + len(rows)
    frames = []
    for k in range(len(rows[0][0])):
        canvas = Image.new("RGB", (count * size, height * size), (255, 255, 255))
        for i in range(count):
            canvas.paste(Image.fromarray(stickers[i].permute(1, 2, 0).numpy()), (i * size, 0))
            canvas.paste(Image.fromarray(renders[i, k].permute(1, 2, 0).numpy()), (i * size, size))
            for r, clips in enumerate(rows):
                canvas.paste(clips[i][k], (i * size, (2 + r) * size))
        frames.append(canvas.resize((count * size * scale, height * size * scale), Image.NEAREST))
    out = OUT / f"{name}.gif"
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=125, loop=0)
    (out.parent / f"{name}_prompts.txt").write_text("\n".join(prompts[:count]) + "\n")
    return out


def main() -> list[Path]:
    data = REPO_ROOT / "data" / "sticker_world" / "animated"
    scheduler = "DPMSolverMultistepScheduler"
    pipes = [load_animation_pipeline(ASSETS / "base", scheduler, ASSETS / "motion_adapter"),
             load_animation_pipeline(ASSETS / "base", scheduler, unet=ASSETS / "animation_unet")]
    return [figure(build_animated(data) / "video_eval", "example", pipes),
            figure(build_plain_stickers(data / "plain") / "bordered", "plain", pipes)]


if __name__ == "__main__":
    print(*main(), sep="\n")
