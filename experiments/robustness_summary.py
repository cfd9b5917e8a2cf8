"""Summarise experiments/robustness.py: the headline comparison on three kinds of style (exploratory).

    python experiments/robustness_summary.py [--runs experiments/results/records] [--out experiments/results]

For each kind of style — the world's Style set (sticker: the confirmatory study's runs of the same seeds), the
colour-narrow set and the outlined look — and each training seed, the same reduced fronts: Style Tailoring {750,
800} against sequential {300+300, 500+100}, alignment and layout diversity at matched style by the confirmatory
protocol's rule; Style Tailoring 750 against mixture 0.75 in style (the split at the same share); sequential
300+300 against the domain model (style up, alignment and diversity down). Mean ± 95% t interval over the seeds
(not corrected for multiplicity: exploratory). Writes robustness.{csv,md} and scores/robustness.jsonl.gz; without
the run directories it reads robustness_runs.csv and the scores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preregistered import label_runs, matched  # noqa: E402
from study_scores import export_scores  # noqa: E402
from style_tailoring.analysis import paired_t  # noqa: E402
from style_tailoring.collect import collect  # noqa: E402
from style_tailoring.io import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [1001, 1002, 1003]
KINDS = ("sticker", "colour", "outline")
CONFIGS = ["domain", "st750", "st800", "seq300+300", "seq500+100", "mix0.75"]
ST, SEQ = ["st750", "st800"], ["seq300+300", "seq500+100"]
METRICS = {"style": "eval/style_score", "alignment": "eval/alignment", "layout": "eval/layout_diversity"}
COMPARISONS = [  # (name, metric, kind of difference, A, B, predicted sign)
    ("Style Tailoring − sequential, alignment at matched style", "alignment", "matched", ST, SEQ, 1),
    ("Style Tailoring − sequential, layout diversity at matched style", "layout", "matched", ST, SEQ, 1),
    ("st750 − mix0.75, style score", "style", "paired", "st750", "mix0.75", 1),
    ("seq300+300 − domain, style score", "style", "paired", "seq300+300", "domain", 1),
    ("seq300+300 − domain, alignment", "alignment", "paired", "seq300+300", "domain", -1),
    ("seq300+300 − domain, layout diversity", "layout", "paired", "seq300+300", "domain", -1),
]


def gather(runs: Path, out: Path) -> pd.DataFrame:
    table_path = out / "robustness_runs.csv"
    if (runs / "robustness").is_dir():
        parts = []
        for kind in ("colour", "outline"):
            part = label_runs(collect(runs / "robustness" / kind))
            part["kind"] = kind
            parts.append(part)
        sticker = label_runs(collect(runs / "confirmatory"))
        sticker["kind"] = "sticker"
        parts.append(sticker[sticker["label"].isin(CONFIGS) & sticker["seed"].isin(SEEDS)])
        # The colour-narrow kind is judged by the world's judges: its domain rows are the confirmatory records; the
        # outlined look's domain rows are the same models evaluated with its own judges (robustness/outline/domain).
        domains = sticker[(sticker["label"] == "domain") & sticker["seed"].isin(SEEDS)]
        parts.append(domains.assign(kind="colour"))
        table = pd.concat(parts, ignore_index=True)
        table = table[table["label"].isin(CONFIGS)].sort_values(["kind", "label", "seed"])
        keep = ["kind", "run", "label", "seed", "status", *METRICS.values(), "eval/alignment/subject",
                *sorted(c for c in table if c.startswith("eval/provenance/"))]
        table[[c for c in keep if c in table]].to_csv(table_path, index=False)
        done = table[(table["status"] == "completed") & (table["kind"] != "sticker")]
        export_scores([(f"{r.kind}/{r.label}", r.seed, runs / "robustness" / r.kind / r.run)
                       for r in done.itertuples() if r.label != "domain"], out / "scores" / "robustness.jsonl.gz")
    return pd.read_csv(table_path)


def analyse(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for kind in KINDS:
        runs = table[(table["kind"] == kind) & (table["status"] == "completed")]
        value = {(r["label"], int(r["seed"])): {m: r[c] for m, c in METRICS.items()} for _, r in runs.iterrows()}
        for name, metric, how, a, b, sign in COMPARISONS:
            differences, gaps = [], []
            for seed in SEEDS:
                if how == "matched":
                    if not all((c, seed) in value for c in [*a, *b]):
                        continue
                    front = lambda configs: {c: {"style_score": value[(c, seed)]["style"],  # noqa: E731
                                                 metric: value[(c, seed)][metric]} for c in configs}
                    difference, _, gap = matched(front(a), front(b), metric)
                    differences.append(difference)
                    gaps.append(gap)
                elif (a, seed) in value and (b, seed) in value:
                    differences.append(value[(a, seed)][metric] - value[(b, seed)][metric])
            t = paired_t(differences) if len(differences) > 1 else {"estimate": np.nan, "low": np.nan,
                                                                     "high": np.nan, "n": len(differences)}
            resolved = pd.notna(t["low"]) and (t["low"] > 0 or t["high"] < 0)
            rows.append({"kind": kind, "comparison": name, "predicted": ">" if sign > 0 else "<",
                         "estimate": t["estimate"], "ci95_low": t["low"], "ci95_high": t["high"], "n": t["n"],
                         # seeds whose fronts share no style range, compared at their nearest points (the rule)
                         "unmatched_seeds": sum(g > 0 for g in gaps), "largest_style_gap": max(gaps, default=0.0),
                         "reading": ("as predicted" if np.sign(t["estimate"]) == sign else "against the prediction")
                         if resolved else "not resolved"})
    return pd.DataFrame(rows)


def write(result: pd.DataFrame, table: pd.DataFrame, out: Path) -> None:
    result.round(6).to_csv(out / "robustness.csv", index=False)
    lines = ["# Robustness to the world: the headline comparison on three kinds of style (exploratory)", "",
             "Made by `python experiments/robustness.py` and `python experiments/robustness_summary.py`. Training "
             f"seeds {', '.join(map(str, SEEDS))} (the confirmatory study's domain models); 600 steps of batch 32 per "
             "finetune; 24 held-out prompts × 16 noises, guidance 3. Mean ± 95% t interval over seeds, not corrected "
             "for multiplicity. Style: the sticker look (the world's Style set; its rows are the confirmatory runs), "
             "the colour-narrow set (style_colour, the world's judges), the outlined look (style_outline, judged "
             "by assets/sticker_world/judges_outline).", "",
             "A matched comparison whose fronts share no style range on a seed compares their nearest points (the "
             "confirmatory protocol's rule): the last column counts those seeds and gives the largest style gap.", "",
             "| kind of style | comparison | predicted | estimate | 95% t | reading | n "
             "| seeds unmatched (largest gap) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result.itertuples():
        interval = "—" if pd.isna(r.ci95_low) else f"[{r.ci95_low:.3f}, {r.ci95_high:.3f}]"
        unmatched = f"{r.unmatched_seeds} ({r.largest_style_gap:.3f})" if "matched" in r.comparison else ""
        lines.append(f"| {r.kind} | {r.comparison} | {r.predicted} 0 | {r.estimate:.3f} | {interval} | {r.reading} "
                     f"| {r.n} | {unmatched} |")
    lines += ["", "## Every configuration (mean over seeds)", "",
              "| kind | configuration | style score | alignment | layout diversity | n |", "|---|---|---|---|---|---|"]
    done = table[table["status"] == "completed"]
    for (kind, label), group in done.groupby(["kind", "label"], sort=False):
        lines.append(f"| {kind} | {label} | {group[METRICS['style']].mean():.3f} | "
                     f"{group[METRICS['alignment']].mean():.3f} | {group[METRICS['layout']].mean():.3f} | "
                     f"{len(group)} |")
    atomic_write_text(out / "robustness.md", "\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The studies' committed records (experiments/records.py), or their run directories (experiments/runs)
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "results" / "records")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args(argv)
    table = gather(args.runs, args.out)
    write(analyse(table), table, args.out)
    print((args.out / "robustness.md").read_text())


if __name__ == "__main__":
    main()
