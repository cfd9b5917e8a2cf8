"""The alpha decoder on the Sticker World: three training seeds, the 3-channel decoder and the threshold baseline.

    python experiments/alpha_study.py [--seeds 0,1,2] [--grid-pipeline RUN/pipeline]

Seed 0 is the shipped decoder (assets/sticker_world/alpha_decoder, `python -m style_tailoring.world
only=alpha`); the other seeds are trained with the same command into experiments/runs/alpha/seed<k>, and the control —
the 3-channel decoder finetuned the same way, seed 0 — into experiments/runs/alpha/rgb_control_seed0 (each skipped
when done). Each is measured on the held-out transparent renders (data/sticker_world/alpha_eval, 8 per eval
prompt) with the threshold tuned on the training set (data/sticker_world/alpha). Writes
experiments/results/alpha.{csv,md}: per metric the mean over training seeds with its 95% t interval (seed as the
unit) and, for seed 0, the 95% bootstrap interval over test images; and experiments/results/figures_alpha/grid.png,
the before/after grid (when the grid pipeline exists: by default the world study's domain model, seed 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from style_tailoring.alpha.decoder import decoder_grid, train_decoder
from style_tailoring.alpha.measure import measure_decoder
from style_tailoring.analysis import t95
from style_tailoring.data.images import parse_background
from style_tailoring.world.build import ALPHA_BACKGROUND, ALPHA_STEPS, alpha_train_command

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "assets" / "sticker_world" / "base"
DATA = ROOT / "data" / "sticker_world"
SHIPPED = ROOT / "assets" / "sticker_world" / "alpha_decoder"
RUNS = ROOT / "experiments" / "runs" / "alpha"
OUT = ROOT / "experiments" / "results"
ROWS = {  # metric: (method, measure, decimals)
    "alpha_decoder/alpha_iou": ("alpha decoder", "alpha IoU ↑", 3),
    "threshold_baseline/alpha_iou": ("threshold baseline", "alpha IoU ↑", 3),
    "alpha_decoder/boundary_f": ("alpha decoder", "boundary F (1 px) ↑", 3),
    "threshold_baseline/boundary_f": ("threshold baseline", "boundary F (1 px) ↑", 3),
    "alpha_decoder/alpha_mae": ("alpha decoder", "alpha MAE ↓", 4),
    "threshold_baseline/alpha_mae": ("threshold baseline", "alpha MAE ↓", 4),
    "alpha_decoder/psnr_composite": ("alpha decoder", "composite PSNR (dB) ↑", 2),
    "rgb_decoder/psnr_composite": ("3-channel decoder", "composite PSNR (dB) ↑", 2),
    "rgb_finetuned/psnr_composite": ("3-channel decoder finetuned alike (control, seed 0)",
                                     "composite PSNR (dB) ↑", 2),
    "psnr_drop_db": ("alpha decoder", "PSNR drop vs the 3-channel decoder (dB) ↓", 2),
    "psnr_drop_vs_finetuned_db": ("alpha decoder", "PSNR drop vs the finetuned control (dB) ↓", 2),
}


def train(seed: int, out: Path, with_alpha: bool = True) -> Path:
    """The world build's training (python -m style_tailoring.world only=alpha) at `seed`; with_alpha=False: the
    control (action=train no_alpha=true)."""
    return train_decoder(BASE, [DATA / "alpha"], out, background=parse_background(ALPHA_BACKGROUND),
                         steps=ALPHA_STEPS, seed=seed, with_alpha=with_alpha,
                         command=alpha_train_command(BASE, DATA / "alpha", out, seed))


def measured(seed: int, control: Path) -> dict:
    """The decoder of `seed` (seed 0: the shipped one), trained if missing, measured against the control."""
    folder = SHIPPED if seed == 0 else RUNS / f"seed{seed}"
    if not (folder / "alpha.json").is_file():
        train(seed, folder)
    out = RUNS / f"measure_seed{seed}.json"
    if not out.is_file():
        result = measure_decoder(folder, BASE, DATA / "alpha_eval", DATA / "alpha", control=control, out=out)
        print(json.dumps({k: v for k, v in result.items() if k != "per_image"}, indent=2))
    return json.loads(out.read_text())


def image_bootstrap(values: list[float], n: int = 2000, seed: int = 0) -> float:
    """Half-width of the 95% bootstrap interval of the mean over test images."""
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(1)
    return float((np.quantile(means, 0.975) - np.quantile(means, 0.025)) / 2)


def summarise(measures: dict[int, dict]) -> pd.DataFrame:
    rows = []
    for metric, (method, measure, decimals) in ROWS.items():
        values = np.array([m[metric] for m in measures.values()])
        n = len(values)
        ci = float(values.std(ddof=1) / np.sqrt(n) * t95(n)) if n > 1 else float("nan")
        first = measures[min(measures)]
        per_image = first["per_image"].get(metric)
        rows.append({"metric": metric, "method": method, "measure": measure, "mean": values.mean(), "ci95_seeds": ci,
                     "ci95_images_seed0": image_bootstrap(per_image) if per_image else float("nan"), "n_seeds": n,
                     "decimals": decimals})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, measures: dict[int, dict], commands: list[str]) -> str:
    first = measures[min(measures)]
    lines = [f"Test set: {first['n_test']} held-out transparent renders (data/sticker_world/alpha_eval), VAE round "
             f"trip (posterior mode); baseline threshold τ = {first['threshold_baseline/tau']:.0f} (tuned on the "
             "training set). Mean over training seeds ± 95% t interval (seed as the unit); [± image bootstrap, "
             "seed 0].", "", "| method | measure | value |", "|---|---|---|"]
    for row in table.itertuples():
        d = row.decimals
        seeds = "" if np.isnan(row.ci95_seeds) else f" ± {row.ci95_seeds:.{d}f}"
        images = "" if np.isnan(row.ci95_images_seed0) else f" [± {row.ci95_images_seed0:.{d}f}]"
        lines.append(f"| {row.method} | {row.measure} | {row.mean:.{d}f}{seeds}{images} |")
    lines += ["", f"Seeds: {sorted(measures)}. Commands:", "", "```", *commands, "```", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--grid-pipeline", type=Path,
                        default=ROOT / "experiments" / "runs" / "world_study" / "domain" / "seed0" / "pipeline")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    control = RUNS / "rgb_control_seed0"
    if not (control / "config.json").is_file():
        train(0, control, with_alpha=False)
    measures = {seed: measured(seed, control) for seed in seeds}
    table = summarise(measures)
    OUT.mkdir(parents=True, exist_ok=True)
    table.drop(columns="decimals").to_csv(OUT / "alpha.csv", index=False)
    commands = ["python -m style_tailoring.world only=alpha   # seed 0, shipped",
                f"python experiments/alpha_study.py --seeds {args.seeds}   # seeds 1+ and the control "
                "(action=train no_alpha=true, seed 0) into experiments/runs/alpha"]
    if (args.grid_pipeline / "model_index.json").is_file():
        grid = {"pipeline": args.grid_pipeline, "decoder": SHIPPED, "prompts": DATA / "eval_prompts.jsonl",
                "out": OUT / "figures_alpha" / "grid.png"}
        print(f"grid written to {decoder_grid(**grid, n=8)}")
        relative = lambda path: path.relative_to(ROOT) if path.is_relative_to(ROOT) else path  # noqa: E731
        commands.append("python -m style_tailoring.alpha action=grid " + " ".join(
            f"{key}={relative(Path(value))}" for key, value in grid.items()) + " n=8")
    (OUT / "alpha.md").write_text(markdown(table, measures, commands))
    print((OUT / "alpha.md").read_text())


if __name__ == "__main__":
    main()
