"""The confirmatory study's analysis, exactly as experiments/protocol.md fixed it before the runs.

    python experiments/confirmatory_summary.py [--runs DIR] [--out experiments/results]

It first gathers the runs' committed records, experiments/results/records/confirmatory (experiments/records.py;
or, with --runs experiments/runs/confirmatory, the run directories themselves): confirmatory_runs.csv (one row per
run, collect's table) and scores/confirmatory.jsonl.gz (every evaluation's per-sample scores). Without either it
reads those two committed files, so the tables can be regenerated anywhere. It writes confirmatory.csv (one row per
pre-registered claim: estimate, 95% t interval, simultaneous 99.5% interval, two-level bootstrap interval, p,
Holm-adjusted p, verdict) and confirmatory.md (the claims, every configuration's means and the matched style
levels).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_scores import export_scores, load_scores, per_prompt  # noqa: E402
from style_tailoring.analysis import SCORED_BY, ScoredDifferently, holm, paired_t, two_level_bootstrap  # noqa: E402
from style_tailoring.collect import collect  # noqa: E402
from style_tailoring.io import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [1001, 1002, 1003, 1004, 1005]
FRONTS = {"Style Tailoring": ["st650", "st700", "st750", "st800"],
          "sequential": ["seq300+300", "seq400+200", "seq500+100"],
          "mixture": ["mix0.5", "mix0.75", "mix0.9"]}
CONFIGS = ["prompt_engineering", "domain", *FRONTS["Style Tailoring"], *FRONTS["sequential"], *FRONTS["mixture"]]
ALPHA, FAMILY = 0.05, 10
STYLE, ALIGN, LAYOUT = "style_score", "alignment", "layout_diversity"
# Layout diversity is the mean over its labels of each label's mean over the prompts it applies to (as evaluation
# computes it): each label is its own per-prompt array, recombined per draw.
LAYOUT_LABELS = ("position", "scale", "rotation", "arrangement", "scene")
ARRAYS = {ALIGN: [ALIGN], STYLE: [STYLE], LAYOUT: [f"{LAYOUT}/{label}" for label in LAYOUT_LABELS]}
# The table of every configuration: (column in the runs table, name, decimals).
COLUMNS = [("eval/alignment", "alignment ↑", 3), ("eval/alignment/count", "count ↑", 3),
           ("eval/alignment/colour", "colour ↑", 3), ("eval/alignment/subject", "shape ↑", 3),
           ("eval/alignment/scene", "scene ↑", 3), ("eval/style_score", "style score ↑", 3),
           ("eval/layout_diversity", "layout diversity ↑", 3), ("eval/diversity", "CLIP diversity ↑", 3),
           ("eval/fid", "FID matched ↓", 3), ("eval/kid", "KID matched ↓", 4), ("eval/clip_score", "CLIP score ↑", 1)]


# ------------------------------------------------------------------------------------------------ the data
def label_runs(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    paths = table["run"].astype(str)
    table["seed"] = paths.map(lambda p: int(m.group(1)) if (m := re.search(r"/seed(\d+)$", p)) else None)
    table["label"] = paths.str.replace(r"/seed\d+$", "", regex=True)
    return table


def gather(runs: Path, out: Path, partial: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs table, per-sample scores), from the run directories when they are here, else the committed files;
    refused before anything is written while a pre-registered run is missing, unless `partial` (a dry run)."""
    table_path, scores_path = out / "confirmatory_runs.csv", out / "scores" / "confirmatory.jsonl.gz"
    if runs.is_dir():
        table = label_runs(collect(runs))
        table["cpu_seconds"] = [run_seconds(runs / r) for r in table["run"]]
        table = table[table["label"].isin(CONFIGS)].sort_values(["label", "seed"], na_position="first")
        keep = ["run", "label", "seed", "status", "strategy", "t_split", "mixture", "steps", "cpu_seconds",
                *(c for c, _, _ in COLUMNS), *sorted(c for c in table if c.startswith(("eval/provenance/",
                                                                                     "provenance/")))]
        table = table[[c for c in keep if c in table]]
        check_complete(table, partial)
        table.to_csv(table_path, index=False)
        done = table[table["status"] == "completed"]
        export_scores([(r.label, r.seed, runs / r.run) for r in done.itertuples()], scores_path)
    return pd.read_csv(table_path), load_scores(scores_path)


EXPECTED_RUNS = ["prompt_engineering", *(f"{c}/seed{s}" for c in CONFIGS[1:] for s in SEEDS)]


def missing_runs(table: pd.DataFrame) -> list[str]:
    return sorted(set(EXPECTED_RUNS) - set(table.loc[table["status"] == "completed", "run"].astype(str)))


