"""The HITL loop killed mid-round — the whole process group, as a preempted node dies, while its finetune trains;
or the loop alone while it writes a curated set — and run again with the same command: every step already
complete is kept, the rest is redone or resumed, and the round ends equal to an uninterrupted one (curated sets
byte for byte, the finetune's UNet bit for bit)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import test_hitl
from faultlib import cli_env, killed, record, run_cli, unet, wait_for
from test_hitl import BASE, quick_train

world_root = test_hitl.world_root  # the HITL tests' small Sticker World, a fixture

pytestmark = pytest.mark.faults_full


def hitl_args(root, run_dir) -> list[str]:
    train = [*quick_train(root), "trainer.max_steps=4", "checkpoint.every_n_steps=2", "eval.enabled=false"]
    return [f"hydra.run.dir={run_dir}", f"paths.root_dir={root}", "data.prepare=null", f"hitl.model={BASE}",
            f"hitl.prompts={root}/data/sticker_world/few_prompts.txt", "hitl.generate.seeds_per_prompt=2",
            "hitl.generate.sample.num_inference_steps=4", "hitl.strategies=[style_tailoring]",
            "hitl.curation.style_min=1", "hitl.curation.per_prompt_cap=1",
            "hitl.train_overrides=[" + ",".join(json.dumps(o) for o in train) + "]"]


def same_round(a, b) -> None:
    for name in ("alignment", "style"):
        files = sorted(p.relative_to(a / name) for p in (a / name).rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(b / name) for p in (b / name).rglob("*") if p.is_file()), name
        assert all((a / name / f).read_bytes() == (b / name / f).read_bytes() for f in files), name
    wa, wb = unet(a / "finetune" / "style_tailoring"), unet(b / "finetune" / "style_tailoring")
    assert all((wa[k] == wb[k]).all() for k in wa), "the round's finetune differs"


@pytest.fixture(scope="module")
def hitl_reference(world_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("hitl_reference")
    run_cli("style_tailoring.hitl", *hitl_args(world_root, root / "hitl"), cwd=root)
    return root / "hitl" / "round-1"


def test_a_loop_killed_while_its_finetune_trains_resumes_the_finetune(hitl_reference, world_root, tmp_path):
    run_dir = tmp_path / "hitl"
    proc = subprocess.Popen([sys.executable, "-m", "style_tailoring.hitl", *hitl_args(world_root, run_dir)],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    checkpoint = run_dir / "round-1" / "finetune" / "style_tailoring" / "checkpoints" / "step-000002.ckpt"
    reached = wait_for(lambda: checkpoint.is_file() or proc.poll() is not None, 900)
    os.killpg(proc.pid, signal.SIGKILL)  # the loop and its training process, together
    proc.wait()
    assert reached and checkpoint.is_file() and not (checkpoint.parent.parent / "metrics.json").is_file()
    stamp = (run_dir / "round-1" / "curation.json").stat().st_mtime_ns
    run_cli("style_tailoring.hitl", *hitl_args(world_root, run_dir), cwd=tmp_path)
    assert (run_dir / "round-1" / "curation.json").stat().st_mtime_ns == stamp  # a complete step is not redone
    same_round(hitl_reference, run_dir / "round-1")
    record("SIGKILL, then resume", "HITL loop and its finetune killed mid-training (process group)", "survived")


def test_a_loop_killed_while_writing_a_curated_set_curates_again(hitl_reference, world_root, tmp_path):
    run_dir = tmp_path / "hitl"
    first = run_cli("style_tailoring.hitl", *hitl_args(world_root, run_dir), cwd=tmp_path, check=False,
                    fault="replaced:alignment:1")  # the Alignment set is in place, the Style set and report not
    assert killed(first) and (run_dir / "round-1" / "alignment").is_dir()
    assert not (run_dir / "round-1" / "curation.json").exists()
    run_cli("style_tailoring.hitl", *hitl_args(world_root, run_dir), cwd=tmp_path)
    same_round(hitl_reference, run_dir / "round-1")
    record("SIGKILL, then resume", "HITL loop killed between writing its Alignment and Style sets", "survived")


def test_a_loop_killed_alone_takes_its_finetune_with_it(hitl_reference, world_root, tmp_path):
    """Only the loop's own process is killed (a user's kill PID, an OOM kill of the parent): its training child,
    started by the job runner, dies with it instead of training on as an orphan, and the same command resumes."""
    run_dir = tmp_path / "hitl"
    proc = subprocess.Popen([sys.executable, "-m", "style_tailoring.hitl", *hitl_args(world_root, run_dir)],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    finetune = run_dir / "round-1" / "finetune" / "style_tailoring"
    checkpoint = finetune / "checkpoints" / "step-000002.ckpt"
    pid_file = run_dir / "round-1" / "finetune" / "style_tailoring.log.pid"  # the runner's record of the child
    reached = wait_for(lambda: checkpoint.is_file() or proc.poll() is not None, 900)
    child = json.loads(pid_file.read_text())["pgid"] if pid_file.is_file() else None
    os.kill(proc.pid, signal.SIGKILL)  # the loop alone, not its process group
    proc.wait()
    assert reached and child is not None, "the finetune never started"
    assert wait_for(lambda: not alive(child), 15), f"the finetune (pid {child}) trained on after its loop died"
    assert not (finetune / "metrics.json").is_file()
    run_cli("style_tailoring.hitl", *hitl_args(world_root, run_dir), cwd=tmp_path)
    same_round(hitl_reference, run_dir / "round-1")
    record("SIGKILL, then resume", "HITL loop alone killed while its finetune trains (the child dies with it)",
           "survived")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:  # a zombie (killed, not yet reaped by init) is dead
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
