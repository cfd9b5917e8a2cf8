"""`task=generate`: the HITL loop's generation, candidates/s of our batched generation + rating (one seeded
generator per candidate, a batch through the pipeline, the judges on the whole batch) against a one-prompt-at-a-time
`pipe(prompt)` loop rating each image as it comes, on the same model, prompts, seeds and steps, interleaved and
repeated; and the student base's sampling time against its teacher's. The world's pipeline, student, prompts and
judges come from the bench config. Last lines: `generate+rate speedup vs one at a time: 9.1x`,
`student/teacher sampling time: 0.62`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from style_tailoring.bench.common import _sync, sampling_seconds


def bench_generate(args) -> dict:
    from style_tailoring.config import build_target as build
    from style_tailoring.curation.raters import JudgeRater
    from style_tailoring.evaluation.standalone import load_pipeline
    from style_tailoring.hitl.candidates import candidate_jobs
    from style_tailoring.sampling.generate import generate, load_prompts, set_scheduler
    from style_tailoring.sampling.samplers import PlainSampler

    build(args.prepare)  # the training prompts are the data set's (the world writes them on first use)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipes = {"teacher": load_pipeline(str(args.pipeline))}
    if args.student and (Path(args.student) / "model_index.json").is_file():
        pipes["student"] = load_pipeline(str(args.student))
    for pipe in pipes.values():
        set_scheduler(pipe, "DDIMScheduler")
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
    pipe = pipes["teacher"]
    rater = JudgeRater(build(args.judges))
    per_prompt = 4
    prompts = load_prompts(args.prompts)[: max(1, args.batch_size // per_prompt)]
    jobs = candidate_jobs(prompts, per_prompt, 0, 1)
    steps, guidance = args.sample_steps, 3.0

    def ours():
        images = generate(pipe, jobs, suffix="", resolution=args.resolution, num_inference_steps=steps,
                          guidance_scale=guidance, batch_size=len(jobs))
        rater.rate(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), [j.prompt for j in jobs])

    def one_at_a_time():  # what a first script does: one pipe(prompt) per candidate, rated as it comes
        for job in jobs:
            out = pipe(job.prompt, generator=torch.Generator(device).manual_seed(job.seed), num_inference_steps=steps,
                       guidance_scale=guidance, height=args.resolution, width=args.resolution, output_type="np")
            image = torch.from_numpy((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)).permute(0, 3, 1, 2)
            rater.rate(image, [job.prompt])

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start

    ours()  # warm-up
    times = {"ours": [], "one_at_a_time": [], **{f"sample/{n}": [] for n in pipes}}
    for _ in range(args.repeats):
        times["ours"].append(timed(ours))
        times["one_at_a_time"].append(timed(one_at_a_time))
        for name, p in pipes.items():
            times[f"sample/{name}"].append(sampling_seconds(p, PlainSampler(), [j.prompt for j in jobs], steps,
                                                            guidance, args.resolution))
    median = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: len(jobs) / median[k] for k in ("ours", "one_at_a_time")}
    speedup = rate["ours"] / rate["one_at_a_time"]
    print(f"device: {device}, {Path(args.pipeline).name}, {args.resolution} px, {len(jobs)} candidates "
          f"({len(prompts)} prompts x {per_prompt} seeds), {steps} DDIM steps, guidance {guidance:g}, "
          f"{args.repeats} repeats")
    print(f"  batched generate + rate: {rate['ours']:8.1f} candidates/s")
    print(f"  one pipe(prompt) a time: {rate['one_at_a_time']:8.1f} candidates/s")
    result = {"candidates_per_s": rate, "speedup": speedup}
    for name in pipes:
        params = sum(p.numel() for p in pipes[name].unet.parameters())
        print(f"  {name:>7} sampling: {median[f'sample/{name}'] * 1000:7.2f} ms/image "
              f"(UNet {params / 1e6:.2f} M params)")
    print(f"generate+rate speedup vs one at a time: {speedup:.1f}x")
    if "student" in pipes:
        result["student_over_teacher"] = median["sample/student"] / median["sample/teacher"]
        print(f"student/teacher sampling time: {result['student_over_teacher']:.2f}")
    return result


