"""`python -m style_tailoring.world [only=[STEP,...]] [force=true]`: every Sticker World artifact, each step cached
and skipped when done (the command: world/__main__.py, settings conf/world.yaml; in code: `build(...)`).

Steps: datasets (generated, not shipped: ~2 min) → judges (shipped in assets/sticker_world/judges) → the HITL
raters' judges (assets/sticker_world/judges_rater: trained the same way on other renders, so a simulated rater and
the evaluation's judges that audit it do not share their draws) → base model
(shipped in assets/sticker_world/base) → ceiling (every metric on the renderer's own stickers of the eval prompts,
before and after the base VAE: assets/sticker_world/ceiling.json) → student base (the base's VAE and text encoder
with a half-width UNet, shipped in assets/sticker_world/student) → alpha sets (procedural transparent images of
many kinds: data/.../alpha_varied{,_val} generated, the held-out kinds shipped in
assets/sticker_world/alpha_test_sets) → alpha decoder (the base VAE's decoder with an alpha channel, trained on the
world's transparent renders and the procedural mixture: assets/sticker_world/alpha_decoder) → the StyleForge benchmark's
look judges (assets/sticker_world/judges_hatched) → the outlined look's judges, the robustness check's style
(assets/sticker_world/judges_outline) → the animated world's motion judge and the base's motion UNet
(assets/sticker_world/judges_motion, animation_unet) → the SD3-family base (the base's VAE and tokenizer with a
flow-matching transformer, pretrained the same way: assets/sticker_world/base_sd3). `force=true` redoes the steps
named by `only` (default:
all); every step writes atomically, so the old output stays usable until the new one replaces it.
To add a step, write `step_<name>(data_dir, assets_dir, seed, force)` and list it in STEPS, in build order.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

from style_tailoring.config import REPO_ROOT, ConfigError

DEFAULT_DATA = REPO_ROOT / "data" / "sticker_world"
DEFAULT_ASSETS = REPO_ROOT / "assets" / "sticker_world"


def step_datasets(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    from style_tailoring.world.datasets import build_datasets

    build_datasets(data_dir, seed=seed, force=force)


def step_judges(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    from style_tailoring.world.judges import train_judges

    if force or not (assets_dir / "judges" / "accuracy.json").is_file():
        train_judges(assets_dir / "judges", seed=seed)


# The raters' judges are trained like the evaluation's on renders of their own (another seed, so another pool and
# other initial weights): a simulated rater reads them, and the evaluation's judges audit it without sharing its
# draws. They share the renderer's labels (what a sticker is), so their errors are independent only in that sense.
RATER_JUDGES_SEED_OFFSET = 1000


def step_rater_judges(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    """The HITL raters' judges (assets/sticker_world/judges_rater): the attribute and style CNNs, without a CLIP."""
    from style_tailoring.world.judges import train_judges

    if force or not (assets_dir / "judges_rater" / "accuracy.json").is_file():
        train_judges(assets_dir / "judges_rater", seed=seed + RATER_JUDGES_SEED_OFFSET, clip_steps=0,
                     command=f"python -m style_tailoring.world only=rater_judges force=true seed={seed}")


