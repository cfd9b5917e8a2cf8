"""The paper's study on the Sticker World (v3): the results of docs/results.md.

    python experiments/world_study.py [--workers 2] [--phases core,guidance,...] [--seeds 0,1,2] [--dry-run]

Jobs, in priority order, through the repository's job runner (a job waits for the run it starts from, which a
phase run alone brings along if it is not complete; every finished job, one whose metrics.json says completed, is
skipped on a re-run, and a killed training run resumes from its checkpoint, so the study resumes where it stopped):
  core       prompt engineering (the base model with ", sticker, white border") and the base model without the
             phrase (its control); per seed, the domain finetune (strategy=base on the weakly labelled domain set)
             and, from that seed's domain model, sequential, mixture and Style Tailoring (t_split 500)
  guidance   the same models (and prompt engineering) sampled at guidance 1.5 and 5 besides the default 3: fronts
  from_base  sequential and Style Tailoring 500 from the photo base (the old comparison, for contrast; the
             default run `python -m style_tailoring.train` is this Style Tailoring row's seed 0)
  t_split    Style Tailoring at t_split 250 and 750 from the domain model
  seeds45    seeds 3 and 4 of the headline rows (domain, sequential, mixture, Style Tailoring 500)
  hitl       the recipe's HITL step: one round from each seed's domain model (candidates, judges as raters,
             curation), whose curated Alignment and Style sets train sequential, mixture and Style Tailoring
  variants   sequential over its stage split (500 + 100 and 400 + 200 steps; the default is 300 + 300), sequential
             with a fresh optimizer per stage,
             and the t_split × mixture grid at t_split 500 (style share 0.25 and 0.75)
Every training run: 600 optimizer steps of batch 32 (equal training samples for every strategy; the domain model
had 600 more). Every model is evaluated by its own evaluation runs, `guidance/<run>/g<scale>` (guidance 3, the
world's default, in core; 1.5 and 5 in guidance), on 24 held-out prompts × 16 noises, 25 DDIM steps. Workers run
with one thread each (two cores: two workers; experiments/runs/world_study/workers changes the count while it
runs). Summarised by experiments/world_study_summary.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from style_tailoring.runtime.jobs import Job, JobRunner, python_module, run_done, with_needs

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "runs" / "world_study"
BASE = ROOT / "assets" / "sticker_world" / "base"
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}
COMMON = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.max_steps=600", "eval.enabled=false"]
SUFFIX = "eval.prompt_suffix=', sticker, white border'"
PHASES = ("core", "guidance", "from_base", "t_split", "seeds45", "variants", "hitl")
HITL_STRATEGIES = ("sequential", "mixture", "style_tailoring")
# The variants in the order they run: the sequential stage-split front, the t_split × style share grid, the fresh
# optimizer.
VARIANTS = ("seq500+100", "seq400+200", "st500_share0.75", "st500_share0.25", "seq_fresh")
FINETUNES = {  # name: overrides of a finetune from the domain model
    "sequential": ["strategy=sequential"],
    "mixture": ["strategy=mixture"],
    "st500": ["strategy=style_tailoring", "strategy.t_split=500"],
    "st250": ["strategy=style_tailoring", "strategy.t_split=250"],
    "st750": ["strategy=style_tailoring", "strategy.t_split=750"],
    "seq500+100": ["strategy=sequential", "strategy.stage_steps=[500,100]"],
    "seq400+200": ["strategy=sequential", "strategy.stage_steps=[400,200]"],
    "seq_fresh": ["strategy=sequential", "strategy.fresh_optimizer=true"],
    "st500_share0.25": ["strategy=style_tailoring", "strategy.t_split=500", "data.mixture=0.25"],
    "st500_share0.75": ["strategy=style_tailoring", "strategy.t_split=500", "data.mixture=0.75"],
}


def train(name: str, seed: int, overrides: list[str], needs: list[str] = ()) -> Job:
    return Job(name, python_module("style_tailoring.train", *COMMON, f"seed={seed}", *overrides,
                                   f"hydra.run.dir={OUT / name}"), OUT / name, tuple(needs), resumable=True, env=ENV)


def evaluate(name: str, pipeline: Path, overrides: list[str], needs: list[str] = ()) -> Job:
    return Job(name, python_module("style_tailoring.evaluate", f"pipeline={pipeline}", *overrides,
                                   f"hydra.run.dir={OUT / name}"), OUT / name, tuple(needs), env=ENV)


def jobs_for(phase: str, seeds: list[int]) -> list[Job]:
    jobs = []
    scales = (3,) if phase == "core" else (1.5, 5) if phase == "guidance" else ()
    if scales:
        jobs += [evaluate(f"prompt_engineering/g{g}", BASE, [SUFFIX, f"eval.sample.guidance_scale={g}"])
                 for g in scales]
        jobs += [evaluate(f"base_no_phrase/g{g}", BASE, [f"eval.sample.guidance_scale={g}"]) for g in scales]
    for seed in seeds if phase != "seeds45" else [3, 4]:
        domain = f"domain/seed{seed}"
        from_domain = lambda name: train(f"from_domain/{name}/seed{seed}", seed, [  # noqa: E731
            *FINETUNES[name], f"model.init_unet={OUT / domain / 'pipeline'}"], needs=[domain])
        if phase in ("core", "seeds45"):
            trained = [train(domain, seed, ["strategy=base"]),
                       *(from_domain(name) for name in ("sequential", "mixture", "st500"))]
        elif phase == "t_split":
            trained = [from_domain("st250"), from_domain("st750")]
        elif phase == "variants":
            trained = [from_domain(name) for name in VARIANTS]
        elif phase == "hitl":  # one HITL round from the seed's domain model: its curated sets train the strategies
            loop = f"hitl/seed{seed}"
            finetunes = [f"{loop}/round-1/finetune/{s}" for s in HITL_STRATEGIES]
            jobs.append(Job(loop, python_module(
                "style_tailoring.hitl", f"hitl.model={OUT / domain / 'pipeline'}", "hitl.rounds=1",
                f"hitl.strategies=[{','.join(HITL_STRATEGIES)}]", f"hitl.generate.seed={seed}", f"seed={seed}",
                "hitl.train_overrides=[" + ",".join(f"'{o}'" for o in COMMON) + "]", f"hydra.run.dir={OUT / loop}"),
                OUT / loop, (domain,), env=ENV,
                done=lambda finetunes=finetunes: all(run_done(OUT / f) for f in finetunes)))
            jobs += [evaluate(f"guidance/hitl/{s}/seed{seed}/g3", OUT / f"{loop}/round-1/finetune/{s}/pipeline", [],
                              needs=[loop]) for s in HITL_STRATEGIES]
            continue
        elif phase == "from_base":
            trained = [train(f"from_base/{name}/seed{seed}", seed, FINETUNES[name])
                       for name in ("sequential", "st500")]
        else:  # guidance: the core models at other scales
            trained = []
            core = [*(f"from_domain/{n}/seed{seed}" for n in ("sequential", "mixture", "st500")), domain]
            jobs += [evaluate(f"guidance/{run}/g{g}", OUT / run / "pipeline", [f"eval.sample.guidance_scale={g}"],
                              needs=[run]) for g in scales for run in core]
        jobs += trained
        jobs += [evaluate(f"guidance/{job.name}/g3", OUT / job.name / "pipeline", [], needs=[job.name])
                 for job in trained]
    if phase == "variants":  # a whole front (every seed) before the next one: a cut-short study still has fronts
        jobs.sort(key=lambda job: VARIANTS.index(job.name.split("/")[-2 if job.name.startswith("from") else -3]))
    return jobs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = parser.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"--phases: unknown {sorted(unknown)}; choose from {PHASES}")
    seeds = [int(s) for s in args.seeds.split(",")]
    every = [job for phase in PHASES for job in jobs_for(phase, seeds)]
    chosen = [job for phase in args.phases.split(",") for job in jobs_for(phase, seeds)]
    OUT.mkdir(parents=True, exist_ok=True)
    JobRunner(with_needs(chosen, every), args.workers, workers_file=OUT / "workers").run(args.dry_run)


if __name__ == "__main__":
    main()
