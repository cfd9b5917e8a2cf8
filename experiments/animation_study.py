"""Animated stickers on the Sticker World: the results of docs/animation.md.

    python experiments/animation_study.py [--workers 2] [--seeds 0,1,2] [--dry-run]

Three models over three training seeds, and a control, through the repository's job runner (each job waits for
what it reads; a finished step is skipped on a re-run, a killed training run resumes from its checkpoint; each
completed run leaves its record under experiments/results/records/animation_study):
  weak        the shipped adapter's recipe before this study: the world base's motion modules finetuned on the weak
              video set, the sticker on the middle frame (1,000 steps of 8 clips, lr 5e-4)
  default     the recipe experiments/animation_select.py chose on validation (animation_select.csv), same budget:
              equal training samples with weak; seed 0 is the selection's own run where it is here (the same
              command), read in place
  teachers    the ensemble: the three weak-video models animate the 120 training stickers twice each, the judges
              keep per sticker the clip with the prompt's motion and the best condition fidelity above 12 dB
              (python -m style_tailoring.hitl.teachers, its default min_fidelity)
  student     per seed: the weak-video model trained 300 more steps on the kept set; control (weak+300): 300 more
              steps on the weak video set instead (equal training samples with the student)
  teachers_default, student_default, default+300
              the same ensemble stage on top of the default (added after the first results, exploratory): the three
              default models are the teachers; each default model trains 300 more steps on their kept set with the
              default's recipe; its control, 300 more steps on the weak video set
  eval        every model on the 24 held-out motion x content stickers x 2 noises, 8 DPM-Solver steps, guidance 3;
              weak, default and student also on the plain stickers the renderer never drew (world/plain_stickers:
              bordered and borderless, 19 each x 2 noises); the base image model frame by frame (the motion model
              before training) at 3 noise seeds
Summarised by experiments/animation_study_summary.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from style_tailoring.runtime.jobs import Job, python_module
from style_tailoring.world.motion import ADAPTER_BATCH, ADAPTER_LR, ADAPTER_STEPS, build_animated

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import Records, run_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "runs" / "animation_study"
DATA = ROOT / "data" / "sticker_world" / "animated"
BASE = ROOT / "assets" / "sticker_world" / "base"
ADAPTER = ROOT / "assets" / "sticker_world" / "motion_adapter"  # the shipped one
# The shipped adapter's recipe (style_tailoring.world.motion), so the study's weak-video runs are that finetune
COMMON = ["strategy=base", "data=folder", "model=sticker_world_base", "model.motion.enabled=true", "eval.enabled=false",
          f"data.batch_size={ADAPTER_BATCH}", f"optim.lr={ADAPTER_LR}", "logger=csv",
          "trainer.enable_progress_bar=false"]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}
# Each completed run's committed record; an evaluation's per-clip scores are its scores.jsonl.
RECORDS = Records("animation_study", OUT, scores=Path("scores.jsonl"))


def done(run_dir: Path) -> bool:
    """A training or evaluation run's metrics.json says completed (an evaluation written before evaluations recorded
    a status has none), or the teachers' report is written."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return (run_dir / "report.json").is_file()
    return json.loads(path.read_text()).get("status", "completed") == "completed"


def job(name: str, command: list[str], needs=(), resumable: bool = False, root: Path = OUT,
        recorded: bool = False) -> Job:
    """A step of the study (under `root`); `recorded`: done also when its committed record exists."""
    return Job(name, command, root / name, tuple(needs), resumable=resumable, env=ENV,
               done=lambda: done(root / name) or (recorded and RECORDS.has(name)),
               log=root / f"{name.replace('/', '_')}.log")


def train(name: str, data: Path, steps: int, seed: int, init: Path | None = None, needs=(), root: Path = OUT,
          extra: tuple[str, ...] = ()) -> Job:
    """A motion training run (`extra`: the recipe's own overrides, e.g. model.motion.conditioning=all)."""
    init_args = [f"model.init_unet={init}"] if init else []
    return job(name, python_module("style_tailoring.train", *COMMON, f"data.domain_dir={data}",
                                   f"trainer.max_steps={steps}", f"checkpoint.every_n_steps={min(steps, 100)}",
                                   f"seed={seed}", *init_args, *extra, f"hydra.run.dir={root / name}"), needs,
               resumable=True, root=root)


def model_args(run: Path, whole_unet: bool = False) -> list[str]:
    """The evaluate arguments of a trained run: the image pipeline with the run's motion adapter when only the
    motion modules trained (model.motion.train=motion), else (`whole_unet`) its exported animation pipeline."""
    if whole_unet:
        return [f"pipeline={run / 'pipeline'}", "motion_adapter=null"]
    return [f"pipeline={BASE}", f"motion_adapter={run / 'motion_adapter'}"]


def evaluate(name: str, adapter: Path, seed: int = 0, needs=(), root: Path = OUT,
             eval_dir: Path = DATA / "video_eval", model: list[str] | None = None) -> Job:
    """An evaluation of a motion adapter on the base (or `model`: model_args of a run) on `eval_dir`; done once
    complete here or recorded (a study's evaluations outlive its weights; its trainings run again where their
    weights are gone and an evaluation still needs them)."""
    model = model or [f"pipeline={BASE}", f"motion_adapter={adapter}"]
    return job(name, python_module("style_tailoring.animation.evaluate", *model, f"eval_dir={eval_dir}",
                                   f"out={root / name}", "seeds_per_prompt=2", f"seed={seed}"), needs, root=root,
               recorded=root == OUT)


