"""Robustness to the world: the headline comparison on two more kinds of style (exploratory, after the
pre-registered study), through the job runner.

    python experiments/robustness.py [--workers 2] [--seeds 1001,1002,1003] [--dry-run]

The Style set is swapped for
  colour    the shipped colour-narrow set (data/sticker_world/style_colour: one red or yellow heart or star, the
            sticker look), judged by the world's judges;
  outline   a style whose only cue is high-frequency: the photo look with a thin ink outline (style_outline),
            judged by the outlined look's judges (assets/sticker_world/judges_outline, world step `outline`);
and from each seed's domain model of the confirmatory study (experiments/runs/confirmatory/domain/seed<k>, the same
models the sticker-style claims were tested on) the fronts are trained again, reduced to two points each: Style
Tailoring at t_split 750 and 800, sequential 300+300 and 500+100, and mixture at style share 0.75. Same budget and
evaluation as the confirmatory study (600 steps of batch 32; 24 held-out prompts x 16 noises, guidance 3).
Summarised by experiments/robustness_summary.py, beside the sticker style's same reduced fronts.
Each completed run leaves a committed record (experiments/records.py). The confirmatory domain models it starts from
are the confirmatory study's own runs; where their weights are gone (a fresh clone keeps only their records) they
are trained again first, and must reproduce their records exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

from style_tailoring.runtime.jobs import Job, python_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from confirmatory import RECORDS as CONFIRMATORY  # noqa: E402
from confirmatory import weights_jobs  # noqa: E402
from records import Records, run_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = ROOT / "experiments" / "runs" / "confirmatory" / "domain"
OUT = ROOT / "experiments" / "runs" / "robustness"
RECORDS = Records("robustness", OUT)  # each completed run's committed record (experiments/records.py)
WORLD = ROOT / "data" / "sticker_world"
COMMON = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.max_steps=600", "data.batch_size=32"]
KINDS = {
    "colour": [f"data.style_dir={WORLD / 'style_colour'}"],
    "outline": [f"data.style_dir={WORLD / 'style_outline'}",
                f"+eval.judges.style={ROOT / 'assets' / 'sticker_world' / 'judges_outline'}"],
}
CONFIGS = {
    "st750": ["strategy=style_tailoring", "strategy.t_split=750"],
    "st800": ["strategy=style_tailoring", "strategy.t_split=800"],
    "seq300+300": ["strategy=sequential", "strategy.stage_steps=[300,300]"],
    "seq500+100": ["strategy=sequential", "strategy.stage_steps=[500,100]"],
    "mix0.75": ["strategy=mixture", "data.mixture=0.75"],
}
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}


def jobs(seeds: list[int]) -> list[Job]:
    # The domain models: the confirmatory study's, trained again (reproducing their records) where their weights
    # are gone. Then the new style set and the outlined look's judges, once (two writers at once would race).
    planned = weights_jobs([f"domain/seed{seed}" for seed in seeds])
    planned.append(Job("outline", python_module("style_tailoring.world", "only=[datasets,outline]"),
                       log=OUT / "data.log", env=ENV, needs=("data",)))
    for seed in seeds:
        domain = DOMAIN / f"seed{seed}" / "pipeline"
        for kind, style in KINDS.items():
            for name, overrides in CONFIGS.items():
                run = OUT / kind / name / f"seed{seed}"
                planned.append(Job(f"{kind}/{name}/seed{seed}", python_module(
                    "style_tailoring.train", *COMMON, *overrides, *style, f"seed={seed}",
                    f"model.init_unet={domain}", f"hydra.run.dir={run}"), run, ("outline", f"domain/seed{seed}"),
                    resumable=True, env=ENV,
                    done=lambda name=f"{kind}/{name}/seed{seed}": RECORDS.done(name)))
        # The domain model's own outlined look, scored by the outline judges (its confirmatory record was scored by
        # the world's): the reference of "sequential raises the style" for that kind. Same evaluation settings.
        name = f"outline/domain/seed{seed}"
        planned.append(Job(name, python_module(
            "style_tailoring.evaluate", f"pipeline={domain}", *KINDS["outline"][1:], "logger=csv",
            f"hydra.run.dir={OUT / name}"), OUT / name, ("outline", f"domain/seed{seed}"), env=ENV,
            done=lambda name=name: RECORDS.done(name)))
    return planned


def main(argv=None) -> None:
    run_study(jobs, RECORDS, argv, __doc__, seeds=[1001, 1002, 1003], also=(CONFIRMATORY,))


if __name__ == "__main__":
    main()
