"""The pre-registered confirmatory study (experiments/protocol.md): its runs, through the repository's job runner.

    python experiments/confirmatory.py [--workers 2] [--dry-run]

Per fresh training seed (1001-1005): the domain finetune from the photo base, then from that domain model Style
Tailoring at t_split 650 / 700 / 750 / 800, sequential 300+300 / 400+200 / 500+100 and mixture at style share
0.5 / 0.75 / 0.9; and prompt engineering once. Every run is 600 steps of batch 32 and evaluates itself at its end
(24 held-out prompts x 16 noises). Runs go to experiments/runs/confirmatory/<config>/seed<k>; a run that is
complete is skipped, one that was killed resumes from its last checkpoint, so the command can be repeated until
it is done. experiments/runs/confirmatory/workers, when present, changes the worker count while it runs.

The run directories stay out of git; each completed run leaves a committed record (experiments/records.py:
experiments/results/records/confirmatory/<config>/seed<k>, its metrics.json and per-sample scores), so a study cut
short goes on from its records in a fresh clone. A recorded domain model is trained again only while a finetune of
it still has no record (its weights are not committed), and must reproduce its record exactly.
Summarised by experiments/confirmatory_summary.py (from the records).
"""

from __future__ import annotations

import sys
from pathlib import Path

from style_tailoring.runtime.jobs import Job, run_done

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import Records, finetune_study, run_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "runs" / "confirmatory"
RECORDS = Records("confirmatory", OUT)
SEEDS = (1001, 1002, 1003, 1004, 1005)
COMMON = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.max_steps=600", "data.batch_size=32"]
FINETUNES = {  # name: overrides of a finetune from the seed's domain model
    "st650": ["strategy=style_tailoring", "strategy.t_split=650"],
    "st700": ["strategy=style_tailoring", "strategy.t_split=700"],
    "st750": ["strategy=style_tailoring", "strategy.t_split=750"],
    "st800": ["strategy=style_tailoring", "strategy.t_split=800"],
    "seq300+300": ["strategy=sequential", "strategy.stage_steps=[300,300]"],
    "seq400+200": ["strategy=sequential", "strategy.stage_steps=[400,200]"],
    "seq500+100": ["strategy=sequential", "strategy.stage_steps=[500,100]"],
    "mix0.5": ["strategy=mixture", "data.mixture=0.5"],
    "mix0.75": ["strategy=mixture", "data.mixture=0.75"],
    "mix0.9": ["strategy=mixture", "data.mixture=0.9"],
}
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}


def jobs() -> list[Job]:
    return finetune_study(RECORDS, COMMON, SEEDS, FINETUNES, ENV)


def weights_jobs(names: list[str]) -> list[Job]:
    """The confirmatory runs `names` (and the runs they start from) as jobs of another study that needs their
    weights, not only their numbers: each is done only while its run directory is here, is run again otherwise, and
    must then reproduce its record (its runner's on_result must include RECORDS.record)."""
    every = {job.name: job for job in jobs()}
    chosen, queue = {}, list(names)
    while queue:
        job = every[queue.pop()]
        if job.name not in chosen:
            chosen[job.name] = job
            queue += job.needs
    for job in chosen.values():
        if job.run_dir is not None:
            job.done = lambda run=job.run_dir: run_done(run)
    return list(chosen.values())


def main(argv=None) -> None:
    run_study(jobs(), RECORDS, argv, __doc__)


if __name__ == "__main__":
    main()
