"""`task=animate`: one 8-frame animation of the world's motion model at `sample_steps` DPM-Solver steps against 25
DDIM steps (interleaved, repeated), with each schedule's motion accuracy and condition fidelity on the animated
world's eval stickers (`batch_size` of them). The model, stickers and motion judge come from the bench config. Last
lines: `seconds per animation (8 DPM-Solver steps): <s>`, `dpm/ddim25 time: <ratio>`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch


def bench_animate(args) -> dict:
    """Seconds per 8-frame animation of the motion model (`pipeline` + `motion_adapter`: the world's by default)
    at `sample_steps` DPM-Solver steps against the same model at 25 DDIM steps, one sticker at a time as the
    animate command runs, interleaved and repeated; and what the faster schedule costs in motion accuracy and
    condition fidelity on the animated world's eval stickers (`batch_size` of them, one seed each)."""
    from style_tailoring.animation.evaluate import evaluate_animation, read_eval_dir
    from style_tailoring.animation.sample import animate, load_animation_pipeline
    from style_tailoring.config import build_target as build
    from style_tailoring.data.images import parse_background

    build(args.animation_prepare)
    stickers, prompts, _ = read_eval_dir(args.eval_dir, parse_background(args.background))
    stickers, prompts = stickers[: args.batch_size], prompts[: args.batch_size]
    schedules = {"dpm": ("DPMSolverMultistepScheduler", args.sample_steps), "ddim25": ("DDIMScheduler", 25)}
    pipes = {name: load_animation_pipeline(args.pipeline, scheduler, args.motion_adapter, unet=args.unet)
             for name, (scheduler, _) in schedules.items()}
    sticker = stickers[0][None].float() / 127.5 - 1

    def timed(name) -> float:
        start = time.perf_counter()
        animate(pipes[name], sticker, [prompts[0]], frames=pipes[name].frames, steps=schedules[name][1],
                generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - start

    timed("dpm")  # warm-up
    times = {name: [] for name in schedules}
    for _ in range(args.repeats * 3):
        for name in schedules:
            times[name].append(timed(name))
    seconds = {name: statistics.median(values) for name, values in times.items()}
    judge = build(args.motion_judge)
    quality = {name: evaluate_animation(pipes[name], stickers, prompts, seeds_per_prompt=1, steps=schedules[name][1],
                                        guidance_scale=3.0, seed=0, motion_judge=judge)[0] for name in schedules}
    motion = "motion adapter" if args.motion_adapter or not args.unet else f"motion UNet {Path(args.unet).name}"
    print(f"device: cpu, {torch.get_num_threads()} threads, {Path(args.pipeline).name} + {motion}, 8 frames, "
          f"guidance 3, {len(times['dpm'])} repeats")
    for name, (scheduler, steps) in schedules.items():
        q = quality[name]
        print(f"{scheduler:>28} {steps:3d} steps: {seconds[name]:6.3f} s/animation  motion accuracy "
              f"{q['animation/motion_accuracy']:.3f}  condition fidelity {q['animation/condition_fidelity']:.2f} dB")
    ratio = seconds["dpm"] / seconds["ddim25"]
    print(f"seconds per animation ({args.sample_steps} DPM-Solver steps): {seconds['dpm']:.3f}")
    print(f"dpm/ddim25 time: {ratio:.3f}")
    return {"seconds": seconds, "ratio": ratio, "quality": quality, "eval_stickers": len(prompts)}


