"""A sweep that loses jobs: one fails on a value that only breaks at run time, another is killed (SIGKILL) in the
middle of training. The other jobs' results survive untouched, and `collect` lists exactly the two with their
status."""

from __future__ import annotations

import json
import re

import pytest
from diffusers import StableDiffusionPipeline

from faultlib import killed, record, run_cli

SWEEP_JOBS = 4
FAILING_JOB = "2_base"  # trainer.precision=bogus: that job alone is refused (the trainer check), the sweep goes on


def train_args(data_dirs) -> list[str]:
    return ["data=folder", "model=tiny", *(f"data.{k}_dir={v}" for k, v in data_dirs.items()), "eval.enabled=false",
            "logger=csv", "strategy=base", "trainer.max_steps=2", "data.batch_size=2", "hydra.sweep.dir=sweep"]


@pytest.mark.faults_full
def test_a_failed_and_a_killed_job_leave_the_others_whole_and_collect_lists_exactly_them(data_dirs, tmp_path):
    precisions = ["32-true"] * SWEEP_JOBS
    precisions[int(FAILING_JOB[0])] = "bogus"
    run_cli("style_tailoring.train", "-m", *train_args(data_dirs), f"trainer.precision={','.join(precisions)}",
            cwd=tmp_path)
    sweep = tmp_path / "sweep"
    completed = sorted(p.parent.name for p in sweep.glob("*/metrics.json")
                       if json.loads(p.read_text())["status"] == "completed")
    assert completed == [f"{i}_base" for i in range(SWEEP_JOBS) if f"{i}_base" != FAILING_JOB]
    assert all(json.loads((sweep / job / "metrics.json").read_text())["steps"] == 2 for job in completed)
    failed = json.loads((sweep / FAILING_JOB / "metrics.json").read_text())
    assert failed["status"] == "failed" and "bogus" in failed["error"], failed
    print(f"{FAILING_JOB}: {failed['error']}")
    before = {job: (sweep / job / "metrics.json").read_bytes() for job in completed}

    # Another job into the same sweep directory, killed at its second training step: no handler, no cleanup.
    proc = run_cli("style_tailoring.train", "-m", *train_args(data_dirs), "hydra.sweep.subdir=killed",
                   cwd=tmp_path, fault="call:style_tailoring.training.module.DiffusionFinetune.training_step:2",
                   check=False)
    assert killed(proc), proc.stderr[-3000:]
    assert (sweep / "killed" / ".hydra" / "config.yaml").is_file() and not (sweep / "killed" / "metrics.json").exists()

    for job in completed:  # untouched, and each model loads and samples
        assert (sweep / job / "metrics.json").read_bytes() == before[job]
        pipe = StableDiffusionPipeline.from_pretrained(sweep / job / "pipeline", use_safetensors=True)
        assert pipe("a red circle", num_inference_steps=1, output_type="pt").images.shape == (1, 3, 32, 32)

    listing = run_cli("style_tailoring.collect", "sweep_dir=sweep", "out=table.csv", cwd=tmp_path)
    not_completed = sorted(re.findall(r"^not completed: (\S+): (.*)$", listing.stderr, re.MULTILINE))
    assert [(run, status.split(":")[0]) for run, status in not_completed] == [
        (FAILING_JOB, "failed"), ("killed", "missing metrics")], listing.stderr
    assert "bogus" in dict(not_completed)[FAILING_JOB]
    assert f"{SWEEP_JOBS + 1} runs ({SWEEP_JOBS - 1} completed)" in listing.stdout, listing.stdout
    record("sweep job lost", "one job failing at run time, one SIGKILLed mid-training", "reported", cases=2)
    record("sweep job lost", "the other jobs of the sweep", "survived", cases=len(completed))
