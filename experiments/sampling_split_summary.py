"""Summarise experiments/sampling_split.py: timestep splitting at sampling time against training time, on world v3.

    python experiments/sampling_split_summary.py [--runs experiments/results/records] [--out experiments/results]

Train time: the confirmatory study's Style Tailoring runs at t_split 650 / 700 / 750 / 800. Sampling time: the same
seeds' sequential (300 + 300) runs switched from their alignment-stage to their style-stage UNet at the same
t_switch. DCI on the sequential run's final model (concept "sticker", the phrase appended) against the same model and
prompts sampled plainly. Mean ± 95% t interval over training seeds, paired differences by seed (exploratory).
Writes sampling_split.{csv,md} and scores/sampling_split.jsonl.gz (the evaluations' per-sample scores); without the
run directories it reads sampling_split_runs.csv.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_scores import export_scores  # noqa: E402
from style_tailoring.analysis import paired_t  # noqa: E402
from style_tailoring.collect import collect  # noqa: E402
from style_tailoring.io import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPLITS = (650, 700, 750, 800)
METRICS = {"eval/alignment": "alignment ↑", "eval/alignment/subject": "shape ↑", "eval/style_score": "style score ↑",
           "eval/layout_diversity": "layout diversity ↑", "eval/fid": "FID matched ↓"}


def gather(runs: Path, out: Path) -> pd.DataFrame:
    path = out / "sampling_split_runs.csv"
    if (runs / "sampling_split").is_dir():
        sampled = collect(runs / "sampling_split")
        sampled["seed"] = sampled["run"].map(lambda r: int(re.search(r"seed(\d+)$", r).group(1)))
        sampled["arm"] = sampled["run"].str.replace(r"/seed\d+$", "", regex=True)
        trained = collect(runs / "confirmatory")
        trained["seed"] = trained["run"].map(lambda r: int(m.group(1)) if (m := re.search(r"seed(\d+)$", r)) else None)
        trained["arm"] = trained["run"].str.replace(r"/seed\d+$", "", regex=True).map(
            lambda a: f"train_time/t{a[2:]}" if re.fullmatch(r"st\d+", a) else a)
        seeds = set(sampled["seed"])
        keep = trained["arm"].str.startswith("train_time/") | (trained["arm"] == "seq300+300")
        table = pd.concat([sampled, trained[keep & trained["seed"].isin(seeds)]], ignore_index=True)
        cols = ["arm", "seed", "run", "status", *METRICS, *sorted(c for c in table if c.startswith("eval/provenance/"))]
        table = table[[c for c in cols if c in table]].sort_values(["arm", "seed"])
        table.to_csv(path, index=False)
        export_scores([(r.arm, r.seed, runs / "sampling_split" / r.run) for r in sampled.itertuples()
                       if r.status == "completed"], out / "scores" / "sampling_split.jsonl.gz")
    return pd.read_csv(path)


def fmt(t: dict, digits: int = 3) -> str:
    half = t["high"] - t["estimate"]
    return f"{t['estimate']:.{digits}f} ± {half:.{digits}f}" if pd.notna(half) else f"{t['estimate']:.{digits}f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The studies' committed records (experiments/records.py), or their run directories (experiments/runs)
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "results" / "records")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args(argv)
    table = gather(args.runs, args.out)
    table = table[table["status"] == "completed"]
    arms = [*(f"train_time/t{t}" for t in SPLITS), *(f"sampling_time/t{t}" for t in SPLITS), "seq300+300",
            "dci", "dci_control"]
    names = {"seq300+300": "sequential 300 + 300, its final (style) model", "dci": "style model + \", sticker\", DCI",
             "dci_control": "style model + \", sticker\", plain"}
    lines = ["# Timestep splitting at sampling time vs at training time (world v3, exploratory)", "",
             "Made by `python experiments/sampling_split.py` (evaluations only: it reuses the confirmatory study's "
             "models) and `python experiments/sampling_split_summary.py`. Training seeds "
             f"{', '.join(str(int(s)) for s in sorted(table['seed'].dropna().unique()))}; 24 held-out prompts × 16 "
             "noises, 25 DDIM "
             "steps, guidance 3. Mean ± 95% t interval with the training seed as the unit.", "",
             "| model | " + " | ".join(METRICS.values()) + " | n |", "|" + "---|" * (len(METRICS) + 2)]
    rows = []
    for arm in arms:
        group = table[table["arm"] == arm]
        if group.empty:
            continue
        cells = {m: paired_t(group[m].dropna()) for m in METRICS}
        label = names.get(arm, arm.replace("_", " ").replace("/t", ", split "))
        lines.append(f"| {label} | " + " | ".join(fmt(cells[m]) for m in METRICS) + f" | {len(group)} |")
        rows += [{"arm": arm, "metric": m, **cells[m]} for m in METRICS]
    lines += ["", "Paired by seed (mean ± 95% t interval):", "",
              "| difference | " + " | ".join(METRICS.values()) + " | n |", "|" + "---|" * (len(METRICS) + 2)]
    pairs = [(f"sampling_time/t{t}", f"train_time/t{t}", f"sampling minus train time, split {t}") for t in SPLITS]
    pairs.append(("dci", "dci_control", "DCI minus plain (same model and prompts)"))
    for a, b, label in pairs:
        left, right = table[table["arm"] == a].set_index("seed"), table[table["arm"] == b].set_index("seed")
        common = left.index.intersection(right.index)
        if len(common) < 2:
            continue
        cells = {m: paired_t(left.loc[common, m] - right.loc[common, m]) for m in METRICS}
        lines.append(f"| {label} | " + " | ".join(fmt(cells[m]) for m in METRICS) + f" | {len(common)} |")
        rows += [{"arm": f"{a} - {b}", "metric": m, **cells[m]} for m in METRICS]
    pd.DataFrame(rows).round(6).to_csv(args.out / "sampling_split.csv", index=False)
    atomic_write_text(args.out / "sampling_split.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
