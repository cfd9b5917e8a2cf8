"""Decoding one training image: checked without decoding its pixels, opened under PIL's decompression-bomb limit,
transparency composited onto the background colour, then resized and cropped into the VAE's [-1, 1] range.

Real sticker sets are transparent PNGs: `convert("RGB")` alone would turn every transparent pixel black (or
whatever colour the file stores under alpha 0), so a red square on transparency would train as a red square on
black. A huge image whose header claims more than `PIL.Image.MAX_IMAGE_PIXELS` pixels is refused as a bad sample
before a byte of it is decompressed. Pixels are upright as the EXIF orientation says (a phone's portrait JPEG is
stored sideways), as diffusers' training scripts load them; 16-bit greyscale keeps its top 8 bits (PIL's own
conversion clips it at 255: nearly all white); CMYK is converted by PIL's formula (no colour profile); the file's
content decides its format, not its extension.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError
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
    """Why the file at `path` cannot be used (header, structure, size, truncated data), or None. A PNG's chunks
    are verified (checksums, the end chunk) without decoding its pixels; other formats have no such check, so they
    are decoded: a truncated JPEG opens fine and fails only when its pixels are read, mid-training. A JPEG is
    decoded at 1/8 scale, which still reads every byte."""
    try:
        with open_image(path) as im:
            if im.format == "PNG":
                im.verify()
            else:
                im.draft(im.mode, (1, 1))  # JPEG's scaled decoding; a no-op for other formats
                im.load()
    except DECODE_ERRORS as err:
        return describe_decode_error(err)
    return None


def to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """RGB pixels of `image`, transparent parts composited onto `background` (alpha channel or tRNS/palette
    transparency alike), upright as its EXIF orientation says."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):
        image = _from_16_bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _from_16_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale (a PNG opens as I;16 or I) as 8 bits, its tRNS grey value as alpha."""
    values = np.asarray(image).astype(np.int64)
    grey = (values.clip(0, 65535) >> 8).astype(np.uint8)
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return Image.fromarray(grey)
    return Image.fromarray(np.stack([grey, np.where(values == transparent, 0, 255).astype(np.uint8)], axis=-1))


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


# -- compositing decoded RGBA (an alpha decoder's samples) onto the background the metrics and judges expect --
def _background(background, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(background, dtype=like.dtype, device=like.device).view(1, 3, 1, 1) / 255


def composite(colour: torch.Tensor, alpha: torch.Tensor, background) -> torch.Tensor:
    """Straight colour N×3×H×W with alpha N×1×H×W over a solid RGB (0–255) background."""
    return colour * alpha + _background(background, colour) * (1 - alpha)


def split_rgba(images: np.ndarray, background) -> tuple[np.ndarray, np.ndarray | None]:
    """Decoded pipeline images (N×H×W×3 or ×4 uint8) → (RGB composites onto `background`, RGBA or None)."""
    if images.shape[-1] == 3:
        return images, None
    rgba = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    rgb = composite(rgba[:, :3], rgba[:, 3:], background)
    return (rgb * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), images
