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
