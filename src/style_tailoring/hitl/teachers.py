"""The ensemble-of-teachers stage: several differently finetuned animation models animate the training stickers,
raters keep the best clip of each, and a student trains on the kept set.

    python -m style_tailoring.hitl.teachers 'teachers=[RUN_A/motion_adapter,RUN_B/pipeline]' out=DIR [k=2]
    python -m style_tailoring.hitl.serve round_dir=DIR         # people rate the animations in the browser, then
    python -m style_tailoring.hitl.serve round_dir=DIR export_csv=DIR/people.csv
    python -m style_tailoring.hitl.teachers 'teachers=[...the same...]' out=DIR ratings=DIR/people.csv
    python -m style_tailoring.train strategy=base data=folder model=sticker_world_base model.motion.enabled=true \
        data.domain_dir=DIR/kept model.init_unet=RUN_A/pipeline ...          # the student

A teacher is an exported animation pipeline (RUN/pipeline) or a motion adapter (RUN/motion_adapter, over
`pipeline`). Each teacher animates each sticker `k` times (seeds differ per teacher, sticker and k). Raters: the
motion judge (the clip shows the prompt's motion) and condition fidelity (its middle frame stays the sticker,
PSNR ≥ `min_fidelity` dB) — or people, through `ratings`: the HITL loop's ratings file (CSV: file_name, aligned,
style; style_tailoring.hitl.ratings) of the clips in `DIR/candidates/` (not re-animated: people keep what they
saw), kept when aligned and style ≥ 3; unrated candidates are refused. Of each
sticker's accepted candidates the one with the highest fidelity is kept. Written atomically: `candidates/` (every
clip, with teacher, seed and scores), `kept/` (an imagefolder of clips: metadata.jsonl with text = the prompt and
the provenance) and `report.json` (per teacher: candidates, accepted, kept).

Settings: conf/teachers.yaml (the animated world's stickers and motion judge by default, through config).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from style_tailoring.config import ConfigError, TeachersConfig


def load_teacher(spec: str, pipeline: str, scheduler, allow_pickle: bool = False):
    from style_tailoring.animation.sample import load_animation_pipeline

    if (Path(spec) / "animation.json").is_file():
        return load_animation_pipeline(pipeline, scheduler, motion_adapter=spec, allow_pickle=allow_pickle)
    return load_animation_pipeline(spec, scheduler, allow_pickle=allow_pickle)


def check(cfg: TeachersConfig) -> None:
    if len(cfg.teachers) < 1:
        raise ConfigError("teachers", "name at least one teacher (RUN/pipeline or RUN/motion_adapter)")
    for i, spec in enumerate(cfg.teachers):
        if not ((Path(spec) / "animation.json").is_file() or (Path(spec) / "model_index.json").is_file()):
            raise ConfigError(f"teachers.{i}", f"{spec} is neither a motion adapter nor an animation pipeline")
    if not (Path(cfg.prompts_dir) / "metadata.jsonl").is_file():
        raise ConfigError("prompts_dir", f"no metadata.jsonl (file_name, prompt) in {cfg.prompts_dir}")
    if cfg.k < 1:
        raise ConfigError("k", f"must be >= 1, got {cfg.k}")
    if not cfg.ratings and not cfg.motion_judge:
        raise ConfigError("motion_judge", "the judges keep clips by their motion: name a motion judge (a _target_ "
                          "node) or keep by people's ratings=")
    if cfg.ratings and not Path(cfg.ratings).is_file():
        raise ConfigError("ratings", f"no ratings file at {cfg.ratings}")
    if cfg.ratings and not (Path(cfg.out) / "candidates" / "metadata.jsonl").is_file():
        raise ConfigError("ratings", f"people rate the candidates in {Path(cfg.out) / 'candidates'}, and there are "
                          "none: run once without ratings (it animates and judges), rate them with "
                          f"python -m style_tailoring.hitl.serve round_dir={cfg.out}, then run again with ratings=")


def run_teachers(cfg: TeachersConfig) -> dict:
    """Animate and judge (writing `candidates/`), or, with `ratings`, keep by people's ratings of the `candidates/`
    already in `out` — the very clips they rated, not a regeneration (which need not match them on a GPU)."""
    from style_tailoring.animation.evaluate import build
    from style_tailoring.io import atomic_dir, read_jsonl, write_json, write_jsonl
    from style_tailoring.provenance import portable

    build(cfg.prepare)
    check(cfg)
    out = Path(cfg.out)
    if cfg.ratings:
        rows = read_jsonl(out / "candidates" / "metadata.jsonl")
        made_by = list(dict.fromkeys(r["teacher"] for r in rows))
        if made_by != list(cfg.teachers):
            raise ConfigError("teachers", f"{out / 'candidates'} was made by {made_by}, not by these teachers")
        people = _people(cfg.ratings, {r["file_name"] for r in rows})
        for r in rows:
            r["accepted"] = people[r["file_name"]]
    else:
        rows = _animate_and_judge(cfg, out / "candidates")
    kept = []
    for i in sorted({r["sticker"] for r in rows}):
        accepted = [r for r in rows if r["sticker"] == i and r["accepted"]]
        if accepted:
            kept.append(max(accepted, key=lambda r: r["fidelity"]))
    with atomic_dir(out / "kept") as tmp:
        for r in kept:
            shutil.copyfile(out / "candidates" / r["file_name"], tmp / r["file_name"])
        write_jsonl(tmp / "metadata.jsonl", kept)
    report = {"stickers": len({r["sticker"] for r in rows}), "kept": len(kept),
              "rater": "people" if cfg.ratings else "judges",
              # teachers named as the repository names them (no path of the machine that ran it in a report)
              "teachers": {portable(spec): {"candidates": sum(r["teacher"] == spec for r in rows),
                                  "accepted": sum(r["teacher"] == spec and r["accepted"] for r in rows),
                                  "kept": sum(r["teacher"] == spec for r in kept)} for spec in cfg.teachers}}
    write_json(out / "report.json", report)
    return report


def _animate_and_judge(cfg: TeachersConfig, folder: Path) -> list[dict]:
    """Every teacher's `k` clips of every sticker, scored by the motion judge and condition fidelity, written to
    `folder` (animated WebP + metadata.jsonl, atomically)."""
    from style_tailoring.animation.evaluate import build, read_eval_dir
    from style_tailoring.animation.metrics import condition_fidelity, motion_accuracy
    from style_tailoring.animation.sample import animate, save_clip, to_frames
    from style_tailoring.data.images import parse_background
    from style_tailoring.io import atomic_dir, write_jsonl

    stickers, prompts, _ = read_eval_dir(cfg.prompts_dir, parse_background(cfg.background))
    judge = build(cfg.motion_judge)
    rows, clips = [], {}
    for t, spec in enumerate(cfg.teachers):
        pipe = load_teacher(spec, cfg.pipeline, cfg.scheduler, cfg.allow_pickle)
        for i, prompt in enumerate(prompts):
            for j in range(cfg.k):
                seed = cfg.seed + (t * len(prompts) + i) * cfg.k + j
                clip = animate(pipe, stickers[i][None].float() / 127.5 - 1, [prompt], frames=pipe.frames,
                               steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                               generator=torch.Generator().manual_seed(seed))
                name = f"t{t}-{i:05d}-{j}.webp"
                clips[name] = (clip * 255).round().to(torch.uint8)[0]
                rows.append({"file_name": name, "text": prompt, "prompt": prompt, "sticker": i, "teacher": spec,
                             "seed": seed, "motion": judge.prompt_motion(prompt)})
    batch = torch.stack([clips[r["file_name"]] for r in rows])
    moved = motion_accuracy(judge, batch, [r["prompt"] for r in rows])
    fidelity = condition_fidelity(batch, stickers[[r["sticker"] for r in rows]])
    for r, m, f in zip(rows, moved.tolist(), fidelity.tolist()):
        r.update(motion_right=None if np.isnan(m) else bool(m), fidelity=round(float(f), 3))
        r["accepted"] = bool(m == 1 and f >= cfg.min_fidelity)
    with atomic_dir(folder) as tmp:
        for r in rows:
            save_clip(to_frames(clips[r["file_name"]].float() / 255), tmp / r["file_name"])
        write_jsonl(tmp / "metadata.jsonl", rows)
    return rows


def _people(path, names: set[str]) -> dict[str, bool]:
    """People's keep decisions from a ratings file in the HITL loop's format (file_name, aligned 0/1, style 1-5,
    optional rater; style_tailoring.hitl.ratings): kept when the raters' mean says aligned (≥ 0.5) and style ≥ 3.
    Every candidate must be rated."""
    from style_tailoring.hitl.ratings import read_ratings

    votes: dict[str, list[dict]] = {}
    for row in read_ratings(path, names):
        votes.setdefault(row["file_name"], []).append(row)
    unrated = sorted(names - set(votes))
    if unrated:
        raise ConfigError("ratings", f"{path} rates {len(votes)} of {len(names)} candidates (e.g. {unrated[0]} "
                          "is missing): rate them all")
    return {name: bool(np.mean([v["aligned"] for v in rows]) >= 0.5 and np.mean([v["style"] for v in rows]) >= 3)
            for name, rows in votes.items()}


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="teachers")
def main(cfg: DictConfig) -> None:
    from style_tailoring.config import merge_into_schema
    from style_tailoring.hitl.ratings import RatingsError

    try:
        report = run_teachers(merge_into_schema(TeachersConfig, cfg))
    except (ConfigError, RatingsError) as err:
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
