"""The animated Sticker World: world content moving in 8-frame loops, and the motion judge that reads the motion.

A clip is one composition (layout, colours, background, noise: one random stream) drawn `FRAMES` times with the
objects moved by a `Pose` per frame; the prop stays. Motions, each a loop (frame 8 would be frame 0 again):
  still   no move
  bounce  up and back down: dy = -0.12 · sin(π k / 8) frame widths
  spin    a full clockwise turn, 45° a frame (a circle looks the same turned, so it never spins)
  pulse   grows and shrinks: scale 1 + 0.22 · sin(2π k / 8)
  shake   side to side every frame: dx = ±0.05
A prompt names a motion after a comma, "one red star, spinning" (`motion_caption`, `parse_motion`).
The motion judge (`train_motion_judge`, shipped in assets/sticker_world/judges_motion, rebuilt by
`python -m style_tailoring.world only=motion`) is a JudgeNet over the frames stacked as channels.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from style_tailoring.animation.sample import save_clip  # the world's clips are written like any
from style_tailoring.io import atomic_dir, write_json
from style_tailoring.world.grammar import Content, caption, sample_content
from style_tailoring.world.render import Pose, render, sample_layout

log = logging.getLogger(__name__)
FRAMES = 8
MOTIONS = ("still", "bounce", "spin", "pulse", "shake")
MOTION_WORDS = {"still": "still", "bounce": "bouncing", "spin": "spinning", "pulse": "pulsing", "shake": "shaking"}


def pose(motion: str, k: int, frames: int = FRAMES) -> Pose:
    """Frame k's pose of a motion."""
    phase = k / frames
    if motion == "still":
        return Pose()
    if motion == "bounce":
        return Pose(dy=-0.12 * float(np.sin(np.pi * phase)))
    if motion == "spin":
        return Pose(angle=-360.0 * phase)
    if motion == "pulse":
        return Pose(scale=1 + 0.22 * float(np.sin(2 * np.pi * phase)))
    if motion == "shake":
        return Pose(dx=0.05 * (1 if k % 2 == 0 else -1))
    raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")


def motions_for(content: Content) -> tuple[str, ...]:
    """The motions a content can show: a circle cannot be seen to spin."""
    return tuple(m for m in MOTIONS if not (m == "spin" and content.subject == "circle"))


def motion_caption(content: Content, motion: str | None) -> str:
    return caption(content) + (f", {MOTION_WORDS[motion]}" if motion else "")


def parse_motion(prompt: str) -> str | None:
    """The motion a prompt names (its first comma-separated phrase that is a motion word), or None."""
    words = {word: motion for motion, word in MOTION_WORDS.items()}
    return next((words[p.strip()] for p in prompt.split(",")[1:] if p.strip() in words), None)


def render_clip(content: Content, motion: str, style: str, rng: np.random.Generator, *, quality: float = 1.0,
                layout=None, size: int = 32, frames: int = FRAMES) -> list[Image.Image]:
    """`frames` images of one composition with its objects moving; the composition and every random draw are the
    same in each frame (one seed from `rng`), so only the motion changes."""
    layout = layout or sample_layout(content, rng)
    seed = int(rng.integers(2**63))
    return [render(content, style, np.random.default_rng(seed), size=size, quality=quality, layout=layout,
                   pose=pose(motion, k, frames)) for k in range(frames)]


def clip_tensor(frames: list[Image.Image]) -> torch.Tensor:
    """A clip as a uint8 tensor (frames, 3, H, W)."""
    return torch.from_numpy(np.stack([np.asarray(f.convert("RGB")) for f in frames])).permute(0, 3, 1, 2)


def stacked(clips: torch.Tensor) -> torch.Tensor:
    """(clips, frames, 3, H, W) → (clips, frames · 3, H, W): the motion judge's input."""
    return clips.flatten(1, 2)


