"""Summarise experiments/world_study.py's runs into the tables and figures docs/results.md reads.

    python experiments/world_study_summary.py [--runs experiments/runs/world_study] [--out experiments/results]

Writes world_study.csv (one row per run, `collect`'s table plus label and seed), world_study_summary.csv (per
label and guidance: mean over training seeds, 95% t interval with the seed as the unit, the prompt × sample
bootstrap term for the judge metrics, n), world_study.md (the tables and verdicts' numbers) and
figures_world_study/*.png. Every number is recomputed from the runs' metrics.json and judge_scores.jsonl.

`--from-table [CSV]` reads the per-run table instead (default: the committed world_study.csv) and regenerates into
--out everything it determines: world_study_fronts.csv, world_study_vs_prompt_engineering.csv,
world_study_minus_*.csv and the figures. world_study_summary.csv and world_study.md are left as they are (their
bootstrap columns need the runs' per-sample judge scores, which the table does not hold).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

from style_tailoring.analysis import (
    LOWER_IS_BETTER,
    matched,
    paired_differences,
    pareto_front,
    read_sample_scores,
    sample_bootstrap,
    seed_summary,
)
from style_tailoring.collect import collect

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_scores import not_regenerated, read_run_table  # noqa: E402

METRICS = {  # column: (name in the tables, decimals)
    "eval/alignment": ("alignment ↑", 3), "eval/style_score": ("style score ↑", 3),
    "eval/layout_diversity": ("layout diversity ↑", 3), "eval/diversity": ("CLIP diversity ↑", 3),
    "eval/fid": ("FID matched ↓", 3), "eval/fid_style_set": ("FID style set ↓", 3),
    "eval/kid": ("KID matched ↓", 4), "eval/clip_score": ("CLIP score ↑", 1),
}
JUDGED = ("eval/alignment", "eval/style_score")  # per-sample scores: the bootstrap term
ORDER = ["base_no_phrase", "prompt_engineering", "domain", "from_domain/sequential", "from_domain/mixture",
         "from_domain/st250", "from_domain/st500", "from_domain/st750", "from_domain/seq500+100",
         "from_domain/seq400+200", "from_domain/seq_fresh", "from_domain/st500_share0.25",
         "from_domain/st500_share0.75", "hitl/sequential", "hitl/mixture", "hitl/style_tailoring",
         "from_base/sequential", "from_base/st500"]
NAMES = {"base_no_phrase": "base model, no style phrase", "prompt_engineering": "prompt engineering",
         "domain": "domain finetune", "from_domain/sequential": "sequential", "from_domain/mixture": "mixture",
         "from_domain/st250": "Style Tailoring t_split 250", "from_domain/st500": "Style Tailoring t_split 500",
         "from_domain/st750": "Style Tailoring t_split 750", "from_domain/seq500+100": "sequential 500 + 100",
         "from_domain/seq400+200": "sequential 400 + 200",
         "from_domain/seq_fresh": "sequential, fresh optimizer per stage",
         "from_domain/st500_share0.25": "Style Tailoring 500, style share 0.25",
         "from_domain/st500_share0.75": "Style Tailoring 500, style share 0.75",
         "hitl/sequential": "sequential, HITL-curated sets", "hitl/mixture": "mixture, HITL-curated sets",
         "hitl/style_tailoring": "Style Tailoring 500, HITL-curated sets",
         "from_base/sequential": "sequential from the photo base",
         "from_base/st500": "Style Tailoring 500 from the photo base"}


def label_runs(table: pd.DataFrame) -> pd.DataFrame:
    """`label` (the configuration, e.g. from_domain/st500) and `seed` (training seed) from each run's path."""
    table = table.copy()
    paths = table["run"].astype(str).str.replace("\\", "/")
    stripped = paths.str.replace(r"^guidance/", "", regex=True).str.replace(r"/g[0-9.]+$", "", regex=True)
    table["seed"] = stripped.map(lambda p: int(m.group(1)) if (m := re.search(r"/seed(\d+)$", p)) else None)
    table["label"] = stripped.str.replace(r"/seed\d+$", "", regex=True)
    return table


def fmt(mean, ci, decimals: int) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.{decimals}f} ± {ci:.{decimals}f}" if pd.notna(ci) else f"{mean:.{decimals}f}"


