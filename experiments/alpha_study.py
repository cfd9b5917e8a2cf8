"""The alpha decoder on transparency of many kinds: a recipe chosen on validation data, then three training seeds
measured on kinds of transparency it never trained on.

    python experiments/alpha_study.py select               # 1. candidate recipes at seed 0, chosen on validation
    python experiments/alpha_study.py final [--seeds 0,1,2]  # 2. the chosen recipe and its control, every test set
    python experiments/alpha_study.py grid                 # the before/after figures with the shipped decoder

Training data (every recipe, every seed): the world's transparent renders `alpha` (2,000: white die-cut border,
drop shadow) and the procedural mixture `alpha_varied` (3,000: world/transparency.py), 1,500 decoder-only steps of
batch 32 behind the base VAE's encoder, on the world's background.

1. select. Each candidate recipe (RECIPES: which layers train, the composite term's weight) is trained at seed 0,
   with the 3-channel control finetuned the same way (same data, steps and trainable layers, no alpha channel),
   and measured on `alpha_varied_val` (256 images of the training mixture drawn with another seed: validation, not
   a test set). The rule, fixed before any candidate ran: among the recipes whose composite PSNR is within 1 dB of
   their control's, the one with the highest alpha IoU + boundary F; if none is within 1 dB, the one with the
   smallest drop. Written to experiments/results/alpha_select.{csv,md} and experiments/runs/alpha/chosen.json.
2. final. The chosen recipe and its control at each seed (seed 0 reused from step 1), each measured on the
   world's held-out renders (`alpha_eval`, 192) and on the three held-out kinds committed in
   assets/sticker_world/alpha_test_sets (96 each: shape families, borders and shadows the training mixture never
   draws). The threshold baseline's threshold is tuned on the training mixture. Written to
   experiments/results/alpha.{csv,md}: per test set and measure, the mean over seeds ± 95% t interval (seed as
   the unit) and the image bootstrap of seed 0. The shipped decoder (assets/sticker_world/alpha_decoder) is the
   chosen recipe at seed 0, rebuilt by `python -m style_tailoring.world only=alpha force=true`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from style_tailoring.alpha.decoder import decoder_grid, train_decoder
from style_tailoring.alpha.measure import measure_decoder
from style_tailoring.analysis import t95
from style_tailoring.data.images import parse_background
from style_tailoring.io import atomic_write_text, write_json
from style_tailoring.world.build import ALPHA_BACKGROUND, ALPHA_RECIPE, ALPHA_STEPS, alpha_train_command

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "assets" / "sticker_world" / "base"
DATA = ROOT / "data" / "sticker_world"
TRAIN_SETS = [DATA / "alpha", DATA / "alpha_varied"]
TUNE = DATA / "alpha_varied"  # the baseline's threshold is tuned on the training mixture
VALIDATION = DATA / "alpha_varied_val"
TEST_SETS = {"world renders": DATA / "alpha_eval",
             **{kind: ROOT / "assets" / "sticker_world" / "alpha_test_sets" / kind
                for kind in ("no_shadow_die_cut", "borderless", "translucent_rings")}}
SHIPPED = ROOT / "assets" / "sticker_world" / "alpha_decoder"
RUNS = ROOT / "experiments" / "runs" / "alpha"
OUT = ROOT / "experiments" / "results"
# Candidate recipes: (trainable layers, composite weight). `decoder`: the whole decoder; `last_blocks`: its last up
# block and output layers. A composite weight above 1 favours the colours over the alpha term.
RECIPES = {"decoder_cw1": ("decoder", 1.0), "decoder_cw4": ("decoder", 4.0), "decoder_cw16": ("decoder", 16.0),
           "last_blocks_cw4": ("last_blocks", 4.0)}
# Added after the four above were measured (a deviation from the rule's candidate set, reported as such in
# alpha_select.md): none was within 1 dB, and the drop fell with the weight (3.49, 2.14, 1.04 dB at 1, 4, 16) while
# alpha IoU and boundary F held. The test sets were not looked at: the choice is still made on validation alone.
ADDED_AFTER = {"decoder_cw64": ("decoder", 64.0)}
MAX_DROP_DB = 1.0
ROWS = {  # metric: (method, measure, decimals)
    "alpha_decoder/alpha_iou": ("alpha decoder", "alpha IoU ↑", 3),
    "threshold_baseline/alpha_iou": ("threshold baseline", "alpha IoU ↑", 3),
    "alpha_decoder/boundary_f": ("alpha decoder", "boundary F (1 px) ↑", 3),
    "threshold_baseline/boundary_f": ("threshold baseline", "boundary F (1 px) ↑", 3),
    "alpha_decoder/alpha_mae": ("alpha decoder", "alpha MAE ↓", 4),
    "threshold_baseline/alpha_mae": ("threshold baseline", "alpha MAE ↓", 4),
    "alpha_decoder/psnr_composite": ("alpha decoder", "composite PSNR (dB) ↑", 2),
    "rgb_finetuned/psnr_composite": ("3-channel decoder finetuned alike (control)", "composite PSNR (dB) ↑", 2),
    "rgb_decoder/psnr_composite": ("3-channel decoder (the base's)", "composite PSNR (dB) ↑", 2),
    "psnr_drop_vs_finetuned_db": ("alpha decoder", "PSNR drop vs its control (dB) ↓", 2),
}


def relative(path: Path) -> str:
    path = Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def trained(folder: Path, seed: int, trainable: str, composite_weight: float, with_alpha: bool = True) -> Path:
    """A decoder (or, with_alpha=False, its 3-channel control) of the recipe at `seed`, trained unless present."""
    if (folder / ("alpha.json" if with_alpha else "config.json")).is_file():
        return folder
    command = alpha_train_command(BASE, TRAIN_SETS, folder, seed, trainable=trainable,
                                  composite_weight=composite_weight if with_alpha else None, no_alpha=not with_alpha)
    print(f"training: {command}", flush=True)
    return train_decoder(BASE, TRAIN_SETS, folder, background=parse_background(ALPHA_BACKGROUND), steps=ALPHA_STEPS,
                         seed=seed, with_alpha=with_alpha, trainable=trainable,
                         composite_weight=composite_weight if with_alpha else 1.0, command=command)


def decoder_dir(recipe: str, seed: int) -> Path:
    return RUNS / recipe / f"seed{seed}"


def control_dir(trainable: str, seed: int) -> Path:
    return RUNS / f"rgb_{trainable}" / f"seed{seed}"


def measured(decoder: Path, control: Path, test: Path, name: str) -> dict:
    """measure_decoder's result (cached beside the decoder as measure_<name>.json)."""
    out = decoder / f"measure_{name.replace(' ', '_')}.json"
    if not out.is_file():
        measure_decoder(decoder, BASE, test, TUNE, control=control, out=out)
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------------ select
def pre_registered_choice(table: pd.DataFrame) -> str:
    """The rule: among the recipes within MAX_DROP_DB of their control, the highest alpha IoU + boundary F; if
    none is, the smallest drop."""
    within = table[table["psnr_drop_vs_finetuned_db"] <= MAX_DROP_DB]
    return (within.sort_values("score", ascending=False) if len(within)
            else table.sort_values("psnr_drop_vs_finetuned_db")).iloc[0]["recipe"]


