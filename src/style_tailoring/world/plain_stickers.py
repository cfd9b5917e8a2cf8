"""Plain stickers the renderer never drew, moving: the animation model tested on inputs it never saw.

A user's sticker is not a world render: no drop shadow, maybe no border, its own size, place and shade of colour.
Here one flat shape (a circle, square, triangle, five-point star or heart, as plain polygons) of a named colour —
the world's hue moved by up to ±25 per channel — sits on the world's grey at a random size (35–55% of the frame)
and place, with a white die-cut border (`bordered`) or none (`borderless`), no shadow, no prop. Its reference clip
moves the whole sticker by the animated world's poses (`style_tailoring.world.motion.pose`: the same bounce, spin,
pulse and shake), so frame fidelity and the motion judge read these clips as they read the renders.

`build_plain_stickers(out_dir)` writes, per kind, every shape in every motion it can show (a circle cannot be seen
to spin): an eval folder as `animation.evaluate` reads it (metadata.jsonl: file_name = the middle frame as PNG,
prompt "one <colour> <shape>, <motion>", motion, clip = the reference as lossless WebP).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from style_tailoring.animation.sample import save_clip
from style_tailoring.io import atomic_dir, write_json, write_jsonl
from style_tailoring.world.grammar import COLOURS, RGB, SUBJECTS
from style_tailoring.world.motion import FRAMES, MOTION_WORDS, pose
from style_tailoring.world.render import Pose

KINDS = ("bordered", "borderless")
BACKGROUND = (222, 224, 230)  # the world's grey (#dee0e6), the animation commands' default background
SUPER = 4  # drawn at 4x and downsampled: anti-aliased edges
SEED = 2024


def outline(shape: str, points: int = 96) -> np.ndarray:
    """The shape's outline as (points, 2) coordinates in a unit box centred on 0 (y down)."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    if shape == "circle":
        xy = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "square":
        xy = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * 0.85
    elif shape == "triangle":
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        xy = np.stack([np.cos(a), -np.sin(a)], 1) + [0, 0.2]
    elif shape == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        xy = np.stack([r * np.cos(a), -r * np.sin(a)], 1)
    elif shape == "heart":
        x, y = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        xy = np.stack([x, -y], 1) / 17
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {SUBJECTS}")
    return xy


def draw_frame(shape: str, colour, centre, radius: float, move: Pose, border: bool, size: int = 32) -> Image.Image:
    """One frame: the sticker (at `centre`, `radius` in frame widths) moved by `move`, on the world's grey."""
    big = size * SUPER
    a = np.deg2rad(move.angle)
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    xy = outline(shape) @ turn.T * radius * move.scale
    xy = (xy + [centre[0] + move.dx, centre[1] + move.dy]) * big
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in xy], fill=255)
    image = Image.new("RGB", (big, big), BACKGROUND)
    if border:  # a die-cut: the shape grown by a white margin (2 px at 32) under itself
        image.paste((255, 255, 255), mask=mask.filter(ImageFilter.MaxFilter(4 * SUPER + 1)))
    image.paste(tuple(int(c) for c in colour), mask=mask)
    return image.resize((size, size), Image.BOX)


def sticker_clips(kind: str, seed: int = SEED, size: int = 32) -> list[dict]:
    """Every shape in every motion it can show, as {"prompt", "motion", "frames"}, drawn from one generator."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    rng = np.random.default_rng((seed, KINDS.index(kind)))
    clips = []
    for shape in SUBJECTS:
        for motion in ("bounce", "spin", "pulse", "shake"):
            if motion == "spin" and shape == "circle":
                continue
            name = COLOURS[int(rng.integers(len(COLOURS)))]
            colour = np.clip(np.array(RGB[name]) + rng.integers(-25, 26, 3), 0, 255)
            radius = rng.uniform(0.175, 0.275)
            centre = 0.5 + rng.uniform(-0.06, 0.06, 2)
            frames = [draw_frame(shape, colour, centre, radius, pose(motion, k), kind == "bordered", size)
                      for k in range(FRAMES)]
            clips.append({"prompt": f"one {name} {shape}, {MOTION_WORDS[motion]}", "motion": motion,
                          "frames": frames})
    return clips


def build_plain_stickers(out_dir, seed: int = SEED) -> Path:
    """out_dir/<kind>/ for each kind (skipped when plain_stickers.json records the same parameters)."""
    out_dir = Path(out_dir)
    params = {"seed": seed, "kinds": list(KINDS), "frames": FRAMES}
    manifest = out_dir / "plain_stickers.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("params") == params and all(
            (out_dir / kind / "metadata.jsonl").is_file() for kind in KINDS):
        return out_dir
    for kind in KINDS:
        with atomic_dir(out_dir / kind) as tmp:
            rows = []
            for i, clip in enumerate(sticker_clips(kind, seed)):
                row = {"file_name": f"{i:06d}.png", "prompt": clip["prompt"], "motion": clip["motion"],
                       "clip": f"{i:06d}.webp"}
                clip["frames"][FRAMES // 2].save(tmp / row["file_name"])
                save_clip(clip["frames"], tmp / row["clip"])
                rows.append(row)
            write_jsonl(tmp / "metadata.jsonl", rows)
    write_json(manifest, {"params": params, "about": "style_tailoring.world.plain_stickers"})
    return out_dir
