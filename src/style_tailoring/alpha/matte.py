"""Transparency: reading RGBA sets, compositing, the alpha metrics and the baseline a user would try first.

All tensors are float in [0, 1]; colour is straight (un-premultiplied), as PNG stores it.
- `alpha_iou`: intersection over union of the mattes thresholded at 0.5 (the die-cut shape; the translucent
  shadow stays below 0.5);
- `boundary_f`: the F-score of the two mattes' boundary pixels, a boundary pixel counting as matched when the other
  boundary lies within `tolerance` pixels (the boundary F-measure of segmentation benchmarks);
- `psnr`: of a composite against the true composite;
- `threshold_matte`: background removal by thresholding: a pixel is foreground when it differs from the known
  background colour by more than `tau` (0–255) in some channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from style_tailoring.data.images import (  # noqa: F401 - composite and split_rgba are this module's API too
    DECODE_ERRORS,
    IMAGE_SUFFIXES,
    _background,
    composite,
    describe_decode_error,
    open_image,
    split_rgba,
)


def load_rgba(path: Path, resolution: int) -> torch.Tensor:
    """A 4×res×res float tensor of the image at `path` (no alpha channel: opaque); ValueError naming the path."""
    try:
        with open_image(path) as im:
            image = im.convert("RGBA")
    except DECODE_ERRORS as err:
        raise ValueError(f"{path}: {describe_decode_error(err)}") from None
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.BOX)  # PIL resizes RGBA premultiplied
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


class RGBAFolder(torch.utils.data.Dataset):
    """Every image of a folder (sorted, not recursive) as an RGBA tensor: a transparent sticker set."""

    def __init__(self, folder, resolution: int):
        self.folder, self.resolution = Path(folder), resolution
        if not self.folder.is_dir():
            raise FileNotFoundError(f"RGBA data: no folder at {self.folder}")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"RGBA data: no images in {self.folder}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_rgba(self.paths[i], self.resolution)


def alpha_iou(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per image IoU of the mattes thresholded at 0.5 (1 when both are empty)."""
    p, t = pred >= 0.5, true >= 0.5
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of a binary N×1×H×W mask with a 4-neighbour outside it (the frame counts as outside)."""
    eroded = -F.max_pool2d(-F.pad(mask.float(), (1, 1, 1, 1), value=0.0), 3, stride=1)
    return mask & (eroded < 0.5)


def boundary_f(pred: torch.Tensor, true: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """Per image boundary F-score of the mattes thresholded at 0.5."""
    bp, bt = _boundary(pred >= 0.5), _boundary(true >= 0.5)
    near = lambda b: F.max_pool2d(b.float(), 2 * tolerance + 1, stride=1, padding=tolerance) > 0.5  # noqa: E731
    matched_p = (bp & near(bt)).flatten(1).sum(1).float()
    matched_t = (bt & near(bp)).flatten(1).sum(1).float()
    precision = matched_p / bp.flatten(1).sum(1).clamp(min=1)
    recall = matched_t / bt.flatten(1).sum(1).clamp(min=1)
    score = 2 * precision * recall / (precision + recall).clamp(min=1e-8)
    both_empty = (bp.flatten(1).sum(1) == 0) & (bt.flatten(1).sum(1) == 0)
    return torch.where(both_empty, torch.ones_like(score), score)


def psnr(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image PSNR in dB of images in [0, 1]."""
    mse = (image - reference).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return 10 * torch.log10(1 / mse)


def threshold_matte(rgb: torch.Tensor, background, tau: float) -> torch.Tensor:
    """The baseline's binary matte N×1×H×W: foreground where some channel differs from the background by > tau."""
    diff = (rgb - _background(background, rgb)).abs().amax(1, keepdim=True) * 255
    return (diff > tau).float()


def to_rgba_uint8(colour: torch.Tensor, alpha: torch.Tensor) -> np.ndarray:
    """N×H×W×4 uint8 straight-alpha images (what an RGBA PNG stores)."""
    rgba = torch.cat([colour, alpha], 1).clamp(0, 1).permute(0, 2, 3, 1)
    return (rgba * 255).round().to(torch.uint8).cpu().numpy()


def checkerboard_composite(rgba: np.ndarray, square: int = 4) -> np.ndarray:
    """H×W×4 uint8 over a light-grey checkerboard, as image editors show transparency."""
    h, w = rgba.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // square) + (xx // square)) % 2 == 0, 204, 153).astype(np.float32)[..., None]
    alpha = rgba[..., 3:].astype(np.float32) / 255
    return (rgba[..., :3] * alpha + board * (1 - alpha)).round().astype(np.uint8)
