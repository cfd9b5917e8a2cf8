"""Memory per rank, DDP against FSDP: the same wide tiny UNet trained on 2 CPU processes each way.

    python experiments/fsdp_memory.py [--channels 256,512] [--steps 4] [--default-malloc] [--no-write]

Each run is `python -m style_tailoring.train strategy=base model=tiny model.tiny.unet_channels=[...]` with
`trainer=ddp` or `trainer=fsdp` (2 processes, gloo) on a small generated image folder, a checkpoint at its last step
only; every rank records its resident-memory high-water mark (training/callbacks.py's PeakMemory, in metrics.json):
`rss_setup` before the strategy sets the model up (libraries, the whole model, the latent cache: the same for both),
`rss_steps` when the last step ended, before that checkpoint (plus the training state: weights, gradients, AdamW
moments, activations), and `rss_fit` after it (rank 0 consolidates the whole state to write the file).

glibc keeps freed blocks below its mmap threshold, which it raises as large tensors are freed, so a process's peak
RSS also counts memory it freed and did not return; FSDP's per-block gathers free and allocate many such blocks.
Unless --default-malloc, the runs fix the threshold (MALLOC_MMAP_THRESHOLD_=65536, glibc's own setting) so that
large tensors are returned when freed and the peak is the memory in use (steps take longer).
Writes experiments/results/fsdp_memory.md (fsdp_memory_default_malloc.md with --default-malloc; not with --no-write).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
KINDS = ("rss_setup", "rss_steps", "rss_fit")


def image_folder(root: Path, n: int = 16) -> Path:
    """n 32 px images of a coloured square or circle, captioned (the imagefolder convention's metadata.jsonl)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        colour, shape = list(COLOURS)[rng.integers(len(COLOURS))], ["square", "circle"][rng.integers(2)]
        image = Image.new("RGB", (32, 32), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        (draw.rectangle if shape == "square" else draw.ellipse)((8, 8, 24, 24), fill=COLOURS[colour])
        image.save(root / f"{i:04d}.png")
        rows.append({"file_name": f"{i:04d}.png", "text": f"a {colour} {shape}"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def train(strategy: str, data: Path, run_dir: Path, channels: list[int], steps: int, fixed_malloc: bool) -> dict:
    args = ["data=folder", f"data.domain_dir={data}", "model=tiny", f"model.tiny.unet_channels=[{channels[0]},"
            f"{channels[1]}]", "strategy=base", f"trainer={strategy}", "trainer.accelerator=cpu", "trainer.devices=2",
            f"trainer.max_steps={steps}", f"checkpoint.every_n_steps={steps}", "data.batch_size=2",
            "eval.enabled=false", "logger=csv", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1",
           **({"MALLOC_MMAP_THRESHOLD_": "65536"} if fixed_malloc else {})}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "style_tailoring.train", *args], cwd=run_dir.parent, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"trainer={strategy} failed:\n{proc.stderr[-4000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    weights = run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    return {"seconds": time.monotonic() - started, "weights_mb": weights.stat().st_size / 2**20,
            **{kind: [metrics[f"memory/{kind}_mb/rank{r}"] for r in range(2)] for kind in KINDS}}


def table(runs: dict[str, dict]) -> list[str]:
    lines = ["| trainer | rank | before setup (MB) | training steps (MB) | with the checkpoint (MB) | "
             "steps − setup (MB) |", "|---|---|---|---|---|---|"]
    for strategy, run in runs.items():
        for rank in range(2):
            peaks = [run[kind][rank] for kind in KINDS]
            lines.append(f"| {strategy} | {rank} | " + " | ".join(f"{mb:.0f}" for mb in peaks)
                         + f" | {peaks[1] - peaks[0]:.0f} |")
    saved = {kind: [runs["ddp"][kind][r] - runs["fsdp"][kind][r] for r in range(2)] for kind in KINDS}
    lines.append("| ddp − fsdp | 0 / 1 | " + " | ".join(f"{saved[k][0]:.0f} / {saved[k][1]:.0f}" for k in KINDS)
                 + " | |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", default="256,512", help="model.tiny.unet_channels (two widths)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's mmap threshold dynamic")
    parser.add_argument("--no-write", action="store_true", help="print only; write no results file")
    args = parser.parse_args(argv)
    channels = [int(c) for c in args.channels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = image_folder(Path(tmp) / "data")
        runs = {strategy: train(strategy, data, Path(tmp) / strategy, channels, args.steps, not args.default_malloc)
                for strategy in ("ddp", "fsdp")}
    weights = runs["ddp"]["weights_mb"]
    options = ([f"--channels {args.channels}"] if args.channels != "256,512" else []) \
        + ([f"--steps {args.steps}"] if args.steps != 4 else []) + (["--default-malloc"] if args.default_malloc else [])
    command = " ".join(["python experiments/fsdp_memory.py", *options])
    head = (f"Peak resident memory per rank, MB. `{command}`: UNet `model.tiny.unet_channels=[{args.channels}]`, "
            f"{weights:.0f} MB of fp32 weights "
            f"(W), {args.steps} steps of batch 2 per rank, 2 CPU processes (gloo), glibc mmap threshold "
            f"{'dynamic (default)' if args.default_malloc else 'fixed at 64 KiB'}; {os.cpu_count()} CPU cores, "
            f"{time.strftime('%Y-%m-%d')}; ddp {runs['ddp']['seconds']:.0f} s, fsdp {runs['fsdp']['seconds']:.0f} s. "
            "Per rank, DDP holds W of weights, W of gradients, 2W of AdamW moments and W of gradient buckets; FSDP "
            "holds half of the first three (W/2 + W/2 + W) and one block's weights and gradients whole at a time.")
    body = [head, "", *table(runs)]
    print("\n".join(body))
    if not args.no_write:
        out = RESULTS / f"fsdp_memory{'_default_malloc' if args.default_malloc else ''}.md"
        out.write_text("# Memory per rank: DDP against FSDP (CPU)\n\n" + "\n".join(body) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