def markdown(frame: pd.DataFrame, columns: list[str], first: str, extra: dict | None = None,
             decimals: int | None = None) -> str:
    heads = [first, *(METRICS[c][0] for c in columns), *(extra or {}), "n"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for label, row in frame.iterrows():
        cells = [NAMES.get(label, label),
                 *(fmt(row.get(c), row.get(f"{c}/ci95"), METRICS[c][1] if decimals is None else decimals)
                   for c in columns),
                 *(fn(row) for fn in (extra or {}).values()), str(int(row["n"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Fronts over a training knob at guidance 3 (the "compare fronts, not points"): each family's configurations
# in order of the knob; alignment is read off each seed's curve through them at a matched style score.
KNOB_FRONTS = {
    "sequential, stage split (300+300, 400+200, 500+100)": ["from_domain/sequential", "from_domain/seq400+200",
                                                          "from_domain/seq500+100"],
    "Style Tailoring, t_split (750, 500, 250)": ["from_domain/st750", "from_domain/st500", "from_domain/st250"],
    "Style Tailoring 500, style share (0.25, 0.5, 0.75)": ["from_domain/st500_share0.25", "from_domain/st500",
                                                          "from_domain/st500_share0.75"],
}


def nearest_points(points: pd.DataFrame) -> list[str]:
    """Between each pair of fronts, the two configurations closest in mean style score, paired on the seed: where
    one front has more style *and* more alignment there, it dominates the other near that style."""
    compared = ["eval/style_score", "eval/alignment", "eval/layout_diversity", "eval/fid"]
    means = points.groupby(["family", "label"], sort=False)["eval/style_score"].mean()
    families = list(dict.fromkeys(points["family"]))
    lines = []
    for i, a in enumerate(families):
        for b in families[i + 1:]:
            pairs = [(abs(means[(a, x)] - means[(b, y)]), x, y) for x in means[a].index for y in means[b].index]
            _, x, y = min(pairs)
            diff = paired_differences(points[points["label"].isin([x, y])], ["label"], {"label": y}, compared)
            if x not in diff.index:
                continue
            row = diff.loc[x]
            if not lines:
                lines = ["", "Nearest configurations of two fronts (closest mean style score), paired on the seed:",
                         "", "| configuration | minus | " + " | ".join(METRICS[m][0] for m in compared) + " | n |",
                         "|---|---|" + "---|" * (len(compared) + 1)]
            lines.append(f"| {NAMES.get(x, x)} | {NAMES.get(y, y)} | " + " | ".join(
                fmt(row[m], row[f"{m}/ci95"], 3) for m in compared) + f" | {int(row['n'])} |")
    return lines


def knob_fronts(at3: pd.DataFrame, out_dir: Path) -> list[str]:
    """Alignment at matched style along each family's knob, paired on the seed; the figure of the fronts."""
    rows = []
    for family, labels in KNOB_FRONTS.items():
        part = at3[at3["label"].isin(labels) & at3["seed"].notna()]
        seeds_of = part.groupby("label")["seed"].nunique()
        members = [x for x in labels if seeds_of.get(x, 0) >= 3]  # the configurations run at >= 3 seeds
        part = part[part["label"].isin(members)]
        complete = part.groupby("seed")["label"].nunique() == len(members)  # seeds with all of them
        part = part[part["seed"].isin(complete[complete].index)]
        if len(members) >= 2 and part["seed"].nunique() >= 3:
            rows.append(part.assign(family=family))
    if not rows:
        return []
    points = pd.concat(rows)
    ranges = points.groupby(["family", "seed"])["eval/style_score"].agg(["min", "max"])
    low, high = ranges["min"].max(), ranges["max"].min()  # the style range every seed of every family covers
    lines = ["", "## Fronts over the training knob at guidance 3 (configurations run at >= 3 seeds)", "",
             "| front | configurations | style score range (mean over seeds) | seeds |", "|---|---|---|---|"]
    for family, group in points.groupby("family", sort=False):
        means = group.groupby("label")["eval/style_score"].mean()
        members = ", ".join(NAMES.get(x, x) for x in KNOB_FRONTS[family] if x in means.index)
        lines.append(f"| {family} | {members} | {means.min():.3f} – {means.max():.3f} | "
                     f"{group['seed'].nunique()} |")
    if low < high:
        level = round(float((low + high) / 2), 3)
        at = matched(points, ["family"], "eval/style_score", "eval/alignment", level)
        summary = seed_summary(at, ["family"], ["eval/alignment"])
        lines += ["", f"Alignment at matched style score {level} (read off each seed's front, interpolated):", "",
                  "| front | alignment | n |", "|---|---|---|"]
        lines += [f"| {family} | {fmt(row['eval/alignment'], row['eval/alignment/ci95'], 3)} | {int(row['n'])} |"
                  for family, row in summary.iterrows()]
        families = list(summary.index)
        for i, a in enumerate(families):
            for b in families[i + 1:]:
                diff = paired_differences(at[at["family"].isin([a, b])], ["family"], {"family": b},
                                          ["eval/alignment"])
                if a in diff.index:
                    lines.append(f"\n{a} minus {b}, paired on the seed: "
                                 f"{fmt(diff.loc[a, 'eval/alignment'], diff.loc[a, 'eval/alignment/ci95'], 3)} "
                                 f"(n = {int(diff.loc[a, 'n'])})")
    else:
        lines += ["", f"The fronts share no style range over every seed (highest minimum {low:.3f}, lowest "
                  f"maximum {high:.3f}): no interpolated matched-style comparison."]
    lines += nearest_points(points)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    means = points.groupby(["family", "label"], sort=False)[["eval/style_score", "eval/alignment"]].mean()
    for family, labels in KNOB_FRONTS.items():
        if family in means.index.get_level_values(0):
            curve = means.loc[family].reindex([x for x in labels if x in means.loc[family].index])
            ax.plot(curve["eval/style_score"], curve["eval/alignment"], marker="o", label=family)
            for label, p in curve.iterrows():
                ax.annotate(NAMES.get(label, label).replace("Style Tailoring", "ST"),
                            (p["eval/style_score"], p["eval/alignment"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
    ax.set(xlabel="style score (P(sticker))", ylabel="prompt alignment",
           title="Fronts over the training knob (guidance 3, mean over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    (out_dir / "figures_world_study").mkdir(exist_ok=True)
    fig.savefig(out_dir / "figures_world_study" / "knob_fronts.png", dpi=120)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "runs" / "world_study")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--from-table", type=Path, nargs="?", const=RESULTS / "world_study.csv",
                        help="regenerate from this per-run table (default: the committed one), not from --runs")
    args = parser.parse_args(argv)
    if args.from_table is None:
        table = label_runs(collect(args.runs))
        # Rows with evaluation numbers: the evaluation runs (training runs are evaluated by their own runs)
        table = table[(table["status"] == "completed") & table["eval/alignment"].notna()]
        table.to_csv(args.out / "world_study.csv", index=False)
    else:
        table = read_run_table(args.from_table)
        not_regenerated(["world_study_summary.csv", "world_study.md"], "their bootstrap columns need each run's "
                        "per-sample judge scores, which only the run directories hold")
        args.out.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in METRICS if m in table]
    ordered = lambda frame: frame.reindex([x for x in ORDER if x in frame.index])  # noqa: E731
    at3 = table[table["guidance"] == 3.0]
    summary = seed_summary(at3, ["label"], metrics)
    for metric in JUDGED if args.from_table is None else ():  # sampling error: from the runs' per-sample scores
        summary[f"{metric}/bootstrap95"] = [
            sample_bootstrap([read_sample_scores(args.runs / r) for r in at3[at3["label"] == label]["run"]],
                             metric.removeprefix("eval/"))
            for label in summary.index]
    summary = ordered(summary)
    by_guidance = seed_summary(table, ["label", "guidance"], metrics)
    if args.from_table is None:
        pd.concat({"guidance 3": summary}, names=["table"]).to_csv(args.out / "world_study_summary.csv")
    by_guidance.to_csv(args.out / "world_study_fronts.csv")

    ceiling = json.loads((ROOT / "assets" / "sticker_world" / "ceiling.json").read_text())
    bootstrap = {"bootstrap ± (align., style)": lambda row: " / ".join(
        f"{row.get(f'{m}/bootstrap95', float('nan')):.3f}" for m in JUDGED)}
    out = ["## Guidance 3: mean ± 95% t interval over training seeds (n seeds)", "",
           markdown(summary, metrics, "model", bootstrap), "",
           "Ceiling and floor (the renderer's own stickers of the eval prompts; assets/sticker_world/ceiling.json):",
           "",
           "| set | " + " | ".join(METRICS[m][0] for m in metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
    for name, values in ceiling.items():
        if name != "about":
            out.append(f"| {name} | " + " | ".join(
                f"{values.get(m, float('nan')):.{METRICS[m][1]}f}" for m in metrics) + " |")

    # Relative change over prompt engineering, per seed (prompt engineering trains nothing: one run).
    pe = at3[at3["label"] == "prompt_engineering"]
    trained = at3[at3["seed"].notna()]
    if not pe.empty and not trained.empty:
        relative = trained[["label", "seed"]].copy()
        for m in metrics:
            sign = -1 if m.startswith(LOWER_IS_BETTER) else 1
            relative[m] = sign * (trained[m] - float(pe[m].iloc[0])) / abs(float(pe[m].iloc[0])) * 100
        change = ordered(seed_summary(relative, ["label"], metrics))
        change.to_csv(args.out / "world_study_vs_prompt_engineering.csv")
        out += ["", "## Relative change over prompt engineering, % (positive = better), mean ± 95% t interval", "",
                markdown(change, metrics, "model", decimals=1)]

    # Paired differences on the training seed: the headline pairs (the curated-set runs against their own).
    for reference in ("from_domain/sequential", "from_domain/mixture", "hitl/sequential", "hitl/mixture"):
        rest = at3[at3["seed"].notna()]
        rest = rest[rest["label"].str.startswith("hitl/") == reference.startswith("hitl/")]
        if (rest["label"] == reference).any():
            diff = ordered(paired_differences(rest, ["label"], {"label": reference}, metrics))
            diff.to_csv(args.out / f"world_study_minus_{reference.replace('from_domain/', '').replace('/', '_')}.csv")
            out += ["", f"## Minus {NAMES[reference]}, paired on the training seed (mean ± 95% t interval)", "",
                    markdown(diff, metrics, "model")]

    # Fronts over guidance, and alignment at matched style.
    swept = table[table["label"].isin([label for label, g in table.groupby("label") if g["guidance"].nunique() > 1])]
    if not swept.empty:
        front_metrics = ["eval/style_score", "eval/alignment", "eval/layout_diversity"]
        fronts = seed_summary(swept, ["label", "guidance"], front_metrics)
        out += ["", "## Fronts over guidance (mean ± 95% t interval over training seeds)", "",
                "| model | guidance | " + " | ".join(METRICS[m][0] for m in front_metrics) + " | n |",
                "|---|---|" + "---|" * (len(front_metrics) + 1)]
        for label in [x for x in ORDER if x in fronts.index.get_level_values(0)]:
            for guidance, row in fronts.loc[label].iterrows():
                out.append(f"| {NAMES.get(label, label)} | {guidance:g} | " + " | ".join(
                    fmt(row[m], row[f"{m}/ci95"], 3) for m in front_metrics) + f" | {int(row['n'])} |")
        points = by_guidance.reset_index()
        points = points[points["label"].isin(swept["label"].unique())]
        lows = swept.groupby(["label", "seed"], dropna=False)["eval/style_score"].min().groupby("label").max()
        highs = swept.groupby(["label", "seed"], dropna=False)["eval/style_score"].max().groupby("label").min()
        heads = [x for x in ("from_domain/sequential", "from_domain/mixture", "from_domain/st500") if x in lows]
        if heads and lows[heads].max() < highs[heads].min():
            level = round(float((lows[heads].max() + highs[heads].min()) / 2), 3)
            at = matched(swept[swept["seed"].notna()], ["label"], "eval/style_score", "eval/alignment", level)
            at_summary = ordered(seed_summary(at, ["label"], ["eval/alignment"]))
            lines = [f"## Alignment at matched style score {level} (each run's guidance sweep 1.5 / 3 / 5, "
                     "interpolated; paired on the seed)", "", "| model | alignment | minus Style Tailoring 500 | n |",
                     "|---|---|---|---|"]
            diffs = pd.DataFrame()
            if "from_domain/st500" in at_summary.index:
                diffs = paired_differences(at, ["label"], {"label": "from_domain/st500"}, ["eval/alignment"])
            for label, row in at_summary.iterrows():
                d = diffs.loc[label] if label in diffs.index else None
                mean = fmt(row["eval/alignment"], row["eval/alignment/ci95"], 3)
                lines.append(f"| {NAMES.get(label, label)} | {mean}"
                             f" | {fmt(-d['eval/alignment'], d['eval/alignment/ci95'], 3) if d is not None else '—'}"
                             f" | {int(row['n'])} |")
            out += ["", *lines]
        elif heads:
            out += ["", "Along guidance (1.5 / 3 / 5) the headline models' style ranges do not overlap over every seed "
                    f"(highest minimum {lows[heads].max():.3f}, lowest maximum {highs[heads].min():.3f}): no "
                    "matched-style comparison by guidance; see the fronts over the training knob below."]
        figures = args.out / "figures_world_study"
        figures.mkdir(exist_ok=True)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 5))
        for label, group in points.groupby("label"):
            group = group.sort_values("guidance")
            ax.errorbar(group["eval/style_score"], group["eval/alignment"], xerr=group["eval/style_score/ci95"],
                        yerr=group["eval/alignment/ci95"], marker="o", capsize=3, label=NAMES.get(label, label))
            for _, p in group.iterrows():
                ax.annotate(f"{p['guidance']:g}", (p["eval/style_score"], p["eval/alignment"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        front = pareto_front(points, "eval/style_score", "eval/alignment")
        ax.plot(front["eval/style_score"], front["eval/alignment"], "k--", lw=1, label="Pareto front")
        ax.set(xlabel="style score (P(sticker))", ylabel="prompt alignment",
               title="Fronts over guidance (labels), mean ± 95% CI over seeds")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(figures / "fronts.png", dpi=120)
    out += knob_fronts(at3, args.out)
    if args.from_table is None:
        (args.out / "world_study.md").write_text("\n".join(out) + "\n")
        print("\n".join(out))


if __name__ == "__main__":
    main()
