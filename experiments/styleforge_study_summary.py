"""Summarise experiments/styleforge_study.py's runs into the StyleForge tables and figure docs/styleforge.md reads.

    python experiments/styleforge_study_summary.py [--runs experiments/runs/styleforge_study] \
        [--out experiments/results]

Writes styleforge_study.csv (one row per run), styleforge_study_summary.csv (per condition: mean over training
seeds, 95% t interval with the seed as the unit, n), styleforge_study_vs_dreambooth.csv (each condition minus
DreamBooth on the same seed), styleforge_study_vs_dreambooth150.csv (minus DreamBooth stopped at 150 steps, whose
style matches StyleForge's), styleforge_study.md (the tables) and figures_styleforge/front.png (style score
against held-out alignment). Every number is recomputed from the runs' metrics.json.

`--from-table [CSV]` reads the per-run table instead (default: the committed styleforge_study.csv) and regenerates
into --out every output after it, all of which it determines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from style_tailoring.analysis import paired_differences, seed_summary
from style_tailoring.collect import collect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_scores import read_run_table  # noqa: E402
from world_study_summary import RESULTS, fmt, label_runs  # noqa: E402

METRICS = {  # column: (name in the tables, decimals)
    "eval/style_score": ("P(hatched) ↑", 3), "eval/alignment": ("alignment ↑", 3),
    "eval/alignment/subject": ("shape ↑", 3), "eval/alignment/count": ("count ↑", 3),
    "eval/alignment/scene": ("named scene ↑", 3), "eval/kid": ("KID hatched ↓", 4),
    "eval/fid": ("FID hatched ↓", 2), "eval/kid_styleref": ("KID StyleRef ↓", 4),
    "eval/layout_diversity": ("layout diversity ↑", 3),
}
RECIPES = {"base": "base model (no finetune)", "dreambooth": "DreamBooth (StyleRef only, λ = 0)",
           "sf0.5": "StyleForge λ = 0.5", "sf1": "StyleForge λ = 1", "multi": "Multi-StyleForge λ = 1"}
VARIANTS = {"": "", "+ico": " + ICO", "+te": " + text encoder", "@150": ", 150 steps", "@300": ", 300 steps"}
ORDER = ["base", *(r + v for v in list(VARIANTS)[:3] for r in list(RECIPES)[1:]), "dreambooth@150", "dreambooth@300"]
FRONT = ["dreambooth@150", "dreambooth@300", "dreambooth"]  # DreamBooth's style × alignment curve over its steps


def name(label: str) -> str:
    recipe = next(r for r in sorted(RECIPES, key=len, reverse=True) if label.startswith(r))
    return RECIPES[recipe] + VARIANTS.get(label[len(recipe):], label[len(recipe):])


def markdown(frame: pd.DataFrame, columns: list[str], first: str) -> str:
    heads = [first, *(METRICS[c][0] for c in columns), "n"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for label, row in frame.iterrows():
        lines.append("| " + " | ".join([name(label), *(fmt(row.get(c), row.get(f"{c}/ci95"), METRICS[c][1])
                                                         for c in columns), str(int(row["n"]))]) + " |")
    return "\n".join(lines)


def figure(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    colours = {"base": "grey", "dreambooth": "tab:blue", "sf0.5": "tab:orange", "sf1": "tab:red",
               "multi": "tab:purple"}
    markers = {"": "o", "+ico": "s", "+te": "^", "@150": "x", "@300": "x"}
    front = summary.reindex([label for label in FRONT if label in summary.index])
    ax.plot(front["eval/style_score"], front["eval/alignment"], color="tab:blue", alpha=0.4, lw=1)
    for label, row in summary.iterrows():
        recipe = next(r for r in sorted(RECIPES, key=len, reverse=True) if label.startswith(r))
        ax.errorbar(row["eval/style_score"], row["eval/alignment"], xerr=row.get("eval/style_score/ci95"),
                    yerr=row.get("eval/alignment/ci95"), fmt=markers.get(label[len(recipe):], "o"),
                    color=colours[recipe], capsize=3, label=name(label))
    ax.set_xlabel("style fidelity: P(hatched) by the look judge")
    ax.set_ylabel("prompt alignment on held-out content")
    ax.set_title("The hatched look from 20 images: mean, 95% CI over 3 seeds")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "runs" / "styleforge_study")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--from-table", type=Path, nargs="?", const=RESULTS / "styleforge_study.csv",
                        help="regenerate from this per-run table (default: the committed one), not from --runs")
    args = parser.parse_args(argv)
    if args.from_table is None:
        table = label_runs(collect(args.runs))
        table = table[table["status"] == "completed"]
        table.sort_values(["label", "seed"]).to_csv(args.out / "styleforge_study.csv", index=False)
    else:
        table = read_run_table(args.from_table)
        args.out.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in METRICS if m in table]
    summary = seed_summary(table, ["label"], metrics)
    summary = summary.reindex([label for label in ORDER if label in summary.index])
    summary.to_csv(args.out / "styleforge_study_summary.csv")
    trained = table[table["label"] != "base"]
    versus = paired_differences(trained, ["label"], {"label": "dreambooth"}, metrics)
    versus = versus.reindex([label for label in ORDER if label in versus.index])
    versus.to_csv(args.out / "styleforge_study_vs_dreambooth.csv")
    figure(summary, args.out / "figures_styleforge" / "front.png")
    main_columns = ["eval/style_score", "eval/kid", "eval/fid", "eval/kid_styleref", "eval/alignment",
                    "eval/alignment/subject", "eval/alignment/count", "eval/alignment/scene",
                    "eval/layout_diversity"]
    text = ["# StyleForge on the Sticker World", "",
            "Mean ± 95% t interval over training seeds (`python experiments/styleforge_study.py`, summarised by "
            "`python experiments/styleforge_study_summary.py`).", "",
            markdown(summary, [c for c in main_columns if c in summary], "condition"), "",
            "## Minus DreamBooth on the same seed", "",
            markdown(versus, [c for c in ["eval/style_score", "eval/kid", "eval/alignment", "eval/alignment/subject",
                                          "eval/alignment/scene"] if c in versus], "condition"), ""]
    if "dreambooth@150" in set(trained["label"]):
        # DreamBooth stopped at 150 steps reaches StyleForge's style: the recipes compared at equal style
        early = paired_differences(trained, ["label"], {"label": "dreambooth@150"}, metrics)
        early = early.reindex([label for label in ORDER if label in early.index and label != "dreambooth@300"])
        early.to_csv(args.out / "styleforge_study_vs_dreambooth150.csv")
        text += ["## Minus DreamBooth stopped at 150 steps (its style is StyleForge's), same seed", "",
                 markdown(early, [c for c in ["eval/style_score", "eval/alignment", "eval/alignment/subject",
                                               "eval/alignment/count", "eval/alignment/scene",
                                               "eval/layout_diversity"] if c in early], "condition"), ""]
    (args.out / "styleforge_study.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