def step_base(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    from style_tailoring.world.base import build_base

    if force or not (assets_dir / "base" / "model_index.json").is_file():
        build_base(data_dir, assets_dir / "base", seed=seed)


def step_ceiling(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    from style_tailoring.world.ceiling import measure_ceiling

    if force or not (assets_dir / "ceiling.json").is_file():
        measure_ceiling(data_dir, assets_dir / "base", assets_dir / "ceiling.json")


def step_student(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    from style_tailoring.world.base import build_student

    if force or not (assets_dir / "student" / "model_index.json").is_file():
        build_student(data_dir, assets_dir / "base", assets_dir / "student", seed=seed)


ALPHA_BACKGROUND = "#dee0e6"  # the renderer's sticker background, the world's data.background
ALPHA_STEPS = 1500
# The shipped decoder's training: the world's transparent renders and the procedural mixture of many kinds, with the
# recipe experiments/alpha_study.py chose on validation data (experiments/results/alpha_select.md).
ALPHA_TRAIN_SETS = ("alpha", "alpha_varied")
ALPHA_RECIPE = {"trainable": "decoder", "composite_weight": 64.0}


def alpha_train_command(pipeline, data, out, seed: int, trainable: str = "decoder",
                        composite_weight: Optional[float] = 1.0, no_alpha: bool = False) -> str:
    """The `python -m style_tailoring.alpha` command line that trains a world alpha decoder (`data`: a folder or a
    list) as step_alpha and the alpha study do, recorded in its alpha.json as the command records its own
    arguments. Settings at their defaults are left out."""
    from style_tailoring.provenance import portable

    folders = [data] if isinstance(data, (str, Path)) else list(data)
    data_dirs = portable(folders[0]) if len(folders) == 1 else f"[{','.join(portable(d) for d in folders)}]"
    extra = "".join([" no_alpha=true" if no_alpha else "", f" trainable={trainable}" if trainable != "decoder" else "",
                     f" composite_weight={composite_weight:g}" if composite_weight not in (None, 1.0) else ""])
    return (f"python -m style_tailoring.alpha action=train pipeline={portable(pipeline)} data_dirs={data_dirs} "
            f"background='{ALPHA_BACKGROUND}' steps={ALPHA_STEPS} seed={seed}{extra} out={portable(out)}")


def step_alpha_sets(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    """The alpha decoder's procedural transparent images (world/transparency.py): data/.../alpha_varied and
    alpha_varied_val (the varied training mixture and its validation set, generated) and the held-out kinds in
    assets/sticker_world/alpha_test_sets/<kind> (shipped, with about.json). Step `alpha` does not read them."""
    from style_tailoring.world.transparency import build_alpha_sets

    for name, folder in build_alpha_sets(data_dir, assets_dir, seed=seed, force=force).items():
        print(f"alpha set {name}: {folder}")


def step_alpha(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    """The base VAE with the paper's alpha decoder, trained on the world's transparent renders and the procedural
    mixture (ALPHA_TRAIN_SETS; step alpha_sets writes the mixture) with ALPHA_RECIPE; measured on the world's
    held-out renders `alpha_eval` (assets/sticker_world/alpha_decoder/measure.json; every held-out kind:
    experiments/alpha_study.py)."""
    from style_tailoring.alpha.decoder import train_decoder
    from style_tailoring.alpha.measure import measure_decoder
    from style_tailoring.data.images import parse_background

    out, base, data = assets_dir / "alpha_decoder", assets_dir / "base", Path(data_dir)
    sets = [data / name for name in ALPHA_TRAIN_SETS]
    missing = [str(d) for d in sets if not d.is_dir()]
    if missing:
        raise ConfigError("only", f"step alpha trains on {', '.join(missing)}: build step alpha_sets (and "
                                  "datasets) first")
    if force or not (out / "alpha.json").is_file():
        train_decoder(base, sets, out, background=parse_background(ALPHA_BACKGROUND), steps=ALPHA_STEPS,
                      seed=seed, **ALPHA_RECIPE, command=alpha_train_command(base, sets, out, seed, **ALPHA_RECIPE))
        print(f"alpha decoder written to {out}")
    if force or not (out / "measure.json").is_file():
        result = measure_decoder(out, base, data / "alpha_eval", data / "alpha_varied", out=out / "measure.json")
        print(json.dumps({k: v for k, v in result.items() if k != "per_image"}, indent=2))


def step_styleforge(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    """The StyleForge benchmark's look judge, P(hatched) (assets/sticker_world/judges_hatched); its data are written
    on first use (style_tailoring.world.styleforge.build_benchmark)."""
    from style_tailoring.world.styleforge import train_look_judge

    if force or not (assets_dir / "judges_hatched" / "accuracy.json").is_file():
        train_look_judge(assets_dir / "judges_hatched", assets_dir / "base", seed=seed)


def step_outline(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    """The judges of the outlined look (assets/sticker_world/judges_outline): P(outlined), the style whose only cue is
    a thin ink line on the photo look (the data set's style_outline), for the study's robustness check."""
    from style_tailoring.world.styleforge import train_look_judge

    if force or not (assets_dir / "judges_outline" / "accuracy.json").is_file():
        train_look_judge(assets_dir / "judges_outline", assets_dir / "base", seed=seed, look="outlined",
                         step="outline")


def step_motion(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    """The animated world: its motion judge (assets/sticker_world/judges_motion), its clips (data/.../animated) and
    the world base finetuned on the weak video set as the shipped motion UNet (assets/sticker_world/animation_unet,
    world.motion.ANIMATION_RECIPE)."""
    from style_tailoring.world.motion import train_motion_judge, train_world_animation_unet

    if force or not (assets_dir / "judges_motion" / "accuracy.json").is_file():
        train_motion_judge(assets_dir / "judges_motion", assets_dir / "base", seed=seed)
    if force or not (assets_dir / "animation_unet" / "train.json").is_file():
        train_world_animation_unet(data_dir, assets_dir, seed=seed)


# The SD3-family base's pretraining: the UNet base's recipe (world/base.py build_base), step for step.
SD3_STEPS, SD3_BATCH_SIZE, SD3_LR = 4000, 32, 5e-4


def step_sd3(data_dir: Path, assets_dir: Path, seed: int, force: bool) -> None:
    """The SD3-family base (assets/sticker_world/base_sd3): a flow-matching transformer over the base's VAE and
    tokenizer, pretrained on the pretrain set by the training core as the base's UNet was (world/base.py)."""
    from style_tailoring.world.base import build_sd3_base

    base, pretrain = assets_dir / "base", Path(data_dir) / "pretrain"
    if not (base / "model_index.json").is_file():
        raise ConfigError("only", f"step sd3 reuses the base model's VAE and tokenizer ({base}): build step base "
                          "first")
    if not pretrain.is_dir():
        raise ConfigError("only", f"step sd3 pretrains on {pretrain}: build step datasets first")
    if force or not (assets_dir / "base_sd3" / "model_index.json").is_file():
        build_sd3_base(data_dir, base, assets_dir / "base_sd3", unet_steps=SD3_STEPS, batch_size=SD3_BATCH_SIZE,
                       lr=SD3_LR, seed=seed)
        print(f"SD3-family base written to {assets_dir / 'base_sd3'}")


STEPS = {"datasets": step_datasets, "judges": step_judges, "rater_judges": step_rater_judges, "base": step_base,
         "ceiling": step_ceiling, "student": step_student, "alpha_sets": step_alpha_sets, "alpha": step_alpha,
         "styleforge": step_styleforge, "outline": step_outline, "motion": step_motion, "sd3": step_sd3}


def build(data_dir=DEFAULT_DATA, assets_dir=DEFAULT_ASSETS, *, only: Optional[list[str]] = None, force: bool = False,
          seed: int = 0, dry_run: bool = False) -> list[str]:
    """Run the steps named by `only` (None: all of them), always in build order, each skipped when its output is
    there unless `force`; the names of the steps run (with dry_run: that would run, none is). An unknown step is a
    ConfigError naming `only`, before any step runs."""
    if only is not None:
        unknown = [name for name in only if name not in STEPS]
        if unknown or not only:
            raise ConfigError("only", f"unknown step(s) {unknown}; the steps are {list(STEPS)}" if unknown else
                              "names no step; null (the default) builds every step")
    names = [step for step in STEPS if step in (only or STEPS)]  # always in build order
    if dry_run:
        print(f"world build would run, in this order: {', '.join(names)} (each skipped when its output is already "
              f"there{'' if force else ', unless force=true'}); data into {data_dir}, assets into {assets_dir}")
        return names
    for name in names:
        started = time.time()
        STEPS[name](Path(data_dir), Path(assets_dir), seed, force)
        logging.info("world build: %s done in %.0f s", name, time.time() - started)
    return names
