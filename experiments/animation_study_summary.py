"""Summarise experiments/animation_study.py into the animated-sticker table that docs/animation.md reads.

    python experiments/animation_study_summary.py [--runs experiments/runs/animation_study] [--out experiments/results]

Writes animation_study.csv (one row per evaluation), animation_study_summary.csv and animation_study.md (per
model: mean over seeds, 95% t interval with the seed as the unit, n), and the teachers' keep report.

`--from-table [CSV]` reads the per-run table instead (default: the committed animation_study.csv) and regenerates
animation_study_summary.csv into --out; animation_study.md is left as it is (it names the noises per seed and the
teachers' keep report, which only the run directories hold).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from style_tailoring.analysis import seed_summary

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_scores import not_regenerated, read_run_table  # noqa: E402

METRICS = {"animation/motion_accuracy": ("motion accuracy ↑", 3),
           "animation/condition_fidelity": ("condition fidelity, dB ↑", 2),
           "animation/content_consistency": ("content consistency ↑", 3),
           "animation/frame_similarity": ("frame-to-frame CLIP ↑", 3),
           "animation/loop_closure": ("loop closure (≈1) ", 2),
           "animation/style_score": ("style per frame ↑", 3),
           "animation/alignment": ("alignment (middle frame) ↑", 3),
           "animation/seconds_per_clip": ("s / clip", 3)}
NAMES = {"frame_by_frame": "base image model, frame by frame (noise seeds)",
         "weak_shipped": "weak-video finetune: the shipped adapter (training seed 0; noise seeds)",
         "weak": "weak-video finetune, 1,000 steps (training seeds)",
         "weak+300": "weak-video finetune + 300 steps on the weak set (control)",
         "student": "ensemble-of-teachers student (weak + 300 steps on the kept set)"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "runs" / "animation_study")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--from-table", type=Path, nargs="?",
                        const=ROOT / "experiments" / "results" / "animation_study.csv",
                        help="regenerate from this per-run table (default: the committed one), not from --runs")
    args = parser.parse_args(argv)
    if args.from_table is None:
        rows, noises = [], set()
        for path in sorted((args.runs / "eval").glob("*/seed*/metrics.json")):
            metrics = json.loads(path.read_text())
            noises.add(metrics["settings"]["seeds_per_prompt"])
            rows.append({"model": path.parent.parent.name, "seed": int(path.parent.name[4:]),
                         **{k: v for k, v in metrics.items() if k in METRICS}})
        if not rows:  # nothing to summarise: refuse before any committed table is overwritten
            raise SystemExit(f"error: --runs: no evaluation at {args.runs / 'eval'}/*/seed*/metrics.json "
                             "(run experiments/animation_study.py first)")
        table = pd.DataFrame(rows)
        table.to_csv(args.out / "animation_study.csv", index=False)
    else:
        table = read_run_table(args.from_table)
        not_regenerated(["animation_study.md"], "it names the noises per seed and the teachers' keep report, "
                        "which only the run directories hold")
        args.out.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in METRICS if m in table]
    summary = seed_summary(table, ["model"], metrics).reindex([m for m in NAMES if m in set(table["model"])])
    summary.to_csv(args.out / "animation_study_summary.csv")
    if args.from_table is not None:
        return
    heads = ["model", *(METRICS[m][0] for m in metrics), "n"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for model, row in summary.iterrows():
        cells = [f"{row[m]:.{METRICS[m][1]}f} ± {row[f'{m}/ci95']:.{METRICS[m][1]}f}" for m in metrics]
        lines.append("| " + " | ".join([NAMES[model], *cells, str(int(row["n"]))]) + " |")
    report = args.runs / "teachers" / "report.json"
    text = ["# Animated stickers on the Sticker World", "",
            "Mean ± 95% t interval over seeds (`python experiments/animation_study.py`, summarised by "
            f"`python experiments/animation_study_summary.py`); 24 held-out motion × content stickers × "
            f"{'/'.join(map(str, sorted(noises)))} noises per seed, 8 DPM-Solver steps, guidance 3.", "", *lines, ""]
    if report.is_file():  # teachers named from the repository root, wherever the study ran
        keep = json.loads(report.read_text())
        keep["teachers"] = {k[k.find("experiments/"):] if "experiments/" in k else k: v
                            for k, v in keep["teachers"].items()}
        text += ["Teachers' keep report:", "", "```json", json.dumps(keep, indent=2), "```", ""]
    (args.out / "animation_study.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