# -- the animated data sets -------------------------------------------------------------------------------------------
def held_out_motions() -> dict[str, str]:
    """Per shape, the motion no training clip shows it in (the eval's held-out motion × content combinations)."""
    from style_tailoring.world.grammar import SUBJECTS

    return {subject: ("bounce", "pulse", "shake", "spin", "bounce")[i] for i, subject in enumerate(SUBJECTS)}


def training_motions(content: Content) -> list[str]:
    """The motions a training clip of `content` may show: those it can show, less its shape's held-out one."""
    held = held_out_motions()[content.subject]
    return [m for m in motions_for(content) if m != held]


ANIMATED_SPLITS = {  # name: (clips, sticker quality range, share of weak captions)
    "video_domain": (1200, (0.2, 1.0), 0.3),
    "video_prompts": (120, (1.0, 1.0), 0.0),
    "video_eval": (0, (1.0, 1.0), 0.0),
    "video_val": (0, (1.0, 1.0), 0.0),
}


def build_animated(out_dir, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """The animated world's folders under `out_dir` (skipped when `animated.json` records the same parameters):
    video_domain  weakly in-domain clips: white-border stickers of uneven quality in every training motion, a third
                  of the captions without their motion or with a wrong one (animated WebP + metadata.jsonl)
    video_prompts training stickers and prompts (training content, training motions; the same layout as
                  video_eval): what the ensemble of teachers animates for people to keep the best
    video_eval    for each held-out motion × content combination: the conditioning sticker (a PNG, the clip's
                  middle frame), the prompt "<content>, <motion>" and the rendered clip itself (metadata.jsonl:
                  file_name, prompt, motion, clip) — what `python -m style_tailoring.animate` and the animation
                  metrics read; the clip is the reference of frame fidelity and the renders' own scores
    video_val     the same held-out combinations in other layouts and draws (its own random stream), laid out as
                  video_eval: where an animation recipe is chosen, so video_eval's numbers are not chosen on."""
    from style_tailoring.io import write_jsonl
    from style_tailoring.world.datasets import contents_for

    out_dir = Path(out_dir)
    splits = {name: (int((sizes or {}).get(name, n)), q, weak) for name, (n, q, weak) in ANIMATED_SPLITS.items()}
    params = {"seed": seed, "frames": FRAMES, "splits": {k: [v[0], list(v[1]), v[2]] for k, v in splits.items()},
              "held_out": held_out_motions(), "motions": list(MOTIONS), "eval_reference_clips": True}
    manifest = out_dir / "animated.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("params") == params and all(
            (out_dir / name / "metadata.jsonl").is_file() for name in splits):
        return out_dir
    held, pool = held_out_motions(), contents_for("train")
    for name, (n, quality, weak) in splits.items():
        rng = np.random.default_rng((seed, sum(map(ord, name))))
        rows = []
        with atomic_dir(out_dir / name) as tmp:
            referenced = name in ("video_eval", "video_val")
            if referenced or name == "video_prompts":
                pairs = [(c, held[c.subject] if held[c.subject] in motions_for(c) else "bounce")
                         for c in contents_for("eval")] if referenced else [
                    (c, options[int(rng.integers(len(options)))])
                    for c in (pool[int(rng.integers(len(pool)))] for _ in range(n))
                    for options in [training_motions(c)]]
                for content, motion in pairs:
                    frames = render_clip(content, motion, "sticker", rng)
                    i = len(rows)
                    rows.append({"file_name": f"{i:06d}.png", "prompt": motion_caption(content, motion),
                                 "motion": motion, **content.as_dict()})
                    frames[FRAMES // 2].save(tmp / rows[-1]["file_name"])
                    if referenced:  # the reference clip (drawing it consumed no random numbers)
                        rows[-1]["clip"] = f"{i:06d}.webp"
                        save_clip(frames, tmp / rows[-1]["clip"])
            else:
                for i in range(n):
                    content = pool[int(rng.integers(len(pool)))]
                    options = training_motions(content)
                    motion = options[int(rng.integers(len(options)))]
                    frames = render_clip(content, motion, "sticker", rng, quality=float(rng.uniform(*quality)))
                    text = motion_caption(content, motion)
                    if rng.random() < weak:  # the motion left out, or a wrong one named
                        wrong = [m for m in MOTIONS if m != motion]
                        text = motion_caption(content, None if rng.random() < 0.5 else
                                              wrong[int(rng.integers(len(wrong)))])
                    rows.append({"file_name": f"{i:06d}.webp", "text": text, "motion": motion,
                                 **content.as_dict()})
                    save_clip(frames, tmp / rows[-1]["file_name"])
            write_jsonl(tmp / "metadata.jsonl", rows)
    write_json(manifest, {"params": params, "about": "the splits are described in "
                                                      "style_tailoring.world.motion.build_animated"})
    return out_dir


# -- the motion judge -----------------------------------------------------------------------------------------------
def motion_pool(n: int, seed: int) -> dict:
    """n clips: any content, a motion it can show, photo or sticker (any quality), as (n, 8, 3, 32, 32) uint8."""
    rng = np.random.default_rng((seed, 21))
    clips, labels = [], []
    for _ in range(n):
        content = sample_content(rng)
        motion = str(rng.choice(motions_for(content)))
        sticker = rng.random() < 0.5
        clips.append(clip_tensor(render_clip(content, motion, "sticker" if sticker else "photo", rng,
                                             quality=float(rng.uniform(0, 1)) if sticker else 0.0)))
        labels.append(MOTIONS.index(motion))
    return {"images": torch.stack(clips), "labels": torch.tensor(labels), "captions": [""] * n}


def train_motion_judge(out_dir, base_dir, seed: int = 0, pool_size: int = 3000, steps: int = 600) -> dict:
    """Train the motion judge on rendered clips; held-out accuracy on fresh clips, also through the base VAE."""
    from diffusers import AutoencoderKL

    from style_tailoring.world.ceiling import round_trip
    from style_tailoring.world.judgenet import WIDTH, ClipJudgeNet, save_networks
    from style_tailoring.world.judges import train_classifier

    torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS") or 2), os.cpu_count() or 1))
    started = time.time()
    pool = motion_pool(pool_size, seed)
    log.info("rendered %d clips in %.0f s", pool_size, time.time() - started)
    frames = pool["images"].shape[1]
    torch.manual_seed(seed)
    net = ClipJudgeNet({"motion": len(MOTIONS)}, WIDTH, frames)
    # Frames stacked as channels: the image augmentation blurs and noises every frame of a clip alike.
    flat = {"images": stacked(pool["images"]), "captions": pool["captions"]}
    net = train_classifier(net, flat, lambda out, idx: F.cross_entropy(out["motion"], pool["labels"][idx]), steps,
                           seed)
    held_out = motion_pool(600, seed + 1)
    vae = AutoencoderKL.from_pretrained(Path(base_dir) / "vae", use_safetensors=True).eval()
    through_vae = round_trip(vae, held_out["images"].flatten(0, 1)).unflatten(0, held_out["images"].shape[:2])
    result = {}
    for name, clips in (("motion", held_out["images"]), ("motion/vae_round_trip", through_vae)):
        predicted = predict(net, clips)
        result[name] = float((predicted == held_out["labels"]).float().mean())
        if name == "motion":
            for i, motion in enumerate(MOTIONS):
                chosen = held_out["labels"] == i
                result[f"motion/{motion}"] = float((predicted[chosen] == i).float().mean())
    with atomic_dir(Path(out_dir)) as tmp:
        save_networks(tmp, {"motion": net}, motions=list(MOTIONS), seed=seed)
        write_json(tmp / "accuracy.json", {**result, "held_out_clips": 600, "pool_size": pool_size, "steps": steps,
                                           "train_seconds": round(time.time() - started),
                                           "command": "python -m style_tailoring.world only=motion force=true"})
    log.info("motion judge accuracy: %s", result)
    return result


@torch.no_grad()
def predict(net, clips: torch.Tensor) -> torch.Tensor:
    """The motion index each clip (clips, frames, 3, H, W) shows."""
    return torch.cat([net(stacked(chunk))["motion"].argmax(-1) for chunk in clips.split(128)])


def load_motion_judge(path):
    """The shipped motion judge's network (a clip network over the frames and their differences)."""
    from style_tailoring.world.judgenet import load_networks

    return load_networks(path)["motion"]


class MotionJudge:
    """The motion judge as the animation metrics use it (`motion_judge: {_target_: ...MotionJudge, path: DIR}`):
    `motions(clips)` names the motion each clip (N, frames, 3, H, W) uint8 shows, `prompt_motion(prompt)` the one a
    prompt asks for (None if it names none)."""

    def __init__(self, path):
        self.net = load_motion_judge(path)

    def motions(self, clips: torch.Tensor) -> list[str]:
        return [MOTIONS[i] for i in predict(self.net, clips).tolist()]

    @staticmethod
    def prompt_motion(prompt: str) -> str | None:
        return parse_motion(prompt)


# -- the shipped world motion model ---------------------------------------------------------------------------------
ADAPTER_STEPS, ADAPTER_LR, ADAPTER_BATCH = 1000, 5e-4, 8
# The shipped recipe (chosen on validation: experiments/results/animation_select.md): the sticker's latent on every
# frame and the whole UNet trained: the image layers learn the weak video's stickers, and their cross-attention is the
# only way the prompt's motion reaches the model (motion modules attend over frames, not to the text).
ANIMATION_RECIPE = ("model.motion.conditioning=all", "model.motion.train=all")


def train_world_animation_unet(data_dir, assets_dir, seed: int = 0, steps: int = ADAPTER_STEPS) -> Path:
    """The world base finetuned on the weak video set as a motion model with ANIMATION_RECIPE (the train CLI's core,
    `strategy=base` on `video_domain`): its whole motion UNet swapped into assets_dir/animation_unet, with
    animation.json (how the sticker is given) and train.json (settings, time)."""
    import shutil

    from style_tailoring.config import REPO_ROOT, compose, to_run_config
    from style_tailoring.training.run import run

    data = build_animated(Path(data_dir) / "animated", seed=seed)
    shown = data.resolve().relative_to(REPO_ROOT) if data.resolve().is_relative_to(REPO_ROOT) else data
    overrides = ["strategy=base", "data=folder", "model=sticker_world_base", "model.motion.enabled=true",
                 *ANIMATION_RECIPE, "eval.enabled=false", f"trainer.max_steps={steps}",
                 f"data.batch_size={ADAPTER_BATCH}", f"optim.lr={ADAPTER_LR}", "logger=none", f"seed={seed}",
                 "trainer.enable_progress_bar=false", f"checkpoint.every_n_steps={steps}"]
    work = Path(assets_dir) / ".animation_unet_build"
    shutil.rmtree(work, ignore_errors=True)
    started = time.time()
    cfg = compose("train", overrides=[*overrides, f"data.domain_dir={data / 'video_domain'}", f"run_dir={work}",
                                      f"paths.root_dir={REPO_ROOT}", f"paths.data_dir={Path(data_dir).parent}"])
    metrics = run(to_run_config(cfg))
    with atomic_dir(Path(assets_dir) / "animation_unet") as tmp:
        shutil.copytree(work / "pipeline" / "unet", tmp, dirs_exist_ok=True)
        motion = json.loads((work / "pipeline" / "style_tailoring.json").read_text())["motion"]
        write_json(tmp / "animation.json", {k: motion[k] for k in ("conditioning", "frames", "heads")})
        write_json(tmp / "train.json", {
            "overrides": [f"data.domain_dir={shown / 'video_domain'}", *overrides], "seed": seed,
            "seconds": round(time.time() - started),
            "loss": metrics.get("train/loss"),
            "command": "python -m style_tailoring.world only=motion force=true",
            "train_command": f"python -m style_tailoring.train data.domain_dir={shown / 'video_domain'} "
                             + " ".join(overrides)})
    shutil.rmtree(work, ignore_errors=True)
    return Path(assets_dir) / "animation_unet"
