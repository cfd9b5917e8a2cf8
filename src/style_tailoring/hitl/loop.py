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
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from style_tailoring.config import CONF_DIR, ConfigError, data_sources
from style_tailoring.curation.curate import EmptySelection, Rules, select, statistics
from style_tailoring.curation.raters import (
    ClipRetrievalRater, JudgeRater, NoisyRater, Rating, agreement, merge_one,
)
from style_tailoring.data.images import parse_background
from style_tailoring.evaluation.judges import build_judges
from style_tailoring.hitl.candidates import (
    Generator, generate_candidates, load_images, read_candidates, training_prompts,
)
from style_tailoring.hitl.ratings import agreement_report, merge_people, read_ratings, write_csv
from style_tailoring.io import atomic_dir, read_jsonl, update_json, write_json, write_jsonl

log = logging.getLogger("style_tailoring.hitl")
RATERS = ("judges", "clip_retrieval", "noisy", "people")
DONE_STATUSES = ("completed",)


# ----------------------------------------------------------------------------------------------------- checks
def validate_hitl(cfg) -> None:
    """Every hitl.* value, before any work, each error naming its key."""
    from style_tailoring.evaluation.validate import build_sampler, check_target

    h = cfg.hitl
    if h.rounds < 1:
        raise ConfigError("hitl.rounds", f"must be >= 1, got {h.rounds}")
    if h.finetune_from not in ("domain", "previous"):
        raise ConfigError("hitl.finetune_from", f"must be 'domain' or 'previous', got {h.finetune_from!r}")
    if h.on_unrated not in ("error", "skip"):
        raise ConfigError("hitl.on_unrated", f"must be 'error' or 'skip', got {h.on_unrated!r}")
    check_strategy_names("hitl.strategies", h.strategies)
    if h.rounds > 1 and not h.teachers:
        if not h.strategies:
            raise ConfigError("hitl.strategies", "later rounds generate from a finetuned model: name at least one")
        if (h.generate_with or h.strategies[0]) not in h.strategies:
            raise ConfigError("hitl.generate_with", f"{h.generate_with!r} is not one of hitl.strategies {list(h.strategies)}")
    _check_pipeline("hitl.model", h.model)
    g = h.generate
    for key, value, low in (("seeds_per_prompt", g.seeds_per_prompt, 1), ("sample.num_inference_steps",
                            g.sample.num_inference_steps, 1), ("sample.batch_size", g.sample.batch_size, 1)):
        if value < low:
            raise ConfigError(f"hitl.generate.{key}", f"must be >= {low}, got {value}")
    if g.sample.guidance_scale < 0:
        raise ConfigError("hitl.generate.sample.guidance_scale", f"must be >= 0, got {g.sample.guidance_scale}")
    build_sampler(g, key="hitl.generate.sampler")
    r = h.rater
    if r.name not in RATERS:
        raise ConfigError("hitl.rater.name", f"unknown rater {r.name!r}; one of {list(RATERS)}")
    if not 0 <= r.flip <= 0.5:
        raise ConfigError("hitl.rater.flip", f"must lie in [0, 0.5], got {r.flip}")
    if r.raters < 1:
        raise ConfigError("hitl.rater.raters", f"must be >= 1, got {r.raters}")
    if r.style_merge not in ("mean", "median"):
        raise ConfigError("hitl.rater.style_merge", f"must be 'mean' or 'median', got {r.style_merge!r}")
    if r.name in ("judges", "clip_retrieval", "noisy"):
        if cfg.eval.judges is None:
            raise ConfigError("eval.judges", f"hitl.rater.name={r.name} rates with the data set's judges, and "
                              "this data set has none (set eval.judges, or rate with people)")
        check_target("eval.judges", cfg.eval.judges)
    if r.name == "clip_retrieval" and not cfg.eval.clip.model_path:
        raise ConfigError("eval.clip.model_path", "hitl.rater.name=clip_retrieval needs a local CLIP directory")
    for i, f in enumerate(r.files):
        if not Path(f).expanduser().is_file():
            raise ConfigError(f"hitl.rater.files[{i}]", f"no ratings file at {f}")
    if r.files and r.name != "people":
        raise ConfigError("hitl.rater.files", f"ratings files are read by hitl.rater.name=people, not {r.name!r}")
    c = h.curation
    if c.per_prompt_cap < 1:
        raise ConfigError("hitl.curation.per_prompt_cap", f"must be >= 1, got {c.per_prompt_cap}")
    if not 1 <= c.style_min <= 5:
        raise ConfigError("hitl.curation.style_min", f"must lie in 1..5, got {c.style_min}")
    names = [t.name for t in h.teachers]
    for i, t in enumerate(h.teachers):
        if not re.fullmatch(r"[A-Za-z0-9_.]+", t.name or "") or names.count(t.name) > 1:
            raise ConfigError(f"hitl.teachers[{i}].name", f"{t.name!r}: a unique name of letters, digits, _ and .")
        if t.model:
            _check_pipeline(f"hitl.teachers[{i}].model", t.model)
        if t.lora:
            from style_tailoring.models.components import unet_source_kind

            if unet_source_kind(t.lora, key=f"hitl.teachers[{i}].lora") != "lora":
                raise ConfigError(f"hitl.teachers[{i}].lora", f"{t.lora} is not a LoRA folder")
        if not t.model and not t.lora:
            raise ConfigError(f"hitl.teachers[{i}]", "give a pipeline (model) or LoRA weights on hitl.model (lora)")
    if h.student.base:
        if not h.teachers:
            raise ConfigError("hitl.student.base", "a student learns from an ensemble: set hitl.teachers too")
        _check_pipeline("hitl.student.base", h.student.base)


