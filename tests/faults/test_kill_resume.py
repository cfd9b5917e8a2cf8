"""A training run killed (SIGKILL: no handler runs) at each kind of moment, then run again with `ckpt_path=last`,
ends with exactly the uninterrupted run's UNet and metrics; nothing half-written is ever read; a damaged
checkpoint is skipped (last.ckpt) or named (any other); a full disk while writing keeps what was there."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from faultlib import cli_env, intact, killed, record, run_cli, same_run, train_args, unet
from style_tailoring.training.checkpoints import damage


@pytest.fixture(scope="module")
def reference(data_dirs, tmp_path_factory):
    """The uninterrupted run every case must end equal to (its wall time kept beside it, for the random kills)."""
    root = tmp_path_factory.mktemp("reference")
    started = time.monotonic()
    run_cli("style_tailoring.train", *train_args(data_dirs, root / "run"), cwd=root)
    (root / "seconds").write_text(str(time.monotonic() - started))
    return root / "run"


KILLS = {  # case: (faultpoint, what the table calls it)
    "mid_step": ("call:style_tailoring.training.module.DiffusionFinetune.training_step:6",
                 "SIGKILL mid-step (step 5 of 8, inside stage 2)"),
    "checkpoint_write": ("replace:step-*.ckpt:2", "SIGKILL while writing a checkpoint (step 4)"),
    "between_checkpoints": ("replaced:step-*.ckpt:3", "SIGKILL between step-6.ckpt and last.ckpt"),
    "latent_cache": ("replace:part-*.safetensors:2", "SIGKILL while writing the latent cache"),
    "export": ("replace:pipeline:1", "SIGKILL while exporting the pipeline"),
    "metrics": ("replace:metrics.json:1", "SIGKILL while writing metrics.json"),
}


@pytest.mark.parametrize("case", [  # one kind of kill in every test run (CI), every kind in the whole suite
    case if case == "mid_step" else pytest.param(case, marks=pytest.mark.faults_full) for case in KILLS])
def test_a_killed_run_resumes_to_the_uninterrupted_result(case, reference, data_dirs, tmp_path):
    fault, label = KILLS[case]
    run_dir = tmp_path / "run"
    first = run_cli("style_tailoring.train", *train_args(data_dirs, run_dir), cwd=tmp_path, fault=fault, check=False)
    assert killed(first), f"the faultpoint {fault} was not reached:\n{first.stderr[-3000:]}"
    intact(run_dir)
    run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, "ckpt_path=last"), cwd=tmp_path)
    same_run(reference, run_dir)
    assert not list(run_dir.rglob("*.tmp")) and not list((tmp_path / ".cache").rglob("*.tmp")), \
        "a killed writer's temp files were left behind"
    record("SIGKILL, then resume", label, "survived")


@pytest.mark.faults_full
@pytest.mark.parametrize("how", ["bit flip", "truncation"])
def test_a_damaged_last_checkpoint_falls_back_to_the_newest_intact_one(how, reference, data_dirs, tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli("style_tailoring.train", *train_args(data_dirs, run_dir), cwd=tmp_path, check=False,
                    fault=KILLS["mid_step"][0])
    assert killed(first)
    last = run_dir / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    if how == "bit flip":
        data[len(data) // 2] ^= 0x10  # inside a tensor's bytes: torch alone would load it without a word
    else:
        data = data[: len(data) // 3]
    last.write_bytes(bytes(data))
    assert damage(last)
    resumed = run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, f"ckpt_path={last}"), cwd=tmp_path)
    said = resumed.stdout + resumed.stderr  # Hydra logs to stdout
    assert "last.ckpt" in said and "newest intact checkpoint" in said
    same_run(reference, run_dir)
    record("corrupt checkpoint", f"last.ckpt, {how}", "survived")


def test_a_damaged_checkpoint_named_to_resume_from_is_refused_naming_it(tmp_path):
    from style_tailoring.config import ConfigError
    from style_tailoring.training.checkpoints import resume_checkpoint

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.arange(1000.0)}, "global_step": 2}, folder / "step-000002.ckpt")
    torch.save({"state_dict": {"w": torch.arange(1000.0)}, "global_step": 4}, folder / "step-000004.ckpt")
    good = folder / "step-000004.ckpt"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x01
    good.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"ckpt_path.*step-000004.ckpt.*checksum.*step-000002.ckpt"):
        resume_checkpoint(str(good), tmp_path / "run")
    (folder / "step-000003.ckpt").write_bytes(b"")  # an empty file (a kill before any byte): not a checkpoint
    with pytest.raises(ConfigError, match="truncated"):
        resume_checkpoint(str(folder / "step-000003.ckpt"), tmp_path / "run")
    assert resume_checkpoint("last", tmp_path / "run") == str(folder / "step-000002.ckpt")
    assert resume_checkpoint("last", tmp_path / "fresh") is None  # nothing yet: a requeued job starts at step 0
    record("corrupt checkpoint", "named step checkpoint, bit flip or empty", "rejected with message", cases=2)


@pytest.mark.faults_full
def test_a_full_disk_while_checkpointing_keeps_the_previous_ones_and_says_so(reference, data_dirs, tmp_path):
    run_dir = tmp_path / "run"
    full = run_cli("style_tailoring.train", *train_args(data_dirs, run_dir), cwd=tmp_path, check=False,
                   fault="enospc:step-*.ckpt:2")
    assert full.returncode != 0
    said = full.stdout + full.stderr
    assert "could not write checkpoint" in said and "No space left on device" in said
    assert "step-000002.ckpt" in said  # the intact checkpoints are named
    intact(run_dir)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step-000002.ckpt"]
    run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, "ckpt_path=last"), cwd=tmp_path)
    same_run(reference, run_dir)
    record("full disk", "during a checkpoint write", "survived")


@pytest.mark.faults_full
def test_a_full_disk_while_exporting_keeps_the_previous_pipeline(reference, data_dirs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)  # a finished run, exported; run again (as a re-run of a sweep would)
    before = unet(run_dir)
    again = run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, "ckpt_path=last"), cwd=tmp_path,
                    check=False, fault="enospc-call:diffusers.ModelMixin.save_pretrained:2")  # mid-export
    said = again.stdout + again.stderr
    assert again.returncode != 0 and "No space left on device" in said
    assert f"could not write the pipeline {run_dir / 'pipeline'}" in said and "the previous one is intact" in said
    after = unet(run_dir)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not list(run_dir.glob(".pipeline.*"))  # the partial export was removed
    record("full disk", "during the pipeline export", "survived")


@pytest.mark.faults_full
def test_a_rerun_killed_between_its_two_renames_gets_the_old_pipeline_back(reference, data_dirs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    again = run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, "ckpt_path=last"), cwd=tmp_path,
                    check=False, fault="replaced:.pipeline.old:1")
    assert killed(again) and not (run_dir / "pipeline").exists() and (run_dir / ".pipeline.old").is_dir()
    run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, "ckpt_path=last"), cwd=tmp_path)
    same_run(reference, run_dir)
    assert not (run_dir / ".pipeline.old").exists()
    record("SIGKILL, then resume", "SIGKILL between moving the old pipeline aside and the new one in", "survived")


EVAL_PROMPTS = ["a red square sticker", "a blue circle", "a green square"]


def eval_args(prompts_file) -> list[str]:
    return ["eval.enabled=true", f"eval.prompts={prompts_file}", "eval.seeds_per_prompt=2",
            "eval.sample.num_inference_steps=2"]


def eval_numbers(run_dir) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k.startswith("eval/") and isinstance(v, (int, float))}


# In every test run, not only the whole suite: a study that spans sessions is killed while it evaluates, and a run
# taken as done without its numbers would be a hole in its results.
def test_a_run_killed_while_writing_its_evaluation_samples_resumes_to_the_same_numbers(data_dirs, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(EVAL_PROMPTS) + "\n")
    reference = tmp_path / "reference"
    run_cli("style_tailoring.train", *train_args(data_dirs, reference, *eval_args(prompts)), cwd=tmp_path)
    run_dir = tmp_path / "run"
    first = run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, *eval_args(prompts)), cwd=tmp_path,
                    check=False, fault="call:PIL.Image.Image.save:3")  # the third sample PNG of six
    assert killed(first) and len(list((run_dir / "samples" / "final").glob("*.png"))) == 2
    intact(run_dir)
    # trained and exported, not evaluated: not done for a job runner, a HITL loop or the recipe, which run it again
    from style_tailoring.runtime.jobs import run_done

    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "trained, evaluating"
    assert not run_done(run_dir)
    run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, *eval_args(prompts), "ckpt_path=last"),
            cwd=tmp_path)
    same_run(reference, run_dir)
    numbers = eval_numbers(reference)
    assert numbers and eval_numbers(run_dir) == numbers and numbers["eval/num_samples"] == 6
    assert run_done(run_dir)
    record("SIGKILL, then resume", "SIGKILL while writing the evaluation's samples", "survived")


def other_kinds(data_dirs, root) -> dict:
    """The other kinds of run the core trains, each as the train CLI gets it: (overrides, what the table says)."""
    from style_tailoring.world.motion import build_animated

    clips = build_animated(root / "anim", sizes={"video_domain": 8, "video_prompts": 1})
    return {
        "style_tailoring": (("model=tiny", "strategy=style_tailoring"), "Style Tailoring (timestep routes)"),
        "lora": (("model=tiny", "strategy=mixture", "model.lora.rank=4"), "mixture, LoRA"),
        "styleforge": (("model=tiny", "strategy=styleforge", f"data.sources.styleref.dir={data_dirs['style']}",
                        f"data.sources.aux.dir={data_dirs['domain']}"), "StyleForge (dual binding)"),
        "animation": (("model=sticker_world_base", "strategy=base", "model.motion.enabled=true",
                       f"data.domain_dir={clips / 'video_domain'}", f"paths.data_dir={root}/data"),
                      "animation (motion modules on world clips)"),
    }


@pytest.mark.faults_full
@pytest.mark.parametrize("kind", ["style_tailoring", "lora", "styleforge", "animation"])
def test_every_kind_of_run_resumes_after_a_kill_mid_step(kind, data_dirs, tmp_path):
    overrides, label = other_kinds(data_dirs, tmp_path)[kind]
    dirs = {k: v for k, v in data_dirs.items() if kind != "animation"}  # the clips are its only source
    reference, run_dir = tmp_path / "reference", tmp_path / "run"
    run_cli("style_tailoring.train", *train_args(dirs, reference, kind=overrides), cwd=tmp_path)
    first = run_cli("style_tailoring.train", *train_args(dirs, run_dir, kind=overrides), cwd=tmp_path, check=False,
                    fault=KILLS["mid_step"][0])
    assert killed(first), first.stderr[-3000:]
    run_cli("style_tailoring.train", *train_args(dirs, run_dir, "ckpt_path=last", kind=overrides), cwd=tmp_path)
    same_run(reference, run_dir)
    record("SIGKILL, then resume", f"{label}: SIGKILL mid-step (step 5 of 8)", "survived")


@pytest.mark.faults_full
def test_two_runs_building_one_latent_cache_at_once_both_end_right(reference, data_dirs, tmp_path):
    """Two processes (one cwd, so one .cache) encode the same sources at the same moment."""
    procs = [subprocess.Popen([sys.executable, "-m", "style_tailoring.train", *train_args(data_dirs, tmp_path / name)],
                              cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for name in ("a", "b"):
        same_run(reference, tmp_path / name)
    caches = list((tmp_path / ".cache" / "latents").iterdir())
    assert caches and all(not list(c.glob(".*.tmp")) and (c / "complete.json").is_file() for c in caches)
    record("concurrent writers", "two runs building one latent cache at the same time", "survived")


@pytest.mark.faults_full
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_run_killed_at_a_random_moment_resumes_to_the_uninterrupted_result(seed, reference, data_dirs, tmp_path):
    """SIGKILL from outside at a moment drawn uniformly over the run's life (start-up, caching, steps, checkpoint
    writes, export: as long as the uninterrupted run took): wherever it lands, the run again with ckpt_path=last
    ends equal to the uninterrupted one."""
    delay = random.Random(seed).uniform(0.2, 0.95) * float((reference.parent / "seconds").read_text())
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "style_tailoring.train", *train_args(data_dirs, run_dir)],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    finished_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    intact(run_dir)
    run_cli("style_tailoring.train", *train_args(data_dirs, run_dir, "ckpt_path=last"), cwd=tmp_path)
    same_run(reference, run_dir)
    print(f"killed {delay:.1f} s after start{' (it had already finished)' if finished_first else ''}")
    record("SIGKILL, then resume", "SIGKILL at a random moment of the run's life (seeds 0-2)", "survived")
