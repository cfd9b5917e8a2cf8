"""What the fault suite shares: recording each case for the README's table, and running a CLI that is killed.

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
