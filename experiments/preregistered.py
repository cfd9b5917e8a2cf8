"""The analysis of a pre-registered study shaped like the confirmatory one (experiments/protocol.md,
experiments/flow_protocol.md): fronts matched on style by the protocol's rule, paired differences over training
seeds, relative changes over prompt engineering by the two-level bootstrap, Holm over the family, and the tables.

A study is a `Design` (its seeds, configurations, fronts, claims and the words of its tables); `summarise` gathers
its runs' committed records (experiments/records.py) into `<name>_runs.csv` and `scores/<name>.jsonl.gz`, judges
the claims and writes `<name>.{csv,md}`. experiments/confirmatory_summary.py and flow_study_summary.py are the two
designs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_scores import export_scores, load_scores, per_prompt  # noqa: E402
from style_tailoring.analysis import SCORED_BY, ScoredDifferently, holm, paired_t, two_level_bootstrap  # noqa: E402
from style_tailoring.collect import collect  # noqa: E402
from style_tailoring.io import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.05
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


@dataclass(frozen=True)
class Claim:
    name: str
    text: str
    sign: int  # the predicted sign of the difference
    kind: str  # "matched" (front A minus front B at matched style), "paired" (arm A minus arm B), "relative" (%)
    metric: str
    a: str  # an arm, or a front's name
    b: str


@dataclass(frozen=True)
class Design:
    name: str  # file names: <name>.{csv,md}, <name>_runs.csv, scores/<name>.jsonl.gz, records/<name>
    title: str
    seeds: list[int]
    fronts: dict[str, list[str]]
    configs: list[str]  # prompt_engineering first (one run), then every trained configuration
    claims: list[Claim]
    made_by: str  # the markdown's first sentence: the commands
    budget: str  # its second: the budget and evaluation
    claims_note: str  # what the intervals are, under the claims heading
    levels_of: tuple[str, ...] = field(default=())  # matched claims whose per-seed levels are reported

    @property
    def expected_runs(self) -> list[str]:
        return ["prompt_engineering", *(f"{c}/seed{s}" for c in self.configs[1:] for s in self.seeds)]


# ------------------------------------------------------------------------------------------------ the data
def label_runs(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    paths = table["run"].astype(str)
    table["seed"] = paths.map(lambda p: int(m.group(1)) if (m := re.search(r"/seed(\d+)$", p)) else None)
    table["label"] = paths.str.replace(r"/seed\d+$", "", regex=True)
    return table


def gather(design: Design, runs: Path, out: Path, partial: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs table, per-sample scores), from the run directories when they are here, else the committed files;
    refused before anything is written while a pre-registered run is missing, unless `partial` (a dry run)."""
    table_path, scores_path = out / f"{design.name}_runs.csv", out / "scores" / f"{design.name}.jsonl.gz"
    if runs.is_dir():
        table = label_runs(collect(runs))
        table["cpu_seconds"] = [run_seconds(runs / r) for r in table["run"]]
        table = table[table["label"].isin(design.configs)].sort_values(["label", "seed"], na_position="first")
        keep = ["run", "label", "seed", "status", "strategy", "t_split", "mixture", "steps", "cpu_seconds",
                *(c for c, _, _ in COLUMNS), *sorted(c for c in table if c.startswith(("eval/provenance/",
                                                                                     "provenance/")))]
        table = table[[c for c in keep if c in table]]
        check_complete(design, table, partial)
        table.to_csv(table_path, index=False)
        done = table[table["status"] == "completed"]
        export_scores([(r.label, r.seed, runs / r.run) for r in done.itertuples()], scores_path)
    return pd.read_csv(table_path), load_scores(scores_path)


def missing_runs(design: Design, table: pd.DataFrame) -> list[str]:
    return sorted(set(design.expected_runs) - set(table.loc[table["status"] == "completed", "run"].astype(str)))


