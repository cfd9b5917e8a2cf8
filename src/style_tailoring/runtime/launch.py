"""Single-node DDP without the Hydra re-launch trap.

Lightning's plain `ddp` re-runs `sys.argv` for every extra rank; under Hydra that composes the config again, makes
a second output directory per rank and, in a multirun, launches a whole sweep per rank. Instead, rank 0 (the Hydra
job) writes its resolved config into the run directory and starts ranks 1..N-1 itself on that file, with the
environment torchrun would set. Lightning then sees `LOCAL_RANK` and treats the processes as externally launched.
Under torchrun or SLURM (`LOCAL_RANK`/`SLURM_NTASKS` already set) nothing is started here.
A worker runs `module:function` on the saved config, named by the caller (a training run, an evaluation run), so
this low-level module imports none of them.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from style_tailoring.config import ConfigError

SELF_LAUNCHED = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def launched_externally() -> bool:
    return "LOCAL_RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def device_count(trainer: DictConfig) -> int:
    """How many devices `trainer.devices` asks for on this node (ValueError if it is no count, list or "auto")."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, str) and devices not in ("auto", "-1"):
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if devices in ("auto", "-1", -1):
        import torch

        accel = trainer.get("accelerator", "auto")
        return torch.cuda.device_count() if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available() else 1
    return len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else int(devices)


def is_ddp(trainer: DictConfig) -> bool:
    return str(trainer.get("strategy", "auto")).startswith("ddp") and (
        device_count(trainer) * int(trainer.get("num_nodes", 1)) > 1)


def needs_self_launch(trainer: DictConfig) -> bool:
    return str(trainer.get("strategy", "auto")) in SELF_LAUNCHED and device_count(trainer) > 1 \
        and not launched_externally()


def sampling_device(trainer: DictConfig):
    """The device a process samples on when no Trainer placed the model (a run that trains nothing, e.g. prompt
    engineering): the configured accelerator's, this process's local rank on a multi-GPU node."""
    import torch

    accel = str(trainer.get("accelerator", "auto"))
    if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if accel in ("mps", "auto") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(cfg: DictConfig, run_dir: Path, target: str) -> list[subprocess.Popen]:
    """Start ranks 1..N-1 on this node, each calling `target` ("package.module:function") with the resolved config,
    and make this process rank 0."""
    if int(cfg.trainer.get("num_nodes", 1)) > 1:
        raise ConfigError("trainer.num_nodes", "multi-node DDP needs an external launcher (SLURM or torchrun)")
    world = device_count(cfg.trainer)
    entry = target.rpartition(":")[2]
    config_file = run_dir / f".ddp_{entry}_config.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, config_file, resolve=True)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world),
               NODE_RANK="0")
    workers = [
        subprocess.Popen([sys.executable, "-m", "style_tailoring.runtime.launch", target, str(config_file)],
                         env=dict(env, LOCAL_RANK=str(rank), RANK=str(rank)))
        for rank in range(1, world)
    ]
    os.environ.update({k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK")})
    os.environ.update(LOCAL_RANK="0", RANK="0")
    return workers


class RankDied(RuntimeError):
    """A DDP peer ended (killed, or failed) and this rank stopped in its next collective."""


def failed_ranks(workers: list[subprocess.Popen], grace: float = 10.0) -> list[str]:
    """The worker ranks that ended badly, each described ("rank 1 (pid 123) was killed by SIGKILL"), after giving
    each up to `grace` seconds to finish ending."""
    described = []
    for rank, worker in enumerate(workers, 1):
        try:
            code = worker.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if code < 0:
            described.append(f"rank {rank} (pid {worker.pid}) was killed by {signal.Signals(-code).name}")
        elif code > 0:
            described.append(f"rank {rank} (pid {worker.pid}) exited with status {code}")
    return described


def wait_for(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.wait()
    failed = failed_ranks(workers)
    if failed:
        raise RuntimeError(f"DDP worker {'; '.join(failed)}; see their output above")


def cleanup(workers: list[subprocess.Popen]) -> None:
    """Kill leftover ranks, and forget the DDP environment so that the next job of a multirun starts clean."""
    for w in workers:
        if w.poll() is None:
            w.kill()
    if not workers:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK"):
        os.environ.pop(key, None)


if __name__ == "__main__":  # a worker rank: python -m style_tailoring.runtime.launch MODULE:FUNCTION CONFIG
    module, _, function = sys.argv[1].partition(":")
    parent = os.getppid()
    try:
        getattr(importlib.import_module(module), function)(OmegaConf.load(sys.argv[2]))
    except Exception:
        if os.getppid() != parent:  # rank 0 started this process; its death is the cause, not this rank's error
            sys.exit(f"DDP rank {os.environ.get('RANK')}: rank 0 (pid {parent}) died, so this rank stopped too; "
                     "resume the run with ckpt_path=last")
        raise
