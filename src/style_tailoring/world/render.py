"""Deterministic renderings of world content, as a "photo" or as a "sticker".

photo   — the pretraining domain: a textured two-tone gradient background, shaded objects, lighting noise.
sticker — the target domain: a plain light background, flat fills, a thick white die-cut outline around each
          object and a soft drop shadow. `quality` in [0, 1] degrades a sticker towards photo habits (thinner or
          missing outline, no shadow, textured fill and background), which gives the data sets uneven style.
Shapes are drawn at 4× and downsampled, so edges are anti-aliased like real images.
A sticker's objects are shrunk towards the centre just enough that the whole die-cut stays inside the frame.
`RENDER_VERSIONS` names the look of each style: data sets are regenerated when it changes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from style_tailoring.world.grammar import RGB, Content

SUPER = 4
RENDER_VERSIONS = {"photo": 1, "sticker": 2}  # sticker 2: die-cut kept inside the frame


def _shape_mask(subject: str, box: tuple[float, float, float, float], size: int) -> Image.Image:
    """A binary mask (mode L) of one shape inside `box` = (x0, y0, x1, y1) on a size×size canvas."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if subject == "circle":
        draw.ellipse(box, fill=255)
    elif subject == "square":
        inset = r * 0.12
        draw.rectangle((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=255)
    elif subject == "triangle":
        draw.polygon([(cx, y0), (x1, y1 - r * 0.15), (x0, y1 - r * 0.15)], fill=255)
    elif subject == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        draw.polygon([(cx + q * np.cos(a), cy - q * np.sin(a)) for a, q in zip(angles, radii)], fill=255)
    elif subject == "heart":
        lobe = r * 0.55
        draw.ellipse((cx - 2 * lobe + r * 0.08, y0 + r * 0.1, cx + r * 0.08, y0 + r * 0.1 + 2 * lobe), fill=255)
        draw.ellipse((cx - r * 0.08, y0 + r * 0.1, cx + 2 * lobe - r * 0.08, y0 + r * 0.1 + 2 * lobe), fill=255)
        draw.polygon([(x0 + r * 0.05, cy - r * 0.05), (x1 - r * 0.05, cy - r * 0.05), (cx, y1)], fill=255)
    else:
        raise ValueError(f"unknown subject {subject!r}")
    return mask


def _layout(content: Content, rng: np.random.Generator, size: int) -> list[tuple[float, float, float, float]]:
    """Object boxes on the supersampled canvas: one centred object, or two side by side."""
    jitter = lambda: rng.uniform(-0.05, 0.05) * size  # noqa: E731
    if content.count == "one":
        side = size * rng.uniform(0.5, 0.62)
        cx, cy = size / 2 + jitter(), size / 2 + jitter()
        return [(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)]
    side = size * rng.uniform(0.36, 0.42)
    cy = size / 2 + jitter()
    return [(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            for cx in (size * 0.27 + jitter(), size * 0.73 + jitter())]


def _fit_inside(boxes, margin: float, size: int) -> list[tuple[float, float, float, float]]:
    """Scale the boxes about the canvas centre so that each stays `margin` away from the frame."""
    half = size / 2
    reach = max(max(abs(v - half) for v in box) for box in boxes)
    scale = min(1.0, (half - margin) / reach)
    return [tuple(half + (v - half) * scale for v in box) for box in boxes]


def _gradient(rng, size: int, low: int, high: int) -> np.ndarray:
    a, b = rng.integers(low, high, 3), rng.integers(low, high, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = (np.cos(angle) * xx + np.sin(angle) * yy - min(0, np.cos(angle)) - min(0, np.sin(angle)))
    t = t / (abs(np.cos(angle)) + abs(np.sin(angle)))
    return a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]


def render(content: Content, style: str, rng: np.random.Generator, size: int = 32, quality: float = 1.0) -> Image.Image:
    big = size * SUPER
    q = float(np.clip(quality, 0, 1))
    border = int(round(q * 2.4 * SUPER))  # the sticker's die-cut margin
    boxes = _layout(content, rng, big)
    if style == "sticker":
        boxes = _fit_inside(boxes, border + SUPER, big)
    colour = np.array(RGB[content.colour], dtype=np.float64)
    masks = [np.asarray(_shape_mask(content.subject, box, big), dtype=np.float64) / 255 for box in boxes]
    union = np.clip(sum(masks), 0, 1)
    if style == "photo":
        canvas = _gradient(rng, big, 30, 200)
        canvas += rng.normal(0, 18, (big // 8, big // 8, 1)).repeat(8, 0).repeat(8, 1)  # blotchy texture
        yy, xx = np.mgrid[0:big, 0:big] / big
        light = 1.25 - 0.6 * (0.6 * xx + 0.4 * yy) + rng.normal(0, 0.05)  # light from the top left
        fill = np.clip(colour[None, None] * light[..., None], 0, 255)
        canvas = canvas * (1 - union[..., None]) + fill * union[..., None]
        canvas += rng.normal(0, 10, canvas.shape)  # sensor noise
    elif style == "sticker":
        background = np.array([222, 224, 230], dtype=np.float64)
        canvas = background[None, None] + (1 - q) * (_gradient(rng, big, 120, 240) - background) * 0.8
        mask_img = Image.fromarray((union * 255).astype(np.uint8))
        cut = mask_img.filter(ImageFilter.MaxFilter(2 * border + 1)) if border else mask_img
        cut = np.asarray(cut, dtype=np.float64) / 255
        if q > 0.5:  # drop shadow of the cut, offset down-right and blurred
            shift = SUPER
            shadow = np.roll(np.roll(cut, shift, 0), shift, 1)
            shadow = np.asarray(Image.fromarray((shadow * 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(SUPER)), dtype=np.float64) / 255
            canvas = canvas * (1 - 0.45 * shadow[..., None])
        canvas = canvas * (1 - cut[..., None]) + 255.0 * cut[..., None]
        fill = colour[None, None] + (1 - q) * rng.normal(0, 25, (big // 8, big // 8, 1)).repeat(8, 0).repeat(8, 1)
        canvas = canvas * (1 - union[..., None]) + fill * union[..., None]
        canvas += (1 - q) * rng.normal(0, 8, canvas.shape)
    else:
        raise ValueError(f"style must be photo or sticker, got {style!r}")
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    return image.resize((size, size), Image.LANCZOS)
