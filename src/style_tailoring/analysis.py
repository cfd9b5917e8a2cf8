"""Reading a sweep table (from `style_tailoring.collect`): run labels, the Pareto front, change over a baseline."""

from __future__ import annotations

import pandas as pd

# Distances to the style set: smaller is better. Every other eval/* number is better when larger.
LOWER_IS_BETTER = ("eval/fid", "eval/kid", "eval/kid_std")


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
