"""Training-speed benchmark: `python -m style_tailoring.bench [--steps N] [--batch-size B] [--model tiny|sd15]`.

In one process, on the same model, data and batch size, it times
  (a) a reference loop written the way diffusers' train_text_to_image.py does it: VAE-encode the images and
      run the text encoder every step, fp32 (bf16 autocast on a GPU), plain PyTorch;
  (b) this repository's training step through Lightning, from the latent/text cache, with the `base` plan;
  (c) the same with the `style_tailoring` plan, to show that per-sample routing costs nothing.
Runs are interleaved and repeated and the median step time is kept, so machine noise hits all of them alike.
The last two lines are for scripts: `speedup vs reference: 1.87x` and `style_tailoring/base step time: 1.012`.
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
from omegaconf import OmegaConf
from PIL import Image

from style_tailoring.config import RunConfig
from style_tailoring.data.datamodule import RoutedDataModule
from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.models import build_tiny, encode_prompts, freeze, training_scheduler
from style_tailoring.module import DiffusionFinetune
from style_tailoring.strategies import build_plan


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
    if args.model == "world":  # the Sticker World base model's architecture (the default run's model)
        from style_tailoring.world.base import WORLD_MODEL

        cfg.model.tiny = OmegaConf.structured(WORLD_MODEL.tiny)
    if args.model == "sd15":  # SD-1.5-sized UNet/VAE/text encoder, built from configs (random weights)
        cfg.model.tiny = OmegaConf.merge(cfg.model.tiny, dict(
            unet_channels=[320, 640, 1280, 1280], layers_per_block=2, vae_channels=[128, 256, 512, 512],
            text_hidden_size=768, text_layers=12, norm_num_groups=32))
    cfg.data.domain_dir = cfg.data.alignment_dir = cfg.data.style_dir = str(data_root)
    cfg.data.batch_size = args.batch_size
    cfg.trainer = {"max_steps": args.steps}
    cfg.strategy.t_split = 500
    return cfg


def reference_step_times(cfg, comps, device, steps: int, precision) -> list[float]:
    """diffusers train_text_to_image.py, one step: encode images and text, noise, predict, MSE, AdamW."""
    unet, vae, text_encoder = comps.unet.to(device), comps.vae.to(device), comps.text_encoder.to(device)
    freeze(vae, text_encoder)
    unet.train()
    scheduler = training_scheduler(comps, None)
    data = ImageCaptionFolder(cfg.data.style_dir, cfg.model.resolution)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    times, batches = [], iter(())
    for _ in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
            with torch.no_grad():
                latents = vae.encode(batch["pixel_values"].to(device)).latent_dist.sample()
                latents = latents * vae.config.scaling_factor
                ehs = encode_prompts(comps, batch["text"], device, cfg.model.resolution)["encoder_hidden_states"]
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
    return times


class StepTimer(L.Callback):
    def __init__(self):
        self.times, self._start = [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        _sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _sync(pl_module.device)
        self.times.append(time.perf_counter() - self._start)


def ours_step_times(cfg, comps, strategy: str, steps: int, accelerator: str, precision: str, cache_dir) -> list[float]:
    cfg = cfg.copy()
    cfg.strategy.name = strategy
    cfg.trainer = {"max_steps": steps}
    plan = build_plan(cfg, comps.scheduler.config.num_train_timesteps)
    datamodule = RoutedDataModule(cfg.data, plan, cfg.model.resolution, cfg.seed, cache_dir)
    module = DiffusionFinetune(comps, plan, cfg, cached_latents=True, cached_text=True)
    timer = StepTimer()
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_steps=steps, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    return timer.times


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide peak RSS on Linux


def steady(times: list[float], warmup: int) -> float:
    return statistics.median(times[warmup:])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["world", "tiny", "sd15"], default="world")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args(argv)
    args.resolution = args.resolution or (512 if args.model == "sd15" else 32)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    precision, autocast = ("bf16-mixed", torch.bfloat16) if cuda else ("32-true", torch.float32)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_config(args, write_bench_data(Path(tmp) / "data", args.images, args.resolution))
        comps = build_tiny(cfg.model)
        results = {"reference": [], "base": [], "style_tailoring": []}
        for _ in range(args.repeats):  # interleaved, so drift and noise hit every variant alike
            results["reference"].append(steady(reference_step_times(cfg, comps, device, args.steps, autocast),
                                               args.warmup))
            for strategy in ("base", "style_tailoring"):
                times = ours_step_times(cfg, comps, strategy, args.steps, "gpu" if cuda else "cpu", precision,
                                        Path(tmp) / "cache")
                results[strategy].append(steady(times, args.warmup))
        memory = peak_memory_mb(device)
    step = {name: statistics.median(values) for name, values in results.items()}
    rate = {name: args.batch_size / seconds for name, seconds in step.items()}
    print(f"device: {device} ({torch.cuda.get_device_name() if cuda else 'cpu'}), model: {args.model}, "
          f"{args.resolution} px, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats")
    for name in results:
        print(f"{name:>16}: {step[name] * 1000:8.1f} ms/step  {rate[name]:8.1f} samples/s")
    print(f"peak memory: {memory:.0f} MB ({'GPU allocated' if cuda else 'process max RSS'})")
    speedup, routing = rate["base"] / rate["reference"], step["style_tailoring"] / step["base"]
    print(f"speedup vs reference: {speedup:.2f}x")
    print(f"style_tailoring/base step time: {routing:.3f}")
    return {"step_seconds": step, "speedup": speedup, "routing_ratio": routing}


if __name__ == "__main__":
    main()
