"""`task=train`: the training step against a reference loop written the way diffusers' training example for the
model's family does it (train_text_to_image.py for a UNet; train_dreambooth_lora_sd3.py, full finetune, for the SD3
family: arch=world_sd3, tiny_sd3), in one process on the same model, data and batch size.

  (a) the reference: VAE-encode the images and run the text encoders every step, fp32 (the examples' default), plain
      PyTorch, images decoded in the loop;
  (b) this repository's training step through Lightning, from the latent/text cache, with the `base` plan
      (bf16-mixed on a GPU, fp32 on a CPU, where bf16 kernels are slower at these sizes);
  (c) the same with the `style_tailoring` plan, to show that per-sample routing costs nothing.
Last two lines, for scripts: `speedup vs reference: 1.87x` and `style_tailoring/base step time: 1.012`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from style_tailoring.bench.common import (
    StepProfiler,
    StepTimer,
    _sync,
    bench_config,
    bench_device,
    build_bench_model,
    denoiser_step_flops,
    peak_memory_mb,
    reset_peak_memory,
    steady,
    throughput,
    write_bench_data,
)
from style_tailoring.data.datamodule import RoutedDataModule
from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.models.components import encode_prompts, freeze, training_scheduler
from style_tailoring.training.module import DiffusionFinetune
from style_tailoring.training.strategies import build_plan, strategy_node


class UNetReference:
    """diffusers' train_text_to_image.py objective (the UNet family): latents scaled by the VAE's factor, integer
    timesteps uniform in [0, T), the DDPM schedule's `add_noise`, MSE against the noise (epsilon prediction)."""

    def __init__(self, comps):
        self.scheduler = training_scheduler(comps, None)

    def dataset(self, folder, resolution: int):
        """Images decoded and transformed in the loop, as the script's dataset transform does."""
        return ImageCaptionFolder(folder, resolution)

    def latents(self, vae, pixels: torch.Tensor) -> torch.Tensor:
        return vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor

    def draw(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, timesteps), drawn as the script draws them."""
        T = self.scheduler.config.num_train_timesteps
        return torch.randn_like(latents), torch.randint(0, T, (latents.shape[0],), device=latents.device)

    def loss(self, unet, latents, cond: dict, noise, timesteps) -> torch.Tensor:
        pred = unet(self.scheduler.add_noise(latents, noise, timesteps), timesteps, **cond).sample
        return F.mse_loss(pred.float(), noise.float())


class FlowReference:
    """diffusers' examples/dreambooth/train_dreambooth_lora_sd3.py objective (the SD3 family), as that script trains
    with per-image captions and its defaults but `--precondition_outputs 0`: images decoded once, when the data set
    is built, the prompts encoded every step; latents shifted and scaled by the VAE's factors; u from
    `compute_density_for_timestep_sampling` (the script's default scheme, logit_normal N(0, 1)); the timestep
    `timesteps[⌊u·T⌋]` of the scheduler and its σ looked up in the schedule (the script's `get_sigmas`);
    x_σ = (1 − σ)x + σε; the transformer's prediction regressed on the velocity ε − x, weighted by
    `compute_loss_weighting_for_sd3` (1 for logit_normal, which weights by sampling instead).

    Without preconditioning the target is the velocity our step trains (models/flow.py), so both loops optimise the
    same objective; the script's default preconditions (x_σ − σ·pred against x: the same velocity error times σ, two
    more elementwise ops per step)."""

    WEIGHTING_SCHEME, LOGIT_MEAN, LOGIT_STD = "logit_normal", 0.0, 1.0  # the script's defaults

    def __init__(self, comps):
        self.scheduler = training_scheduler(comps, None)  # the script's noise_scheduler_copy: a fresh training scale

    def dataset(self, folder, resolution: int) -> list[dict]:
        """Every image decoded and transformed once, up front, as the script's DreamBoothDataset does when built."""
        images = ImageCaptionFolder(folder, resolution)
        return [images[i] for i in range(len(images))]

    def latents(self, vae, pixels: torch.Tensor) -> torch.Tensor:
        latents = vae.encode(pixels).latent_dist.sample()
        return (latents - vae.config.shift_factor) * vae.config.scaling_factor

    def draw(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, the transformer's timesteps), drawn as the script draws them (u on the CPU, as it does)."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        u = compute_density_for_timestep_sampling(self.WEIGHTING_SCHEME, latents.shape[0],
                                                  logit_mean=self.LOGIT_MEAN, logit_std=self.LOGIT_STD)
        indices = (u * self.scheduler.config.num_train_timesteps).long()
        return torch.randn_like(latents), self.scheduler.timesteps[indices].to(latents.device)

    def sigmas(self, timesteps: torch.Tensor, n_dim: int, dtype) -> torch.Tensor:
        """The script's get_sigmas: each timestep's index found in the schedule, one lookup (and sync) per sample."""
        schedule = self.scheduler.timesteps.to(timesteps.device)
        indices = [(schedule == t).nonzero().item() for t in timesteps]
        sigmas = self.scheduler.sigmas.to(timesteps.device, dtype)[indices].flatten()
        return sigmas.view(-1, *(1,) * (n_dim - 1))

    def loss(self, transformer, latents, cond: dict, noise, timesteps) -> torch.Tensor:
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        sigmas = self.sigmas(timesteps, latents.ndim, latents.dtype)
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        pred = transformer(hidden_states=noisy, timestep=timesteps, **cond, return_dict=False)[0]
        weighting = compute_loss_weighting_for_sd3(self.WEIGHTING_SCHEME, sigmas)
        target = noise - latents
        per_sample = (weighting.float() * (pred.float() - target.float()) ** 2).reshape(target.shape[0], -1)
        return per_sample.mean(1).mean()


# The diffusers example each family's reference loop is written after (keyed by Components.is_flow).
REFERENCE_SCRIPT = {False: "train_text_to_image.py", True: "train_dreambooth_lora_sd3.py, full finetune"}


def reference_objective(comps):
    """The reference loop's family-specific part: diffusers' own training example for the model's family."""
    return FlowReference(comps) if comps.is_flow else UNetReference(comps)


def reference_step_times(cfg, comps, device, steps: int, precision) -> tuple[list[float], list[float]]:
    """diffusers' training example, one step: load the batch, encode images and text, noise, predict, loss, AdamW
    (train_text_to_image.py for a UNet, train_dreambooth_lora_sd3.py's full-finetune equivalent for the SD3 family:
    reference_objective). The loop around the objective is the same in both scripts.

    Returns the wall time of each whole step (batch loading included, as in samples/s) and of its part that
    caching removes (loading and decoding the images, VAE and text encoders).
    """
    objective = reference_objective(comps)
    denoiser, vae = comps.denoiser.to(device), comps.vae.to(device)
    encoders = [e.to(device) for e in (comps.text_encoder, comps.text_encoder_2, comps.text_encoder_3) if e is not None]
    freeze(vae, *encoders)
    denoiser.train()
    data = objective.dataset(cfg.data.style_dir, cfg.model.resolution)
    # num_workers=0 is the examples' default (--dataloader_num_workers)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True)
    # The whole denoiser trains, as our full finetune does (the SD3 script trains LoRA adapters; the optimizer is the
    # examples' plain AdamW either way)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-5)
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
                latents = objective.latents(vae, batch["pixel_values"].to(device))
                cond = encode_prompts(comps, batch["text"], device, cfg.model.resolution)
            _sync(device)
            encoded = time.perf_counter()
            loss = objective.loss(denoiser, latents, cond, *objective.draw(latents))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
        encode_times.append(encoded - start)
    return times, encode_times


def ours_step_times(cfg, comps, strategy: str, steps: int, accelerator: str, precision: str, cache_dir,
                    callbacks=()) -> list[float]:
    cfg = cfg.copy()
    cfg.strategy = strategy_node(strategy, **({"t_split": 500} if strategy == "style_tailoring" else {}))
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
    cfg.strategy = strategy_node("style_tailoring", t_split=500)
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


def bench_train(args) -> dict:
    hardware = bench_device()
    device, accelerator, precision = hardware.device, hardware.accelerator, hardware.precision
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_config(args, write_bench_data(Path(tmp) / "data", args.images, args.resolution))
        cache = Path(tmp) / "cache"
        comps = build_bench_model(cfg, args.arch)
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
        flops = denoiser_step_flops(comps, cfg, device, hardware.autocast)
        draw_s, batch_s = data_path_seconds(cfg, comps, cache)
    step = {name: statistics.median(values) for name, values in results.items()}
    rate = {name: args.batch_size / seconds for name, seconds in step.items()}
    print(f"device: {device} ({hardware.name}), model: {args.arch}, {args.resolution} px, batch {args.batch_size}, "
          f"{args.steps} steps x {args.repeats} repeats, ours {precision}, reference fp32 "
          f"({REFERENCE_SCRIPT[comps.is_flow]})")
    unit = "MB GPU allocated" if hardware.cuda else "MB peak RSS"
    for name in results:
        print(f"{name:>16}: {step[name] * 1000:8.1f} ms/step  {rate[name]:8.1f} samples/s  {memory[name]:7.0f} {unit}")
    # Amdahl: caching removes only this part of the reference step, which bounds what caching alone can give.
    share = statistics.median(encode_share)
    print(f"reference time in image loading + VAE + text encoder: {share:.0%} "
          f"(caching alone can reach at most {1 / (1 - share):.2f}x)")
    achieved = flops / step["base"] / 1e12
    print(f"{comps.denoiser_name} fwd+bwd: {flops / 1e9:.1f} GFLOP/step, {throughput(achieved, args, hardware)}")
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