def frame_by_frame_adapter() -> Path:
    """The motion model before training (zeroed motion outputs, zero sticker input): the base image model frame by
    frame, saved as an adapter so it samples through the same code."""
    from diffusers import UNet2DConditionModel

    from style_tailoring.models.motion import build_animation_unet, save_motion_adapter

    out = OUT / "frame_by_frame_adapter"
    if not (out / "animation.json").is_file():
        unet = build_animation_unet(UNet2DConditionModel.from_pretrained(BASE / "unet"))
        save_motion_adapter(unet, out, heads=4, conditioning="middle", frames=8)
    return out


def chosen_recipe() -> tuple[str, tuple[str, ...], bool]:
    """The recipe experiments/animation_select.py chose (its committed table): (name, overrides, whole UNet)."""
    import pandas as pd

    from animation_select import CANDIDATES, RESULTS

    table = pd.read_csv(RESULTS / "animation_select.csv")
    name = table.loc[table["chosen"], "candidate"].item()
    return (name, *CANDIDATES[name])


def default_run(name: str, seed: int) -> Path:
    """Where the default arm's run of `seed` is: seed 0 is the selection's own run of the chosen recipe (the same
    command) where that is complete and the study has none of its own; otherwise the study's."""
    from animation_select import run_dir

    own = OUT / "default" / f"seed{seed}"
    return run_dir(name) if seed == 0 and not done(own) and done(run_dir(name)) else own


def jobs(seeds: list[int]) -> list[Job]:
    from style_tailoring.world.plain_stickers import build_plain_stickers

    build_animated(DATA)
    plain = build_plain_stickers(DATA / "plain")
    name, overrides, whole = chosen_recipe()
    runs = {kind: {s: OUT / f"{kind}/seed{s}" for s in seeds} for kind in ("weak", "student", "weak+300")}
    runs["default"] = {s: default_run(name, s) for s in seeds}
    weak = runs["weak"]
    planned = [train(f"weak/seed{s}", DATA / "video_domain", ADAPTER_STEPS, s) for s in seeds]
    planned += [train(f"default/seed{s}", DATA / "video_domain", ADAPTER_STEPS, s, extra=overrides) for s in seeds
                if runs["default"][s].is_relative_to(OUT)]
    planned.append(job("teachers", python_module(
        "style_tailoring.hitl.teachers", "teachers=[" + ",".join(str(weak[s] / "motion_adapter") for s in seeds) + "]",
        f"prompts_dir={DATA / 'video_prompts'}", f"out={OUT / 'teachers'}", "k=2"), [f"weak/seed{s}" for s in seeds]))
    for s in seeds:
        planned.append(train(f"student/seed{s}", OUT / "teachers" / "kept", 300, s, weak[s] / "pipeline",
                             needs=["teachers"]))
        planned.append(train(f"weak+300/seed{s}", DATA / "video_domain", 300, s, weak[s] / "pipeline",
                             needs=[f"weak/seed{s}"]))
    # The ensemble stage on top of the default: its teachers are the default models (exported pipelines)
    default = runs["default"]
    needs_default = [f"default/seed{s}" for s in seeds if default[s].is_relative_to(OUT)]
    planned.append(job("teachers_default", python_module(
        "style_tailoring.hitl.teachers", "teachers=[" + ",".join(str(default[s] / "pipeline") for s in seeds) + "]",
        f"prompts_dir={DATA / 'video_prompts'}", f"out={OUT / 'teachers_default'}", "k=2"), needs_default))
    for s in seeds:
        runs.setdefault("student_default", {})[s] = OUT / f"student_default/seed{s}"
        runs.setdefault("default+300", {})[s] = OUT / f"default+300/seed{s}"
        planned.append(train(f"student_default/seed{s}", OUT / "teachers_default" / "kept", 300, s,
                             default[s] / "pipeline", needs=["teachers_default"], extra=overrides))
        planned.append(train(f"default+300/seed{s}", DATA / "video_domain", 300, s, default[s] / "pipeline",
                             needs=needs_default, extra=overrides))
    planned += [evaluate(f"eval/frame_by_frame/seed{s}", frame_by_frame_adapter(), seed=1000 * s) for s in seeds]
    sets = {"eval": DATA / "video_eval", "plain_bordered": plain / "bordered", "plain_borderless": plain / "borderless"}
    for kind in ("weak", "default", "student", "weak+300", "student_default", "default+300"):
        for s in seeds:
            model = model_args(runs[kind][s], whole_unet=whole and kind in ("default", "student_default",
                                                                             "default+300"))
            trained = [f"{kind}/seed{s}"] if runs[kind][s].is_relative_to(OUT) else []
            for set_name, folder in sets.items():
                if set_name != "eval" and kind.endswith("+300"):  # controls: on the held-out stickers only
                    continue
                planned.append(evaluate(f"{set_name}/{kind}/seed{s}", None, model=model, eval_dir=folder,
                                        needs=trained))
    return planned


def main(argv=None) -> None:
    run_study(jobs, RECORDS, argv, __doc__, seeds=[0, 1, 2])


if __name__ == "__main__":
    main()
