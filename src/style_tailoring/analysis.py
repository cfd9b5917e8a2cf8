"""Reading a sweep table (from `style_tailoring.collect`): run labels, the Pareto front, change over a baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# Distances to the style set: smaller is better. Every other eval/* number is better when larger.
LOWER_IS_BETTER = ("eval/fid", "eval/kid", "eval/kid_std")
# What scored a row (digests in metrics.json's eval/provenance): the arms of a paired comparison must agree on them.
SCORED_BY = ("eval/provenance/judges", "eval/provenance/eval_prompts")


class ScoredDifferently(ValueError):
    """The arms of a comparison were scored by different judges or on different eval prompts."""


def check_scored_alike(a: pd.DataFrame, b: pd.DataFrame, what: str = "") -> None:
    """Raise ScoredDifferently when a row of `a` and its paired row of `b` (same index) differ in the judges' or
    the eval prompts' digest. Rows without provenance (older runs) are not checked."""
    for column in SCORED_BY:
        if column not in a or column not in b:
            continue
        left, right = a[column], b[column]
        differ = left.notna() & right.notna() & (left != right)
        if differ.any():
            raise ScoredDifferently(f"{what or 'paired arms'}: {int(differ.sum())} pair(s) differ in {column} "
                                    f"({left[differ].iloc[0]} vs {right[differ].iloc[0]}): not comparable")


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated in (x, y), both maximised, sorted by x. Rows missing x or y are left out."""
    points = table.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, False])
    # Walking from the largest x down, a point is on the front iff it beats every y seen so far.
    on_front = points[y] > points[y].cummax().shift(fill_value=float("-inf"))
    return points[on_front].sort_values(x)


def run_label(row: pd.Series) -> str:
    """`style_tailoring t_split=500`, `mixture share=0.3`: the strategy plus the knobs that tell its runs apart."""
    label = str(row.get("strategy"))
    if pd.notna(row.get("t_split")):
        label += f" t_split={int(row['t_split'])}"
    if pd.notna(row.get("mixture_config")):  # set explicitly, not the strategy's default share
        label += f" share={row['mixture_config']:g}"
    return label


def improvement_over(summary: pd.DataFrame, baseline: str, tiny: float = 1e-3) -> pd.DataFrame:
    """Percent change of each row of `summary` (metrics as columns) over its `baseline` row, signed so that
    positive is better. NaN where the baseline is ~0 against the column's scale: a ratio to ~0 says nothing."""
    base = summary.loc[baseline]
    change = (summary - base) / base.abs() * 100
    for column in summary.columns.intersection(LOWER_IS_BETTER):
        change[column] = -change[column]
    degenerate = base.abs() <= tiny * summary.abs().max()
    change.loc[:, degenerate] = float("nan")
    return change


# Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the normal's 1.96).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
       29: 2.045, 30: 2.042}


def t95(n: int) -> float:
    """The 95% t quantile for a mean over n independent values (n - 1 degrees of freedom)."""
    return T95.get(n - 1, 1.96) if n > 1 else float("nan")


def seed_summary(table: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Per group of `by`: for each metric the mean over its rows (one row per training seed), the half-width of the
    95% t interval whose unit is the training seed, and n. Columns `<metric>`, `<metric>/ci95`, `n`."""
    groups = table.groupby(by, dropna=False)
    out = groups[metrics].mean()
    for metric in metrics:
        n = groups[metric].count()
        out[f"{metric}/ci95"] = groups[metric].std(ddof=1) / n.pow(0.5) * n.map(t95)
    out["n"] = groups.size()
    return out


def paired_differences(table: pd.DataFrame, by: list[str], baseline: dict, metrics: list[str],
                       pair: str = "seed") -> pd.DataFrame:
    """Each group of `by` minus the baseline rows (`baseline`: {column: value}, e.g. {"label": "sequential"}),
    paired on `pair` (the training seed): the mean difference, its 95% t interval (unit: the pair) and n, per
    metric. A baseline with one row and no value in `pair` (prompt engineering trains nothing) is subtracted from
    every row. Columns `<metric>`, `<metric>/ci95`, `n`; the baseline group itself is left out. Pairs scored by
    different judges or on different eval prompts (their provenance digests) raise ScoredDifferently."""
    chosen = pd.Series(True, index=table.index)
    for column, value in baseline.items():
        chosen &= table[column] == value
    base, rest = table[chosen], table[~chosen]
    if base.empty:
        raise ValueError(f"no baseline rows match {baseline}")
    scored = [c for c in SCORED_BY if c in table]
    if len(base) == 1 and (pair not in base or base[pair].isna().all()):
        check_scored_alike(rest, pd.DataFrame([base.iloc[0]] * len(rest), index=rest.index), f"minus {baseline}")
        diffs = rest[by + [pair]].copy()
        for metric in metrics:
            diffs[metric] = rest[metric] - float(base[metric].iloc[0])
    else:
        merged = rest.merge(base[[pair, *metrics, *scored]], on=pair, suffixes=("", "/baseline"))
        check_scored_alike(merged, merged[[f"{c}/baseline" for c in scored]].set_axis(scored, axis=1),
                           f"minus {baseline}")
        diffs = merged[by + [pair]].copy()
        for metric in metrics:
            diffs[metric] = merged[metric] - merged[f"{metric}/baseline"]
    return seed_summary(diffs, by, metrics)


def value_at(points: pd.DataFrame, x: str, y: str, at: float) -> float:
    """`y` at `x = at` on the piecewise-linear curve through `points` (sorted by x; e.g. one model's guidance
    sweep); NaN outside the range the points cover."""
    curve = points.dropna(subset=[x, y]).sort_values(x)
    if curve.empty or not curve[x].min() <= at <= curve[x].max():
        return float("nan")
    return float(np.interp(at, curve[x].to_numpy(), curve[y].to_numpy()))


def matched(table: pd.DataFrame, by: list[str], x: str, y: str, at: float, pair: str = "seed") -> pd.DataFrame:
    """Per group of `by` and per `pair` value: `y` read off that run's curve (rows differing in anything else, e.g.
    guidance) at `x = at`, e.g. alignment at matched style. Rows: one per (group, pair); column `y`."""
    rows = []
    for key, points in table.groupby(by + [pair], dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by + [pair], key)), y: value_at(points, x, y, at), f"{x}/matched": at})
    return pd.DataFrame(rows)


def sample_bootstrap(scores: list[pd.DataFrame], metric: str, n: int = 1000, seed: int = 0) -> float:
    """Half-width of the 95% percentile interval of a group's mean `metric` (the mean over runs of each run's
    mean) when the eval prompts and each prompt's samples are resampled — the evaluation's own sampling error,
    the second term beside the training-seed interval. `scores`: one table per run (columns `prompt`, `metric`,
    e.g. its samples/final/judge_scores.jsonl); prompts are resampled jointly across runs (same prompt set)."""
    rng = np.random.default_rng(seed)
    per_run = []
    for table in scores:
        groups = [g[metric].dropna().to_numpy() for _, g in table.groupby("prompt", sort=True)]
        per_run.append([g for g in groups if len(g)])
    n_prompts = min(len(groups) for groups in per_run)
    if n_prompts == 0:
        return float("nan")
    means = np.empty(n)
    for b in range(n):
        prompts = rng.integers(n_prompts, size=n_prompts)
        run_means = []
        for groups in per_run:
            run_means.append(np.mean([groups[p][rng.integers(len(groups[p]), size=len(groups[p]))].mean()
                                      for p in prompts]))
        means[b] = np.mean(run_means)
    low, high = np.percentile(means, [2.5, 97.5])
    return float((high - low) / 2)


def read_sample_scores(run_dir) -> pd.DataFrame:
    """A run's per-sample judge scores (samples/final/judge_scores.jsonl) as a table."""
    from style_tailoring.io import read_jsonl

    return pd.DataFrame(read_jsonl(Path(run_dir) / "samples" / "final" / "judge_scores.jsonl"))