def check_strategy_names(key: str, names) -> None:
    """Every name is a strategy config (conf/strategy/NAME.yaml), so a typo fails before any run starts."""
    known = sorted(p.stem for p in (CONF_DIR / "strategy").glob("*.yaml"))
    for name in names:
        if name not in known:
            raise ConfigError(key, f"unknown strategy {name!r}; one of {known}")


def _check_pipeline(key: str, path) -> None:
    if not path or not (Path(path).expanduser() / "model_index.json").is_file():
        raise ConfigError(key, f"{path!r} is not a diffusers pipeline directory (no model_index.json); "
                          "e.g. a training run's RUN_DIR/pipeline")


# ------------------------------------------------------------------------------------------------------ steps
def generators(cfg, round_index: int, run_dir: Path) -> list[Generator]:
    h = cfg.hitl
    if h.teachers:
        return [Generator(t.name, str(Path(t.model or h.model).resolve()),
                          str(Path(t.lora).resolve()) if t.lora else None, h.allow_pickle) for t in h.teachers]
    if round_index == 1:
        return [Generator("model", str(Path(h.model).resolve()), allow_pickle=h.allow_pickle)]
    strategy = h.generate_with or h.strategies[0]
    return [Generator(strategy, str(run_dir / f"round-{round_index - 1}" / "finetune" / strategy / "pipeline"))]


def build_rater(cfg, prompts: list[str]):
    """rate(images, prompts) -> (merged ratings, {rater: ratings}) of hitl.rater (not people)."""
    r = cfg.hitl.rater
    judge = JudgeRater(build_judges(cfg.eval.judges))
    if r.name == "judges":
        return lambda images, p: _single(judge.rate(images, p), "judges")
    if r.name == "noisy":
        noisy = NoisyRater(judge, flip=r.flip, raters=r.raters, seed=cfg.seed)

        def rate_noisy(images, p):
            per_rater = noisy.individual(images, p)
            merged = [merge_one(list(rs), r.style_merge) for rs in zip(*per_rater)]
            return merged, {f"noisy-{i}": ratings for i, ratings in enumerate(per_rater)}

        return rate_noisy
    if r.name == "clip_retrieval":
        clip = ClipRetrievalRater(cfg.eval.clip.model_path, prompts)

        def rate_clip(images, p):  # aligned: CLIP retrieval; style: the judges' style head (CLIP has no style)
            aligned, style = clip.rate(images, p), judge.rate(images, p)
            return _single([Rating(a.aligned, s.style) for a, s in zip(aligned, style)], "clip_retrieval")

        return rate_clip
    raise ValueError(r.name)


