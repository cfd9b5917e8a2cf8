"""Single-node DDP without the Hydra re-launch trap.

Lightning's plain `ddp` re-runs `sys.argv` for every extra rank; under Hydra that composes the config again, makes
a second output directory per rank and, in a multirun, launches a whole sweep per rank. Instead, rank 0 (the Hydra
job) writes its resolved config into the run directory and starts ranks 1..N-1 itself on that file, with the
environment torchrun would set. Lightning then sees `LOCAL_RANK` and treats the processes as externally launched.
Under torchrun or SLURM (`LOCAL_RANK`/`SLURM_NTASKS` already set) nothing is started here. `trainer.strategy=fsdp`
(sharded, runtime/fsdp.py) is launched and watched the same way.

A rank that dies ends the others within seconds (gloo sees the closed connection); one that hangs would keep them
waiting for torch's collective timeout (30 minutes by default). The run sets that timeout from `launch.timeout_s`
(`ddp_strategy`), and every rank leaves a sign of life in the run directory at each phase of each step
(`.ddp/progress-rank<N>.json`: step, phase, pid, time): when a collective times out, the rank that noticed names the
ones that stopped answering — those behind the furthest rank, or in a two-rank run simply the other one — and
ends the run (rank 0 kills a hung worker; a worker whose rank 0 hung exits, and rank 0's watchdog ends rank 0).
A worker runs `module:function` on the saved config, named by the caller (a training run, an evaluation run), so
this low-level module imports none of them.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from style_tailoring.config import ConfigError

DDP_NAMES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")
FSDP = "fsdp"  # sharded data parallel (runtime/fsdp.py), launched the same way
SELF_LAUNCHED = (*DDP_NAMES, FSDP)


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
    """Whether the run has several data-parallel ranks (DDP, or FSDP: each rank its own batches), which watch each
    other as this module describes."""
    name = str(trainer.get("strategy", "auto"))
    return (name.startswith("ddp") or name == FSDP) and device_count(trainer) * int(trainer.get("num_nodes", 1)) > 1


def is_fsdp(trainer: DictConfig) -> bool:
    return str(trainer.get("strategy", "auto")) == FSDP


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


class RankHung(RuntimeError):
    """A DDP peer stopped answering (alive, but not in the collective) for launch.timeout_s."""


# The phases of a training step a rank reports, in order (`Heartbeat` in training/callbacks.py writes them).
PHASES = ("step started", "backward (gradients exchanged)", "step done")
PROGRESS_DIR = ".ddp"


def ddp_strategy(trainer: DictConfig, timeout_s: float):
    """Lightning's DDPStrategy with the collective timeout, for the DDP names this module launches itself ("ddp",
    "ddp_find_unused_parameters_true/false"); any other strategy is passed on as it is."""
    name = str(trainer.get("strategy", "auto"))
    if name not in DDP_NAMES or not is_ddp(trainer):
        return name
    from lightning.pytorch.strategies import DDPStrategy

    kwargs = {"find_unused_parameters": True} if name.endswith("_true") else {}
    return DDPStrategy(timeout=timedelta(seconds=float(timeout_s)), **kwargs)


def write_progress(run_dir, rank: int, step: int, phase: int) -> None:
    """This rank's sign of life: where it is (step, phase of PHASES), written atomically."""
    from style_tailoring.io import atomic_write_text

    atomic_write_text(Path(run_dir) / PROGRESS_DIR / f"progress-rank{rank}.json",
                      json.dumps({"rank": rank, "step": step, "phase": phase, "pid": os.getpid(),
                                  "time": time.time()}))


def read_progress(run_dir) -> dict[int, dict]:
    out = {}
    for path in (Path(run_dir) / PROGRESS_DIR).glob("progress-rank*.json"):
        try:
            entry = json.loads(path.read_text())
            out[int(entry["rank"])] = entry
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def clear_progress(run_dir) -> None:
    for path in (Path(run_dir) / PROGRESS_DIR).glob("progress-rank*.json"):
        path.unlink(missing_ok=True)


