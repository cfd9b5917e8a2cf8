"""Decoding one training image: checked without decoding its pixels, opened under PIL's decompression-bomb limit,
transparency composited onto the background colour, then resized and cropped into the VAE's [-1, 1] range.

Real sticker sets are transparent PNGs: `convert("RGB")` alone would turn every transparent pixel black (or
whatever colour the file stores under alpha 0), so a red square on transparency would train as a red square on
black. A huge image whose header claims more than `PIL.Image.MAX_IMAGE_PIXELS` pixels is refused as a bad sample
before a byte of it is decompressed.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageColor, UnidentifiedImageError
from torchvision.transforms import v2 as T

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
# What PIL raises for files it cannot read; DecompressionBombError is none of these, so it is listed on its own.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning)


def parse_background(value: str) -> tuple[int, int, int]:
    """A PIL colour ("white", "#f5f5f5", "rgb(245,245,245)") as an RGB triple; ValueError if PIL does not know it."""
    colour = ImageColor.getrgb(value)
    return tuple(colour[:3])  # type: ignore[return-value]


def open_image(fp):
    """Image.open with PIL's bomb *warning* (1-2x the pixel limit) raised as an error too, so nothing between the
    limit and twice the limit slips through as a warning in a log."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(fp)


def describe_decode_error(err: BaseException) -> str:
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"decompression bomb: {err} (the limit is PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} "
                "pixels; raise it in your own code only for files you trust)")
    return f"unreadable image ({err})"


def check_image(path) -> Optional[str]:
    """Why the file at `path` cannot be used (header, structure, size), or None; the pixels are not decoded."""
    try:
        with open_image(path) as im:
            im.verify()
    except DECODE_ERRORS as err:
        return describe_decode_error(err)
    return None


def to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB pixels of `image`, transparent parts composited onto `background` (alpha channel or tRNS/palette
    transparency alike)."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(fp, background: tuple[int, int, int]) -> Image.Image:
    with open_image(fp) as im:
        return to_rgb(im, background)


def load_clip(fp, background: tuple[int, int, int], frames: int) -> list[Image.Image]:
    """An animated image (WebP, GIF, APNG) as `frames` RGB frames taken evenly over its duration, each composited
    like a still. Encoders merge identical consecutive frames into one longer frame (a still clip becomes one
    frame), so frames are sampled by time, not by index; a file with one frame is a still clip."""
    with open_image(fp) as im:
        images, durations = [], []
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            im.load()  # WebP reports a frame's duration only once it is decoded
            images.append(to_rgb(im, background))
            durations.append(float(im.info.get("duration") or 0))
    if len(images) == 1:
        return images * frames
    if sum(durations) <= 0:
        durations = [1.0] * len(images)
    ends = np.cumsum(durations)
    times = (np.arange(frames) + 0.5) * ends[-1] / frames
    return [images[min(int(i), len(images) - 1)] for i in np.searchsorted(ends, times, side="right")]


def image_transform(resolution: int, center_crop: bool = True):
    """PIL image → float tensor in [-1, 1] (what the VAE expects), resized and cropped to `resolution`."""
    return T.Compose([
        T.ToImage(),
        T.Resize(resolution, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(resolution) if center_crop else T.RandomCrop(resolution),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize([0.5], [0.5]),
    ])