def _single(ratings, name):
    return ratings, {name: ratings}


def rate_step(cfg, round_dir: Path, prompts: list[str]) -> None:
    """ratings.csv (every rater's rows), agreement.json, and rated.jsonl: each candidate with its merged rating
    and, when the rater is not the evaluation's judges, the judges' own answer (the audit)."""
    candidates = read_candidates(round_dir / "candidates")
    people = cfg.hitl.rater.name == "people"
    auditing = cfg.hitl.rater.name != "judges" and cfg.eval.judges is not None
    background = parse_background(cfg.data.background)  # an alpha decoder's candidates are transparent
    images = load_images(round_dir / "candidates", candidates, background) if auditing or not people else None
    if people:
        merged, rows, agreement_summary = _people_ratings(cfg, round_dir, candidates)
    else:
        merged, rows, agreement_summary = _machine_ratings(cfg, candidates, images, prompts)
    audit = {}
    audited = [i for i, c in enumerate(candidates) if c["file_name"] in merged] if auditing else []
    if audited:
        ratings = JudgeRater(build_judges(cfg.eval.judges)).rate(
            images[audited], [candidates[i]["prompt"] for i in audited])
        audit = {candidates[i]["file_name"]: r for i, r in zip(audited, ratings)}
    rated = []
    for c in candidates:
        rating = merged.get(c["file_name"])
        row = {**c, "aligned": rating.aligned if rating else None, "style": rating.style if rating else None}
        if c["file_name"] in audit:
            row.update(judge_aligned=audit[c["file_name"]].aligned, judge_style=audit[c["file_name"]].style)
        rated.append(row)
    write_csv(round_dir / "ratings.csv", rows)
    write_json(round_dir / "agreement.json", agreement_summary)
    write_jsonl(round_dir / "rated.jsonl", rated)


def _machine_ratings(cfg, candidates: list[dict], images, prompts: list[str]):
    ratings, per_rater = build_rater(cfg, prompts)(images, [c["prompt"] for c in candidates])
    merged = {c["file_name"]: r for c, r in zip(candidates, ratings)}
    rows = [{"file_name": c["file_name"], "rater": name, "aligned": r.aligned, "style": r.style}
            for name, rs in per_rater.items() for c, r in zip(candidates, rs)]
    summary = {"raters": sorted(per_rater), "rows": len(rows),
               "aligned_unanimous": agreement(list(per_rater.values())) if len(per_rater) > 1 else None}
    return merged, rows, summary


def _people_ratings(cfg, round_dir: Path, candidates: list[dict]):
    rows = people_rows(cfg, round_dir, {c["file_name"] for c in candidates})
    merged = merge_people(rows, cfg.hitl.rater.style_merge)
    unrated = [i for i, c in enumerate(candidates, 1) if c["file_name"] not in merged]
    if unrated and cfg.hitl.on_unrated == "error":
        first = candidates[unrated[0] - 1]["file_name"]
        raise ConfigError("hitl.on_unrated", f"{len(unrated)} of {len(candidates)} candidates have no rating, e.g. "
                          f"{round_dir / 'candidates' / 'metadata.jsonl'}:{unrated[0]} ({first}); rate them "
                          f"(python -m style_tailoring.hitl.serve {round_dir}) or set hitl.on_unrated=skip")
    return merged, rows, agreement_report(rows)


def people_rows(cfg, round_dir: Path, names: set[str]) -> list[dict]:
    """People's ratings: the imported files (hitl.rater.files) or else the app's database."""
    files = list(cfg.hitl.rater.files)
    if files:
        rows = []
        for f in files:
            rows.extend(read_ratings(Path(f).expanduser(), names, cfg.hitl.on_unrated))
        return rows
    db = round_dir / "ratings.sqlite"
    if not db.is_file():
        raise ConfigError("hitl.rater.files", f"no people's ratings for {round_dir}: rate in the app "
                          f"(python -m style_tailoring.hitl.serve {round_dir}) or import files with "
                          "hitl.rater.files=[ratings.csv, label_studio.json]")
    from style_tailoring.hitl.store import RatingStore

    rows = RatingStore(db).rows()
    incomplete = [r for r in rows if r["aligned"] is None or r["style"] is None]
    if incomplete and cfg.hitl.on_unrated == "error":
        r = incomplete[0]
        raise ConfigError("hitl.on_unrated", f"{db}: {r['rater']} gave {r['file_name']} only one of aligned/style; "
                          "finish it in the app or set hitl.on_unrated=skip")
    return [r for r in rows if r["aligned"] is not None and r["style"] is not None]