def select() -> str:
    rows = []
    for recipe, (trainable, weight) in {**RECIPES, **ADDED_AFTER}.items():
        decoder = trained(decoder_dir(recipe, 0), 0, trainable, weight)
        control = trained(control_dir(trainable, 0), 0, trainable, weight, with_alpha=False)
        m = measured(decoder, control, VALIDATION, "validation")
        rows.append({"recipe": recipe, "added_after": recipe in ADDED_AFTER, "trainable": trainable,
                     "composite_weight": weight,
                     **{k: m[k] for k in ROWS if k in m}, "threshold_baseline/tau": m["threshold_baseline/tau"]})
    table = pd.DataFrame(rows)
    table["score"] = table["alpha_decoder/alpha_iou"] + table["alpha_decoder/boundary_f"]
    within = table[table["psnr_drop_vs_finetuned_db"] <= MAX_DROP_DB]
    chosen = pre_registered_choice(table)
    table["chosen"] = table["recipe"] == chosen
    OUT.mkdir(parents=True, exist_ok=True)
    table.round(5).to_csv(OUT / "alpha_select.csv", index=False)
    candidates = {**RECIPES, **ADDED_AFTER}
    write_json(RUNS / "chosen.json", {"recipe": chosen, "trainable": candidates[chosen][0],
                                      "composite_weight": candidates[chosen][1], "within_1db": bool(len(within))})
    lines = [f"Candidate recipes at training seed 0, measured on validation ({relative(VALIDATION)}, 256 images "
             "of the training mixture drawn with another seed). Rule fixed before the runs: among the recipes "
             f"within {MAX_DROP_DB:g} dB of their control's composite PSNR, the highest alpha IoU + boundary F; if "
             "none is, the smallest drop. Made by `python experiments/alpha_study.py select`.", "",
             *([f"Deviation: {', '.join(ADDED_AFTER)} (marked †) was added after the first {len(RECIPES)} were "
                "measured, as none of them was within the bound and the drop fell with the composite weight; the "
                f"rule alone, on the first {len(RECIPES)}, chose "
                f"{pre_registered_choice(table[~table['added_after']])}. The held-out test sets were not looked at "
                "before the choice.", ""] if ADDED_AFTER else []),
             "| recipe | trains | composite weight | alpha IoU ↑ | boundary F ↑ | alpha MAE ↓ | composite PSNR ↑ | "
             "control PSNR ↑ | drop vs control (dB) ↓ | baseline IoU | baseline F | chosen |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        mark = " †" if r["added_after"] else ""
        lines.append(f"| {r['recipe']}{mark} | {r['trainable']} | {r['composite_weight']:g} | "
                     f"{r['alpha_decoder/alpha_iou']:.3f} | {r['alpha_decoder/boundary_f']:.3f} | "
                     f"{r['alpha_decoder/alpha_mae']:.4f} | {r['alpha_decoder/psnr_composite']:.2f} | "
                     f"{r['rgb_finetuned/psnr_composite']:.2f} | {r['psnr_drop_vs_finetuned_db']:.2f} | "
                     f"{r['threshold_baseline/alpha_iou']:.3f} | {r['threshold_baseline/boundary_f']:.3f} | "
                     f"{'**yes**' if r['chosen'] else ''} |")
    atomic_write_text(OUT / "alpha_select.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return chosen


# ------------------------------------------------------------------------------------------------------- final
def image_bootstrap(values: list[float], n: int = 2000, seed: int = 0) -> float:
    """Half-width of the 95% bootstrap interval of the mean over test images."""
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(1)
    return float((np.quantile(means, 0.975) - np.quantile(means, 0.025)) / 2)


def summarise(measures: dict[str, dict[int, dict]]) -> pd.DataFrame:
    """measures: {test set: {seed: measure result}} → one row per test set and metric."""
    rows = []
    for test, by_seed in measures.items():
        first = by_seed[min(by_seed)]
        for metric, (method, measure, decimals) in ROWS.items():
            values = np.array([m[metric] for m in by_seed.values()])
            n = len(values)
            ci = float(values.std(ddof=1) / np.sqrt(n) * t95(n)) if n > 1 else float("nan")
            per_image = first["per_image"].get(metric)
            rows.append({"test_set": test, "n_images": first["n_test"], "metric": metric, "method": method,
                         "measure": measure, "mean": values.mean(), "ci95_seeds": ci,
                         "ci95_images_seed0": image_bootstrap(per_image) if per_image else float("nan"),
                         "n_seeds": n, "tau": first["threshold_baseline/tau"], "decimals": decimals})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, chosen: dict, seeds: list[int]) -> str:
    trainable, weight = chosen["trainable"], chosen["composite_weight"]
    lines = [f"The alpha decoder, recipe `{chosen['recipe']}` (trainable={trainable}, composite_weight={weight:g}; "
             "chosen on validation: [alpha_select.md](alpha_select.md)), trained on the world's transparent renders "
             "and the procedural mixture. VAE round trips (posterior mode) of each test set; the threshold baseline's "
             f"threshold tuned on the training mixture. Mean over training seeds {seeds} ± 95% t interval (seed as "
             "the unit); [± image bootstrap, seed 0]. The control is the 3-channel decoder finetuned the same way "
             "(same data, steps, seed and trainable layers), the fair reference for the colours.", ""]
    for test, group in table.groupby("test_set", sort=False):
        lines += [f"### {test} ({int(group['n_images'].iloc[0])} images; baseline τ = "
                  f"{group['tau'].iloc[0]:.0f})", "", "| method | measure | value |", "|---|---|---|"]
        for row in group.itertuples():
            d = row.decimals
            seeds_ci = "" if np.isnan(row.ci95_seeds) else f" ± {row.ci95_seeds:.{d}f}"
            images = "" if np.isnan(row.ci95_images_seed0) else f" [± {row.ci95_images_seed0:.{d}f}]"
            lines.append(f"| {row.method} | {row.measure} | {row.mean:.{d}f}{seeds_ci}{images} |")
        lines.append("")
    lines += ["Commands:", "", "```", "python -m style_tailoring.world only=[alpha_sets,alpha]   # seed 0, shipped",
              "python experiments/alpha_study.py select   # the recipe (experiments/results/alpha_select.md)",
              f"python experiments/alpha_study.py final --seeds {','.join(map(str, seeds))}", "```", ""]
    return "\n".join(lines)


def final(seeds: list[int]) -> None:
    chosen_file = RUNS / "chosen.json"
    if not chosen_file.is_file():
        raise SystemExit(f"no chosen recipe yet ({relative(chosen_file)}): run `select` first")
    chosen = json.loads(chosen_file.read_text())
    if (chosen["trainable"], chosen["composite_weight"]) != (ALPHA_RECIPE["trainable"],
                                                             ALPHA_RECIPE["composite_weight"]):
        raise SystemExit(f"the chosen recipe {chosen} is not the world build's ALPHA_RECIPE {ALPHA_RECIPE}: set it "
                         "there and rebuild the shipped decoder (world only=alpha force=true) first")
    measures: dict[str, dict[int, dict]] = {name: {} for name in TEST_SETS}
    for seed in seeds:
        decoder = trained(decoder_dir(chosen["recipe"], seed), seed, chosen["trainable"], chosen["composite_weight"])
        control = trained(control_dir(chosen["trainable"], seed), seed, chosen["trainable"],
                          chosen["composite_weight"], with_alpha=False)
        for name, test in TEST_SETS.items():
            measures[name][seed] = measured(decoder, control, test, name)
    table = summarise(measures)
    table.drop(columns="decimals").round(6).to_csv(OUT / "alpha.csv", index=False)
    atomic_write_text(OUT / "alpha.md", markdown(table, chosen, seeds))
    print((OUT / "alpha.md").read_text())


def grid(pipelines: dict[str, Path]) -> None:
    """The before/after figure of the shipped decoder on each pipeline's samples: figures_alpha/<name>.png."""
    for name, pipeline in pipelines.items():
        if not (pipeline / "model_index.json").is_file():
            raise SystemExit(f"no pipeline at {relative(pipeline)} (run experiments/confirmatory.py, or --pipeline)")
        out = OUT / "figures_alpha" / f"{name}.png"
        decoder_grid(pipeline, SHIPPED, DATA / "eval_prompts.jsonl", out, n=8)
        print(f"python -m style_tailoring.alpha action=grid pipeline={relative(pipeline)} decoder={relative(SHIPPED)} "
              f"prompts={relative(DATA / 'eval_prompts.jsonl')} out={relative(out)} n=8")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["select", "final", "grid"])
    parser.add_argument("--seeds", default="0,1,2")
    # The figures: a Style Tailoring model (stickers on the world's grey, the decoder's intended input) and the
    # domain model it started from (tinted backgrounds from the weakly labelled set), confirmatory seed 1001.
    confirmatory = ROOT / "experiments" / "runs" / "confirmatory"
    parser.add_argument("--pipeline", type=Path, default=confirmatory / "st750" / "seed1001" / "pipeline",
                        help="grid: the model whose samples grid.png decodes")
    parser.add_argument("--domain-pipeline", type=Path, default=confirmatory / "domain" / "seed1001" / "pipeline",
                        help="grid: the model whose samples grid_domain.png decodes")
    args = parser.parse_args(argv)
    missing = [relative(d) for d in [*TRAIN_SETS, VALIDATION, *TEST_SETS.values()] if not d.is_dir()]
    if args.step != "grid" and missing:
        sys.exit(f"missing data: {', '.join(missing)} (python -m style_tailoring.world only=[datasets,alpha_sets])")
    if args.step == "select":
        select()
    elif args.step == "final":
        final([int(s) for s in args.seeds.split(",")])
    else:
        grid({"grid": args.pipeline, "grid_domain": args.domain_pipeline})


if __name__ == "__main__":
    main()
