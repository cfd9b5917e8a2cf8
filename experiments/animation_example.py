"""The animated example of docs/animation.md: eval stickers of the animated world animated by the shipped world
motion model.

    python experiments/animation_example.py     # → experiments/results/figures_animation/example.gif (seed 0)

Top row: the conditioning stickers; middle: the renders' own clips of each sticker and motion (the reference);
bottom: the model's 8-frame animations for the eval prompts (held-out motion × content), 8 DPM-Solver steps;
upscaled 4× with nearest neighbours.
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

ASSETS = REPO_ROOT / "assets" / "sticker_world"


def main(count: int = 6, scale: int = 4) -> Path:
    eval_dir = build_animated(REPO_ROOT / "data" / "sticker_world" / "animated") / "video_eval"
    stickers, prompts, renders = read_eval_dir(eval_dir, parse_background("#dee0e6"))
    pipe = load_animation_pipeline(ASSETS / "base", "DPMSolverMultistepScheduler", ASSETS / "motion_adapter")
    clips = [to_frames(animate(pipe, stickers[i][None].float() / 127.5 - 1, [prompts[i]], steps=8,
                               generator=torch.Generator().manual_seed(i))[0]) for i in range(count)]
    size = stickers.shape[-1]
    frames = []
    for k in range(len(clips[0])):
        canvas = Image.new("RGB", (count * size, 3 * size), (255, 255, 255))
        for i, clip in enumerate(clips):
            canvas.paste(Image.fromarray(stickers[i].permute(1, 2, 0).numpy()), (i * size, 0))
            canvas.paste(Image.fromarray(renders[i, k].permute(1, 2, 0).numpy()), (i * size, size))
            canvas.paste(clip[k], (i * size, 2 * size))
        frames.append(canvas.resize((count * size * scale, 3 * size * scale), Image.NEAREST))
    out = REPO_ROOT / "experiments" / "results" / "figures_animation" / "example.gif"
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=125, loop=0)
    (out.parent / "example_prompts.txt").write_text("\n".join(prompts[:count]) + "\n")
    return out


if __name__ == "__main__":
    print(main())
