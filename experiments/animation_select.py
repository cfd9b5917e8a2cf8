"""Choosing the default animation recipe (issue: animations that keep the sticker), on validation clips.

    python experiments/animation_select.py [--workers 2]          # train and evaluate every candidate at seed 0
    python experiments/animation_select.py --summary              # the table and the choice, from the runs

Every candidate is the shipped adapter's budget — the world base's motion model, 1,000 steps of 8 weak-video clips,
lr 5e-4, training seed 0 — and changes one or two things the shipped recipe fixes: how the sticker is given
(`model.motion.conditioning`: on the middle frame, the paper's choice, or on every frame) and what trains
(`model.motion.train`: the motion modules and conv_in, or the whole UNet). The shipped recipe's candidate is the
shipped adapter itself (the same train command at seed 0 rebuilds it bit for bit). Each is evaluated on
`video_val` — the held-out motion x content combinations drawn in other layouts, never the eval folder the study
reports on — 24 stickers x 2 noises, 8 DPM-Solver steps, guidance 3, with the renders' own clips scored alike.

The rule, written before any candidate ran: the targets are motion accuracy >= 0.6, content consistency and style
per frame >= 0.8 of the renders' values, background spread <= 3 grey levels (speed, < 1 s a clip, is measured by
the bench on the chosen one: evaluation wall times share the machine). The candidate meeting the most targets is
chosen; ties go to the higher motion accuracy, then the higher frame fidelity. Written to
experiments/results/animation_select.{csv,md} and experiments/runs/animation_select/chosen.json.

A deviation, decided after the four candidates were measured and reported as such: no candidate met any target, so
the rule fell to its tie-break, motion accuracy — and every candidate's lies at chance (0.146-0.250 against 0.2 for
five motions: 7 to 12 of 48 clips, inside the binomial 95% band 0.2 ± 0.11), so the tie-break chose on noise. The
choice is made instead by attainment: the mean over the four targets of how far each is reached (value over target,
for the background target over value; each capped at 1), the rule's own ranking (targets met) first. Both choices
are in the table. The study's numbers are unaffected either way: they are measured on the held-out set, not on
this validation set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from style_tailoring.io import atomic_write_text, write_json
from style_tailoring.runtime.jobs import JobRunner
from style_tailoring.world.motion import ADAPTER_STEPS, build_animated

sys.path.insert(0, str(Path(__file__).resolve().parent))
from animation_study import ADAPTER, DATA, evaluate, model_args, train  # noqa: E402
from animation_study_summary import METRICS, attainment, targets_met  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "experiments" / "runs" / "animation_select"
RESULTS = ROOT / "experiments" / "results"
VALIDATION = DATA / "video_val"
# name: (overrides, the whole UNet trains: its export is the model)
CANDIDATES = {
    "middle/motion": ((), False),  # the shipped recipe: the shipped adapter
    "all/motion": (("model.motion.conditioning=all",), False),
    "middle/all": (("model.motion.train=all",), True),
    "all/all": (("model.motion.conditioning=all", "model.motion.train=all"), True),
}
COLUMNS = {metric: column for metric, column in METRICS.items() if metric != "animation/seconds_per_clip"}


def run_dir(name: str) -> Path:
    return RUNS / name / "seed0"


def jobs() -> list:
    planned = []
    for name, (overrides, whole_unet) in CANDIDATES.items():
        if name == "middle/motion":
            planned.append(evaluate(f"eval/{name}", ADAPTER, root=RUNS, eval_dir=VALIDATION))
            continue
        planned.append(train(f"{name}/seed0", DATA / "video_domain", ADAPTER_STEPS, 0, root=RUNS, extra=overrides))
        planned.append(evaluate(f"eval/{name}", None, root=RUNS, eval_dir=VALIDATION,
                                model=model_args(run_dir(name), whole_unet=whole_unet),
                                needs=[f"{name}/seed0"]))
    return planned


def summary() -> str:
    rows = []
    for name in CANDIDATES:
        metrics = json.loads((RUNS / "eval" / name / "metrics.json").read_text())
        rows.append({"candidate": name, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    table = pd.DataFrame(rows)
    met = table.apply(lambda row: targets_met(row, row), axis=1, result_type="expand")
    table = pd.concat([table, met.add_prefix("target/")], axis=1)
    table["targets_met"] = met.sum(axis=1)
    by_rule = table.sort_values(["targets_met", "animation/motion_accuracy", "animation/frame_fidelity"],
                                ascending=False).iloc[0]["candidate"]
    table["attainment"] = table.apply(lambda row: attainment(row, row), axis=1)
    chosen = table.sort_values(["targets_met", "attainment"], ascending=False).iloc[0]["candidate"]
    table["chosen_by_the_rule"] = table["candidate"] == by_rule
    table["chosen"] = table["candidate"] == chosen
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.round(5).to_csv(RESULTS / "animation_select.csv", index=False)
    overrides, whole = CANDIDATES[chosen]
    write_json(RUNS / "chosen.json", {"candidate": chosen, "overrides": list(overrides), "whole_unet": whole,
                                      "chosen_by_the_rule": by_rule})
    renders = table.iloc[0]
    heads = ["candidate (conditioning / what trains)", *(h for h, _ in COLUMNS.values()), "targets met",
             "attainment"]
    lines = ["# Choosing the animation recipe", "",
             f"Candidates at training seed 0 (`python experiments/animation_select.py`), each the shipped adapter's "
             f"budget ({ADAPTER_STEPS:,} steps of 8 weak-video clips, lr 5e-4), evaluated on validation "
             "(`data/sticker_world/animated/video_val`: the held-out motion x content combinations in other "
             "layouts; 24 stickers x 2 noises, 8 DPM-Solver steps, guidance 3). One training seed, one evaluation: "
             "no interval; the study (docs/animation.md) measures the chosen recipe over three.", "",
             "The rule, fixed before any candidate ran: the most targets met (motion accuracy ≥ 0.6; content "
             "consistency and style per frame ≥ 0.8 of the renders'; background spread ≤ 3 grey levels), ties to "
             "the higher motion accuracy, then frame fidelity.", "",
             "**A deviation, decided after these four were measured:** no candidate met any target, and the "
             "tie-break, motion accuracy, lies at chance for all four (0.146–0.250 against 0.2 for five motions: 7 "
             "to 12 of 48 clips, inside the binomial 95% band 0.2 ± 0.11): it chose on noise. The choice is made "
             "instead by attainment, the mean over the four targets of the share reached (each capped at 1; the "
             "background target as target over value). The held-out study's numbers are unaffected: they are not "
             "measured on this validation set.", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for _, row in table.iterrows():
        cells = [f"{row[m]:.{d}f}" if m in row and pd.notna(row[m]) else "–" for m, (_, d) in COLUMNS.items()]
        marks = [m for m, flag in (("chosen", row["chosen"]), ("the rule's tie-break", row["chosen_by_the_rule"]))
                 if flag]
        name = f"**{row['candidate']}** ({', '.join(marks)})" if marks else row["candidate"]
        lines.append("| " + " | ".join([name, *cells, str(int(row["targets_met"])), f"{row['attainment']:.3f}"])
                     + " |")
    ceiling = {m: renders.get(m.replace("animation/", "renders/")) for m in COLUMNS}
    cells = [f"{ceiling[m]:.{d}f}" if pd.notna(ceiling[m]) else "–" for m, (_, d) in COLUMNS.items()]
    lines.append("| the renders' own clips (the ceiling) | " + " | ".join(cells) + " | | |")
    lines += ["", f"Chosen: **{chosen}** (`{' '.join(overrides) or 'the shipped recipe'}`); the rule's tie-break "
              f"would have kept {by_rule}."]
    atomic_write_text(RESULTS / "animation_select.md", "\n".join(lines) + "\n")
    return chosen


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--summary", action="store_true", help="only the table and the choice, from the runs")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = parser.parse_args(argv)
    if not args.summary:
        build_animated(DATA)
        results = JobRunner(jobs(), args.workers, workers_file=RUNS / "workers").run(args.dry_run)
        if args.dry_run:
            return
        if any(r.status in ("failed", "not run") for r in results.values()):
            raise SystemExit(f"a step failed; see its log in {RUNS}")
    print("chosen:", summary())


if __name__ == "__main__":
    main()
