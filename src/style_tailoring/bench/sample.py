"""`task=sample`: seconds per image of each sampler (plain, timestep_split, dci) on the same pipeline, prompts and
seeds, interleaved and repeated, as ratios to plain sampling; and DCI's cost in its early (integrating) steps alone.
Last lines: `timestep_split/plain: 1.003`, `dci/plain: 1.31`.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from style_tailoring.bench.common import bench_config, build_bench_model, sampling_seconds


def bench_sampling(args) -> dict:
    """plain vs timestep_split (a second UNet swapped in at t_switch 500) vs dci (t_end 700, and t_end 0 for the
    cost of an integrating step), on the same pipeline, prompts and seeds; medians over interleaved repeats."""
    from style_tailoring.models.components import make_pipeline
    from style_tailoring.sampling.samplers import DCISampler, PlainSampler, TimestepSplitSampler, planned_timesteps

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    cfg = bench_config(args, Path("unused"))
    comps = build_bench_model(cfg, args.arch)
    pipe = make_pipeline(comps).to(device)
    pipe.set_progress_bar_config(disable=True)
    prompts = [f"{n} red stars, sticker" for n in ("one", "two")] * (args.batch_size // 2)
    with tempfile.TemporaryDirectory() as tmp:
        comps.unet.save_pretrained(Path(tmp) / "late")  # the late model: same size, loaded once, swapped in
        samplers = {"plain": PlainSampler(), "timestep_split": TimestepSplitSampler(500, str(Path(tmp) / "late")),
                    "dci": DCISampler("sticker", t_end=700), "dci_every_step": DCISampler("sticker", t_end=0)}
        times = {name: [] for name in samplers}
        sampling_seconds(pipe, samplers["plain"], prompts, 2, 3.0, args.resolution)  # warm-up
        for _ in range(args.repeats):
            for name, sampler in samplers.items():
                times[name].append(sampling_seconds(pipe, sampler, prompts, args.sample_steps, 3.0,
                                                    args.resolution))
    per_image = {name: statistics.median(values) for name, values in times.items()}
    ratio = {name: per_image[name] / per_image["plain"] for name in per_image}
    early = sum(t > 700 for t in planned_timesteps(pipe, args.sample_steps))
    print(f"device: {device}, model: {args.arch}, {args.resolution} px, {len(prompts)} images per call, "
          f"{args.sample_steps} DDIM steps, guidance 3, {args.repeats} repeats")
    for name in per_image:
        print(f"{name:>16}: {per_image[name] * 1000:8.1f} ms/image  {ratio[name]:.3f}x plain")
    print(f"dci integrates in {early} of {args.sample_steps} steps (t > 700); an integrating step costs "
          f"{ratio['dci_every_step']:.2f}x a plain step")
    print(f"timestep_split/plain: {ratio['timestep_split']:.3f}")
    print(f"dci/plain: {ratio['dci']:.2f}")
    return {"seconds_per_image": per_image, "ratio": ratio, "dci_early_steps": early}