def curate_step(cfg, round_dir: Path, round_index: int) -> dict:
    rated = [r for r in read_jsonl(round_dir / "rated.jsonl") if r["aligned"] is not None]
    rules = Rules(cfg.hitl.curation.per_prompt_cap, cfg.hitl.curation.style_min)
    try:
        alignment, style = select(rated, rules)
    except EmptySelection as err:
        raise EmptySelection(f"round {round_index}: {err}; the loop stops here") from None
    judge = build_judges(cfg.eval.judges) if cfg.eval.judges is not None else None
    attributes = getattr(judge, "prompt_attributes", None)  # optional part of the judge protocol
    report = {"round": round_index, "rules": vars(rules), **statistics(rated, alignment, style, attributes)}
    if any("judge_aligned" in r for r in rated):
        report["audit_against_evaluation_judges"] = audit(rated, alignment)
    if cfg.hitl.teachers:
        teachers = teacher_report(rated, alignment)
        write_json(round_dir / "teachers.json", teachers)
        report["teachers"] = teachers["summary"]
    previous = round_dir.parent / f"round-{round_index - 1}"
    totals = {}
    for name, picked in (("alignment", alignment), ("style", style)):
        earlier = _read_metadata(previous / name) if round_index > 1 else []
        totals[name] = write_set(round_dir / name, earlier, picked, round_dir, previous / name)
    report["accumulated"] = totals
    write_json(round_dir / "curation.json", report)
    return report


def audit(rated: list[dict], alignment: list[dict]) -> dict:
    """Does curation only please its own judge? The evaluation judges' view of the rater's picks."""
    judged = [r for r in rated if "judge_aligned" in r]
    picked = [r for r in alignment if "judge_aligned" in r]
    agree = sum(r["aligned"] == r["judge_aligned"] for r in judged)
    return {"candidates": len(judged), "rater_aligned": sum(r["aligned"] for r in judged),
            "judge_aligned": sum(r["judge_aligned"] for r in judged),
            "agreement": agree / len(judged) if judged else None,
            "alignment_set_judge_precision": sum(r["judge_aligned"] for r in picked) / len(picked) if picked else None}


def teacher_report(rated: list[dict], kept: list[dict]) -> dict:
    """Which teacher's candidates the keep rule chose, per prompt and overall."""
    per_teacher = defaultdict(lambda: {"candidates": 0, "aligned": 0, "kept": 0, "prompts_won": 0})
    for r in rated:
        per_teacher[r["teacher"]]["candidates"] += 1
        per_teacher[r["teacher"]]["aligned"] += r["aligned"]
    by_prompt = defaultdict(Counter)
    for r in kept:
        per_teacher[r["teacher"]]["kept"] += 1
        by_prompt[r["prompt"]][r["teacher"]] += 1
    winners = {}
    for prompt, counts in sorted(by_prompt.items()):
        top = max(counts.values())
        winners[prompt] = sorted(t for t, n in counts.items() if n == top)
        for t in winners[prompt]:
            per_teacher[t]["prompts_won"] += 1
    summary = {t: {**v, "aligned_yield": v["aligned"] / v["candidates"]} for t, v in sorted(per_teacher.items())}
    best = max(summary, key=lambda t: (summary[t]["aligned_yield"], summary[t]["kept"], t))
    return {"summary": summary, "best_single_teacher": best, "winners_per_prompt": winners}


def _read_metadata(folder: Path) -> list[dict]:
    path = folder / "metadata.jsonl"
    return read_jsonl(path) if path.is_file() else []


