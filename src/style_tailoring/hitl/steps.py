"""The steps of a HITL round, each data in and data out: generate's generators, rate (machine raters or people),
curate (the selection rules, the accumulated sets, the audit, the teachers' report) and the finetunes' overrides.
hitl/loop.py runs them in order and skips what is complete."""

from __future__ import annotations

import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path

from style_tailoring.config import ConfigError, data_sources
from style_tailoring.curation.curate import EmptySelection, Rules, select, statistics
from style_tailoring.curation.raters import (
    JudgeRater,
)
from style_tailoring.data.images import parse_background
from style_tailoring.evaluation.judges import build_judges
from style_tailoring.hitl.candidates import Generator, load_images, read_candidates
from style_tailoring.hitl.ratings import agreement_report, merge_people, read_ratings, write_csv
from style_tailoring.io import atomic_dir, read_jsonl, write_json, write_jsonl


def generators(cfg, round_index: int, run_dir: Path) -> list[Generator]:
    h = cfg.hitl
    if h.teachers:
        return [Generator(t.name, str(Path(t.model or h.model).resolve()),
                          str(Path(t.lora).resolve()) if t.lora else None, h.allow_pickle) for t in h.teachers]
    if round_index == 1 or h.generate_with == "domain":  # "domain": every round from hitl.model, a control arm
        return [Generator("model", str(Path(h.model).resolve()), allow_pickle=h.allow_pickle)]
    strategy = h.generate_with or h.strategies[0]
    return [Generator(strategy, str(run_dir / f"round-{round_index - 1}" / "finetune" / strategy / "pipeline"))]


def rate_step(cfg, round_dir: Path, prompts: list[str]) -> None:
    """ratings.csv (every rater's rows), agreement.json, and rated.jsonl: each candidate with its merged rating
    and, when the rater is not the evaluation's judges, the judges' own answer (the audit)."""
    from style_tailoring.hitl.raters import build_rater

    candidates = read_candidates(round_dir / "candidates")
    rater = build_rater(cfg)
    auditing = rater.audited and cfg.eval.judges is not None
    background = parse_background(cfg.data.background)  # an alpha decoder's candidates are transparent
    needed = auditing or rater.needs_images
    images = load_images(round_dir / "candidates", candidates, background) if needed else None
    merged, rows, agreement_summary = rater.rate(cfg, round_dir, candidates, images, prompts)
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


def people_ratings(cfg, round_dir: Path, candidates: list[dict], files: list[str], style_merge: str):
    """People's merged ratings of a round's candidates, every row, and their agreement (hitl/rater=people)."""
    rows = people_rows(cfg, round_dir, {c["file_name"] for c in candidates}, files)
    merged = merge_people(rows, style_merge)
    unrated = [i for i, c in enumerate(candidates, 1) if c["file_name"] not in merged]
    if unrated and cfg.hitl.on_unrated == "error":
        first = candidates[unrated[0] - 1]["file_name"]
        raise ConfigError("hitl.on_unrated", f"{len(unrated)} of {len(candidates)} candidates have no rating, e.g. "
                          f"{round_dir / 'candidates' / 'metadata.jsonl'}:{unrated[0]} ({first}); rate them "
                          f"(python -m style_tailoring.hitl.serve round_dir={round_dir}) or set hitl.on_unrated=skip")
    return merged, rows, agreement_report(rows)


def people_rows(cfg, round_dir: Path, names: set[str], files: list[str]) -> list[dict]:
    """People's ratings: the imported files (hitl.rater.files) or else the app's database."""
    if files:
        rows = []
        for f in files:
            rows.extend(read_ratings(Path(f).expanduser(), names, cfg.hitl.on_unrated))
        return rows
    db = round_dir / "ratings.sqlite"
    if not db.is_file():
        raise ConfigError("hitl.rater.files", f"no people's ratings for {round_dir}: rate in the app "
                          f"(python -m style_tailoring.hitl.serve round_dir={round_dir}) or import files with "
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
        earlier = read_metadata(previous / name) if round_index > 1 else []
        totals[name] = write_set(round_dir / name, earlier, picked, round_dir, previous / name)
    report["accumulated"] = totals
    report["provenance"] = curation_provenance(cfg, round_dir)
    if judge is not None:
        background = parse_background(cfg.data.background)
        report["sets_as_data"] = {name: measure_set(round_dir / name, judge, background)
                                  for name in ("alignment", "style")}
    write_json(round_dir / "curation.json", report)
    return report


def curation_provenance(cfg, round_dir: Path) -> dict:
    """What made a round's sets: the commit, the rater (its `_target_`), and the digests of the judges the rater
    read, of the evaluation's judges that audit and measure, and of the candidates."""
    from style_tailoring.provenance import digests, paths_in, repository_state

    return {**repository_state(), "rater": cfg.hitl.rater.get("_target_"),
            "digests": digests({"rater_reads": paths_in(cfg.hitl.rater), "audit_judges": paths_in(cfg.eval.judges),
                                "candidates": str(round_dir / "candidates")})}


def measure_set(folder: Path, judge, background=(255, 255, 255)) -> dict:
    """A training set as data, by the evaluation's judges: its images' mean style score and alignment with their own
    prompts, and (where the judge has the optional `diversity`) the layout diversity of each prompt's images,
    averaged over the prompts that have two or more. The same measure serves a curated set and the rendered expert
    set it is compared with. Layout diversity grows with the images per prompt (`images_per_prompt` says how many)."""
    import numpy as np
    import torch

    rows = read_metadata(Path(folder))
    if not rows:
        return {"images": 0}
    prompts = [r.get("prompt") or r["text"] for r in rows]
    images = load_images(Path(folder), rows, background)
    scores = judge.score(images, prompts)
    alignment = torch.as_tensor(scores["alignment"], dtype=torch.float64)
    by_prompt = defaultdict(list)
    for i, prompt in enumerate(prompts):
        by_prompt[prompt].append(i)
    result = {"images": len(rows), "prompts": len(by_prompt), "images_per_prompt": len(rows) / len(by_prompt),
              "style_score": float(torch.as_tensor(scores["style_score"], dtype=torch.float64).mean()),
              "alignment": float(alignment[~torch.isnan(alignment)].mean()) if (~torch.isnan(alignment)).any()
              else None}
    if hasattr(judge, "diversity"):
        per_prompt = [judge.diversity(images[idx], [p] * len(idx), len(idx)).get("layout_diversity")
                      for p, idx in by_prompt.items() if len(idx) >= 2]
        per_prompt = [d for d in per_prompt if d is not None]
        result["layout_diversity"] = float(np.mean(per_prompt)) if per_prompt else None
    return result


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


def read_metadata(folder: Path) -> list[dict]:
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
            source = f"round-{row['round']}/candidates/{row['file_name']}"
            rows.append({**row, "file_name": name, "source_file": source})
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
    rows = read_metadata(Path(src))
    if size > len(rows):
        raise ValueError(f"{src} holds {len(rows)} images, fewer than the {size} asked for")
    picked = sorted(random.Random(seed).sample(rows, size), key=lambda r: r["file_name"])
    with atomic_dir(Path(out)) as tmp:
        for row in picked:
            shutil.copy2(Path(src) / row["file_name"], tmp / row["file_name"])
        write_jsonl(tmp / "metadata.jsonl", picked)
    return Path(out)


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
            f"data.style_dir={round_dir / 'style'}", *shared_overrides(cfg),
            *(cfg.hitl.get("strategy_overrides") or {}).get(strategy, [])]
