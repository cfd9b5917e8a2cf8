"""Collect a sweep into one tidy table: `python -m style_tailoring.collect sweep_dir=SWEEP_DIR [out=table.csv]`
(settings: conf/collect.yaml, `--help` lists them).

One row per run — a directory holding metrics.json or a Hydra `.hydra/config.yaml`, at any depth — with config
columns (kind, experiment, strategy, t_split, mixture, steps, seed, model, data, sampler, guidance, pipeline,
overrides) and metric columns (train/*, eval/*, flattened). Training runs and evaluation runs
(`python -m style_tailoring.evaluate`, kind "evaluation") share the table: an evaluation row carries the strategy,
split and steps of the run that trained its pipeline, and the sampler and guidance it was sampled with, so one
pipeline evaluated several ways gives rows side by side. Runs that failed or left no readable metrics are kept as
rows with their status and listed on stderr, so one broken job never hides the others.
`wandb_project=ENTITY/PROJECT` reads the table from wandb runs instead (network and an API key needed). In a
notebook: `from style_tailoring.collect import collect`.

Columns: `mixture` is the style share the run trained with (the strategy's default when unset);
`mixture_config` is `data.mixture` as configured (empty = the default), which tells a mixture sweep from the
t_split/T default of a t_split sweep. A training run whose evaluation failed has status "trained, evaluation
failed", one killed (or still running) after training and before its evaluation's numbers "trained, evaluating": its
model is there, and it is not counted as a failed run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import pandas as pd
import yaml
from omegaconf import DictConfig

from style_tailoring.config import CollectConfig, ConfigError, config_path, merge_into_schema
from style_tailoring.provenance import checkout_of
from style_tailoring.runtime.jobs import RUN_COMPLETED, RUN_TRAINED

CONFIG_COLUMNS = ["run", "kind", "status", "error", "experiment", "strategy", "t_split", "mixture", "mixture_config",
                  "steps", "seed", "model", "data", "sampler", "guidance", "pipeline", "overrides"]
INTEGER_COLUMNS = {"t_split", "steps", "seed"}


def run_dirs(sweep_dir: Path) -> list[Path]:
    """Every run directory under `sweep_dir`; wandb's and hidden folders (.submitit, temp dirs) are not runs."""
    found = {p.parent for p in sweep_dir.rglob("metrics.json")}
    found |= {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}

    def inside_tool_folder(run: Path) -> bool:
        parts = run.relative_to(sweep_dir).parts
        return any(part == "wandb" or part.startswith(".") for part in parts)

    def orchestrator(run: Path) -> bool:  # a HITL loop or a recipe: its runs are rows, it is not one
        return (run / "hitl.json").is_file() or (run / "recipe.json").is_file()

    return sorted(d for d in found if not inside_tool_folder(d) and not orchestrator(d))


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def config_columns(config: dict) -> dict:
    """The config columns of a composed run config (Hydra's config.yaml, or wandb's run.config)."""
    strategy, data, ev = _dict(config.get("strategy")), _dict(config.get("data")), _dict(config.get("eval"))
    evaluation = "pipeline" in config  # an evaluation run: strategy, steps and seed come from the trained run
    return {
        "kind": "evaluation" if evaluation else "training",
        "experiment": _dict(config.get("logger")).get("group"),
        "strategy": None if evaluation else strategy.get("name"),
        "t_split": None if evaluation else strategy.get("t_split"),
        "mixture": None if evaluation else data.get("mixture"),
        "mixture_config": None if evaluation else data.get("mixture"),
        "steps": None if evaluation else _dict(config.get("trainer")).get("max_steps"),
        "seed": None if evaluation else config.get("seed"),
        "model": None if evaluation else _dict(config.get("model")).get("name"),
        "data": data.get("name"),
        "sampler": _sampler_name(_dict(ev.get("sampler")).get("_target_")),
        "guidance": _dict(ev.get("sample")).get("guidance_scale"),
        "pipeline": config.get("pipeline"),
    }


def _sampler_name(target):
    """`style_tailoring.sampling.samplers.PlainSampler` → plain (metrics.json's eval/sampler/name wins if present)."""
    if not isinstance(target, str):
        return None
    name = target.rpartition(".")[2]
    return name.removesuffix("Sampler").lower() or name