def write_set(out_dir: Path, earlier: list[dict], picked: list[dict], round_dir: Path, earlier_dir: Path) -> int:
    """An imagefolder of the earlier rounds' picks plus this round's (file names carry the round)."""
    with atomic_dir(out_dir) as tmp:
        rows = []
        for row in earlier:
            shutil.copy2(earlier_dir / row["file_name"], tmp / row["file_name"])
            rows.append(row)
        for row in picked:
            name = f"r{row['round']}-{row['file_name']}"
            shutil.copy2(round_dir / "candidates" / row["file_name"], tmp / name)
            rows.append({**row, "file_name": name, "source_file": f"round-{row['round']}/candidates/{row['file_name']}"})
        write_jsonl(tmp / "metadata.jsonl", rows)
    return len(rows)


def subset_for_teacher(round_dir: Path, teacher: str, size: int, rules: Rules, seed: int) -> Path:
    """The control's data: what the keep rule keeps from one teacher alone, cut to at most `size`."""
    rows = [r for r in read_jsonl(round_dir / "rated.jsonl") if r["teacher"] == teacher and r["aligned"] is not None]
    kept, _ = select(rows, rules)
    random.Random(seed).shuffle(kept)
    out = round_dir / f"kept-{teacher}"
    write_set(out, [], sorted(kept[:size], key=lambda r: r["file_name"]), round_dir, out)
    return out


def sample_folder(src: Path, size: int, seed: int, out: Path) -> Path:
    """`size` rows of an imagefolder drawn without replacement (seeded), copied into `out`: a rendered set cut to
    a curated set's size, for comparisons at equal data."""
    rows = _read_metadata(Path(src))
    if size > len(rows):
        raise ValueError(f"{src} holds {len(rows)} images, fewer than the {size} asked for")
    picked = sorted(random.Random(seed).sample(rows, size), key=lambda r: r["file_name"])
    with atomic_dir(Path(out)) as tmp:
        for row in picked:
            shutil.copy2(Path(src) / row["file_name"], tmp / row["file_name"])
        write_jsonl(tmp / "metadata.jsonl", picked)
    return Path(out)


def resume_args(run_dir: Path) -> list[str]:
    """A training run killed mid-way goes on from its newest intact checkpoint (`ckpt_path=last` skips a damaged
    one: style_tailoring.training.checkpoints)."""
    return ["ckpt_path=last"] if any((Path(run_dir) / "checkpoints").glob("*.ckpt")) else []


def train_command(run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "style_tailoring.train", f"hydra.run.dir={run_dir}", *overrides,
            *resume_args(run_dir)]


def run_done(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    return metrics.is_file() and json.loads(metrics.read_text()).get("status") in DONE_STATUSES


def run_training(run_dir: Path, overrides: list[str]) -> dict:
    """A training run as its own process (what a cluster job would run), skipped when already complete."""
    if not run_done(run_dir):
        cmd = train_command(run_dir, overrides)
        log.info("training: %s", " ".join(cmd[1:]))
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir.parent / f"{run_dir.name}.log", "a") as out:
            code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
        if code != 0 or not run_done(run_dir):
            raise RuntimeError(f"training run {run_dir} failed (exit {code}); its log: {run_dir.parent / (run_dir.name + '.log')}")
    return json.loads((run_dir / "metrics.json").read_text())


def reference_style_dir(cfg):
    """The FID reference stays the data set's own Style set whatever was curated, so rounds compare on one scale."""
    return cfg.eval.fid.reference or (data_sources(cfg.data).get("style") or {}).get("dir")


def shared_overrides(cfg) -> list[str]:
    """What every training run of the loop gets: its seed, the fixed FID reference, hitl.train_overrides."""
    reference = reference_style_dir(cfg)
    return [f"seed={cfg.seed}", *([f"eval.fid.reference={reference}"] if reference else []),
            *cfg.hitl.train_overrides]


def finetune_overrides(cfg, round_dir: Path, strategy: str, init: str) -> list[str]:
    return [f"strategy={strategy}", f"model.init_unet={init}", f"data.alignment_dir={round_dir / 'alignment'}",
            f"data.style_dir={round_dir / 'style'}", *shared_overrides(cfg)]


# ------------------------------------------------------------------------------------------------------- loop
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
        size = len(_read_metadata(kept_dir))
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
