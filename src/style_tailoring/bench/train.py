"""`task=train`: the training step against a reference loop written the way diffusers' train_text_to_image.py
does it, in one process on the same model, data and batch size.

  (a) the reference: VAE-encode the images and run the text encoder every step, fp32 (the example's default), plain
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
    bf16_peak_tflops,
    build_bench_model,
    peak_memory_mb,
    reset_peak_memory,
    steady,
    unet_step_flops,
    write_bench_data,
)
from style_tailoring.data.datamodule import RoutedDataModule
from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.models.components import encode_prompts, freeze, training_scheduler
from style_tailoring.training.module import DiffusionFinetune
from style_tailoring.training.strategies import build_plan, strategy_node


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
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    accelerator = "gpu" if cuda else "cpu"
    precision, autocast = ("bf16-mixed", torch.bfloat16) if cuda else ("32-true", torch.float32)
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
        flops = unet_step_flops(comps, cfg, device, autocast)
        draw_s, batch_s = data_path_seconds(cfg, comps, cache)
    step = {name: statistics.median(values) for name, values in results.items()}
    rate = {name: args.batch_size / seconds for name, seconds in step.items()}
    print(f"device: {device} ({device_name}), model: {args.arch}, {args.resolution} px, batch {args.batch_size}, "
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
