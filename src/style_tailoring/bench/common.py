"""What every benchmark shares: the benchmark data and model, timers, memory and FLOP counters.

Speed is measured as ratios against a reference run side by side in one process, never as absolute timings in
tests: runs are interleaved and repeated and the median is kept, so machine noise hits all of them alike.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from omegaconf import OmegaConf
from PIL import Image

from style_tailoring.config import RunConfig
from style_tailoring.models.components import build_components, build_sd3, build_tiny, encode_prompts
from style_tailoring.training.strategies import strategy_node

# The world archs: each the pipeline a bench setting names (conf/bench.yaml), loaded like any pretrained model.
WORLD_PIPELINES = {"world": "pipeline", "world_sd3": "pipeline_sd3"}
# The archs whose denoiser is an SD3-family transformer trained by flow matching.
FLOW_ARCHS = ("world_sd3", "tiny_sd3")
# Each UNet arch's counterpart in the flow family, on the same VAE, tokenizer and data (task=families).
FLOW_COUNTERPART = {"world": "world_sd3", "tiny": "tiny_sd3"}
# arch=tiny_sd3's transformer over the tiny model's VAE and tokenizer: tests/test_flow.py's tiny SD3 shape, with
# SD3's own shift so that the noise scale the reference and our step index is not the identity.
TINY_SD3 = {"layers": 2, "heads": 2, "head_dim": 16, "shift": 3.0}


@dataclass(frozen=True)
class BenchDevice:
    """Where and how our step runs: bf16-mixed on a CUDA GPU, fp32 on a CPU (bf16 kernels are slower there at these
    sizes); `autocast` is that precision for code outside Lightning (the FLOP counter)."""

    device: torch.device
    name: str
    accelerator: str
    precision: str
    autocast: torch.dtype

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def bench_device() -> BenchDevice:
    if torch.cuda.is_available():
        return BenchDevice(torch.device("cuda"), torch.cuda.get_device_name(), "gpu", "bf16-mixed", torch.bfloat16)
    return BenchDevice(torch.device("cpu"), "cpu", "cpu", "32-true", torch.float32)


def write_bench_data(root: Path, n: int, resolution: int) -> Path:
    """Random images with short captions: speed does not depend on what the pixels show. The captions fit the
    world's 16-token prompts (a longer one is cut, and the SD3 pipeline's encode_prompt logs that at every step)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"a sticker of thing {i % 17}"}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def bench_config(args, data_root: Path, arch: str | None = None):
    """The run config a benchmark trains `arch` (default `args.arch`) with (`args`: the bench settings; a world arch
    loads the pipeline its setting names, WORLD_PIPELINES)."""
    arch = arch or args.arch
    cfg = OmegaConf.structured(RunConfig)
    cfg.model.resolution = args.resolution
    if arch in WORLD_PIPELINES:  # a Sticker World base model (the default run's model), from the bench config
        cfg.model.pretrained = str(getattr(args, WORLD_PIPELINES[arch]))
    if arch == "sd15":  # the text encoder's size; UNet and VAE are replaced in build_bench_model
        cfg.model.tiny = OmegaConf.merge(cfg.model.tiny, dict(text_hidden_size=768, text_layers=12,
                                                              vae_channels=[128, 256, 512, 512]))
    cfg.data.domain_dir = cfg.data.alignment_dir = cfg.data.style_dir = str(data_root)
    cfg.data.batch_size = args.batch_size
    cfg.trainer = {"max_steps": args.steps}
    cfg.strategy = strategy_node("style_tailoring", t_split=500)
    return cfg


def build_bench_model(cfg, model: str):
    """The benchmark's components. sd15: Stable Diffusion 1.5's UNet and VAE configs (diffusers' UNet2DConditionModel
    defaults are SD 1.x's; 860M UNet parameters), a CLIP-L-sized text encoder, random weights: speed does not depend
    on the weights, and none are downloaded. tiny_sd3: a random SD3-family transformer (TINY_SD3) and two CLIP
    encoders over the tiny model's VAE and tokenizer."""
    comps = build_components(cfg.model) if model in WORLD_PIPELINES else build_tiny(cfg.model)
    if model == "tiny_sd3":
        tiny = cfg.model.tiny
        comps = build_sd3(comps.tokenizer, comps.vae, resolution=cfg.model.resolution,
                          text_hidden_size=tiny.text_hidden_size, text_layers=tiny.text_layers, **TINY_SD3)
    if model == "sd15":
        comps.unet = UNet2DConditionModel(sample_size=cfg.model.resolution // 8, cross_attention_dim=768)
        comps.vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                  down_block_types=("DownEncoderBlock2D",) * 4,
                                  up_block_types=("UpDecoderBlock2D",) * 4, sample_size=cfg.model.resolution,
                                  scaling_factor=0.18215)
    return comps


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


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cpu_attention_flops() -> dict:
    """FLOP formulas for the CPU's fused attention kernels, which torch's FLOP counter (2.x) leaves uncounted: its
    own SDPA formulas (those it applies to the GPU kernels), so attention counts alike on either device."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v),
    }


def denoiser_step_flops(comps, cfg, device, dtype) -> int:
    """FLOPs of one forward + backward of the denoiser (UNet or transformer) on a training batch (torch's FLOP
    counter: matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    denoiser = comps.denoiser.to(device)
    factor = 2 ** (len(comps.vae.config.block_out_channels) - 1)
    size = cfg.model.resolution // factor
    latents = torch.randn(cfg.data.batch_size, denoiser.config.in_channels, size, size, device=device)
    prompts = ["a sticker"] * cfg.data.batch_size
    cond = encode_prompts(comps, prompts, device, cfg.model.resolution)
    t = torch.randint(0, 1000, (cfg.data.batch_size,), device=device)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as counter:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = denoiser(latents, timestep=t, **cond).sample.float().square().mean()
        loss.backward()
    denoiser.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, matched against the device name in order.
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0))


def bf16_peak_tflops(device_name: str):
    return next((peak for name, peak in BF16_PEAK_TFLOPS if name in device_name), None)


def throughput(tflops: float, args, hardware: BenchDevice) -> str:
    """`achieved X TFLOP/s`, with its fraction of the device's dense peak where known: the card's bf16 peak on a GPU
    (BF16_PEAK_TFLOPS), `args.peak_tflops` for other cards or a CPU's fp32 peak."""
    peak = args.peak_tflops or (bf16_peak_tflops(hardware.name) if hardware.cuda else None)
    kind = "bf16" if hardware.cuda else "fp32"
    return f"achieved {tflops:.3f} TFLOP/s" + (f", {tflops / peak:.1%} of the {peak:g} TFLOP/s {kind} peak"
                                               if peak else "")


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