def check_complete(table: pd.DataFrame, partial: bool) -> None:
    """The claims are judged only on every pre-registered run (protocol.md): a missing one stops the analysis,
    naming what is missing, unless this is a dry run of the analysis (--partial), whose verdicts are 'pending'."""
    missing = missing_runs(table)
    if missing and not partial:
        raise SystemExit(f"error: {len(EXPECTED_RUNS) - len(missing)} of {len(EXPECTED_RUNS)} pre-registered runs "
                         f"are complete (missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}); "
                         "the claims are judged only when every run is in (experiments/protocol.md). --partial "
                         "--out DIR writes a dry run of the analysis there, every verdict 'pending'.")


def run_seconds(run_dir: Path) -> float:
    """CPU time of a run, as its metrics.json records it (training and its evaluation)."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return float("nan")
    return float(metrics.get("cpu_seconds", float("nan"))) + float(metrics.get("cpu_seconds_eval", 0.0))


# ------------------------------------------------------------------------------------------- matched fronts
def read_curve(points: list[tuple[float, float]], at: float) -> float:
    points = sorted(points)
    return float(np.interp(at, [p[0] for p in points], [p[1] for p in points]))


def matched(front_a: dict[str, dict], front_b: dict[str, dict], metric: str, level_metric: str = STYLE):
    """The protocol's matching rule for one seed. front_*: {config: {metric: value}}. Returns (A − B at the matched
    style level, the level, the style gap of an unmatched seed or 0)."""
    a = [(v[level_metric], v[metric]) for v in front_a.values()]
    b = [(v[level_metric], v[metric]) for v in front_b.values()]
    low, high = max(min(p[0] for p in a), min(p[0] for p in b)), min(max(p[0] for p in a), max(p[0] for p in b))
    if low <= high:
        level = (low + high) / 2
        return read_curve(a, level) - read_curve(b, level), level, 0.0
    pa, pb = min(((pa, pb) for pa in a for pb in b), key=lambda pair: abs(pair[0][0] - pair[1][0]))
    return pa[1] - pb[1], (pa[0] + pb[0]) / 2, abs(pa[0] - pb[0])


def value(means: dict[str, np.ndarray], config: str, metric: str) -> np.ndarray:
    """A configuration's per-seed `metric` from the per-seed means of its arrays (ARRAYS)."""
    return np.mean([means[f"{config}|{name}"] for name in ARRAYS[metric]], axis=0)


def front_values(means: dict[str, np.ndarray], front: list[str], seed_index: int, metrics: list[str]) -> dict:
    return {c: {m: value(means, c, m)[seed_index] for m in metrics} for c in front}


# ------------------------------------------------------------------------------------------------- the claims
CLAIMS = [  # (name, text, predicted sign, kind)
    ("H1", "alignment, Style Tailoring's front minus sequential's, at matched style", 1, "matched"),
    ("H2", "layout diversity, Style Tailoring's front minus sequential's, at H1's matched style", 1, "matched"),
    ("H3", "style score, st750 minus mix0.75", 1, "paired"),
    ("H4", "alignment, Style Tailoring's front minus mixture's, at matched style", 1, "matched"),
    ("H5", "style score, seq300+300 minus domain", 1, "paired"),
    ("H6", "alignment, seq300+300 minus domain", -1, "paired"),
    ("H7", "layout diversity, seq300+300 minus domain", -1, "paired"),
    ("H8", "alignment, st750 over prompt engineering, relative change (%)", 1, "relative"),
    ("H9", "style score, st750 over prompt engineering, relative change (%)", 1, "relative"),
    ("H10", "layout diversity, st750 over prompt engineering, relative change (%)", 1, "relative"),
]
SPEC = {  # claim: (metric, arm A or front A, arm B or front B)
    "H1": (ALIGN, "Style Tailoring", "sequential"), "H2": (LAYOUT, "Style Tailoring", "sequential"),
    "H3": (STYLE, "st750", "mix0.75"), "H4": (ALIGN, "Style Tailoring", "mixture"),
    "H5": (STYLE, "seq300+300", "domain"), "H6": (ALIGN, "seq300+300", "domain"),
    "H7": (LAYOUT, "seq300+300", "domain"), "H8": (ALIGN, "st750", "prompt_engineering"),
    "H9": (STYLE, "st750", "prompt_engineering"), "H10": (LAYOUT, "st750", "prompt_engineering"),
}


def statistic_of(claim: str, kind: str):
    """The claim's statistic on {config|metric: per-seed means}: one number (the mean over seeds of per-seed
    differences, or a relative change of means)."""
    metric, a, b = SPEC[claim]

    def stat(means: dict[str, np.ndarray]) -> float:
        if kind == "matched":
            n = len(value(means, "st650", STYLE))
            return float(np.mean([per_seed_matched(means, claim, i)[0] for i in range(n)]))
        if kind == "paired":
            return float(np.mean(value(means, a, metric) - value(means, b, metric)))
        base = float(np.mean(value(means, b, metric)))
        return float((np.mean(value(means, a, metric)) - base) / abs(base) * 100)

    return stat