def check_complete(design: Design, table: pd.DataFrame, partial: bool) -> None:
    """The claims are judged only on every pre-registered run: a missing one stops the analysis, naming what is
    missing, unless this is a dry run of the analysis (--partial), whose verdicts are 'pending'."""
    missing, expected = missing_runs(design, table), design.expected_runs
    if missing and not partial:
        raise SystemExit(f"error: {len(expected) - len(missing)} of {len(expected)} pre-registered runs "
                         f"are complete (missing: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}); "
                         "the claims are judged only when every run is in (the protocol). --partial "
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
    """The protocols' matching rule for one seed. front_*: {config: {metric: value}}. Returns (A − B at the matched
    style level, the level, the style gap of an unmatched seed or 0). Where the style ranges overlap, the level is
    the midpoint of the overlap (a one-point front: its own style); otherwise the two nearest points are compared."""
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


def per_seed_matched(design: Design, means: dict[str, np.ndarray], claim: Claim, i: int):
    return matched(front_values(means, design.fronts[claim.a], i, [STYLE, claim.metric]),
                   front_values(means, design.fronts[claim.b], i, [STYLE, claim.metric]), claim.metric)


def statistic_of(design: Design, claim: Claim):
    """The claim's statistic on {config|metric: per-seed means}: one number (the mean over seeds of per-seed
    differences, or a relative change of means)."""
    def stat(means: dict[str, np.ndarray]) -> float:
        if claim.kind == "matched":
            n = len(value(means, design.configs[1], STYLE))
            return float(np.mean([per_seed_matched(design, means, claim, i)[0] for i in range(n)]))
        if claim.kind == "paired":
            return float(np.mean(value(means, claim.a, claim.metric) - value(means, claim.b, claim.metric)))
        base = float(np.mean(value(means, claim.b, claim.metric)))
        return float((np.mean(value(means, claim.a, claim.metric)) - base) / abs(base) * 100)

    return stat


# ------------------------------------------------------------------------------------------------- the claims
def per_seed_arrays(design: Design, scores: pd.DataFrame) -> dict[str, np.ndarray]:
    """{config|array: (seeds, prompts)} from the per-sample scores: what the two-level bootstrap resamples."""
    prompts = sorted(scores["prompt"].unique())
    arms = {}
    for name in (n for names in ARRAYS.values() for n in names):
        arms[f"prompt_engineering|{name}"] = per_prompt(scores, "prompt_engineering", name, None, prompts)
        for config in design.configs[1:]:
            arms[f"{config}|{name}"] = per_prompt(scores, config, name, design.seeds, prompts)
    return arms


def analyse(design: Design, table: pd.DataFrame, scores: pd.DataFrame,
            bootstrap: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    arms = per_seed_arrays(design, scores)
    full = {name: np.nanmean(a, axis=1) for name, a in arms.items()}  # per-seed means on every prompt
    check_recomputed(design, table, full)
    family, rows, levels = len(design.claims), [], []
    for claim in design.claims:
        check_scored_alike(table, [*design.fronts.get(claim.a, [claim.a]), *design.fronts.get(claim.b, [claim.b])],
                           claim.name)
        boot = two_level_bootstrap(arms, statistic_of(design, claim), n=bootstrap, seed=0)
        if claim.kind == "relative":
            test = {**boot, "t_low": np.nan, "t_high": np.nan, "s_low": np.nan, "s_high": np.nan}
        else:
            if claim.kind == "matched":
                per_seed = [per_seed_matched(design, full, claim, i) for i in range(len(design.seeds))]
                differences = [d for d, _, _ in per_seed]
                if claim.name in design.levels_of:
                    levels += [{"comparison": f"{claim.a} vs {claim.b}", "seed": s, "level": level, "gap": gap}
                               for s, (_, level, gap) in zip(design.seeds, per_seed)]
            else:
                differences = value(full, claim.a, claim.metric) - value(full, claim.b, claim.metric)
            differences = np.asarray(differences, dtype=float)
            seeds_used = int(np.isfinite(differences).sum())
            t95, simultaneous = paired_t(differences), paired_t(differences, 1 - ALPHA / family)
            test = {"estimate": t95["estimate"], "p": t95["p"], "t_low": t95["low"], "t_high": t95["high"],
                    "s_low": simultaneous["low"], "s_high": simultaneous["high"]}
        rows.append({"claim": claim.name, "difference": claim.text, "predicted": ">" if claim.sign > 0 else "<",
                     "estimate": test["estimate"], "ci95_low": test["t_low"], "ci95_high": test["t_high"],
                     "simultaneous_low": test["s_low"], "simultaneous_high": test["s_high"],
                     "bootstrap_low": boot["low"], "bootstrap_high": boot["high"], "p": test["p"],
                     "test": "bootstrap" if claim.kind == "relative" else "paired t",
                     "n": len(design.seeds) if claim.kind == "relative" else seeds_used})
    claims = pd.DataFrame(rows)
    adjusted = holm(dict(zip(claims["claim"], claims["p"])))
    claims["p_holm"] = claims["claim"].map(adjusted)
    claims["verdict"] = [verdict(r.p_holm, r.estimate, 1 if r.predicted == ">" else -1) for r in claims.itertuples()]
    if missing_runs(design, table):  # a dry run on incomplete data judges nothing
        claims["verdict"] = "pending"
    return claims, pd.DataFrame(levels)


def check_recomputed(design: Design, table: pd.DataFrame, full: dict[str, np.ndarray]) -> None:
    """The per-sample scores give back every run's metrics.json numbers: the committed scores are the ones that made
    the table."""
    done = table[table["status"] == "completed"]
    for row in done.itertuples():
        i = 0 if pd.isna(row.seed) else design.seeds.index(int(row.seed))
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


def mean_interval(values: pd.Series, decimals: int) -> str:
    """`mean ± half-width of the 95% t interval` (the mean alone for one value)."""
    values = values.dropna()
    t = paired_t(values) if len(values) > 1 else {"estimate": values.mean(), "low": np.nan}
    half = t["estimate"] - t["low"]
    return fmt(t["estimate"], decimals) + (f" ± {half:.{decimals}f}" if pd.notna(half) else "")


def summary_table(design: Design, table: pd.DataFrame) -> str:
    heads = ["configuration", *(name for _, name, _ in COLUMNS), "n"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    done = table[table["status"] == "completed"]
    for config in design.configs:
        group = done[done["label"] == config]
        if group.empty:
            continue
        cells = [config, *(mean_interval(group[column], decimals) for column, _, decimals in COLUMNS)]
        lines.append("| " + " | ".join([*cells, str(len(group))]) + " |")
    return "\n".join(lines)


def claims_lines(design: Design, claims: pd.DataFrame, levels: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """The markdown down to the per-configuration table: the claims and the matched style levels."""
    cpu_hours = table["cpu_seconds"].sum() / 3600
    missing, expected = missing_runs(design, table), design.expected_runs
    lines = [f"# {design.title}", "",
             f"{design.made_by} Training seeds {', '.join(map(str, design.seeds))}; {design.budget} "
             f"{len(table)} runs, {cpu_hours:.1f} CPU-hours (as each run's metrics.json records its "
             "process's CPU time, training and evaluation).", "",
             *([f"**Dry run on incomplete data: {len(expected) - len(missing)} of "
                f"{len(expected)} pre-registered runs. No claim is judged (every verdict: pending).**", ""]
               if missing else []),
             "## The pre-registered claims", "", design.claims_note, "",
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
    return lines


def command_line(design: Design, doc: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The committed records of the runs (experiments/records.py: one per completed run); the run directories
    # themselves (experiments/runs/<study>) hold the same metrics.json and scores.
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "results" / "records" / design.name)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--partial", action="store_true",
                        help="a dry run of the analysis on incomplete runs (into another --out): verdicts 'pending'")
    args = parser.parse_args(argv)
    if args.partial and args.out.resolve() == (ROOT / "experiments" / "results").resolve():
        raise SystemExit("error: --partial: write the dry run elsewhere (--out DIR), never over the committed results")
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def summarise(design: Design, args: argparse.Namespace, extra=None) -> None:
    """Gather, judge, write `<name>.csv` (the claims) and `<name>.md` (claims, matched levels, every configuration,
    then what `extra(table, claims)` adds: lines of markdown), and print the markdown."""
    table, scores = gather(design, args.runs, args.out, args.partial)
    claims, levels = analyse(design, table, scores, args.bootstrap)
    claims.round(6).to_csv(args.out / f"{design.name}.csv", index=False)
    lines = [*claims_lines(design, claims, levels, table), "",
             "## Every configuration (mean ± 95% t interval over training seeds)", "", summary_table(design, table), ""]
    if extra is not None:
        lines += extra(table, claims)
    atomic_write_text(args.out / f"{design.name}.md", "\n".join(lines))
    print((args.out / f"{design.name}.md").read_text())
