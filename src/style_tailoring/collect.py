"""Collect a sweep into one tidy table: `python -m style_tailoring.collect SWEEP_DIR [--out table.csv]`.

One row per run (a directory holding metrics.json or a Hydra `.hydra/`), config columns (strategy, t_split,
mixture, steps, seed, model, data, overrides) and metric columns (train/*, eval/*). Runs that failed or left no
metrics are kept as rows with their status and listed on stderr, so a broken job never hides the others.
`--wandb-project ENTITY/PROJECT` reads the same table from wandb runs instead (needs network and an API key).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

CONFIG_COLUMNS = ["run", "status", "strategy", "t_split", "mixture", "steps", "seed", "model", "data", "overrides"]


def _run_dirs(sweep_dir: Path) -> list[Path]:
    found = {p.parent for p in sweep_dir.rglob("metrics.json")} | {p.parent for p in sweep_dir.rglob(".hydra")}
    return sorted(d for d in found if "wandb" not in d.parts and not d.name.startswith("."))


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        return None


def read_run(run_dir: Path, sweep_dir: Path) -> dict:
    row: dict = {"run": str(run_dir.relative_to(sweep_dir)) or "."}
    config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    strategy, data = config.get("strategy") or {}, config.get("data") or {}
    row.update(strategy=strategy.get("name"), t_split=strategy.get("t_split"), mixture=data.get("mixture"),
               steps=(config.get("trainer") or {}).get("max_steps"), seed=config.get("seed"),
               model=(config.get("model") or {}).get("name"), data=data.get("name"), overrides=" ".join(overrides))
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        return {**row, "status": "missing metrics"}
    except json.JSONDecodeError as err:
        return {**row, "status": f"unreadable metrics.json ({err.msg})"}
    # The strategy config chosen on the command line names the row (alignment_only is a one-stage sequential).
    choice = next((o.split("=", 1)[1] for o in overrides if o.startswith("strategy=")), None)
    for key, value in metrics.items():
        if key == "plan":
            continue
        if key in ("strategy", "t_split", "mixture", "steps", "seed", "model"):
            row[key] = value if value is not None else row.get(key)
        elif isinstance(value, (dict, list)):
            row[key] = json.dumps(value, sort_keys=True)
        else:
            row[key] = value
    row["status"] = metrics.get("status", "completed")
    if choice:
        row["strategy"] = choice
    return row


def collect(sweep_dir) -> pd.DataFrame:
    """The table of every run under `sweep_dir` (any depth), config columns first."""
    sweep_dir = Path(sweep_dir)
    rows = [read_run(d, sweep_dir) for d in _run_dirs(sweep_dir)]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=CONFIG_COLUMNS)
    metric_columns = sorted(c for c in table.columns if c not in CONFIG_COLUMNS)
    return table[[c for c in CONFIG_COLUMNS if c in table.columns] + metric_columns]


def collect_wandb(project: str) -> pd.DataFrame:
    """The same table from a wandb project's runs (summary metrics + config)."""
    import wandb

    rows = []
    for run in wandb.Api().runs(project):
        config = run.config or {}
        strategy, data = config.get("strategy") or {}, config.get("data") or {}
        rows.append({"run": run.id, "status": run.state, "strategy": strategy.get("name"),
                     "t_split": strategy.get("t_split"), "mixture": data.get("mixture"), "seed": config.get("seed"),
                     "group": run.group, **{k: v for k, v in run.summary.items() if k.startswith(("eval/", "train/"))}})
    return pd.DataFrame(rows)


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated in (x, y), both maximised, sorted by x."""
    points = table.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, False])
    front, best_y = [], float("-inf")
    for index, row in points.iterrows():
        if row[y] > best_y:
            front.append(index)
            best_y = row[y]
    return table.loc[front].sort_values(x)


def write_table(table: pd.DataFrame, out: Path) -> list[Path]:
    from style_tailoring.io import atomic_write_text

    written = [out]
    atomic_write_text(out, table.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401

        table.to_parquet(out.with_suffix(".parquet"), index=False)
        written.append(out.with_suffix(".parquet"))
    except ImportError:
        pass
    return written


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", nargs="?")
    parser.add_argument("--out", type=Path, default=None, help="CSV path (default: SWEEP_DIR/table.csv)")
    parser.add_argument("--wandb-project", default=None)
    args = parser.parse_args(argv)
    if args.wandb_project:
        table = collect_wandb(args.wandb_project)
    elif args.sweep_dir:
        table = collect(args.sweep_dir)
    else:
        parser.error("give a SWEEP_DIR or --wandb-project")
    out = args.out or Path(args.sweep_dir or ".") / "table.csv"
    written = write_table(table, out)
    bad = table[table["status"] != "completed"] if "status" in table else table.iloc[0:0]
    for _, row in bad.iterrows():
        print(f"not completed: {row['run']}: {row['status']}", file=sys.stderr)
    print(f"{len(table)} runs ({len(table) - len(bad)} completed) -> {', '.join(map(str, written))}")
    return table


if __name__ == "__main__":
    main()
