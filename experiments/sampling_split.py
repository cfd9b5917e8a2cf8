"""Timestep splitting at sampling time vs at training time, on world v3 (docs/sampling.md), through the job runner.

    python experiments/sampling_split.py [--workers 2] [--seeds 1001,1002,1003] [--dry-run]

It trains nothing: it reuses the confirmatory study's models (experiments/runs/confirmatory, experiments/protocol.md:
from each seed's domain model, 600 steps of batch 32 each). Train time: Style Tailoring at t_split 650 / 700 / 750 /
800. Sampling time: each seed's sequential run (alignment 300 steps, then style 300), its alignment-stage UNet
denoising t >= t_switch and its style-stage UNet t < t_switch (eval/sampler=timestep_split), at the same splits; and
DCI (concept "sticker", the style phrase appended) on the sequential run's final model, with the same model and
prompts sampled plainly as its control. Every evaluation: the world's 24 held-out prompts x 16 noises, 25 DDIM
steps, guidance 3. Summarised by experiments/sampling_split_summary.py.
Each completed run leaves a committed record (experiments/records.py). The confirmatory sequential runs it starts from
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
MODELS = ROOT / "experiments" / "runs" / "confirmatory"
OUT = ROOT / "experiments" / "runs" / "sampling_split"
RECORDS = Records("sampling_split", OUT)  # each completed evaluation's committed record (experiments/records.py)
SPLITS = (650, 700, 750, 800)
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def evaluate(name: str, *overrides: str, needs: tuple[str, ...] = ()) -> Job:
    return Job(name, python_module("style_tailoring.evaluate", *overrides, f"hydra.run.dir={OUT / name}"), OUT / name,
               env=ENV, needs=needs, done=lambda: RECORDS.done(name))


def jobs(seeds: list[int]) -> list[Job]:
    # The sequential runs' stage UNets: the confirmatory study's, trained again (reproducing their records) where
    # their weights are gone.
    planned = weights_jobs([f"seq300+300/seed{seed}" for seed in seeds])
    for seed in seeds:
        run = MODELS / "seq300+300" / f"seed{seed}"
        stages = run / "stages"
        planned += [evaluate(f"sampling_time/t{t}/seed{seed}", f"pipeline={run / 'pipeline'}",
                             f"unet={stages / '1-alignment' / 'unet'}", "eval/sampler=timestep_split",
                             f"eval.sampler.t_switch={t}", f"eval.sampler.late_unet={stages / '2-style' / 'unet'}",
                             needs=(f"seq300+300/seed{seed}",))
                    for t in SPLITS]
        planned.append(evaluate(f"dci/seed{seed}", f"pipeline={run / 'pipeline'}", "eval/sampler=dci",
                                "eval.sampler.concept=sticker", "eval.prompt_suffix=', sticker'",
                                needs=(f"seq300+300/seed{seed}",)))
        planned.append(evaluate(f"dci_control/seed{seed}", f"pipeline={run / 'pipeline'}",
                                "eval.prompt_suffix=', sticker'", needs=(f"seq300+300/seed{seed}",)))
    return planned


def main(argv=None) -> None:
    run_study(jobs, RECORDS, argv, __doc__, seeds=[1001, 1002, 1003], also=(CONFIRMATORY,))


if __name__ == "__main__":
    main()