def rank() -> int:
    """This process's global rank (0 outside DDP)."""
    return int(os.environ.get("RANK", 0))


def world_size(trainer: DictConfig) -> int:
    """How many ranks the run has: the launcher's WORLD_SIZE, else devices × nodes."""
    return int(os.environ.get("WORLD_SIZE") or device_count(trainer) * int(trainer.get("num_nodes", 1)))


def timed_out(err: BaseException) -> bool:
    """Whether an error (or its cause) is a collective that timed out (gloo's and NCCL's messages say so)."""
    while err is not None:
        text = f"{type(err).__name__}: {err}".lower()
        if "timed out" in text or "timeout" in text:
            return True
        err = err.__cause__ or err.__context__
    return False


def stalled_ranks(run_dir, world: int, me: int) -> list[str]:
    """The ranks (other than `me`) that stopped answering, each described: those whose last sign of life is
    behind the furthest rank's; if none is behind, every other rank (in a two-rank run: the other one)."""
    progress = read_progress(run_dir)
    others = [r for r in range(world) if r != me]
    where = {r: (progress[r]["step"], progress[r]["phase"]) if r in progress else (-1, -1) for r in range(world)}
    furthest = max(where.values())
    behind = [r for r in others if where[r] < furthest] or others
    now, out = time.time(), []
    for r in behind:
        entry = progress.get(r)
        if entry is None:
            out.append(f"rank {r} stopped answering (it never reported a training step)")
            continue
        out.append(f"rank {r} (pid {entry['pid']}) stopped answering: its last sign of life was step "
                   f"{entry['step'] + 1} ({PHASES[entry['phase']]}) {now - entry['time']:.0f} s ago")
    return out


class Watchdog:
    """Rank 0's watch over its self-launched workers: once a worker has ended badly and rank 0 has not ended
    within `grace` seconds after it (rank 0 itself hangs: nothing else keeps it from noticing), it writes why into
    `metrics.json` and the log, and ends rank 0's process."""

    def __init__(self, workers: list[subprocess.Popen], run_dir, grace: float, every: float = 1.0):
        self.workers, self.run_dir, self.grace, self.every = workers, Path(run_dir), grace, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ddp-watchdog", daemon=True)

    def __enter__(self):
        if self.workers:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def _watch(self) -> None:
        ended_at = None
        while not self._stop.wait(self.every):
            failed = [(rank, w) for rank, w in enumerate(self.workers, 1) if w.poll() not in (None, 0)]
            if not failed:
                continue
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at < self.grace:
                continue
            rank, worker = failed[0]
            message = (f"rank 0 (pid {os.getpid()}) stopped answering: rank {rank} (pid {worker.pid}) ended "
                       f"(exit status {worker.returncode}) {time.monotonic() - ended_at:.0f} s ago and rank 0 did "
                       "not end with it; resume the run with ckpt_path=last")
            print(f"error: {message}", file=sys.stderr, flush=True)
            try:
                from style_tailoring.io import update_json

                update_json(self.run_dir / "metrics.json", {"status": "failed", "error": f"RankHung: {message}"})
            finally:
                os._exit(1)


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
    config = OmegaConf.load(sys.argv[2])
    try:
        getattr(importlib.import_module(module), function)(config)
    except Exception as err:
        me = rank()
        if os.getppid() != parent:  # rank 0 started this process; its death is the cause, not this rank's error
            sys.exit(f"DDP rank {me}: rank 0 (pid {parent}) died, so this rank stopped too; "
                     "resume the run with ckpt_path=last")
        if timed_out(err):
            stalled = stalled_ranks(config.run_dir, int(os.environ.get("WORLD_SIZE", 1)), me)
            timeout = float((config.get("launch") or {}).get("timeout_s") or 0)
            sys.exit(f"DDP rank {me}: {'; '.join(stalled)}, so this rank's collective timed out after "
                     f"launch.timeout_s={timeout:g} s and it stopped too; resume the run with ckpt_path=last")
        raise
