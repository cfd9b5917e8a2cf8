"""One rank of a two-process DDP run is killed: the other ends within a bounded time with an error that says which
rank died and how to go on, and the run resumed from its checkpoints ends equal to an uninterrupted DDP run."""

from __future__ import annotations

import json
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


# launch.timeout_s of the hung runs (the default is 300 s). It bounds the rendezvous too, and a worker starting on
# two busy CPU cores may take over 20 s to reach it: a rank that never joins would be reported as hung as well.
TIMEOUT_S = 60
HANG_BOUND_S = 2 * TIMEOUT_S + 30  # a worker's timeout, then rank 0's watchdog grace (rank 0 hung), then exits


@pytest.mark.faults_full
@pytest.mark.parametrize("victim", ["1", "0"])
def test_a_hung_ddp_rank_ends_the_run_naming_it_within_the_timeout_and_the_run_resumes(victim, ddp_reference,
                                                                                       data_dirs, tmp_path):
    """One rank of two hangs (alive, never answering) in its 5th training step: the run ends within the
    collective timeout (launch.timeout_s, plus the watchdog's grace when rank 0 is the one hung), its error names
    the hung rank, and the run resumed with ckpt_path=last ends equal to an uninterrupted one."""
    run_dir = tmp_path / "run"
    log = tmp_path / "ddp.log"
    hang = "hang-call:style_tailoring.training.module.DiffusionFinetune.training_step:5"
    args = train_args(data_dirs, run_dir, *DDP, f"launch.timeout_s={TIMEOUT_S}")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "inject", "style_tailoring.train", *args], cwd=tmp_path,
                                env=cli_env(FAULT=hang, FAULT_RANK=victim), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            assert wait_for(lambda: (run_dir / "checkpoints" / "step-000004.ckpt").is_file(), 300)
            started = time.monotonic()
            workers = children(proc.pid)
            assert len(workers) == 1, workers
            hung_pid = workers[0] if victim == "1" else proc.pid
            ended = wait_for(lambda: proc.poll() is not None and not any(alive(pid) for pid in workers),
                             HANG_BOUND_S)
            took = time.monotonic() - started
        finally:
            os.killpg(proc.pid, signal.SIGKILL) if alive(proc.pid) else None
            proc.wait()
    said = log.read_text()
    assert ended, f"the run was still running {HANG_BOUND_S} s after rank {victim} hung:\n{said[-3000:]}"
    assert proc.returncode != 0
    assert f"rank {victim} (pid {hung_pid}) stopped answering" in said, said[-3000:]
    assert "resume the run with ckpt_path=last" in said
    if victim == "1":
        assert f"collective timed out after launch.timeout_s={TIMEOUT_S} s" in said
        assert json.loads((run_dir / "metrics.json").read_text())["error"].startswith("RankHung: rank 1 (pid")
    run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, *DDP, "ckpt_path=last"), cwd=tmp_path)
    same_run(ddp_reference, run_dir)
    print(f"the run ended {took:.1f} s after rank {victim}'s hang began (launch.timeout_s={TIMEOUT_S})")
    record("hang, then resume", f"one DDP rank of two hangs (rank {victim}): the run ends within "
           f"{HANG_BOUND_S} s (launch.timeout_s={TIMEOUT_S}), naming it", "survived")
