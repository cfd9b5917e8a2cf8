"""The HITL loop on a small real Sticker World: the shipped base generates, raters rate (the world's judges, people's
CSV and Label Studio files), curation selects, and real training runs finetune — composed from conf/hitl.yaml."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR
from style_tailoring.config import REPO_ROOT, ConfigError
from style_tailoring.hitl.__main__ import to_hitl_config
from style_tailoring.hitl.loop import run_hitl
from style_tailoring.hitl.ratings import (
    RatingsError,
    agreement_report,
    merge_people,
    read_csv,
    read_label_studio,
    write_label_studio,
)
from style_tailoring.io import read_jsonl
from style_tailoring.provenance import portable
from style_tailoring.world.datasets import WorldSpec, build_datasets

BASE = REPO_ROOT / "assets" / "sticker_world" / "base"
# Prompts the world base draws right often enough (~40%) that a few candidates always hold an aligned one
TRAIN_PROMPTS = ["one red square", "two purple circles", "one green heart"]


@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    """paths.root_dir with a small Sticker World under data/sticker_world (and a 3-prompt training set)."""
    root = tmp_path_factory.mktemp("home")
    world = build_datasets(root / "data" / "sticker_world", spec=WorldSpec().scaled(0.004))
    (world / "few_prompts.txt").write_text("\n".join(TRAIN_PROMPTS) + "\n")
    return root


def quick_train(root) -> list[str]:
    return ["logger=csv", "trainer.max_steps=2", "trainer.enable_progress_bar=false", "data.batch_size=4",
            f"paths.root_dir={root}", "data.prepare=null", "eval.max_prompts=2", "eval.seeds_per_prompt=1",
            "eval.sample.num_inference_steps=2", "eval.fid.enabled=false"]


def hitl_cfg(root, run_dir, *overrides):
    base = [f"run_dir={run_dir}", f"paths.root_dir={root}", "data.prepare=null", f"hitl.model={BASE}",
            f"hitl.prompts={root}/data/sticker_world/few_prompts.txt", "hitl.generate.seeds_per_prompt=2",
            "hitl.generate.sample.num_inference_steps=6", "hitl.strategies=[style_tailoring]",
            # the photo base earns style grade 1: a floor of 1 lets the style rule select
            "hitl.curation.style_min=1", "hitl.curation.per_prompt_cap=1",
            "hitl.train_overrides=[" + ",".join(json.dumps(o) for o in quick_train(root)) + "]"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_hitl_config(compose("hitl", overrides=[*base, *overrides]))


def test_two_judge_rated_rounds_accumulate_and_round_two_generates_from_round_one(world_root, tmp_path):
    run_dir = tmp_path / "hitl"
    results = run_hitl(hitl_cfg(world_root, run_dir, "hitl.rounds=2",
                                "hitl.strategy_overrides={style_tailoring: ['strategy.t_split=750']}"))
    r1, r2 = run_dir / "round-1", run_dir / "round-2"
    candidates = read_jsonl(r1 / "candidates" / "metadata.jsonl")
    assert len(candidates) == len(TRAIN_PROMPTS) * 2
    assert set(candidates[0]) >= {"file_name", "text", "prompt", "seed", "model", "round"}
    seeds = [c["seed"] for c in candidates + read_jsonl(r2 / "candidates" / "metadata.jsonl")]
    assert len(set(seeds)) == len(seeds)  # every (round, prompt, k) has its own noise
    assert read_jsonl(r2 / "candidates" / "metadata.jsonl")[0]["model"] == \
        str(r1 / "finetune" / "style_tailoring" / "pipeline")
    c1, c2 = (json.loads((r / "curation.json").read_text()) for r in (r1, r2))
    assert c1["candidates"] == 6 and 0 < c1["alignment"] <= 3  # at most one per prompt
    assert set(c1["per_prompt"]) == set(TRAIN_PROMPTS) and "colour" in c1["per_attribute"]
    assert sum(c1["style_histogram"].values()) == 6
    assert c2["accumulated"]["alignment"] == c1["accumulated"]["alignment"] + c2["alignment"]
    kept = read_jsonl(r2 / "alignment" / "metadata.jsonl")
    assert {row["round"] for row in kept} == {1, 2} and all((r2 / "alignment" / row["file_name"]).is_file()
                                                             for row in kept)
    metrics = json.loads((r2 / "finetune" / "style_tailoring" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["init_unet"] == portable(BASE)
    assert "strategy.t_split=750" in (r2 / "finetune" / "style_tailoring" / ".hydra" / "overrides.yaml").read_text()
    assert "eval/alignment" in results["round-2/style_tailoring"]
    manifest = json.loads((run_dir / "hitl.json").read_text())
    assert manifest["status"] == "completed" and set(manifest["rounds"]["2"]) == {
        "generate", "rate", "curate", "finetune/style_tailoring"}

    from style_tailoring.collect import collect

    table = collect(run_dir)  # the two finetunes are rows; the loop's own directory is not a run
    assert sorted(table["strategy"]) == ["style_tailoring", "style_tailoring"]


def test_rounds_can_all_generate_from_the_domain_model(world_root, tmp_path):
    """hitl.generate_with=domain: the control arm of the data engine; round 2 draws new noises from hitl.model."""
    run_dir = tmp_path / "hitl"
    run_hitl(hitl_cfg(world_root, run_dir, "hitl.rounds=2", "hitl.generate_with=domain", "hitl.strategies=[]",
                      "hitl.generate.seeds_per_prompt=4"))
    rows = [read_jsonl(run_dir / f"round-{r}" / "candidates" / "metadata.jsonl") for r in (1, 2)]
    assert {c["model"] for c in rows[0] + rows[1]} == {str(BASE.resolve())}
    assert not {c["seed"] for c in rows[0]} & {c["seed"] for c in rows[1]}
    assert not (run_dir / "round-1" / "finetune").exists()  # nothing to finetune: no strategy asked
    with pytest.raises(ConfigError, match="^hitl.generate_with"):
        run_hitl(hitl_cfg(world_root, tmp_path / "x", "hitl.rounds=2", "hitl.generate_with=previous"))


def _people_files(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    candidates = read_jsonl(run_dir / "round-1" / "candidates" / "metadata.jsonl")
    lines = ["file_name,rater,aligned,style"]
    for i, c in enumerate(candidates):
        lines.append(f"{c['file_name']},alice,1,{1 + i % 5}")
        lines.append(f"{c['file_name']},bob,{int(i % 3 != 0)},{1 + (i + 1) % 5}")
    csv_path = tmp_path / "alice_bob.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    carol = [{"file_name": c["file_name"], "rater": "carol", "aligned": 1, "style": 5} for c in candidates]
    studio = write_label_studio(tmp_path / "studio" / "carol.json", candidates, carol)
    return csv_path, studio


def test_a_people_round_waits_for_ratings_then_resumes_without_regenerating(world_root, tmp_path):
    run_dir = tmp_path / "hitl"
    with pytest.raises(ConfigError, match=r"hitl.rater.files.*style_tailoring.hitl.serve"):
        run_hitl(hitl_cfg(world_root, run_dir, "hitl/rater=people"))
    metadata = run_dir / "round-1" / "candidates" / "metadata.jsonl"
    stamp = metadata.stat().st_mtime_ns
    csv_path, studio = _people_files(run_dir, tmp_path)
    run_hitl(hitl_cfg(world_root, run_dir, "hitl/rater=people", f"hitl.rater.files=[{csv_path},{studio}]"))
    assert metadata.stat().st_mtime_ns == stamp  # generation was complete: not redone
    agreement = json.loads((run_dir / "round-1" / "agreement.json").read_text())
    assert agreement["raters"] == ["alice", "bob", "carol"] and agreement["candidates_rated_by_several"] == 6
    assert 0 < agreement["aligned_unanimous"] < 1
    rated = read_jsonl(run_dir / "round-1" / "rated.jsonl")
    assert all(r["aligned"] == 1 for r in rated)  # alice and carol outvote bob
    assert all("judge_aligned" in r for r in rated)  # audited by the evaluation judges
    curation = json.loads((run_dir / "round-1" / "curation.json").read_text())
    assert curation["audit_against_evaluation_judges"]["candidates"] == 6
    assert json.loads((run_dir / "round-1" / "finetune" / "style_tailoring" / "metrics.json").read_text())[
        "status"] == "completed"


def test_people_files_are_checked_row_by_row(tmp_path):
    known = {"a.png", "b.png"}
    bad = {
        "unknown.csv": ("file_name,rater,aligned,style\na.png,x,1,3\nzzz.png,x,1,3\n",
                        r"unknown.csv:3: unknown candidate"),
        "range.csv": ("file_name,rater,aligned,style\na.png,x,2,3\n", r"range.csv:2: aligned must be 0 or 1"),
        "style.csv": ("file_name,rater,aligned,style\na.png,x,1,6\n", r"style.csv:2: style must be an integer 1-5"),
        "unrated.csv": ("file_name,rater,aligned,style\na.png,x,1,3\nb.png,x,,\n", r"unrated.csv:3: b.png is unrated"),
        "header.csv": ("name,aligned\n", r"header.csv:1: the header lacks"),
    }
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(RatingsError, match=message):
            read_csv(tmp_path / name, known)
    assert [r["file_name"] for r in read_csv(tmp_path / "unrated.csv", known, on_unrated="skip")] == ["a.png"]
    tasks = [{"data": {"file_name": "a.png"}, "annotations": [{"completed_by": {"email": "d@x"}, "result": [
        {"from_name": "aligned", "value": {"choices": ["aligned"]}}, {"from_name": "style", "value": {"rating": 9}}]}]}]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    with pytest.raises(RatingsError, match=r"ls.json: task 1: style must be an integer 1-5"):
        read_label_studio(tmp_path / "ls.json", known)
    rows = [{"file_name": "a.png", "rater": r, "aligned": a, "style": s} for r, a, s in
            (("x", 1, 2), ("y", 0, 5), ("z", 1, 5))]
    merged = merge_people(rows)
    assert merged["a.png"].aligned == 1 and merged["a.png"].style == 4  # majority; mean 4.0
    report = agreement_report(rows)
    assert report["aligned_unanimous"] == 0 and report["aligned_pairwise_agreement"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("override, key", [
    ("hitl.rounds=0", "hitl.rounds"),
    ("hitl.finetune_from=scratch", "hitl.finetune_from"),
    ("hitl.on_unrated=maybe", "hitl.on_unrated"),
    ("hitl.strategies=[nope]", "hitl.strategies"),
    ("+hitl.rater.oracle=true", "hitl.rater.oracle"),
    (("hitl/rater=noisy", "hitl.rater.flip=0.9"), "hitl.rater.flip"),
    (("hitl/rater=people", "hitl.rater.style_merge=mode"), "hitl.rater.style_merge"),
    ("hitl.curation.style_min=6", "hitl.curation.style_min"),
    ("hitl.model=/nonexistent", "hitl.model"),
    (("hitl/rater=simulated_people", "hitl.rater.judges.path=/nonexistent"), "hitl.rater.judges"),
    ("hitl.strategy_overrides={sequential: ['strategy.stage_steps=[1,1]']}", "hitl.strategy_overrides.sequential"),
    ("hitl.strategy_overrides={style_tailoring: [t_split]}", "hitl.strategy_overrides.style_tailoring"),
    ("hitl.generate.sampler._target_=os.getcwd", "hitl.generate.sampler._target_"),
])
def test_bad_values_fail_before_any_work_naming_the_key(world_root, tmp_path, override, key):
    overrides = override if isinstance(override, tuple) else (override,)
    with pytest.raises(ConfigError, match="^" + key.replace(".", r"\.")):
        run_hitl(hitl_cfg(world_root, tmp_path / "x", *overrides))
    assert not (tmp_path / "x" / "round-1").exists()


def test_training_prompts_must_not_overlap_the_evaluation_prompts(world_root, tmp_path):
    eval_prompts = world_root / "data" / "sticker_world" / "eval_prompts.jsonl"
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text(eval_prompts.read_text())
    with pytest.raises(ConfigError, match=f"hitl.prompts: .*{leaky}.*{eval_prompts}"):
        run_hitl(hitl_cfg(world_root, tmp_path / "x", f"hitl.prompts={leaky}"))
    world_train = world_root / "data" / "sticker_world" / "train_prompts.jsonl"
    assert len(world_train.read_text().splitlines()) == 48  # every combination that is not held out


@pytest.mark.slow
def test_teachers_keep_rule_and_a_student_with_its_control(world_root, tmp_path):
    run_dir = tmp_path / "ensemble"
    other = tmp_path / "teacher_b"  # a second teacher: LoRA weights of a tiny finetune, on the same base UNet
    from style_tailoring.hitl.loop import run_training

    run_training(other, ["strategy=base", "seed=1", "model.lora.rank=4", *quick_train(world_root),
                         "eval.enabled=false"])
    student = REPO_ROOT / "assets" / "sticker_world" / "student"
    run_hitl(hitl_cfg(world_root, run_dir, "hitl.strategies=[]", f"+hitl.teachers=[{{name: a, model: {BASE}}}, "
                      f"{{name: b, lora: {other / 'lora'}}}]", f"hitl.student.base={student}",
                      "hitl.curation.per_prompt_cap=2"))
    r1 = run_dir / "round-1"
    candidates = read_jsonl(r1 / "candidates" / "metadata.jsonl")
    assert {c["teacher"] for c in candidates} == {"a", "b"} and len(candidates) == 2 * 6
    assert {c["model"] for c in candidates} == {str(BASE), f"{BASE}+lora:{other / 'lora'}"}
    teachers = json.loads((r1 / "teachers.json").read_text())
    assert set(teachers["summary"]) == {"a", "b"} and teachers["best_single_teacher"] in ("a", "b")
    assert set(teachers["winners_per_prompt"]) <= set(TRAIN_PROMPTS)
    kept = read_jsonl(r1 / "alignment" / "metadata.jsonl")
    control = read_jsonl(r1 / f"kept-{teachers['best_single_teacher']}" / "metadata.jsonl")
    assert len(control) <= len(kept) and {c["teacher"] for c in control} == {teachers["best_single_teacher"]}
    for name in ("ensemble", f"best_teacher-{teachers['best_single_teacher']}"):
        metrics = json.loads((r1 / "student" / name / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["strategy"] == "base"
        unet = json.loads((r1 / "student" / name / "pipeline" / "unet" / "config.json").read_text())
        assert unet["block_out_channels"] == [16, 32, 32]  # the half-width student base


@pytest.mark.slow
def test_recipe_runs_end_to_end_and_resumes_after_a_kill(world_root, tmp_path):
    run_dir = tmp_path / "recipe"
    train = json.dumps(quick_train(world_root)).replace(" ", "")
    cmd = [sys.executable, "-m", "style_tailoring.recipe", f"hydra.run.dir={run_dir}", f"paths.root_dir={world_root}",
           f"recipe.train_overrides={train}", "recipe.final_strategies=[sequential,style_tailoring]",
           "recipe.hitl_overrides=" + json.dumps([
               "hitl.rounds=2", "hitl.strategies=[style_tailoring]", "hitl.finetune_last_round=false",
               "data.prepare=null",
               f"hitl.prompts={world_root}/data/sticker_world/few_prompts.txt", "hitl.generate.seeds_per_prompt=2",
               "hitl.generate.sample.num_inference_steps=6", "hitl.curation.style_min=1"]).replace(" ", "")]
    dry = subprocess.run([*cmd, "recipe.dry_run=true"], capture_output=True, text=True, check=True).stdout
    names = [line[2:].split(" ")[0] for line in dry.splitlines() if line.startswith("# ")]
    assert names == ["prompt_engineering", "domain", "hitl", "final/sequential", "final/style_tailoring", "collect"]
    # Kill the recipe while it is inside the second HITL round, then run the same command again.
    log = open(tmp_path / "first_call.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    marker = run_dir / "hitl" / "round-2" / "candidates" / "metadata.jsonl"
    deadline = time.time() + 1200  # ~2 min on 2 idle cores; generous for a loaded machine
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    log.close()
    assert marker.is_file(), f"the recipe never reached round 2 (exit {proc.poll()}):\n" + \
        (tmp_path / "first_call.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    domain_stamp = (run_dir / "domain" / "metrics.json").stat().st_mtime_ns
    round1_stamp = (run_dir / "hitl" / "round-1" / "curation.json").stat().st_mtime_ns
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert (run_dir / "domain" / "metrics.json").stat().st_mtime_ns == domain_stamp  # not redone
    assert (run_dir / "hitl" / "round-1" / "curation.json").stat().st_mtime_ns == round1_stamp
    manifest = json.loads((run_dir / "recipe.json").read_text())
    assert manifest["status"] == "completed"
    import pandas as pd

    table = pd.read_csv(run_dir / "table.csv")
    assert {"prompt_engineering", "base", "sequential", "style_tailoring"} <= set(table["strategy"])
    # prompt engineering, domain, round 1's finetune (round 2 only curates), the two finals
    assert (table["status"] == "completed").all() and len(table) == 2 + 1 + 2
    assert not (run_dir / "hitl" / "round-2" / "finetune").exists()


def recipe_cfg(run_dir, *overrides):
    from style_tailoring.config import merge_into_schema
    from style_tailoring.recipe import RecipeRunConfig

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        composed = compose("recipe", overrides=[f"run_dir={run_dir}", f"paths.root_dir={run_dir.parent}", *overrides])
        return merge_into_schema(RecipeRunConfig, composed)


def test_recipe_runs_single_steps_only_after_what_they_need(tmp_path):
    from style_tailoring.recipe import plan_steps, run_recipe

    cfg = recipe_cfg(tmp_path / "r")
    steps = plan_steps(cfg)
    assert [s.name for s in steps] == ["prompt_engineering", "domain", "hitl", "final/sequential", "final/mixture",
                                       "final/style_tailoring", "collect"]
    final = next(s for s in steps if s.name == "final/mixture").command
    for step in steps[:-1]:  # every Hydra step gets the recipe's paths (the world is found where it was built)
        assert f"paths.data_dir={tmp_path}/data" in step.command, step.name
    assert f"model.init_unet={tmp_path / 'r' / 'domain' / 'pipeline'}" in final
    assert f"data.style_dir={tmp_path / 'r' / 'hitl' / 'round-2' / 'style'}" in final  # the last round's sets
    with pytest.raises(ConfigError, match=r"recipe.steps: step 'final/mixture' needs 'domain'"):
        run_recipe(recipe_cfg(tmp_path / "r", "recipe.steps=[final/mixture]"))
    with pytest.raises(ConfigError, match=r"recipe.steps: unknown step"):
        run_recipe(recipe_cfg(tmp_path / "r", "recipe.steps=[polish]"))
    with pytest.raises(ConfigError, match=r"recipe.final_strategies: unknown strategy"):
        run_recipe(recipe_cfg(tmp_path / "r", "recipe.final_strategies=[magic]"))
    assert not (tmp_path / "r").exists()  # nothing ran


@pytest.mark.parametrize("rater, names", [("noisy", {"noisy-0", "noisy-1", "noisy-2"}),
                                          ("clip_retrieval", {"clip_retrieval"})])
def test_independent_and_noisy_raters_are_audited_by_the_evaluation_judges(world_root, tmp_path, rater, names):
    run_dir = tmp_path / rater  # no finetune: generate, rate, curate only
    run_hitl(hitl_cfg(world_root, run_dir, "hitl.strategies=[]", f"hitl/rater={rater}",
                      *(["hitl.rater.flip=0.3"] if rater == "noisy" else [])))
    r1 = run_dir / "round-1"
    import csv

    with open(r1 / "ratings.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["rater"] for r in rows} == names and len(rows) == 6 * len(names)
    rated = read_jsonl(r1 / "rated.jsonl")
    assert all({"judge_aligned", "judge_style"} <= set(r) for r in rated)
    audit = json.loads((r1 / "curation.json").read_text())["audit_against_evaluation_judges"]
    assert audit["candidates"] == 6 and 0 <= audit["agreement"] <= 1
    agreement = json.loads((r1 / "agreement.json").read_text())
    assert agreement["raters"] == sorted(names)
    if rater == "noisy":  # three raters flipping 30% each rarely all agree on all six
        assert agreement["aligned_unanimous"] < 1


def test_simulated_people_rate_with_judges_of_their_own_and_the_evaluations_audit(world_root, tmp_path):
    """hitl/rater=simulated_people: three raters who see through the world's raters' judges (not the evaluation's),
    each flipping with probability 0.2; the evaluation's judges audit every candidate, and curation.json measures
    the curated sets as data with them. Without flips the ratings are exactly the raters' judges' answers."""
    from style_tailoring.curation.raters import JudgeRater
    from style_tailoring.hitl.candidates import load_images
    from style_tailoring.world.judges import load_judges

    cfg = hitl_cfg(world_root, tmp_path / "people", "hitl.strategies=[]", "hitl/rater=simulated_people")
    assert cfg.hitl.rater.flip == 0.2 and cfg.hitl.rater.raters == 3
    run_dir = tmp_path / "exact"
    run_hitl(hitl_cfg(world_root, run_dir, "hitl.strategies=[]", "hitl/rater=simulated_people",
                      "hitl.rater.flip=0", "hitl.generate.seeds_per_prompt=4"))
    r1 = run_dir / "round-1"
    rated = read_jsonl(r1 / "rated.jsonl")
    images = load_images(r1 / "candidates", rated, (222, 224, 230))
    own = JudgeRater(load_judges(REPO_ROOT / "assets" / "sticker_world" / "judges_rater")).rate(
        images, [r["prompt"] for r in rated])
    audit = JudgeRater(load_judges(REPO_ROOT / "assets" / "sticker_world" / "judges")).rate(
        images, [r["prompt"] for r in rated])
    assert [(r["aligned"], r["style"]) for r in rated] == [(o.aligned, o.style) for o in own]
    assert [(r["judge_aligned"], r["judge_style"]) for r in rated] == [(a.aligned, a.style) for a in audit]
    curation = json.loads((r1 / "curation.json").read_text())
    assert curation["audit_against_evaluation_judges"]["candidates"] == 12
    from style_tailoring.provenance import digest

    provenance = curation["provenance"]  # what made the sets: commit, rater, what it read, what audited it
    assert provenance["rater"].endswith("NoisyRaters") and "commit" in provenance
    assert provenance["digests"]["rater_reads"] != provenance["digests"]["audit_judges"]
    assert provenance["digests"]["candidates"] == digest(r1 / "candidates")
    measured = curation["sets_as_data"]
    assert measured["alignment"]["images"] == curation["accumulated"]["alignment"]
    assert 0 <= measured["style"]["style_score"] <= 1 and 0 <= measured["alignment"]["alignment"] <= 1


def test_a_set_measured_as_data_tells_stickers_from_photos_and_varied_from_repeated(tmp_path):
    """measure_set (curation.json's sets_as_data, and the study's expert sets) on imagefolders of renders: stickers
    of their prompts score as stickers and aligned, photos do not score as stickers; each prompt's images drawn in
    varied compositions have layout diversity, one composition repeated has none."""
    import numpy as np

    from style_tailoring.hitl.steps import measure_set
    from style_tailoring.io import write_jsonl
    from style_tailoring.world.grammar import caption, eval_prompt_contents
    from style_tailoring.world.judges import load_judges
    from style_tailoring.world.render import render

    def folder(name, style, repeat):
        rng, rows = np.random.default_rng(3), []
        (tmp_path / name).mkdir()
        for content in eval_prompt_contents()[:3]:
            first = None
            for _ in range(8):
                image = first if repeat and first is not None else render(content, style, rng)
                first = image
                rows.append({"file_name": f"{len(rows):03d}.png", "text": caption(content)})
                image.save(tmp_path / name / rows[-1]["file_name"])
        write_jsonl(tmp_path / name / "metadata.jsonl", rows)
        return tmp_path / name

    judges = load_judges(REPO_ROOT / "assets" / "sticker_world" / "judges")
    varied, repeated, photos = (measure_set(folder(name, style, repeat), judges) for name, style, repeat in
                                (("varied", "sticker", False), ("repeated", "sticker", True),
                                 ("photos", "photo", False)))
    assert varied["images"] == 24 and varied["prompts"] == 3 and varied["images_per_prompt"] == 8
    assert varied["style_score"] > 0.9 > 0.1 > photos["style_score"] and varied["alignment"] > 0.9
    assert varied["layout_diversity"] > 0.5 and repeated["layout_diversity"] == 0
