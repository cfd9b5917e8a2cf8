"""The real command lines, in subprocesses: DDP on 2 CPU processes and a Hydra multirun over strategies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from diffusers import StableDiffusionPipeline

pytestmark = pytest.mark.slow


def cli(module: str, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="1")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def command(module: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m module args`, whatever its exit status (for the commands' refusals)."""
    env = dict(os.environ, WANDB_MODE="offline")
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_help_and_unknown_key(module: str, *, header: str, setting: str, args: list[str], typo: str,
                                cwd: Path) -> None:
    """The key=value command `module` answers `--help` with its header, its settings (`setting` among them) and an
    example, and refuses `args` plus the mistyped setting `typo` (key=value), naming the key; the caller checks
    that nothing was written."""
    shown = command(module, "--help", cwd=cwd)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert header in shown.stdout and f"{setting}:" in shown.stdout and "Example" in shown.stdout, shown.stdout
    refused = command(module, *args, typo, cwd=cwd)
    key = typo.split("=", 1)[0].lstrip("+")
    assert refused.returncode != 0 and key in refused.stderr, refused.stdout[-2000:] + refused.stderr[-3000:]


def data_args(data_dirs) -> list[str]:
    return ["data=folder", "model=tiny", *(f"data.{k}_dir={v}" for k, v in data_dirs.items()), "eval.enabled=false"]


def test_ddp_two_cpu_processes_one_run_dir(data_dirs, tmp_path):
    proc = cli("style_tailoring.train", *data_args(data_dirs), "trainer=ddp", "trainer.accelerator=cpu",
               "trainer.devices=2", "trainer.max_steps=3", "data.batch_size=2", "strategy=sequential",
               "logger=wandb", cwd=tmp_path)
    assert "MEMBER: 2/2" in proc.stderr + proc.stdout
    runs = [p.parent for p in tmp_path.rglob("metrics.json")]
    assert len(runs) == 1 and len(list((tmp_path / "outputs").glob("*/*"))) == 1  # one run, one directory
    run_dir = runs[0]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 3
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and list((run_dir / "wandb").glob("offline-run-*"))
    pipe = StableDiffusionPipeline.from_pretrained(run_dir / "pipeline")
    assert pipe("a red circle", num_inference_steps=2, output_type="pt").images.shape == (1, 3, 32, 32)
    # Both ranks encoded their half of each source's latent cache.
    for source in ("alignment", "style"):
        parts = sorted(p.name for p in (tmp_path / ".cache" / "latents").glob(f"{source}-*/part-*"))
        assert parts == ["part-0000-of-0002.safetensors", "part-0001-of-0002.safetensors"]


def test_multirun_writes_one_metrics_file_per_job(data_dirs, tmp_path):
    cli("style_tailoring.train", "-m", *data_args(data_dirs), "strategy=base,sequential,mixture,style_tailoring",
        "trainer.max_steps=2", "data.batch_size=2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    jobs = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json"))
    assert jobs == ["0_base", "1_sequential", "2_mixture", "3_style_tailoring"]
    for job in jobs:
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert metrics["strategy"] == job.split("_", 1)[1] and metrics["steps"] == 2


def test_a_failed_job_does_not_stop_the_sweep(data_dirs, tmp_path):
    cli("style_tailoring.train", "-m", *data_args(data_dirs), "strategy=style_tailoring", "strategy.t_split=0,500",
        "trainer.max_steps=2", "data.batch_size=2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    failed = json.loads((tmp_path / "sweep" / "0_style_tailoring" / "metrics.json").read_text())
    done = json.loads((tmp_path / "sweep" / "1_style_tailoring" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "strategy.t_split" in failed["error"]
    assert done["status"] == "completed" and done["t_split"] == 500


def test_single_run_error_exits_nonzero_with_the_key(data_dirs, tmp_path):
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-m", "style_tailoring.train", *data_args(data_dirs), "data.mixture=2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "data.mixture: must lie in [0, 1], got 2.0" in proc.stderr
