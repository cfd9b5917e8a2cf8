"""The paper's recipe, chained: `python -m style_tailoring.recipe [recipe.* overrides]`.

  prompt_engineering   the photo base with a style phrase (the baseline)              RUN/prompt_engineering/
  domain               domain finetune of the base on weakly labelled data (`base`)   RUN/domain/
  hitl                 R rounds generate → rate → curate → finetune from the domain   RUN/hitl/round-*/
  final/<strategy>     from the domain model, on the last round's curated sets        RUN/final/<strategy>/
                       (sequential, mixture, style_tailoring)
then `collect` over RUN into RUN/table.csv. Every step is a process of its own — the same command a cluster job
would run (`recipe.dry_run=true` prints them in order; `recipe.steps=[domain]` runs only the named steps, after
checking that the steps they need are complete). RUN/recipe.json is the manifest: each step's command, status and
wall time. A second call skips what is complete and resumes what is not (a training run from its last checkpoint,
the HITL loop at its first missing step).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig

from style_tailoring.config import ConfigError, RecipeConfig, RecipeRunConfig, merge_into_schema  # noqa: F401
from style_tailoring.io import update_json
from style_tailoring.runtime.jobs import (
    ALREADY_COMPLETE,
    COMPLETED,
    FAILED,
    NOT_RUN,
    Job,
    JobFailed,
    JobRunner,
    run_done,
)
from style_tailoring.training.strategies import check_strategy_names

log = logging.getLogger("style_tailoring.recipe")


@dataclass
class Step:
    name: str
    command: list[str]
    out_dir: Path
    needs: tuple[str, ...] = ()
    rounds: int = 1  # the hitl step's

    def done(self) -> bool:
        if self.name == "collect":
            return False  # cheap, and it should see every run
        if self.name == "hitl":  # finished, and with as many rounds as asked now
            manifest = self.out_dir / "hitl.json"
            return manifest.is_file() and json.loads(manifest.read_text()).get("status") == "completed" and \
                (self.out_dir / f"round-{self.rounds}" / "curation.json").is_file()
        return run_done(self.out_dir)


def _list(values) -> str:
    """A list override for the command line: ["a=b","c=d"] (Hydra's grammar, quoted items)."""
    return "[" + ",".join(json.dumps(v) for v in values) + "]"


def plan_steps(cfg) -> list[Step]:
    r, run = cfg.recipe, Path(cfg.run_dir).resolve()
    py = sys.executable
    # Every step sees the recipe's seed and paths (where data, caches and the world live).
    shared = [f"seed={cfg.seed}", *(f"paths.{k}={v}" for k, v in cfg.paths.items() if v is not None)]

    def train(name, out, overrides, needs=()):
        return Step(name, [py, "-m", "style_tailoring.train", f"hydra.run.dir={out}", *shared, *r.train_overrides,
                           *overrides], out, needs)

    domain = run / "domain"
    hitl_dir = run / "hitl"
    steps = [
        train("prompt_engineering", run / "prompt_engineering", ["strategy=prompt_engineering"]),
        train("domain", domain, ["strategy=base", *r.domain_overrides]),
    ]
    hitl_overrides = list(r.hitl_overrides)
    rounds = _override_value(hitl_overrides, "hitl.rounds") or "1"
    if not rounds.isdigit() or int(rounds) < 1:
        raise ConfigError("recipe.hitl_overrides", f"hitl.rounds must be an integer >= 1, got {rounds!r}")
    steps.append(Step("hitl", [py, "-m", "style_tailoring.hitl", f"hydra.run.dir={hitl_dir}", *shared,
                               f"hitl.model={domain / 'pipeline'}",
                               f"hitl.train_overrides={_list([*r.train_overrides, *_train_list(hitl_overrides)])}",
                               *[o for o in hitl_overrides if not o.startswith("hitl.train_overrides=")]],
                      hitl_dir, ("domain",), rounds=int(rounds)))
    last = hitl_dir / f"round-{rounds}"
    for strategy in r.final_strategies:
        steps.append(train(f"final/{strategy}", run / "final" / strategy,
                           [f"strategy={strategy}", f"model.init_unet={domain / 'pipeline'}",
                            f"data.alignment_dir={last / 'alignment'}", f"data.style_dir={last / 'style'}",
                            *([f"eval.fid.reference={r.fid_reference}"] if r.fid_reference else []),
                            *r.final_overrides],
                           ("domain", "hitl")))
    steps.append(Step("collect", [py, "-m", "style_tailoring.collect", f"sweep_dir={run}", f"out={run / 'table.csv'}"],
                      run, tuple(s.name for s in steps)))
    return steps


def _override_value(overrides: list[str], key: str):
    for o in overrides:
        if o.startswith(key + "="):
            return o.split("=", 1)[1]
    return None


def _train_list(hitl_overrides: list[str]) -> list[str]:
    value = _override_value(hitl_overrides, "hitl.train_overrides")
    if not value:
        return []
    try:
        items = json.loads(value)
    except json.JSONDecodeError:
        raise ConfigError("recipe.hitl_overrides", f"hitl.train_overrides must be a JSON-style list of quoted "
                          f"overrides, e.g. [\"trainer.max_steps=300\"], got {value}") from None
    return list(items)


def check(cfg, steps: list[Step]) -> list[Step]:
    known = [s.name for s in steps]
    if cfg.recipe.steps is None:
        return steps
    unknown = [s for s in cfg.recipe.steps if s not in known]
    if unknown:
        raise ConfigError("recipe.steps", f"unknown step(s) {unknown}; the steps are {known}")
    chosen = [s for s in steps if s.name in cfg.recipe.steps]
    by_name = {s.name: s for s in steps}
    for step in chosen:
        for need in step.needs:
            if need not in cfg.recipe.steps and need != "collect" and not by_name[need].done():
                raise ConfigError("recipe.steps", f"step {step.name!r} needs {need!r}, which is not complete "
                                  f"({by_name[need].out_dir}); run it first")
    return chosen


def as_job(step: Step, chosen: set[str], logs: Path) -> Job:
    """A step as a job of the runner: training steps resume from their last checkpoint; collect always runs (it
    should see every run); a need outside the chosen steps was checked complete already."""
    return Job(step.name, step.command, None if step.name == "collect" else step.out_dir,
               needs=tuple(n for n in step.needs if n in chosen), done=None if step.name == "collect" else step.done,
               resumable=step.name not in ("hitl", "collect"), env={"HYDRA_FULL_ERROR": "1"},
               log=logs / f"{step.name.replace('/', '-')}.log")


def run_recipe(cfg) -> list[dict]:
    check_strategy_names("recipe.final_strategies", cfg.recipe.final_strategies)
    steps = check(cfg, plan_steps(cfg))
    run = Path(cfg.run_dir).resolve()
    manifest = run / "recipe.json"
    jobs = [as_job(step, {s.name for s in steps}, run / "logs") for step in steps]
    if cfg.recipe.dry_run:
        JobRunner(jobs).run(dry_run=True)
        return []
    known = json.loads(manifest.read_text()).get("steps", {}) if manifest.is_file() else {}
    steps_known = {s.name: {**known.get(s.name, {}), "command": s.command, "out_dir": str(s.out_dir)} for s in steps}
    update_json(manifest, {"status": "running", "steps": {**known, **steps_known}})

    def record(job: Job, result) -> None:
        if result.status == ALREADY_COMPLETE:  # its entry stays as the run that completed it wrote it
            return
        data = json.loads(manifest.read_text())
        data["steps"][job.name].update(status=result.status, seconds=result.seconds, log=result.log)
        update_json(manifest, {"steps": data["steps"]})

    results = JobRunner(jobs, on_result=record, say=log.info).run()
    ordered = [results[step.name] for step in steps]
    failed = [r for r in ordered if r.status in (FAILED, NOT_RUN)]
    if failed:  # the first in step order failed itself; the ones after it may only have needed it
        update_json(manifest, {"status": "failed"})
        raise JobFailed(f"recipe step {failed[0].name!r} failed ({failed[0].reason}); its log: {failed[0].log}")
    update_json(manifest, {"status": "completed" if cfg.recipe.steps is None else "partial"})
    return [{"step": r.name, "status": COMPLETED, **({"seconds": r.seconds} if r.status == COMPLETED else {})}
            for r in ordered]


@hydra.main(version_base="1.3", config_path="../../conf", config_name="recipe")
def main(cfg: DictConfig):
    records = run_recipe(merge_into_schema(RecipeRunConfig, cfg))
    if records:
        print(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