def per_prompt_values(scores: pd.DataFrame, metric: str, prompts: list[str]) -> np.ndarray:
    """One run's per-prompt mean of `metric` (NaN entries left out), in the order of `prompts` (NaN for a prompt
    with no value)."""
    means = scores.groupby("prompt")[metric].mean()
    return means.reindex(prompts).to_numpy(dtype=float)


def two_level_bootstrap(arms: dict[str, np.ndarray], statistic, n: int = 2000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Bootstrap over training seeds and eval prompts at once, the two sources of error of a study's number.

    `arms`: {name: array (seeds, prompts)} of per-prompt values (e.g. `per_prompt_values` of each training seed's
    run; one row for an arm that trains nothing, such as prompt engineering, whose error is then its prompts'
    alone). Arms with several rows are paired: row i of each is training seed i. Each replicate draws the prompts
    (shared by every arm: one eval set) and the seeds (shared by the paired arms) with replacement, and applies
    `statistic({name: per-seed means over the drawn prompts, in the drawn seed order}) -> float` (e.g. a mean
    difference, or a difference read off matched fronts per seed). Returns the estimate on the data, the percentile
    interval at `level`, and a two-sided bootstrap p-value for statistic = 0."""
    rng = np.random.default_rng(seed)
    shapes = {a.shape[1] for a in arms.values()}
    if len(shapes) != 1:
        raise ValueError(f"every arm needs the same prompts, got {sorted(shapes)} columns")
    n_prompts = shapes.pop()
    rows = {a.shape[0] for a in arms.values() if a.shape[0] > 1}
    if len(rows) > 1:
        raise ValueError(f"paired arms need the same seeds, got {sorted(rows)} rows")
    n_seeds = rows.pop() if rows else 1

    def value(prompts, seeds) -> float:
        with np.errstate(all="ignore"):
            means = {name: np.nanmean(a[np.ix_(seeds if a.shape[0] > 1 else [0], prompts)], axis=1)
                     for name, a in arms.items()}
        return float(statistic(means))

    estimate = value(np.arange(n_prompts), np.arange(n_seeds))
    draws = np.array([value(rng.integers(n_prompts, size=n_prompts), rng.integers(n_seeds, size=n_seeds))
                      for _ in range(n)])
    draws = draws[np.isfinite(draws)]
    if not len(draws):  # the statistic cannot be computed (a seed's runs missing): no interval, no test
        return {"estimate": estimate, "low": float("nan"), "high": float("nan"), "p": float("nan"), "n": 0}
    low, high = np.percentile(draws, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    p = min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean()))
    return {"estimate": estimate, "low": float(low), "high": float(high), "p": float(p), "n": int(len(draws))}


def paired_t(differences, level: float = 0.95) -> dict:
    """Mean of per-pair differences (one per training seed), its two-sided t interval at `level` and the t-test's
    two-sided p-value for mean 0."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    mean, n = float(d.mean()), len(d)
    if n < 2:
        return {"estimate": mean, "low": float("nan"), "high": float("nan"), "p": float("nan"), "n": n}
    sem = float(d.std(ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * sem)
    p = float(stats.ttest_1samp(d, 0.0).pvalue) if sem > 0 else (0.0 if mean != 0 else 1.0)
    return {"estimate": mean, "low": mean - half, "high": mean + half, "p": p, "n": n}


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error), by name."""
    order = sorted(p_values, key=lambda k: p_values[k])
    m, running, adjusted = len(order), 0.0, {}
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        adjusted[name] = running
    return adjusted
