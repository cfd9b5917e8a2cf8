"""Per-sample scores of a study's evaluations, committed beside its tables, and what the tables are computed from.

`export_scores` gathers every evaluation's samples/final/judge_scores.jsonl into one compact, deterministic
`experiments/results/scores/<study>.jsonl.gz` (one row per prompt x noise: the run's label and training seed, the
prompt, the noise seed, each judge score, the judge's predicted classes), so anyone can recompute a mean, a
bootstrap or the layout diversity from the committed file. `per_prompt` turns those rows into the (seeds, prompts)
arrays the two-level bootstrap resamples. `read_run_table` reads a committed per-run table back for the study
summaries' `--from-table`.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from style_tailoring.world.judges import layout_diversity

DECIMALS = 5  # enough for every table; keeps the committed file small


def read_scores(run_dir: Path) -> list[dict]:
    """A run's per-sample scores: its samples/final/judge_scores.jsonl, or the gzipped copy a study's committed
    record of the run keeps (experiments/confirmatory.py)."""
    path = Path(run_dir) / "samples" / "final" / "judge_scores.jsonl"
    text = path.read_text() if path.is_file() else gzip.decompress(path.with_suffix(".jsonl.gz").read_bytes()).decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def export_scores(runs: list[tuple[str, object, Path]], out: Path) -> pd.DataFrame:
    """runs: (label, training seed or None, run directory). Writes `out` (gzip, fixed mtime: the same runs give
    the same bytes) and returns the rows as a table."""
    rows = []
    for label, seed, run_dir in runs:
        for row in read_scores(run_dir):
            rows.append({"label": label, "training_seed": None if pd.isna(seed) else int(seed),
                         "prompt": row["prompt"], "noise": row["seed"],
                         **{k: round(v, DECIMALS) if isinstance(v, float) else v for k, v in row.items()
                            if k not in ("file_name", "prompt", "seed")}})
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as f:
        f.write(text.encode())
    out.write_bytes(buffer.getvalue())
    return pd.DataFrame(rows)


def read_run_table(path: Path) -> pd.DataFrame:
    """A table of raw rows a study's summary committed (the per-run table it writes first), for `--from-table`:
    the tables downstream of it are recomputed from it instead of from the run directories."""
    if not path.is_file():  # refuse before any table is written
        raise SystemExit(f"error: --from-table: no per-run table at {path}")
    # copy(): one block per dtype, as the summary's own table has; on read_csv's column-per-block layout pandas'
    # grouped mean can differ in the last bit, and a 17-digit CSV cell with it
    return pd.read_csv(path).copy()


def not_regenerated(outputs: list[str], why: str) -> None:
    """The one line `--from-table` prints for the outputs it leaves as they are: never a degraded copy over them."""
    print(f"--from-table: not regenerated, left as they are: {', '.join(outputs)} ({why})")


def load_scores(path: Path) -> pd.DataFrame:
    with gzip.open(path, "rt") as f:
        return pd.DataFrame([json.loads(line) for line in f if line.strip()])


def per_prompt(scores: pd.DataFrame, label: str, metric: str, seeds: list | None, prompts: list[str]) -> np.ndarray:
    """(seeds, prompts) array of `metric` for one configuration: a per-sample score's per-prompt mean, or
    `layout_diversity` computed per prompt from the predicted classes. `seeds` None: the configuration's one run."""
    rows = scores[scores["label"] == label]
    out = []
    for seed in seeds if seeds is not None else [None]:
        run = rows if seed is None else rows[rows["training_seed"] == seed]
        if metric.startswith("layout_diversity"):
            values = []
            for prompt in prompts:
                group = run[run["prompt"] == prompt].sort_values("noise")
                labels = {k.removeprefix("labels/"): group[k].tolist() for k in group if k.startswith("labels/")}
                values.append(layout_diversity(labels, [prompt] * len(group), len(group)).get(metric, np.nan)
                              if len(group) else np.nan)
            out.append(values)
        else:
            out.append(run.groupby("prompt")[metric].mean().reindex(prompts).to_numpy(dtype=float))
    return np.asarray(out, dtype=float)
