"""Committed records of a study's runs, so a study outlives the machine it runs on.

A study's run directories (weights, checkpoints, samples) stay out of git, under experiments/runs/<study>/. Each
run that completes leaves a record under experiments/results/records/<study>/<job name>/: its metrics.json (every
number, the commit and the digests of what scored it) and its per-sample judge scores, gzipped — a few kB a run,
committed as the study goes. The records mirror experiments/runs, so the summary scripts read either
(`--runs experiments/results/records`, their default, or `--runs experiments/runs`).

A job with a record is done, so a study cut short goes on from its records in a fresh clone. A run whose weights
other runs still need (a domain model that finetunes start from) is run again when its weights are gone; the run
again must reproduce its record's numbers exactly, or the study stops and says so.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable

from style_tailoring.io import atomic_write_bytes, atomic_write_text
from style_tailoring.runtime.jobs import ALREADY_COMPLETE, COMPLETED, Job, Result, run_done

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "experiments" / "results" / "records"
SCORES = Path("samples") / "final" / "judge_scores.jsonl"


def compared(metrics: dict) -> dict:
    """The numbers a repeated run must reproduce: every evaluation and training number (not its time or commit);
    an animation evaluation's too (its clips' and the renders' scores, not its seconds per clip)."""
    return {k: v for k, v in metrics.items() if k.startswith(("eval/", "train/", "animation/", "renders/"))
            and "provenance" not in k and not k.endswith("seconds_per_clip")}


class Records:
    """The records of one study: `runs` is its run directories' root (experiments/runs/<study>), job names are
    paths below it."""

    def __init__(self, study: str, runs: Path, root: Path = RECORDS, scores: Path = SCORES):
        # scores: where a run keeps its per-sample scores (an animation evaluation: scores.jsonl at its top)
        self.runs, self.root, self.scores = Path(runs), Path(root) / study, Path(scores)

    def has(self, name: str) -> bool:
        return run_done(self.root / name)

    def done(self, name: str) -> bool:
        """The job's record is committed, or its run is complete here."""
        return self.has(name) or run_done(self.runs / name)

    def done_unless_needed(self, name: str, needed_by: Iterable[str]) -> bool:
        """A job whose weights the jobs `needed_by` start from: done when its run is here, or when it is recorded
        and every job that needs it is too."""
        return run_done(self.runs / name) or (self.has(name) and all(self.has(n) for n in needed_by))

    def record(self, job: Job, result: Result) -> None:
        """on_result of the study's JobRunner: copies a completed run's metrics.json and per-sample scores into its
        record (atomically; metrics.json last, so a record holding it is whole). A run that repeats a recorded one
        must reproduce its numbers."""
        if result.status not in (COMPLETED, ALREADY_COMPLETE) or job.run_dir is None or not run_done(job.run_dir):
            return
        if not Path(job.run_dir).resolve().is_relative_to(self.runs.resolve()):
            return  # another study's job in the same runner: its own Records keeps it
        metrics_text = (Path(job.run_dir) / "metrics.json").read_text()
        target = self.root / job.name
        if self.has(job.name):
            old, new = compared(json.loads((target / "metrics.json").read_text())), compared(json.loads(metrics_text))
            if old != new:
                differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
                raise SystemExit(f"{job.name}: the run again does not reproduce its record ({', '.join(differ[:6])}"
                                 "); the study stops: its runs are no longer one deterministic study")
            return
        scores = Path(job.run_dir) / self.scores
        if scores.is_file():
            atomic_write_bytes(target / self.scores.with_suffix(".jsonl.gz"),
                               gzip.compress(scores.read_bytes(), mtime=0))
        atomic_write_text(target / "metrics.json", metrics_text)


def finetune_study(records: Records, common: list[str], seeds, finetunes: dict[str, list[str]],
                   env: dict) -> list[Job]:
    """The jobs of a study shaped like the confirmatory one: the world's data sets once, prompt engineering once,
    then per training seed its domain model (`strategy=base`) and every finetune of `finetunes` from it, each a
    `python -m style_tailoring.train` run with `common` overrides into records.runs/<name>/seed<k>. A finetune is
    done once recorded; a domain model once recorded and no finetune of it still needs its weights."""
    from style_tailoring.runtime.jobs import python_module

    def train(name: str, overrides: list[str], needs: tuple[str, ...] = ("data",), done=None) -> Job:
        run_dir = records.runs / name
        return Job(name, python_module("style_tailoring.train", *common, *overrides, f"hydra.run.dir={run_dir}"),
                   run_dir, needs=needs, resumable=True, env=env, done=done or (lambda: records.done(name)))

    # The world's data sets are written once, before any run reads them (two writers at once would race).
    planned = [Job("data", python_module("style_tailoring.world", "only=datasets"), log=records.runs / "data.log",
                   env=env),
               train("prompt_engineering", ["strategy=prompt_engineering"])]  # ", sticker, white border"
    for seed in seeds:  # a whole seed's domain model first, so a cut-short study still has complete seeds
        domain, names = f"domain/seed{seed}", [f"{name}/seed{seed}" for name in finetunes]
        planned.append(train(domain, ["strategy=base", f"seed={seed}"],
                             done=lambda d=domain, f=names: records.done_unless_needed(d, f)))
        planned += [train(f"{name}/seed{seed}", [*overrides, f"seed={seed}",
                                                 f"model.init_unet={records.runs / domain / 'pipeline'}"],
                          needs=("data", domain))
                    for name, overrides in finetunes.items()]
    return planned


def run_study(jobs, records: Records, argv=None, description: str = "", seeds: list[int] | None = None,
              also: tuple[Records, ...] = (), recorder=None) -> None:
    """A study driver's command line: `--workers N` (changeable while it runs through records.runs/workers),
    `--dry-run`, and with `seeds` (the default training seeds) `--seeds 1,2,3`, `jobs` then being a function of the
    seeds. Runs the jobs, recording each completed run in `records` and in each of `also` (the studies whose runs it
    trains again: each keeps only its own jobs and must see them reproduce their records), and fails naming the
    jobs that did not complete. `recorder(job, result)` replaces `records.record` (a study whose jobs leave more
    than one run)."""
    import argparse

    from style_tailoring.runtime.jobs import JobRunner

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    if seeds is not None:
        parser.add_argument("--seeds", default=",".join(map(str, seeds)), help="training seeds, comma-separated")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = parser.parse_args(argv)
    if seeds is not None:
        jobs = jobs([int(s) for s in args.seeds.split(",")])

    def record(job: Job, result) -> None:
        for each in also:
            each.record(job, result)
        (recorder or records.record)(job, result)

    records.runs.mkdir(parents=True, exist_ok=True)
    results = JobRunner(jobs, args.workers, workers_file=records.runs / "workers",
                        on_result=record).run(dry_run=args.dry_run)
    failed = [r.name for r in results.values() if r.status not in (COMPLETED, ALREADY_COMPLETE)]
    if failed:
        raise SystemExit(f"{len(failed)} jobs did not complete: {', '.join(failed)}")
