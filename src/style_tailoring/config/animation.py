"""The animation commands: `animate`, `animation.evaluate` and `hitl.teachers` (the ensemble of teachers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class AnimationSettings:
    """The settings every animation command shares (animate, animation.evaluate, hitl.teachers); the world's
    defaults come from conf/animation/sticker_world.yaml."""

    # An exported animation pipeline (RUN/pipeline), or an image pipeline a motion adapter or a motion UNet goes on.
    pipeline: str = MISSING
    # A whole motion UNet (UNetMotionModel folder: RUN/pipeline/unet of a model.motion.train=all run, or the world's
    # shipped one) swapped into the image pipeline; the motion adapter is then unused.
    unet: Optional[str] = None
    steps: int = 8
    guidance_scale: float = 3.0
    seed: int = 0
    scheduler: Optional[str] = "DPMSolverMultistepScheduler"
    # Transparent stickers are composited onto this colour.
    background: str = "white"
    # Load pickled (.bin) pipelines and motion adapters: unpickling runs any code the file holds.
    allow_pickle: bool = False
    paths: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnimateConfig(AnimationSettings):
    """`python -m style_tailoring.animate`: a sticker and a prompt become an animated sticker."""

    image: str = MISSING
    prompt: str = MISSING
    # A motion adapter (RUN/motion_adapter) for an image pipeline; ignored for an exported animation pipeline.
    motion_adapter: Optional[str] = None
    out: str = "animation.webp"
    fps: int = 8
    device: str = "cpu"


@dataclass
class AnimationEvalConfig(AnimationSettings):
    """`python -m style_tailoring.animation.evaluate`: animate a folder of stickers and prompts, score the clips."""

    motion_adapter: Optional[str] = None
    # metadata.jsonl rows (file_name, prompt) of conditioning stickers.
    eval_dir: str = MISSING
    out: str = "animation_eval"
    seeds_per_prompt: int = 4
    # Judges as `_target_` nodes: a motion judge (motions(clips), prompt_motion(prompt)) and image judges
    # (predict_attributes, style_score, alignment_per_sample); a local CLIP directory for frame-to-frame similarity.
    motion_judge: Optional[dict[str, Any]] = None
    judges: Optional[dict[str, Any]] = None
    clip: Optional[str] = None
    # A `_target_` that puts eval_dir on disk first (the animated world's builder).
    prepare: Optional[dict[str, Any]] = None


@dataclass
class TeachersConfig(AnimationSettings):
    """`python -m style_tailoring.hitl.teachers`: the ensemble of teachers animates the training stickers, raters
    keep the best clip of each (`pipeline`: the image pipeline motion-adapter teachers go on)."""

    teachers: list[str] = field(default_factory=list)
    # metadata.jsonl rows (file_name, prompt) of the training stickers.
    prompts_dir: str = MISSING
    out: str = "teachers"
    k: int = 2
    motion_judge: Optional[dict[str, Any]] = None
    # Above the image model frame by frame (8.9 dB on the world): the sticker is kept. Model clips are blurred by the
    # VAE and few steps, so a render-level bar (20 dB: the same sticker vs another) kept 1 of 720 teacher clips.
    min_fidelity: float = 12.0
    ratings: Optional[str] = None
    prepare: Optional[dict[str, Any]] = None
