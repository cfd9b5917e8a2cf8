"""What the fault suite shares: recording each case for the table in docs/reliability.md, and running a CLI that is
killed.

Every test in tests/faults/ proves one class of fault or input is handled; when its assertions have passed it calls
`record(fault_class, case, outcome, cases=n)`. `python tests/faults/run.py` runs the whole suite with FAULTS_RECORD
set and turns the records (and any failed test) into the table. Outside that command `record` does nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from style_tailoring.training.checkpoints import damage

REPO = Path(__file__).resolve().parents[2]
OUTCOMES = ("survived", "rejected with message", "rebuilt", "reported", "refused")


def record(fault_class: str, case: str, outcome: str, cases: int = 1, lost: str = "none") -> None:
    """One row of the table: `cases` inputs or kills of this kind were tried and each ended in `outcome`."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
    path = os.environ.get("FAULTS_RECORD")
    if not path:
        return
    row = {"class": fault_class, "case": case, "outcome": outcome, "cases": int(cases), "lost": lost,
           "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def cli_env(**extra) -> dict:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "faults"), str(REPO / "src"),
                                         env.get("PYTHONPATH", "")])
    return env


def run_cli(module: str, *args: str, cwd: Path, fault: str | None = None, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess:
    """`python -m module args` in its own process group; `fault` arms faultpoints (see inject.py) in it."""
    env = cli_env(**({"FAULT": fault} if fault else {}))
    argv = [sys.executable, "-m", "inject", module, *args] if fault else [sys.executable, "-m", module, *args]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -signal.SIGKILL


def wait_for(predicate, timeout: float, every: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc: no psutil needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# A small real training run: the tiny model, two stages (sequential: alignment steps 0-3, style steps 4-7),
# a checkpoint every 2 steps. The kill/resume cases compare every run against it uninterrupted.
STEPS, EVERY = 8, 2


def train_args(data_dirs, run_dir, *extra, kind=("model=tiny", "strategy=sequential")):
    """The train CLI's overrides for the small run; `kind` the model and strategy (other kinds of run)."""
    return ["data=folder", *kind, "eval.enabled=false", "logger=csv",
            "trainer.enable_progress_bar=false", f"trainer.max_steps={STEPS}", "data.batch_size=2",
            f"checkpoint.every_n_steps={EVERY}", "checkpoint.keep=-1", f"hydra.run.dir={run_dir}",
            *(f"data.{k}_dir={v}" for k, v in data_dirs.items()), *extra]


def unet(run_dir) -> dict:
    return load_file(run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


def same_run(a, b) -> None:
    wa, wb = unet(a), unet(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "UNet differs"
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert {k: v for k, v in ma.items() if k.startswith("train/")} == \
        {k: v for k, v in mb.items() if k.startswith("train/")} and ma["steps"] == mb["steps"] == STEPS


def intact(run_dir) -> None:
    """Nothing visible is half-written: every checkpoint verifies, no pipeline without its weights."""
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        assert damage(ckpt) is None, ckpt
    if (run_dir / "pipeline").exists():
        assert (run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
