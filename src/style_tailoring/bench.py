"""Training-speed benchmark: `python -m style_tailoring.bench [--steps N] [--batch-size B] [--model tiny|sd15]`.

In one process, on the same model, data and batch size, it times
  (a) a reference loop written the way diffusers' train_text_to_image.py does it: VAE-encode the images and
      run the text encoder every step, fp32 (the example's default), plain PyTorch, images decoded in the loop;
  (b) this repository's training step through Lightning, from the latent/text cache, with the `base` plan
      (bf16-mixed on a GPU, fp32 on a CPU, where bf16 kernels are slower at these sizes);
  (c) the same with the `style_tailoring` plan, to show that per-sample routing costs nothing.
Runs are interleaved and repeated and the median step time is kept, so machine noise hits all of them alike.
The last two lines are for scripts: `speedup vs reference: 1.87x` and `style_tailoring/base step time: 1.012`.

`--task generate` times the HITL loop's generation: candidates/s of our batched generation + rating (one seeded
generator per candidate, a batch through the pipeline, the judges on the whole batch) against a one-prompt-at-a-time
`pipe(prompt)` loop rating each image as it comes, on the same model, prompts, seeds and steps, interleaved and
repeated; and the student base's sampling time against its teacher's (the base). Last lines:
`generate+rate speedup vs one at a time: 9.1x`, `student/teacher sampling time: 0.62`.

`--task sample` times sampling instead: seconds per image of each sampler (plain, timestep_split, dci) on the same
pipeline, prompts and seeds, interleaved and repeated, as ratios to plain sampling; and DCI's cost in its early
(integrating) steps alone. Last lines: `timestep_split/plain: 1.003`, `dci/plain: 1.31`.

`--task animate --sample-steps 8` times one 8-frame animation of the shipped world motion model at 8 DPM-Solver
steps against 25 DDIM steps (interleaved, repeated), with each schedule's motion accuracy and condition fidelity on
the animated world's eval stickers (`--batch-size` of them). Last lines: `seconds per animation (8 DPM-Solver
steps): <s>`, `dpm/ddim25 time: <ratio>` (measured values in docs/animation.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from omegaconf import OmegaConf
from PIL import Image

from style_tailoring.config import REPO_ROOT, RunConfig
from style_tailoring.data.datamodule import RoutedDataModule
from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.models.components import build_components, build_tiny, encode_prompts, freeze, training_scheduler
from style_tailoring.training.module import DiffusionFinetune
from style_tailoring.training.strategies import build_plan

# --model world: the default run's model, loaded like any pretrained pipeline (conf/model/sticker_world_base.yaml).
WORLD_PIPELINE = REPO_ROOT / "assets" / "sticker_world" / "base"


def write_bench_data(root: Path, n: int, resolution: int) -> Path:
    """Random images with short captions: speed does not depend on what the pixels show."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"a sticker of thing number {i % 17}"}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def bench_config(args, data_root: Path):
    cfg = OmegaConf.structured(RunConfig)
    cfg.model.resolution = args.resolution
    if args.model == "world":  # the Sticker World base model (the default run's model)
        cfg.model.pretrained = str(WORLD_PIPELINE)
    if args.model == "sd15":  # the text encoder's size; UNet and VAE are replaced in build_bench_model
        cfg.model.tiny = OmegaConf.merge(cfg.model.tiny, dict(text_hidden_size=768, text_layers=12,
                                                              vae_channels=[128, 256, 512, 512]))
    cfg.data.domain_dir = cfg.data.alignment_dir = cfg.data.style_dir = str(data_root)
    cfg.data.batch_size = args.batch_size
    cfg.trainer = {"max_steps": args.steps}
    cfg.strategy.t_split = 500
    return cfg


def build_bench_model(cfg, model: str):
    """The benchmark's components. sd15: Stable Diffusion 1.5's UNet and VAE configs (diffusers' UNet2DConditionModel
    defaults are SD 1.x's; 860M UNet parameters), a CLIP-L-sized text encoder, random weights: speed does not depend
    on the weights, and none are downloaded."""
    comps = build_components(cfg.model) if model == "world" else build_tiny(cfg.model)
    if model == "sd15":
        comps.unet = UNet2DConditionModel(sample_size=cfg.model.resolution // 8, cross_attention_dim=768)
        comps.vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                  down_block_types=("DownEncoderBlock2D",) * 4,
                                  up_block_types=("UpDecoderBlock2D",) * 4, sample_size=cfg.model.resolution,
                                  scaling_factor=0.18215)
    return comps