def per_seed_matched(means: dict[str, np.ndarray], claim: str, i: int):
    metric, a, b = SPEC[claim]
    return matched(front_values(means, FRONTS[a], i, [STYLE, metric]),
                   front_values(means, FRONTS[b], i, [STYLE, metric]), metric)


def analyse(table: pd.DataFrame, scores: pd.DataFrame, bootstrap: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    prompts = sorted(scores["prompt"].unique())
    trained = [c for c in CONFIGS if c != "prompt_engineering"]
    arms = {}
    for name in (n for names in ARRAYS.values() for n in names):
        arms[f"prompt_engineering|{name}"] = per_prompt(scores, "prompt_engineering", name, None, prompts)
        for config in trained:
            arms[f"{config}|{name}"] = per_prompt(scores, config, name, SEEDS, prompts)
    full = {name: np.nanmean(a, axis=1) for name, a in arms.items()}  # per-seed means on every prompt
    check_recomputed(table, full)
    rows, levels = [], []
    for claim, text, sign, kind in CLAIMS:
        metric, a, b = SPEC[claim]
        check_scored_alike(table, [*FRONTS.get(a, [a]), *FRONTS.get(b, [b])], claim)
        boot = two_level_bootstrap(arms, statistic_of(claim, kind), n=bootstrap, seed=0)
        if kind == "relative":
            test = {**boot, "t_low": np.nan, "t_high": np.nan, "s_low": np.nan, "s_high": np.nan}
            test["p"] = boot["p"]
        else:
            if kind == "matched":
                per_seed = [per_seed_matched(full, claim, i) for i in range(len(SEEDS))]
                differences = [d for d, _, _ in per_seed]
                if claim in ("H1", "H4"):
                    levels += [{"comparison": f"{a} vs {b}", "seed": s, "level": level, "gap": gap}
                               for s, (_, level, gap) in zip(SEEDS, per_seed)]
            else:
                differences = value(full, a, metric) - value(full, b, metric)
            differences = np.asarray(differences, dtype=float)
            seeds_used = int(np.isfinite(differences).sum())
            t95, simultaneous = paired_t(differences), paired_t(differences, 1 - ALPHA / FAMILY)
            test = {"estimate": t95["estimate"], "p": t95["p"], "t_low": t95["low"], "t_high": t95["high"],
                    "s_low": simultaneous["low"], "s_high": simultaneous["high"]}
        rows.append({"claim": claim, "difference": text, "predicted": ">" if sign > 0 else "<",
                     "estimate": test["estimate"], "ci95_low": test["t_low"], "ci95_high": test["t_high"],
                     "simultaneous_low": test["s_low"], "simultaneous_high": test["s_high"],
                     "bootstrap_low": boot["low"], "bootstrap_high": boot["high"], "p": test["p"],
                     "test": "bootstrap" if kind == "relative" else "paired t",
                     "n": len(SEEDS) if kind == "relative" else seeds_used})
    claims = pd.DataFrame(rows)
    adjusted = holm(dict(zip(claims["claim"], claims["p"])))
    claims["p_holm"] = claims["claim"].map(adjusted)
    claims["verdict"] = [verdict(r.p_holm, r.estimate, 1 if r.predicted == ">" else -1) for r in claims.itertuples()]
    if missing_runs(table):  # a dry run on incomplete data judges nothing
        claims["verdict"] = "pending"
    return claims, pd.DataFrame(levels)


def check_recomputed(table: pd.DataFrame, full: dict[str, np.ndarray]) -> None:
    """The per-sample scores give back every run's metrics.json numbers: the committed scores are the ones that made
    the table."""
    done = table[table["status"] == "completed"]
    for row in done.itertuples():
        i = 0 if pd.isna(row.seed) else SEEDS.index(int(row.seed))
        for metric in (ALIGN, STYLE, LAYOUT):
            recorded, again = table.loc[row.Index, f"eval/{metric}"], value(full, row.label, metric)[i]
            if not np.isclose(recorded, again, atol=1e-4):
                raise ValueError(f"{row.run}: eval/{metric} {recorded} but the per-sample scores give {again}")


def verdict(p_holm: float, estimate: float, sign: int) -> str:
    if not np.isfinite(estimate) or not np.isfinite(p_holm):  # nothing to judge by: never a verdict
        return "not resolved"
    if p_holm < ALPHA:
        return "holds" if np.sign(estimate) == sign else "fails"
    return "not resolved"


def check_scored_alike(table: pd.DataFrame, configs: list[str], claim: str) -> None:
    """Every run a claim compares was scored by the same judges on the same eval prompts (their digests)."""
    rows = table[table["label"].isin(configs)]
    for column in SCORED_BY:
        if column in rows and rows[column].nunique() > 1:
            raise ScoredDifferently(f"{claim}: its runs differ in {column} ({sorted(rows[column].unique())})")


# -------------------------------------------------------------------------------------------------- writing
def fmt(value, decimals=3) -> str:
    return "—" if pd.isna(value) else f"{value:.{decimals}f}"


def summary_table(table: pd.DataFrame) -> str:
    heads = ["configuration", *(name for _, name, _ in COLUMNS), "n"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    done = table[table["status"] == "completed"]
    for config in CONFIGS:
        group = done[done["label"] == config]
        if group.empty:
            continue
        cells = [config]
        for column, _, decimals in COLUMNS:
            values = group[column].dropna()
            t = paired_t(values) if len(values) > 1 else {"estimate": values.mean(), "low": np.nan}
            half = t["estimate"] - t["low"]
            cells.append(fmt(t["estimate"], decimals) + (f" ± {half:.{decimals}f}" if pd.notna(half) else ""))
        cells.append(str(len(group)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(claims: pd.DataFrame, levels: pd.DataFrame, table: pd.DataFrame, out: Path) -> None:
    claims.round(6).to_csv(out / "confirmatory.csv", index=False)
    cpu_hours = table["cpu_seconds"].sum() / 3600
    lines = ["# Confirmatory study (pre-registered in experiments/protocol.md)", "",
             "Made by `python experiments/confirmatory.py` (two one-thread workers) and `python "
             "experiments/confirmatory_summary.py`; every number below is recomputed from "
             "`confirmatory_runs.csv` and `scores/confirmatory.jsonl.gz`. Training seeds "
             f"{', '.join(map(str, SEEDS))}; 600 steps of batch 32 per finetune; 24 held-out prompts × 16 noises, "
             f"guidance 3. {len(table)} runs, {cpu_hours:.1f} CPU-hours (as each run's metrics.json records its "
             "process's CPU time, training and evaluation).", "",
             *([f"**Dry run on incomplete data: {len(EXPECTED_RUNS) - len(missing_runs(table))} of "
                f"{len(EXPECTED_RUNS)} pre-registered runs. No claim is judged (every verdict: pending).**", ""]
               if missing_runs(table) else []),
             "## The pre-registered claims", "",
             "Holm-adjusted over the family of ten. holds / fails: adjusted p < 0.05 with the predicted / the "
             "opposite sign; not resolved otherwise. Intervals: 95% t over the five seeds, simultaneous (Bonferroni "
             "99.5%), and the two-level bootstrap (training seed × prompt, 95%), which for H8–H10 carries prompt "
             "engineering's own sampling error and is their test.", "",
             "| claim | difference | predicted | estimate | 95% t | simultaneous | bootstrap | p | Holm p | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in claims.itertuples():
        d = 1 if "%" in r.difference else 3
        interval = lambda lo, hi: "—" if pd.isna(lo) else f"[{lo:.{d}f}, {hi:.{d}f}]"  # noqa: E731
        lines.append(f"| {r.claim} | {r.difference} | {r.predicted} 0 | {r.estimate:.{d}f} | "
                     f"{interval(r.ci95_low, r.ci95_high)} | {interval(r.simultaneous_low, r.simultaneous_high)} | "
                     f"{interval(r.bootstrap_low, r.bootstrap_high)} | {r.p:.4f} | {r.p_holm:.4f} | "
                     f"**{r.verdict}** |")
    lines += ["", "## Matched style levels (the protocol's rule, per seed)", "",
              "| comparison | seed | matched style | style gap (unmatched seeds) |", "|---|---|---|---|"]
    lines += [f"| {r.comparison} | {r.seed} | {r.level:.3f} | {r.gap:.3f} |" for r in levels.itertuples()]
    lines += ["", "## Every configuration (mean ± 95% t interval over training seeds)", "", summary_table(table), ""]
    atomic_write_text(out / "confirmatory.md", "\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The committed records of the runs (experiments/records.py: one per completed run); the run directories
    # themselves (experiments/runs/confirmatory) hold the same metrics.json and scores.
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "results" / "records" / "confirmatory")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--partial", action="store_true",
                        help="a dry run of the analysis on incomplete runs (into another --out): verdicts 'pending'")
    args = parser.parse_args(argv)
    if args.partial and args.out.resolve() == (ROOT / "experiments" / "results").resolve():
        raise SystemExit("error: --partial: write the dry run elsewhere (--out DIR), never over the committed results")
    args.out.mkdir(parents=True, exist_ok=True)
    table, scores = gather(args.runs, args.out, args.partial)
    claims, levels = analyse(table, scores, args.bootstrap)
    write(claims, levels, table, args.out)
    print((args.out / "confirmatory.md").read_text())


if __name__ == "__main__":
    main()
