"""Summarise experiments/hitl_study.py: mean ± 95% t interval over seeds (the training seed is the unit) per arm,
paired differences for the study's questions, and the curation yields and audits from each round's curation.json.

    python experiments/hitl_study_summary.py [--runs experiments/runs/hitl_study] [--out experiments/results]

Writes hitl_study.csv (one row per run, `collect`'s columns plus `arm`), hitl_study_summary.csv and
hitl_study_summary.md (the tables docs/hitl.md reads).

`--from-table [CSV]` reads the per-run table instead (default: the committed hitl_study.csv), and the curation
rows from hitl_study_curation.csv beside it, and regenerates hitl_study_summary.csv and hitl_study_summary.md into
--out, all of which those two tables determine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from style_tailoring.analysis import paired_differences, seed_summary
from style_tailoring.collect import collect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_scores import read_run_table  # noqa: E402

METRICS = ["eval/alignment", "eval/style_score", "eval/diversity", "eval/clip_score", "eval/fid"]
ARMS = [  # (regex on the run path below seed-N/, arm label), in table order
    (r"recipe/prompt_engineering", "prompt engineering (photo base)"),
    (r"recipe/domain", "domain finetune (base)"),
    (r"recipe/hitl/round-1/finetune/style_tailoring", "round 1 sets: style_tailoring"),
    (r"recipe/final/sequential", "round 1+2 sets: sequential"),
    (r"recipe/final/mixture", "round 1+2 sets: mixture"),
    (r"recipe/final/style_tailoring", "round 1+2 sets: style_tailoring"),
    (r"rendered/sequential", "rendered sets, same sizes: sequential"),
    (r"rendered/style_tailoring", "rendered sets, same sizes: style_tailoring"),
    (r"clip/round-1/finetune/style_tailoring", "round 1, CLIP-retrieval rater: style_tailoring"),
    (r"teachers/round-1/student/ensemble", "student (half width) on the ensemble's kept set"),
    (r"teachers/round-1/student/best_teacher-.*", "student (half width) on the best teacher's kept set"),
]
PAIRS = [  # (question, arm a, arm b): a − b paired by seed
    ("curated vs rendered (sequential)", "round 1+2 sets: sequential", "rendered sets, same sizes: sequential"),
    ("curated vs rendered (style_tailoring)", "round 1+2 sets: style_tailoring",
     "rendered sets, same sizes: style_tailoring"),
    ("round 2 vs round 1 (style_tailoring)", "round 1+2 sets: style_tailoring", "round 1 sets: style_tailoring"),
    ("style_tailoring vs sequential (curated)", "round 1+2 sets: style_tailoring", "round 1+2 sets: sequential"),
    ("style_tailoring vs mixture (curated)", "round 1+2 sets: style_tailoring", "round 1+2 sets: mixture"),
    ("CLIP-retrieval rater vs judges rater (round 1)", "round 1, CLIP-retrieval rater: style_tailoring",
     "round 1 sets: style_tailoring"),
    ("student: ensemble vs best single teacher", "student (half width) on the ensemble's kept set",
     "student (half width) on the best teacher's kept set"),
]


def label(run: str):
    match = re.match(r"seed-(\d+)/(.*)", run)
    if not match:
        return None, None
    for pattern, arm in ARMS:
        if re.fullmatch(pattern, match.group(2)):
            return int(match.group(1)), arm
    return int(match.group(1)), None


def fmt(mean, ci, digits=3):
    return f"{mean:.{digits}f} ± {ci:.{digits}f}" if pd.notna(ci) else f"{mean:.{digits}f}"


def curation_rows(runs: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(runs.glob("seed-*/**/curation.json")):
        seed = int(re.search(r"seed-(\d+)", str(path)).group(1))
        c = json.loads(path.read_text())
        where = path.parent.relative_to(runs / f"seed-{seed}").as_posix()
        audit = c.get("audit_against_evaluation_judges") or {}
        rows.append({"seed": seed, "where": where, "candidates": c["candidates"],
                     "aligned_yield": c["aligned"] / c["candidates"], "alignment_picked": c["alignment"],
                     "style_picked": c["style"], "alignment_total": c["accumulated"]["alignment"],
                     "style_total": c["accumulated"]["style"],
                     "style_grade_ge3": sum(v for k, v in c["style_histogram"].items() if int(k) >= 3),
                     "rater_judge_agreement": audit.get("agreement"),
                     "alignment_set_judge_precision": audit.get("alignment_set_judge_precision")})
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, default=Path("experiments/runs/hitl_study"))
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    parser.add_argument("--from-table", type=Path, nargs="?", const=Path("experiments/results/hitl_study.csv"),
                        help="regenerate from this per-run table (default: the committed one) and the "
                             "hitl_study_curation.csv beside it, not from --runs")
    args = parser.parse_args(argv)
    if args.from_table is None:
        table = collect(args.runs)
        table[["seed_dir", "arm"]] = pd.DataFrame([label(r) for r in table["run"]], index=table.index)
        table = table[table["arm"].notna() & (table["status"] == "completed")]
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "hitl_study.csv", index=False)
    else:  # the curation rows as committed: the curation.json files they were read from went with the runs
        table = read_run_table(args.from_table)
        curation = read_run_table(args.from_table.parent / "hitl_study_curation.csv")
        args.out.mkdir(parents=True, exist_ok=True)
    summary = seed_summary(table, ["arm"], METRICS)
    summary = summary.reindex([a for _, a in ARMS if a in summary.index])
    summary.to_csv(args.out / "hitl_study_summary.csv")

    lines = ["| arm | alignment ↑ | style score ↑ | diversity ↑ | CLIP score ↑ | FID vs style set ↓ | seeds |",
             "|---|---|---|---|---|---|---|"]
    for arm, row in summary.iterrows():
        cells = [fmt(row[m], row[f"{m}/ci95"], 1 if m == "eval/clip_score" else 3) for m in METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {int(row['n'])} |")
    lines += ["", "| paired difference (a − b, by seed) | alignment | style score | diversity | CLIP score | seeds |",
              "|---|---|---|---|---|---|"]
    arms = set(table["arm"])
    for question, a, b in PAIRS:
        if a not in arms or b not in arms:
            continue
        pair = table[table["arm"].isin([a, b])]
        d = paired_differences(pair, ["arm"], {"arm": b}, METRICS[:4], pair="seed_dir").loc[a]
        cells = [fmt(d[m], d[f"{m}/ci95"], 1 if m == "eval/clip_score" else 3) for m in METRICS[:4]]
        lines.append(f"| {question} | " + " | ".join(cells) + f" | {int(d['n'])} |")
    if args.from_table is None:
        curation = curation_rows(args.runs)
        if not curation.empty:
            curation.to_csv(args.out / "hitl_study_curation.csv", index=False)
    if not curation.empty:
        means = curation.groupby("where").mean(numeric_only=True).drop(columns="seed")
        lines += ["", "| curation (mean over seeds) | candidates | aligned yield | alignment picked | style picked | "
                  "accumulated alignment / style | style grade ≥ 3 | rater–judge agreement | judges' precision on "
                  "alignment picks |", "|---|---|---|---|---|---|---|---|---|"]
        for where, r in means.iterrows():
            audit = (f"{r['rater_judge_agreement']:.3f} | {r['alignment_set_judge_precision']:.3f}"
                     if pd.notna(r["rater_judge_agreement"]) else "— | —")
            lines.append(f"| {where} | {r['candidates']:.0f} | {r['aligned_yield']:.3f} | "
                         f"{r['alignment_picked']:.1f} | {r['style_picked']:.1f} | "
                         f"{r['alignment_total']:.1f} / {r['style_total']:.1f} | "
                         f"{r['style_grade_ge3']:.1f} | {audit} |")
    text = "\n".join(lines) + "\n"
    (args.out / "hitl_study_summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