def reference_step_times(cfg, comps, device, steps: int, precision) -> tuple[list[float], list[float]]:
    """diffusers train_text_to_image.py, one step: load the batch, encode images and text, noise, predict, MSE, AdamW.

    Returns the wall time of each whole step (batch loading included, as in samples/s) and of its part that
    caching removes (loading and decoding the images, VAE and text encoder).
    """
    unet, vae, text_encoder = comps.unet.to(device), comps.vae.to(device), comps.text_encoder.to(device)
    freeze(vae, text_encoder)
    unet.train()
    scheduler = training_scheduler(comps, None)
    data = ImageCaptionFolder(cfg.data.style_dir, cfg.model.resolution)
    # num_workers=0 is the example's default (--dataloader_num_workers)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    times, encode_times, batches = [], [], iter(())
    for _ in range(steps):
        start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:  # a new epoch; its loader start-up is part of the reference's cost too
            batches = iter(loader)
            batch = next(batches)
        with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
            with torch.no_grad():
                latents = vae.encode(batch["pixel_values"].to(device)).latent_dist.sample()
                latents = latents * vae.config.scaling_factor
                ehs = encode_prompts(comps, batch["text"], device, cfg.model.resolution)["encoder_hidden_states"]
            _sync(device)
            encoded = time.perf_counter()
            noise = torch.randn_like(latents)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
            pred = unet(scheduler.add_noise(latents, noise, t), t, ehs).sample
            loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
        encode_times.append(encoded - start)
    return times, encode_times


class StepTimer(L.Callback):
    """Wall time from one step's end to the next: the dataloader fetch and Lightning's hooks are included."""

    def __init__(self):
        self.times, self._last = [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._last is None:  # the first step: from its own start (its fetch is in the loader's start-up)
            _sync(pl_module.device)
            self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _sync(pl_module.device)
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now


def ours_step_times(cfg, comps, strategy: str, steps: int, accelerator: str, precision: str, cache_dir,
                    callbacks=()) -> list[float]:
    cfg = cfg.copy()
    cfg.strategy.name = strategy
    cfg.trainer = {"max_steps": steps}
    plan = build_plan(cfg, comps.scheduler.config.num_train_timesteps)
    datamodule = RoutedDataModule(cfg.data, plan, cfg.model.resolution, cfg.seed, cache_dir)
    module = DiffusionFinetune(comps, plan, cfg, cached_latents=True, cached_text=True)
    timer = StepTimer()
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_steps=steps, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, callbacks=[timer, *callbacks])
    trainer.fit(module, datamodule=datamodule)
    return timer.times


def data_path_seconds(cfg, comps, cache_dir, batch_size: int = 256, batches: int = 20) -> tuple[float, float]:
    """Median seconds per batch of `batch_size` (i) to draw the routes, items and timesteps and (ii) to assemble the
    whole batch from the latent/text cache: what the training loop waits for with data.num_workers=0."""
    from style_tailoring.data.cache import build_cache
    from style_tailoring.data.routed import RoutedStream

    cfg = cfg.copy()
    cfg.strategy.name = "style_tailoring"
    plan = build_plan(cfg, comps.scheduler.config.num_train_timesteps)
    datamodule = RoutedDataModule(cfg.data, plan, cfg.model.resolution, cfg.seed, cache_dir)
    sources = {name: build_cache(source, comps, cache_dir, device="cpu", with_text=True)
               for name, source in datamodule.load_sources().items()}
    stream = RoutedStream(sources, plan, batch_size, cfg.seed)
    draw, whole = [], []
    for micro in range(batches):
        start = time.perf_counter()
        stream.draw(stream.first_index(micro), batch_size, 0)
        drawn = time.perf_counter()
        stream.batch(micro)
        whole.append(time.perf_counter() - drawn)
        draw.append(drawn - start)
    return statistics.median(draw), statistics.median(whole)


class StepProfiler(L.Callback):
    """torch.profiler over `active` steady training steps (after `skip`), for the top costs of our step."""

    def __init__(self, skip: int = 3, active: int = 3):
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.profile = profile(activities=activities, schedule=schedule(wait=skip, warmup=1, active=active))

    def on_train_start(self, trainer, pl_module):
        self.profile.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.profile.step()

    def on_train_end(self, trainer, pl_module):
        self.profile.stop()

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """(op name, share of the profiled time) of the n ops with the most self time (device time on a GPU)."""
        key = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        # aten ops only: a record_function range (e.g. Lightning's optimizer step, which runs the whole closure)
        # would count the Python time of everything inside it as its own; kernels are counted by the op launching them
        events = [e for e in self.profile.key_averages() if e.key.startswith("aten::")]
        total = sum(getattr(e, key) for e in events) or 1
        ranked = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
        return [(e.key, getattr(e, key) / total) for e in ranked]


