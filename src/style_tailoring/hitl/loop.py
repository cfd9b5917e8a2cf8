"""HITL rounds: generate → rate → curate → finetune, one folder per round, each step skipped once complete.

RUN_DIR/
  hitl.json                      the loop's manifest: per round, each step's status, outputs and wall time
  round-1/
    candidates/                  imagefolder of generations (metadata.jsonl: file_name, text, prompt, seed, model,
                                 round, teacher)
    ratings.csv                  every rater's rows (file_name, rater, aligned, style)
    rated.jsonl                  one row per candidate: the merged rating (and the evaluation judges' own, as audit)
    alignment/ style/            the curated sets so far (imagefolders; they accumulate over rounds)
    curation.json                yields per round, prompt and attribute; style histogram; rater-vs-judge audit
    teachers.json                (ensemble) which teacher's candidates were kept where
    finetune/<strategy>/         a training run (python -m style_tailoring.train) on this round's sets
    student/<name>/              (ensemble) the student trained on the kept set, and its control
A step's output is written atomically and is its own completion mark, so a killed loop resumes at the first
missing step; a finetune killed mid-training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from style_tailoring.curation.curate import Rules
from style_tailoring.hitl.candidates import generate_candidates, training_prompts
from style_tailoring.hitl.steps import (
    curate_step,
    finetune_overrides,
    generators,
    rate_step,
    read_metadata,
    shared_overrides,
    subset_for_teacher,
)
from style_tailoring.hitl.validate import validate_hitl
from style_tailoring.io import update_json, write_json
from style_tailoring.runtime.jobs import Job, python_module, run_done, run_jobs

log = logging.getLogger("style_tailoring.hitl")


def run_training(run_dir: Path, overrides: list[str]) -> dict:
    """A training run as its own process (what a cluster job would run) through the job runner: skipped when
    complete, resumed from its last checkpoint when killed, taken down with the loop if the loop is killed."""
    run_dir = Path(run_dir)
    job = Job(run_dir.name, python_module("style_tailoring.train", f"hydra.run.dir={run_dir}", *overrides), run_dir,
              resumable=True, env={"HYDRA_FULL_ERROR": "1"}, log=run_dir.parent / f"{run_dir.name}.log")
    run_jobs([job], say=log.info)
    return json.loads((run_dir / "metrics.json").read_text())


class Manifest:
    def __init__(self, path: Path):
        self.path = path

    def record(self, round_index: int, step: str, **values) -> None:
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        data.setdefault("rounds", {}).setdefault(str(round_index), {})[step] = values
        write_json(self.path, data)


def _step(manifest: Manifest, round_index: int, name: str, done: bool, fn) -> None:
    if done:
        log.info("round %d: %s already complete", round_index, name)
        return
    start = time.perf_counter()
    log.info("round %d: %s", round_index, name)
    fn()
    manifest.record(round_index, name, status="completed", seconds=round(time.perf_counter() - start, 1))


def run_hitl(cfg) -> dict:
    from style_tailoring.data.prepare import prepare_data
    from style_tailoring.evaluation.validate import build_sampler
    from style_tailoring.runtime.launch import sampling_device

    validate_hitl(cfg)
    prepare_data(cfg.data)
    prompts = training_prompts(cfg.hitl.prompts, cfg.eval.prompts)
    sampler = build_sampler(cfg.hitl.generate, key="hitl.generate.sampler")
    run_dir = Path(cfg.run_dir).resolve()
    manifest = Manifest(run_dir / "hitl.json")
    update_json(manifest.path, {"config": OmegaConf.to_container(cfg.hitl, resolve=True), "prompts": len(prompts),
                                "status": "running"})
    h = cfg.hitl
    results = {}
    for r in range(1, h.rounds + 1):
        rd = run_dir / f"round-{r}"
        _step(manifest, r, "generate", (rd / "candidates" / "metadata.jsonl").is_file(),
              lambda: generate_candidates(rd / "candidates", generators(cfg, r, run_dir), prompts, h.generate,
                                          sampler, r, device=sampling_device(cfg.trainer)))
        _step(manifest, r, "rate", (rd / "rated.jsonl").is_file(), lambda: rate_step(cfg, rd, prompts))
        _step(manifest, r, "curate", (rd / "curation.json").is_file(), lambda: curate_step(cfg, rd, r))
        for strategy in (h.strategies if r < h.rounds or h.finetune_last_round else []):
            init = h.model if h.finetune_from == "domain" or r == 1 else \
                str(run_dir / f"round-{r - 1}" / "finetune" / strategy / "pipeline")
            run = rd / "finetune" / strategy
            _step(manifest, r, f"finetune/{strategy}", run_done(run),
                  lambda: run_training(run, finetune_overrides(cfg, rd, strategy, init)))
            results[f"round-{r}/{strategy}"] = _eval_of(run)
        if h.student.base:
            results.update(student_step(cfg, manifest, rd, r))
    update_json(manifest.path, {"results": results, "status": "completed"})
    return results


def _eval_of(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k.startswith("eval/")}


def student_step(cfg, manifest: Manifest, round_dir: Path, r: int) -> dict:
    """The student learns the ensemble's kept set; its control, as many samples kept from the best teacher alone."""
    h = cfg.hitl
    kept_dir = round_dir / "alignment"
    students = {"ensemble": kept_dir}
    if h.student.control:
        teachers = json.loads((round_dir / "teachers.json").read_text())
        size = len(read_metadata(kept_dir))
        best = teachers["best_single_teacher"]
        rules = Rules(h.curation.per_prompt_cap, h.curation.style_min)
        control = round_dir / f"kept-{best}"
        if not (control / "metadata.jsonl").is_file():
            subset_for_teacher(round_dir, best, size, rules, cfg.seed)
        students[f"best_teacher-{best}"] = control
    results = {}
    for name, data_dir in students.items():
        run = round_dir / "student" / name
        overrides = ["strategy=base", f"model.pretrained={Path(h.student.base).resolve()}",
                     f"data.domain_dir={data_dir}", *shared_overrides(cfg)]
        _step(manifest, r, f"student/{name}", run_done(run), lambda: run_training(run, overrides))
        results[f"round-{r}/student/{name}"] = _eval_of(run)
    return results
