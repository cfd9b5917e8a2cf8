"""StyleForge on the Sticker World: the benchmark results of docs/styleforge.md.

    python experiments/styleforge_study.py [--workers 2] [--seeds 0,1,2] [--only dreambooth,sf1,...]

Personalises the photo base into the "hatched" look from 20 StyleRef images (data=styleforge_world, see
style_tailoring.world.styleforge) and evaluates on the world's 24 held-out prompts + ", sks style" × 8 noises:
  dreambooth      StyleRef alone (strategy=styleforge strategy.aux_weight=0)
  sf0.5, sf1      StyleForge's dual binding, λ = 0.5 and 1 (Aux: 150 photos trained with "style", half of each batch)
  multi           Multi-StyleForge (characters "sks style", backgrounds "pxq style", each with its Aux), λ = 1
each plain, with ICO (4 learnable contexts per StyleRef image, `+ico`) and with the text encoder trained (`+te`), for
every seed; the base model itself sampled with the same prompts (`base`, no training); and DreamBooth stopped at 150
and 300 steps (`dreambooth@150`, `@300`: its front, to compare the recipes at equal style). Every other run: 600
optimizer steps of batch 16 (9,600 samples: equal for every condition), lr 3e-4 (at 300 × 8 and 1e-4 DreamBooth
scored P(hatched) 0.09 — the look not yet learned; 600 × 16 at 1e-4: 0.24; at 3e-4: 0.55), the text encoder at 3e-5.
Through the repository's job runner: a run whose metrics.json says completed is skipped and a killed one resumes
from its checkpoint, so the study resumes. Workers run one thread each.
Summarised by experiments/styleforge_study_summary.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from style_tailoring.runtime.jobs import Job, JobRunner, python_module

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "runs" / "styleforge_study"
COMMON = ["data=styleforge_world", "logger=csv", "trainer.enable_progress_bar=false", "trainer.max_steps=600",
          "data.batch_size=16", "optim.lr=3e-4", "checkpoint.every_n_steps=600"]
RECIPES = {
    "dreambooth": ["strategy=styleforge", "strategy.aux_weight=0"],
    "sf0.5": ["strategy=styleforge", "strategy.aux_weight=0.5"],
    "sf1": ["strategy=styleforge", "strategy.aux_weight=1"],
    "multi": ["strategy=multi_styleforge"],
}
VARIANTS = {
    "": [],
    "+ico": ["strategy.ico.enabled=true"],
    "+te": ["model.train_text_encoder=true", "optim.text_encoder_lr=3e-5"],
}


# DreamBooth trained shorter: its style × alignment front, to read the recipes off at equal style (these runs see
# fewer samples; the recipes' own comparison is at 600 steps).
FRONT = {"dreambooth@150": ["trainer.max_steps=150"], "dreambooth@300": ["trainer.max_steps=300"]}


def jobs(seeds: list[int], only: set[str] | None) -> list[tuple[str, list[str]]]:
    """(run name, train arguments); every recipe's plain front first, so a cut-short study has the main table."""
    out = [("base", ["strategy=prompt_engineering", "eval.prompt_suffix=', sks style'"])]
    conditions = [(f"{recipe}{variant}", [*overrides, *extra]) for variant, extra in VARIANTS.items()
                  for recipe, overrides in RECIPES.items()]
    conditions += [(name, [*RECIPES["dreambooth"], *extra]) for name, extra in FRONT.items()]
    for group in (conditions[i:i + len(RECIPES)] for i in range(0, len(conditions), len(RECIPES))):
        for seed in seeds:
            for name, overrides in group:
                if only is None or name in only:
                    out.append((f"{name}/seed{seed}", [*overrides, f"seed={seed}"]))
    return out


ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def as_job(name: str, overrides: list[str]) -> Job:
    return Job(name, python_module("style_tailoring.train", *COMMON, *overrides, f"hydra.run.dir={OUT / name}"),
               OUT / name, resumable=True, env=ENV)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", help="comma-separated conditions, e.g. dreambooth,sf1+ico")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    # The benchmark's data first, once (two runs writing it at the same time would race).
    from style_tailoring.world.styleforge import build_benchmark

    build_benchmark(ROOT / "data" / "sticker_world" / "styleforge")
    todo = [as_job(name, overrides) for name, overrides in jobs([int(s) for s in args.seeds.split(",")], only)]
    JobRunner(todo, args.workers, workers_file=OUT / "workers").run(args.dry_run)


if __name__ == "__main__":
    main()