def unet_step_flops(comps, cfg, device, dtype) -> int:
    """FLOPs of one UNet forward + backward on a training batch (torch's FLOP counter: matmuls, convs, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = comps.unet.to(device)
    factor = 2 ** (len(comps.vae.config.block_out_channels) - 1)
    size = cfg.model.resolution // factor
    latents = torch.randn(cfg.data.batch_size, unet.config.in_channels, size, size, device=device)
    prompts = ["a sticker"] * cfg.data.batch_size
    cond = encode_prompts(comps, prompts, device, cfg.model.resolution)["encoder_hidden_states"]
    t = torch.randint(0, 1000, (cfg.data.batch_size,), device=device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = unet(latents, t, cond).sample.float().square().mean()
        loss.backward()
    unet.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched against the device name in order.
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0))


def bf16_peak_tflops(device_name: str):
    return next((peak for name, peak in BF16_PEAK_TFLOPS if name in device_name), None)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the CPU peak is the process's since its start


def peak_memory_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steady(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:])


def sampling_seconds(pipe, sampler, prompts: list[str], steps: int, guidance: float, resolution: int) -> float:
    """Wall seconds per image of one batch of `prompts` through `sampler` (prepared and released around it)."""
    from style_tailoring.sampling.generate import generate, make_jobs

    jobs = make_jobs(prompts, 1)
    sampler.prepare(pipe)
    try:
        start = time.perf_counter()
        generate(pipe, jobs, suffix="", resolution=resolution, num_inference_steps=steps, guidance_scale=guidance,
                 batch_size=len(jobs), sampler=sampler)
        _sync(pipe.device)
        return (time.perf_counter() - start) / len(jobs)
    finally:
        sampler.release(pipe)


def bench_sampling(args) -> dict:
    """plain vs timestep_split (a second UNet swapped in at t_switch 500) vs dci (t_end 700, and t_end 0 for the
    cost of an integrating step), on the same pipeline, prompts and seeds; medians over interleaved repeats."""
    from style_tailoring.models.components import make_pipeline
    from style_tailoring.sampling.samplers import DCISampler, PlainSampler, TimestepSplitSampler, planned_timesteps

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    cfg = bench_config(args, Path("unused"))
    comps = build_bench_model(cfg, args.model)
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
    print(f"device: {device}, model: {args.model}, {args.resolution} px, {len(prompts)} images per call, "
          f"{args.sample_steps} DDIM steps, guidance 3, {args.repeats} repeats")
    for name in per_image:
        print(f"{name:>16}: {per_image[name] * 1000:8.1f} ms/image  {ratio[name]:.3f}x plain")
    print(f"dci integrates in {early} of {args.sample_steps} steps (t > 700); an integrating step costs "
          f"{ratio['dci_every_step']:.2f}x a plain step")
    print(f"timestep_split/plain: {ratio['timestep_split']:.3f}")
    print(f"dci/plain: {ratio['dci']:.2f}")
    return {"seconds_per_image": per_image, "ratio": ratio, "dci_early_steps": early}


def bench_generate(args) -> dict:
    from style_tailoring.curation.raters import JudgeRater
    from style_tailoring.evaluation.standalone import load_pipeline
    from style_tailoring.hitl.candidates import candidate_jobs
    from style_tailoring.sampling.generate import generate, set_scheduler
    from style_tailoring.sampling.samplers import PlainSampler
    from style_tailoring.world.datasets import contents_for
    from style_tailoring.world.grammar import caption
    from style_tailoring.world.judges import load_judges

    if args.model != "world":
        raise SystemExit("--task generate runs on the Sticker World (its judges rate the candidates): --model world")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assets = REPO_ROOT / "assets" / "sticker_world"
    pipes = {"teacher": load_pipeline(str(WORLD_PIPELINE))}
    if (assets / "student" / "model_index.json").is_file():
        pipes["student"] = load_pipeline(str(assets / "student"))
    for pipe in pipes.values():
        set_scheduler(pipe, "DDIMScheduler")
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
    pipe = pipes["teacher"]
    rater = JudgeRater(load_judges(assets / "judges"))
    per_prompt = 4
    prompts = [caption(c) for c in contents_for("train")][: max(1, args.batch_size // per_prompt)]
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
    print(f"device: {device}, world base, {args.resolution} px, {len(jobs)} candidates ({len(prompts)} prompts x "
          f"{per_prompt} seeds), {steps} DDIM steps, guidance {guidance:g}, {args.repeats} repeats")
    print(f"  batched generate + rate: {rate['ours']:8.1f} candidates/s")
    print(f"  one pipe(prompt) a time: {rate['one_at_a_time']:8.1f} candidates/s")
    result = {"candidates_per_s": rate, "speedup": speedup}
    for name in pipes:
        params = sum(p.numel() for p in pipes[name].unet.parameters())
        print(f"  {name:>7} sampling: {median[f'sample/{name}'] * 1000:7.2f} ms/image (UNet {params / 1e6:.2f} M params)")
    print(f"generate+rate speedup vs one at a time: {speedup:.1f}x")
    if "student" in pipes:
        result["student_over_teacher"] = median["sample/student"] / median["sample/teacher"]
        print(f"student/teacher sampling time: {result['student_over_teacher']:.2f}")
    return result


def bench_animate(args) -> dict:
    """Seconds per 8-frame animation of the shipped world motion model (base + assets/sticker_world/motion_adapter)
    at `--sample-steps` DPM-Solver steps against the same model at 25 DDIM steps, one sticker at a time as the
    animate command runs, interleaved and repeated; and what the faster schedule costs in motion accuracy and
    condition fidelity on the animated world's eval stickers (`--batch-size` of them, one seed each)."""
    from style_tailoring.animation.evaluate import evaluate_animation, read_eval_dir
    from style_tailoring.animation.sample import animate, load_animation_pipeline
    from style_tailoring.data.images import parse_background
    from style_tailoring.world.motion import build_animated, load_motion_judge

    assets = REPO_ROOT / "assets" / "sticker_world"
    if args.model != "world" or not (assets / "motion_adapter" / "animation.json").is_file():
        raise SystemExit("--task animate runs the shipped world motion model: --model world, and "
                         "assets/sticker_world/motion_adapter (python -m style_tailoring.world build --only motion)")
    eval_dir = build_animated(REPO_ROOT / "data" / "sticker_world" / "animated") / "video_eval"
    stickers, prompts = read_eval_dir(eval_dir, parse_background("#dee0e6"))
    stickers, prompts = stickers[: args.batch_size], prompts[: args.batch_size]
    schedules = {"dpm": ("DPMSolverMultistepScheduler", args.sample_steps), "ddim25": ("DDIMScheduler", 25)}
    pipes = {name: load_animation_pipeline(WORLD_PIPELINE, scheduler, assets / "motion_adapter")
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
    judge = load_motion_judge(assets / "judges_motion")
    quality = {name: evaluate_animation(pipes[name], stickers, prompts, seeds_per_prompt=1, steps=schedules[name][1],
                                        guidance_scale=3.0, seed=0, motion_judge=judge)[0] for name in schedules}
    print(f"device: cpu, {torch.get_num_threads()} threads, world base + motion adapter, 8 frames at 32 px, "
          f"guidance 3, {len(times['dpm'])} repeats")
    for name, (scheduler, steps) in schedules.items():
        q = quality[name]
        print(f"{scheduler:>28} {steps:3d} steps: {seconds[name]:6.3f} s/animation  motion accuracy "
              f"{q['animation/motion_accuracy']:.3f}  condition fidelity {q['animation/condition_fidelity']:.2f} dB")
    ratio = seconds["dpm"] / seconds["ddim25"]
    print(f"seconds per animation ({args.sample_steps} DPM-Solver steps): {seconds['dpm']:.3f}")
    print(f"dpm/ddim25 time: {ratio:.3f}")
    return {"seconds": seconds, "ratio": ratio, "quality": quality, "eval_stickers": len(prompts)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["train", "sample", "generate", "animate"], default="train")
    parser.add_argument("--sample-steps", type=int, default=25, help="--task sample/generate: denoising steps")
    parser.add_argument("--model", choices=["world", "tiny", "sd15"], default="world")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="default 32; 4 for sd15 (fp32 reference)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense peak for our run's precision: bf16 on a GPU (for cards not in "
                             "the built-in table), fp32 on a CPU (cores x clock x FLOP/cycle)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.model == "sd15" and not cuda:
        # fp32 weights, gradients and AdamW state of the 860M UNet alone are ~14 GB, before activations and the
        # reference's VAE; a 24 GB CPU machine runs out of memory even at 64 px, batch 1. Fail before any work.
        parser.error("--model sd15 needs a CUDA GPU (the 860M-parameter UNet's fp32 training state does not fit a "
                     "CPU run); on a CPU use --model world or --model tiny")
    args.resolution = args.resolution or (512 if args.model == "sd15" else 32)
    args.batch_size = args.batch_size or (4 if args.model == "sd15" else 32)
    if args.task == "sample":
        return bench_sampling(args)
    if args.task == "generate":
        return bench_generate(args)
    if args.task == "animate":
        return bench_animate(args)
    device = torch.device("cuda" if cuda else "cpu")
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    accelerator = "gpu" if cuda else "cpu"
    precision, autocast = ("bf16-mixed", torch.bfloat16) if cuda else ("32-true", torch.float32)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_config(args, write_bench_data(Path(tmp) / "data", args.images, args.resolution))
        cache = Path(tmp) / "cache"
        comps = build_bench_model(cfg, args.model)
        results = {"reference": [], "base": [], "style_tailoring": []}
        memory = dict.fromkeys(results, 0.0)
        encode_share = []
        for _ in range(args.repeats):  # interleaved, so drift and noise hit every variant alike
            for name in results:
                reset_peak_memory(device)
                if name == "reference":
                    # fp32, as the issue and the example's default (--mixed_precision no) have it
                    times, encode_times = reference_step_times(cfg, comps, device, args.steps, torch.float32)
                    encode_share.append(sum(encode_times[args.warmup:]) / sum(times[args.warmup:]))
                else:
                    times = ours_step_times(cfg, comps, name, args.steps, accelerator, precision, cache)
                results[name].append(steady(times, args.warmup))
                memory[name] = max(memory[name], peak_memory_mb(device))
        profiler = StepProfiler()
        ours_step_times(cfg, comps, "style_tailoring", 8, accelerator, precision, cache, callbacks=[profiler])
        flops = unet_step_flops(comps, cfg, device, autocast)
        draw_s, batch_s = data_path_seconds(cfg, comps, cache)
    step = {name: statistics.median(values) for name, values in results.items()}
    rate = {name: args.batch_size / seconds for name, seconds in step.items()}
    print(f"device: {device} ({device_name}), model: {args.model}, {args.resolution} px, batch {args.batch_size}, "
          f"{args.steps} steps x {args.repeats} repeats, ours {precision}, reference fp32")
    unit = "MB GPU allocated" if cuda else "MB peak RSS"
    for name in results:
        print(f"{name:>16}: {step[name] * 1000:8.1f} ms/step  {rate[name]:8.1f} samples/s  {memory[name]:7.0f} {unit}")
    # Amdahl: caching removes only this part of the reference step, which bounds what caching alone can give.
    share = statistics.median(encode_share)
    print(f"reference time in image loading + VAE + text encoder: {share:.0%} "
          f"(caching alone can reach at most {1 / (1 - share):.2f}x)")
    achieved = flops / step["base"] / 1e12
    peak = args.peak_tflops or (bf16_peak_tflops(device_name) if cuda else None)
    of_peak = f", {achieved / peak:.1%} of the {peak:g} TFLOP/s {'bf16' if cuda else 'fp32'} peak" if peak else ""
    print(f"UNet fwd+bwd: {flops / 1e9:.1f} GFLOP/step, achieved {achieved:.3f} TFLOP/s{of_peak}")
    top = profiler.top()
    print("top costs of a Style Tailoring step (self time): "
          + ", ".join(f"{op} {fraction:.0%}" for op, fraction in top))
    print(f"data path, batch of 256 from the cache (style_tailoring plan, num_workers=0): draws {draw_s * 1e6:.0f} us, "
          f"whole batch {batch_s * 1000:.1f} ms = {256 / batch_s:,.0f} samples/s, "
          f"{256 / batch_s / rate['base']:.0f}x what our step consumes here")
    speedup, routing = rate["base"] / rate["reference"], step["style_tailoring"] / step["base"]
    print(f"speedup vs reference: {speedup:.2f}x")
    print(f"style_tailoring/base step time: {routing:.3f}")
    return {"step_seconds": step, "speedup": speedup, "routing_ratio": routing, "encode_share": share,
            "peak_memory_mb": memory, "tflops": achieved, "top_ops": top, "data_batch_seconds": batch_s,
            "draw_seconds": draw_s}


if __name__ == "__main__":
    main()
