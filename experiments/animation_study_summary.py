"""Summarise experiments/animation_study.py into the animated-sticker tables that docs/animation.md reads.

    python experiments/animation_study_summary.py [--runs experiments/results/records/animation_study]
                                                  [--out experiments/results]

Reads every evaluation's metrics.json (`<set>/<model>/seed<k>`: the study's committed records by default, or its run
directories, `--runs experiments/runs/animation_study`) and the teachers' keep report where the runs are. Writes
animation_study.csv (one row per evaluation), animation_study_summary.csv and animation_study.md: per eval set and
model the mean over training seeds with the 95% t interval (the seed as the unit), the renders' own clips as the
ceiling, the default against the shipped recipe and against the student (paired on the training seed), and the
default's issue targets (motion accuracy >= 0.6, content consistency and style per frame >= 0.8 of the renders',
background spread <= 3 grey levels).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from style_tailoring.analysis import paired_differences, seed_summary
from style_tailoring.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "experiments" / "results" / "records" / "animation_study"
METRICS = {"animation/motion_accuracy": ("motion accuracy ↑", 3),
           "animation/frame_fidelity": ("frame fidelity, dB ↑", 2),
           "animation/condition_fidelity": ("condition fidelity, dB ↑", 2),
           "animation/content_consistency": ("content consistency ↑", 3),
           "animation/style_score": ("style per frame ↑", 3),
           "animation/background_spread": ("background spread, grey levels ↓", 2),
           "animation/loop_closure": ("loop closure (≈1)", 2),
           "animation/frame_similarity": ("frame-to-frame CLIP ↑", 3),
           "animation/alignment": ("alignment (middle frame) ↑", 3),
           "animation/seconds_per_clip": ("s / clip", 2)}
MODELS = {"frame_by_frame": "base image model, frame by frame (noise seeds)",
          "weak": "the shipped recipe before: sticker on the middle frame, motion modules (weak video, 1,000 steps)",
          "default": "the selected default (same budget)",
          "weak+300": "weak + 300 steps on the weak set (the student's control)",
          "student": "ensemble-of-teachers student (weak + 300 steps on the kept set)",
          "default+300": "default + 300 steps on the weak set (control of the default's student)",
          "student_default": "the ensemble stage on the default: default + 300 steps on its teachers' kept set"}
SETS = {"eval": "the held-out motion × content stickers (24 × 2 noises)",
        "plain_bordered": "plain stickers the renderer never drew, white border (19 × 2 noises)",
        "plain_borderless": "plain stickers, no border (19 × 2 noises)"}
COMPARISONS = [("default", "weak"), ("default", "student"), ("student", "weak+300"),
               ("student_default", "default+300"), ("student_default", "default"), ("student_default", "student")]


def gather(runs: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(runs.glob("*/*/seed*/metrics.json")):
        set_name, model, seed = path.parts[-4], path.parts[-3], int(path.parent.name[4:])
        if set_name not in SETS:
            continue
        metrics = json.loads(path.read_text())
        provenance = metrics.get("provenance", {})
        rows.append({"set": set_name, "model": model, "seed": seed,
                     **{k: v for k, v in metrics.items() if k.startswith(("animation/", "renders/"))},
                     "provenance/commit": provenance.get("commit"), "provenance/dirty": provenance.get("dirty"),
                     "eval/provenance/judges": provenance.get("judges"),
                     "eval/provenance/eval_prompts": provenance.get("eval_dir")})
    if not rows:  # nothing to summarise: refuse before any committed table is overwritten
        raise SystemExit(f"error: --runs: no evaluation at {runs}/<set>/<model>/seed*/metrics.json "
                         "(run experiments/animation_study.py first)")
    return pd.DataFrame(rows)


def target_bounds(renders) -> dict[str, tuple[str, float, bool]]:
    """The issue's targets for an animation model, against the renders' own scores `renders` (a row with
    renders/<metric>): {name: (metric, bound, higher is better)}."""
    return {"motion accuracy ≥ 0.6": ("animation/motion_accuracy", 0.6, True),
            "content consistency ≥ 0.8 of the renders'": (
                "animation/content_consistency", 0.8 * renders["renders/content_consistency"], True),
            "style per frame ≥ 0.8 of the renders'": (
                "animation/style_score", 0.8 * renders["renders/style_score"], True),
            "background spread ≤ 3 grey levels": ("animation/background_spread", 3.0, False)}


def targets_met(row, renders) -> dict[str, bool]:
    return {name: (row[metric] >= bound) if higher else (row[metric] <= bound)
            for name, (metric, bound, higher) in target_bounds(renders).items()}


def attainment(row, renders) -> float:
    """The mean over the targets of the share reached (value over bound, or bound over value for a ceiling), each
    capped at 1: how far a model gets towards all of them."""
    shares = [row[metric] / bound if higher else bound / max(row[metric], 1e-9)
              for metric, bound, higher in target_bounds(renders).values()]
    return sum(min(1.0, share) for share in shares) / len(shares)


def targets(row: pd.Series, renders: pd.Series) -> list[str]:
    """Each target as a line. The style target is relative to the renders' own P(sticker): where the world's style
    judge does not see the renders themselves as its stickers (plain stickers the renderer never drew score near
    0), the target measures nothing and says so instead of 'met'."""
    met = targets_met(row, renders)
    lines = []
    for name, (metric, bound, _) in target_bounds(renders).items():
        if metric == "animation/style_score" and renders["renders/style_score"] < 0.5:
            lines.append(f"{name}: not measured on this set — the world's style judge scores the stickers' own "
                         f"clips {renders['renders/style_score']:.3f} (they are not its kind of sticker)")
            continue
        lines.append(f"{name}: {row[metric]:.3f} against {bound:.3f} — {'met' if met[name] else 'not met'}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=RECORDS)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args(argv)
    table = gather(args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "animation_study.csv", index=False)
    metrics = [m for m in METRICS if m in table]
    summary = seed_summary(table, ["set", "model"], metrics)
    summary.to_csv(args.out / "animation_study_summary.csv")
    commits = sorted({f"{c[:7]}{' (dirty)' if d else ''}" for c, d in
                      zip(table["provenance/commit"], table["provenance/dirty"]) if isinstance(c, str)})
    text = ["# Animated stickers on the Sticker World", "",
            "Mean ± 95% t interval over training seeds (`python experiments/animation_study.py`, summarised by "
            "`python experiments/animation_study_summary.py`); 8 DPM-Solver steps, guidance 3; every clip's scores "
            f"in the records (experiments/results/records/animation_study). Commits: {', '.join(commits)}.", ""]
    heads = ["model", *(METRICS[m][0] for m in metrics), "n"]
    for set_name, caption in SETS.items():
        if set_name not in set(table["set"]):
            continue
        part = summary.loc[set_name]
        text += [f"## {caption}", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for model in [m for m in MODELS if m in part.index]:
            row = part.loc[model]
            cells = [f"{row[m]:.{METRICS[m][1]}f} ± {row[f'{m}/ci95']:.{METRICS[m][1]}f}" for m in metrics]
            text.append("| " + " | ".join([MODELS[model], *cells, str(int(row["n"]))]) + " |")
        renders = table[table["set"] == set_name].iloc[0]
        ceiling = [f"{renders[m.replace('animation/', 'renders/')]:.{METRICS[m][1]}f}"
                   if m.replace("animation/", "renders/") in renders and pd.notna(
                       renders[m.replace("animation/", "renders/")]) else "–" for m in metrics]
        text += ["| the renders' own clips (the ceiling) | " + " | ".join(ceiling) + " | |", ""]
        rows = table[table["set"] == set_name]
        differences = []
        for a, b in COMPARISONS:
            pair = rows[rows["model"].isin([a, b])]
            if {a, b} <= set(pair["model"]):
                d = paired_differences(pair, ["model"], {"model": b}, metrics)
                differences.append((a, b, d.loc[a]))
        if differences:
            text += ["Paired on the training seed (mean difference ± 95% t):", ""]
            text += [f"- {a} − {b}: " + ", ".join(f"{METRICS[m][0].rstrip(' ↑↓')} {d[m]:+.{METRICS[m][1]}f} ± "
                                                   f"{d[f'{m}/ci95']:.{METRICS[m][1]}f}" for m in metrics)
                     for a, b, d in differences]
            text.append("")
        if "default" in part.index:
            text += ["The default against the targets (means over seeds):", ""]
            text += [f"- {line}" for line in targets(part.loc["default"], renders)] + [""]
    # The teachers' keep report: beside the evaluations, or in the study's run directory (then kept with the records)
    report = args.runs / "teachers" / "report.json"
    ran = ROOT / "experiments" / "runs" / "animation_study" / "teachers" / "report.json"
    if report.is_file() or ran.is_file():  # teachers named from the repository root, wherever the study ran
        keep = json.loads((report if report.is_file() else ran).read_text())
        keep["teachers"] = {k[k.find("experiments/"):] if "experiments/" in k else k: v
                            for k, v in keep["teachers"].items()}
        if not report.is_file():
            atomic_write_text(RECORDS / "teachers" / "report.json", json.dumps(keep, indent=2, sort_keys=True) + "\n")
        text += ["Teachers' keep report:", "", "```json", json.dumps(keep, indent=2), "```", ""]
    atomic_write_text(args.out / "animation_study.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
