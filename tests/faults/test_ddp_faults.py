"""One rank of a two-process DDP run is killed: the other ends within a bounded time with an error that says which
rank died and how to go on, and the run resumed from its checkpoints ends equal to an uninterrupted DDP run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from faultlib import alive, children, cli_env, record, run_cli, same_run, train_args, wait_for

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
BOUND_S = 60  # gloo notices a closed peer connection in seconds; a rank left waiting would sit for 30 minutes


@pytest.fixture(scope="module")
def ddp_reference(data_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_reference")
    run_cli("style_tailoring.train", *train_args(data_dirs, root / "run", *DDP), cwd=root)
    return root / "run"


@pytest.mark.faults_full
@pytest.mark.parametrize("victim", ["rank 1", "rank 0"])
def test_a_killed_ddp_rank_stops_the_other_clearly_and_the_run_resumes(victim, ddp_reference, data_dirs, tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "ddp.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "style_tailoring.train", *train_args(data_dirs, run_dir, *DDP)],
                                cwd=tmp_path, env=cli_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            assert wait_for(lambda: (run_dir / "checkpoints" / "step-000004.ckpt").is_file(), 300)
            workers = children(proc.pid)
            assert len(workers) == 1, workers
            killed_pid = workers[0] if victim == "rank 1" else proc.pid
            os.kill(killed_pid, signal.SIGKILL)
            started = time.monotonic()
            others = [pid for pid in (proc.pid, *workers) if pid != killed_pid]
            ended = wait_for(lambda: not any(alive(pid) for pid in others), BOUND_S)
            took = time.monotonic() - started
        finally:
            os.killpg(proc.pid, signal.SIGKILL) if alive(proc.pid) else None
            proc.wait()
    said = log.read_text()
    assert ended, f"a rank was still running {BOUND_S} s after its peer died:\n{said[-3000:]}"
    if victim == "rank 1":
        assert f"rank 1 (pid {killed_pid}) was killed by SIGKILL, so rank 0 stopped too" in said
    else:
        assert f"rank 0 (pid {killed_pid}) died, so this rank stopped too" in said
    assert "resume the run with ckpt_path=last" in said
    run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, *DDP, "ckpt_path=last"), cwd=tmp_path)
    same_run(ddp_reference, run_dir)
    print(f"the other rank ended {took:.1f} s after {victim} was killed")
    record("SIGKILL, then resume", f"one DDP rank of two killed ({victim}): the other ends within {BOUND_S} s",
           "survived")
