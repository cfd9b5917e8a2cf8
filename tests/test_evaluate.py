"""Evaluation: sampling is deterministic by seed and sharded across DDP ranks without loss or duplication."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import make_cfg
from style_tailoring.models.components import build_tiny, make_pipeline
from style_tailoring.provenance import digest, repository_state
from style_tailoring.sampling.generate import load_prompts, make_jobs
from test_cli import cli

PROMPTS = ["a red circle", "a blue square", "a green circle"]


@pytest.fixture(scope="module")
def saved_pipeline(data_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    make_pipeline(build_tiny(make_cfg(data_dirs, root / "x").model)).save_pretrained(root / "pipeline")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return root


def test_prompt_files_and_jobs(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat", "subject": "cat"}\n\n{"prompt": "two dogs"}\n')
    assert load_prompts(tmp_path / "p.jsonl") == ["a cat", "two dogs"]
    (tmp_path / "bad.jsonl").write_text('{"subject": "cat"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_prompts(tmp_path / "bad.jsonl")
    jobs = make_jobs(["a", "b"], seeds_per_prompt=3, base_seed=10)
    assert [(j.prompt_index, j.seed) for j in jobs] == [(0, 10), (0, 11), (0, 12), (1, 13), (1, 14), (1, 15)]


def read_run(out_dir):
    samples = out_dir / "samples" / "final"
    index = [json.loads(line) for line in (samples / "index.jsonl").read_text().splitlines()]
    return {row["file_name"]: np.asarray(Image.open(samples / row["file_name"])) for row in index}, index


@pytest.mark.slow
def test_two_rank_sharding_gives_exactly_the_single_process_samples(saved_pipeline, tmp_path):
    common = [f"pipeline={saved_pipeline / 'pipeline'}", f"eval.prompts={saved_pipeline / 'prompts.txt'}",
              "eval.seeds_per_prompt=3", "eval.sample.num_inference_steps=3", "eval.sample.batch_size=2",
              "data=folder", "eval.fid.enabled=false"]
    cli("style_tailoring.evaluate", *common, "hydra.run.dir=one", cwd=tmp_path)
    proc = cli("style_tailoring.evaluate", *common, "hydra.run.dir=two", "trainer=ddp", "trainer.accelerator=cpu",
               "trainer.devices=2", cwd=tmp_path)
    one, index = read_run(tmp_path / "one")
    two, _ = read_run(tmp_path / "two")
    assert len(index) == len(PROMPTS) * 3 == len(one) == len(two)
    # each (prompt, sample) pair has its own noise seed
    assert {(r["prompt"], r["seed"]) for r in index} == {(p, i * 3 + s) for i, p in enumerate(PROMPTS)
                                                         for s in range(3)}
    # Same images; only float reduction order differs (1 vs 2 threads per process): at most a level, rarely.
    diffs = np.stack([np.abs(one[n].astype(int) - two[n].astype(int)) for n in one])
    assert diffs.max() <= 2 and (diffs > 0).mean() < 0.01
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["eval/num_samples"] == 9 and "eval.clip.model_path" in json.dumps(metrics["eval/skipped"])
    assert "clip_score skipped" in proc.stderr + proc.stdout


def test_training_evaluates_periodically_and_at_the_end(data_dirs, tmp_path):
    from style_tailoring.training.run import run

    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    run_dir = tmp_path / "run"
    metrics = run(make_cfg(data_dirs, run_dir, "eval.enabled=true", f"eval.prompts={tmp_path / 'prompts.txt'}",
                           "eval.every_n_steps=2", "eval.seeds_per_prompt=2", "eval.sample.num_inference_steps=2",
                           "trainer.log_every_n_steps=1"))
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["final", "step-000002"]
    assert len(list((run_dir / "samples" / "step-000002").glob("*.png"))) == 6
    assert (run_dir / "final_grid.png").is_file() and metrics["eval/num_samples"] == 6
    log = (run_dir / "csv" / "metrics.csv").read_text()
    assert "eval/num_samples" in log.splitlines()[0]


@pytest.mark.slow
def test_evaluating_a_pipeline_twice_gives_two_runs_that_collect_puts_side_by_side(data_dirs, tmp_path):
    from style_tailoring.collect import collect
    from style_tailoring.training.run import run

    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    train_dir = tmp_path / "study" / "train"
    run(make_cfg(data_dirs, train_dir, "strategy=style_tailoring", "strategy.t_split=300"))
    before = {p: p.stat().st_mtime_ns for p in train_dir.rglob("*") if p.is_file()}
    common = [f"pipeline={train_dir / 'pipeline'}", f"eval.prompts={tmp_path / 'prompts.txt'}",
              "eval.seeds_per_prompt=2", "eval.sample.num_inference_steps=2", "data=folder", "eval.fid.enabled=false"]
    for guidance in (1.0, 4.0):
        cli("style_tailoring.evaluate", *common, f"eval.sample.guidance_scale={guidance}",
            f"hydra.run.dir=study/eval-g{guidance:g}", cwd=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in train_dir.rglob("*") if p.is_file()} == before  # untouched
    trained = json.loads((train_dir / "metrics.json").read_text())["provenance"]
    assert trained["commit"] == repository_state()["commit"]
    assert trained["weights"]["pipeline"] == digest(train_dir / "pipeline")
    for guidance in (1, 4):
        out = tmp_path / "study" / f"eval-g{guidance}"
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["kind"] == "evaluation" and metrics["pipeline"] == str(train_dir / "pipeline")
        provenance = metrics["eval/provenance"]  # what scored it: the same weights and prompts at both scales
        assert provenance["commit"] == trained["commit"] and provenance["weights"] == trained["weights"]
        assert provenance["eval_prompts"] == digest(tmp_path / "prompts.txt") and "judges" not in provenance
        assert metrics["strategy"] == "style_tailoring" and metrics["t_split"] == 300 and metrics["steps"] == 4
        assert metrics["eval/sampler"] == {"name": "plain"}
        assert metrics["eval/settings"]["guidance_scale"] == guidance and metrics["eval/num_samples"] == 6
        assert len(list((out / "samples" / "final").glob("*.png"))) == 6 and (out / "final_grid.png").is_file()
    table = collect(tmp_path / "study").set_index("run")
    assert list(table.index) == ["eval-g1", "eval-g4", "train"]
    evals = table.loc[["eval-g1", "eval-g4"]]
    assert evals["kind"].tolist() == ["evaluation"] * 2 and evals["guidance"].tolist() == [1.0, 4.0]
    assert evals["strategy"].tolist() == ["style_tailoring"] * 2 and evals["t_split"].tolist() == [300, 300]
    assert evals["sampler"].tolist() == ["plain"] * 2 and (evals["status"] == "completed").all()
    assert table.loc["train", "kind"] == "training"
    assert evals["eval/provenance/weights/pipeline"].nunique() == 1


def test_evaluation_checks_its_paths_and_settings_first(saved_pipeline, tmp_path):
    common = [f"eval.prompts={saved_pipeline / 'prompts.txt'}", "data=folder", "eval.fid.enabled=false"]
    for overrides, key in [(["pipeline=/nowhere"], "pipeline"),
                           ([f"pipeline={saved_pipeline / 'pipeline'}", "unet=/nowhere"], "unet"),
                           ([f"pipeline={saved_pipeline / 'pipeline'}", "eval.sample.scheduler=Nope"],
                            "eval.sample.scheduler")]:
        proc = subprocess.run([sys.executable, "-m", "style_tailoring.evaluate", *common, *overrides,
                               "hydra.run.dir=out"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and f"ConfigError: {key}:" in proc.stderr, proc.stderr[-2000:]
        assert not (tmp_path / "out" / "samples").exists()


@pytest.mark.slow
def test_samplers_run_through_the_evaluate_command_on_a_sequential_run(data_dirs, tmp_path):
    """A tiny pretrained round trip: a sequential run's two stage UNets, switched at sampling time; and DCI."""
    from style_tailoring.training.run import run

    (tmp_path / "prompts.txt").write_text("a red circle, sticker\na blue square, sticker\n")
    seq = tmp_path / "seq"
    run(make_cfg(data_dirs, seq, "strategy=sequential"))
    common = [f"eval.prompts={tmp_path / 'prompts.txt'}", "eval.seeds_per_prompt=2", "data=folder",
              "eval.sample.num_inference_steps=4", "eval.fid.enabled=false"]
    cli("style_tailoring.evaluate", f"pipeline={seq / 'pipeline'}", f"unet={seq / 'stages' / '1-alignment' / 'unet'}",
        "eval/sampler=timestep_split", "eval.sampler.t_switch=500",
        f"eval.sampler.late_unet={seq / 'stages' / '2-style' / 'unet'}", *common, "hydra.run.dir=split", cwd=tmp_path)
    cli("style_tailoring.evaluate", f"pipeline={seq / 'pipeline'}", "eval/sampler=dci", "eval.sampler.concept=sticker",
        "eval.sampler.t_end=500", *common, "hydra.run.dir=dci", cwd=tmp_path)
    split = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert split["eval/sampler"] == {"name": "timestep_split", "t_switch": 500, "handoff": "swap",
                                     "late_unet": str(seq / "stages" / "2-style" / "unet")}
    assert split["unet"].endswith("1-alignment/unet") and split["strategy"] == "sequential"
    dci = json.loads((tmp_path / "dci" / "metrics.json").read_text())
    assert dci["eval/sampler"]["name"] == "dci" and dci["eval/sampler"]["concept"] == "sticker"
    assert dci["eval/num_samples"] == 4 and len(list((tmp_path / "dci" / "samples" / "final").glob("*.png"))) == 4
    proc = subprocess.run([sys.executable, "-m", "style_tailoring.evaluate", f"pipeline={seq / 'pipeline'}",
                           "eval/sampler=dci", *common, "hydra.run.dir=bad"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "eval.sampler.concept" in proc.stderr  # required, named before any work