def _flatten(key: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for sub, v in value.items():
            _flatten(f"{key}/{sub}", v, out)
    elif isinstance(value, list):  # e.g. eval/skipped: one cell, still readable in a CSV
        out[key] = json.dumps(value)
    else:
        out[key] = value


def _read_metrics(path: Path) -> tuple[dict, str]:
    """(metrics, "") or ({}, why they cannot be used)."""
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, "missing metrics"
    except (OSError, UnicodeDecodeError) as err:
        return {}, f"unreadable metrics.json ({err})"
    except json.JSONDecodeError as err:
        return {}, f"unreadable metrics.json ({err.msg})"
    if not isinstance(metrics, dict):
        return {}, "unreadable metrics.json (not a JSON object)"
    return metrics, ""


def _hydra_choices(hydra_dir: Path) -> dict:
    """The config group options Hydra picked (command line, experiment or sweep), e.g. strategy: alignment_only."""
    runtime = _dict(_dict(_dict(_read_yaml(hydra_dir / "hydra.yaml")).get("hydra")).get("runtime"))
    return _dict(runtime.get("choices"))


def read_run(run_dir: Path, sweep_dir: Path) -> dict:
    hydra_dir = run_dir / ".hydra"
    overrides = _read_yaml(hydra_dir / "overrides.yaml")
    config = _dict(_read_yaml(hydra_dir / "config.yaml"))
    row = {"run": run_dir.relative_to(sweep_dir).as_posix(), **config_columns(config),
           "overrides": " ".join(map(str, overrides)) if isinstance(overrides, list) else None}
    choices = _hydra_choices(hydra_dir)
    row["experiment"] = choices.get("experiment") or row["experiment"]
    metrics, problem = _read_metrics(run_dir / "metrics.json")
    if problem:
        return {**row, "status": problem}
    for key, value in metrics.items():
        if key == "plan":  # the full schedule; strategy, t_split, mixture and steps summarise it
            continue
        if key in row and value is None:  # keep what the config says
            continue
        _flatten(key, value, row)
    row["status"] = metrics.get("status", RUN_COMPLETED)
    if row.get("kind") == "training":  # the option as picked, e.g. strategy=alignment_only
        row["strategy"] = choices.get("strategy") or row["strategy"]
    sampler = metrics.get("eval/sampler")
    if isinstance(sampler, dict) and sampler.get("name"):
        row["sampler"] = sampler["name"]
    settings = metrics.get("eval/settings")
    if isinstance(settings, dict) and settings.get("guidance_scale") is not None:
        row["guidance"] = settings["guidance_scale"]
    return row


def tidy(rows: list[dict]) -> pd.DataFrame:
    """Config columns first, then the metric columns sorted."""
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=CONFIG_COLUMNS)
    for column in INTEGER_COLUMNS.intersection(table.columns):  # 500, not 500.0, beside runs without a split
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    metric_columns = sorted(c for c in table.columns if c not in CONFIG_COLUMNS)
    return table[[c for c in CONFIG_COLUMNS if c in table.columns] + metric_columns]


def collect(sweep_dir) -> pd.DataFrame:
    """The table of every run under `sweep_dir` (any depth): one row per run, failed and broken runs included.
    Paths inside the checkout that holds the runs are written relative to it (a committed table holds no path of
    the machine that made it)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no sweep directory at {sweep_dir}")
    checkout = checkout_of(sweep_dir)
    rows = [read_run(d, sweep_dir) for d in run_dirs(sweep_dir)]
    if checkout is not None:
        prefix = f"{checkout.as_posix()}/"
        rows = [{k: v.replace(prefix, "") if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    return tidy(rows)


def collect_wandb(project: str) -> pd.DataFrame:
    """The same table from a wandb project's runs: their config (the resolved run config) and summary numbers."""
    try:
        import wandb
    except ImportError as err:
        raise SystemExit(f"wandb_project needs the wandb package ({err})") from None
    states = {"finished": RUN_COMPLETED, "crashed": "failed", "killed": "failed"}  # wandb's words for metrics.json's
    rows = []
    try:
        runs = list(wandb.Api().runs(project))
    except Exception as err:  # noqa: BLE001 - no network, no API key, unknown project: say which
        raise SystemExit(f"could not read wandb project {project!r}: {type(err).__name__}: {err}") from None
    for run in runs:
        row = {"run": f"{run.group or ''}/{run.name}".lstrip("/"), "status": states.get(run.state, run.state),
               **config_columns(_dict(run.config))}
        row["experiment"] = run.group or row["experiment"]
        for key, value in (run.summary_metrics or {}).items():
            if key.startswith(("eval/", "train/")):
                _flatten(key, value, row)
        rows.append(row)
    return tidy(rows)


def write_table(table: pd.DataFrame, out: Path) -> list[Path]:
    """CSV always; parquet beside it when pyarrow is installed."""
    from style_tailoring.io import atomic_write_text

    atomic_write_text(out, table.to_csv(index=False))
    written = [out]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    table.to_parquet(out.with_suffix(".parquet"), index=False)
    return written + [out.with_suffix(".parquet")]


def run_collect(cfg) -> pd.DataFrame:
    """The command on its validated settings (CollectConfig): the table, written to `out`, and what it holds said
    on stdout (the runs) and stderr (the runs not completed)."""
    if cfg.wandb_project:
        table = collect_wandb(cfg.wandb_project)
    elif cfg.sweep_dir:
        if not config_path("sweep_dir", cfg.sweep_dir).is_dir():
            raise ConfigError("sweep_dir", f"no sweep directory at {cfg.sweep_dir}")
        table = collect(cfg.sweep_dir)
    else:
        raise ConfigError("sweep_dir", "is required: a sweep directory (sweep_dir=DIR), or set "
                                       "wandb_project=ENTITY/PROJECT")
    out = Path(cfg.out) if cfg.out else Path(cfg.sweep_dir or ".") / "table.csv"
    written = write_table(table, out)
    if table.empty:
        print(f"no runs (no metrics.json or .hydra/config.yaml) under {cfg.sweep_dir or cfg.wandb_project}",
              file=sys.stderr)
    for column, what in (("eval/provenance/judges", "judges"), ("eval/provenance/eval_prompts", "eval prompts")):
        if column in table and table[column].nunique() > 1:
            print(f"note: runs here were scored by {table[column].nunique()} different {what} ({column}); a "
                  "comparison across them is refused by analysis.paired_differences", file=sys.stderr)
    incomplete = table[~table["status"].isin(RUN_TRAINED)]
    for _, row in table[table["status"] != RUN_COMPLETED].iterrows():
        error = f": {row['error']}" if pd.notna(row.get("error")) else ""
        print(f"not completed: {row['run']}: {row['status']}{error}", file=sys.stderr)
    print(f"{len(table)} runs ({len(table) - len(incomplete)} completed) -> {', '.join(map(str, written))}")
    return table


@hydra.main(version_base="1.3", config_path="../../conf", config_name="collect")
def main(cfg: DictConfig) -> None:
    try:
        run_collect(merge_into_schema(CollectConfig, cfg))
    except ConfigError as err:  # a wrong setting: one line naming it, no traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
