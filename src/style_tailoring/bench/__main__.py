"""`python -m style_tailoring.bench`: the settings are conf/bench.yaml (`--help` lists them)."""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from style_tailoring.bench.common import FLOW_ARCHS, FLOW_COUNTERPART
from style_tailoring.config import BenchConfig, ConfigError, merge_into_schema

TASKS = ("train", "sample", "generate", "animate", "families")
ARCHS = ("world", "tiny", "sd15", *FLOW_ARCHS)


def check(args) -> None:
    if args.task not in TASKS:
        raise ConfigError("task", f"unknown task {args.task!r}; one of {list(TASKS)}")
    if args.arch not in ARCHS:
        raise ConfigError("arch", f"unknown arch {args.arch!r}; one of {list(ARCHS)}")
    if args.arch == "sd15" and not torch.cuda.is_available():
        # fp32 weights, gradients and AdamW state of the 860M UNet alone are ~14 GB, before activations and the
        # reference's VAE; a 24 GB CPU machine runs out of memory even at 64 px, batch 1. Fail before any work.
        raise ConfigError("arch", "arch=sd15 needs a CUDA GPU (the 860M-parameter UNet's fp32 training state does "
                          "not fit a CPU run); on a CPU use arch=world or arch=tiny")
    if args.task in ("generate", "animate") and args.arch != "world":
        raise ConfigError("arch", f"task={args.task} runs on the world's model, prompts and judges: arch=world")
    if args.task == "families" and args.arch not in FLOW_COUNTERPART:
        raise ConfigError("arch", f"task=families times a UNet arch against its flow-family counterpart "
                          f"({', '.join(f'{u} vs {f}' for u, f in FLOW_COUNTERPART.items())}): arch=world or tiny")
    if args.arch in FLOW_ARCHS and args.task != "train":  # the samplers and HITL benches drive a UNet pipeline
        raise ConfigError("arch", f"arch={args.arch} (the SD3 family) is benchmarked by task=train; task=families "
                          "times it against the UNet family")
    for key in ("steps", "repeats", "images", "sample_steps"):
        if args[key] < 1:
            raise ConfigError(key, f"must be >= 1, got {args[key]}")
    if not 0 <= args.warmup < args.steps:
        raise ConfigError("warmup", f"must lie in [0, steps) = [0, {args.steps}), got {args.warmup}")


def run(args) -> dict:
    check(args)
    args.resolution = args.resolution or (512 if args.arch == "sd15" else 32)
    args.batch_size = args.batch_size or (4 if args.arch == "sd15" else 32)
    if args.task == "sample":
        from style_tailoring.bench.sample import bench_sampling

        return bench_sampling(args)
    if args.task == "generate":
        from style_tailoring.bench.generate import bench_generate

        return bench_generate(args)
    if args.task == "animate":
        from style_tailoring.bench.animate import bench_animate

        return bench_animate(args)
    if args.task == "families":
        from style_tailoring.bench.families import bench_families

        return bench_families(args)
    from style_tailoring.bench.train import bench_train

    return bench_train(args)


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    try:
        run(merge_into_schema(BenchConfig, cfg))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
