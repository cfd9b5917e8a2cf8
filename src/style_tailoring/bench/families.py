"""`task=families`: the flow (SD3) family's training step against the UNet family's at about the same parameter
count, on the same data, batch and resolution, in one process, interleaved and repeated (the median is kept). Each is
this repository's step through Lightning from the latent/text cache with the `base` plan, for

  (a) the UNet arch (`arch=world`: the shipped world base; `arch=tiny`),
  (b) its flow-family counterpart (FLOW_COUNTERPART: the shipped SD3-family world base; tiny_sd3),
  (c) that transformer with as many joint blocks as bring its parameter count closest to the UNet's, all else the
      same (width, heads, text encoders, VAE, prompt length); random weights: speed does not depend on them.

It prints each one's parameters, ms/step, FLOPs of the denoiser's forward + backward and achieved TFLOP/s. Last two
lines, for scripts: `flow/unet step time: 1.234` and `flow (parameter-matched)/unet step time: 1.456`.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from style_tailoring.bench.common import (
    FLOW_COUNTERPART,
    bench_config,
    bench_device,
    build_bench_model,
    denoiser_step_flops,
    parameter_count,
    peak_memory_mb,
    reset_peak_memory,
    steady,
    throughput,
    write_bench_data,
)
from style_tailoring.bench.train import ours_step_times


def depth_matched(comps, target_parameters: int):
    """`comps` with its SD3 transformer rebuilt with the number of joint blocks whose parameter count lies closest
    to `target_parameters` (counted on the meta device, then built seeded), its config otherwise unchanged."""
    from diffusers import SD3Transformer2DModel

    config = dict(comps.transformer.config)

    def transformer(layers: int):
        return SD3Transformer2DModel.from_config({**config, "num_layers": layers})

    counts = {}
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        layers = 1
        while not counts or counts[layers - 1] < target_parameters:
            counts[layers] = parameter_count(transformer(layers))
            layers += 1
    best = min(counts, key=lambda n: abs(counts[n] - target_parameters))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return dataclasses.replace(comps, transformer=transformer(best))


def bench_families(args) -> dict:
    hardware = bench_device()
    unet_arch, flow_arch = args.arch, FLOW_COUNTERPART[args.arch]
    matched_arch = f"{flow_arch} (parameter-matched)"
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_bench_data(Path(tmp) / "data", args.images, args.resolution)
        configs = {arch: bench_config(args, data, arch) for arch in (unet_arch, flow_arch)}
        models = {arch: build_bench_model(cfg, arch) for arch, cfg in configs.items()}
        models[matched_arch] = depth_matched(models[flow_arch], parameter_count(models[unet_arch].denoiser))
        configs[matched_arch] = configs[flow_arch]
        step_times = {arch: [] for arch in models}
        memory = dict.fromkeys(models, 0.0)
        for _ in range(args.repeats):  # interleaved, so drift and noise hit every model alike
            for arch, comps in models.items():
                reset_peak_memory(hardware.device)
                times = ours_step_times(configs[arch], comps, "base", args.steps, hardware.accelerator,
                                        hardware.precision, Path(tmp) / "cache")
                step_times[arch].append(steady(times, args.warmup))
                memory[arch] = max(memory[arch], peak_memory_mb(hardware.device))
        flops = {arch: denoiser_step_flops(comps, configs[arch], hardware.device, hardware.autocast)
                 for arch, comps in models.items()}
    step = {arch: statistics.median(values) for arch, values in step_times.items()}
    parameters = {arch: parameter_count(comps.denoiser) for arch, comps in models.items()}
    print(f"device: {hardware.device} ({hardware.name}), {args.resolution} px, batch {args.batch_size}, our step "
          f"(base plan, from the cache, {hardware.precision}), {args.steps} steps x {args.repeats} repeats")
    unit = "MB GPU allocated" if hardware.cuda else "MB peak RSS"
    for arch, comps in models.items():
        blocks = f", {comps.transformer.config.num_layers} blocks" if comps.is_flow else ""
        print(f"{arch:>30}: {comps.denoiser_name} {parameters[arch] / 1e6:.2f} M parameters{blocks}, "
              f"{step[arch] * 1000:7.1f} ms/step, {flops[arch] / 1e9:6.1f} GFLOP/step fwd+bwd, "
              f"{throughput(flops[arch] / step[arch] / 1e12, args, hardware)}, {memory[arch]:.0f} {unit}")
    ratio = {arch: step[arch] / step[unet_arch] for arch in (flow_arch, matched_arch)}
    print(f"flow/unet step time: {ratio[flow_arch]:.3f}")
    print(f"flow (parameter-matched)/unet step time: {ratio[matched_arch]:.3f}")
    return {"step_seconds": step, "parameters": parameters, "flops": flops, "peak_memory_mb": memory,
            "flow_ratio": ratio[flow_arch], "matched_ratio": ratio[matched_arch]}
