"""A folder of images with captions, in the Hugging Face imagefolder convention.

Captions come from `metadata.jsonl` (`file_name`, `text`) or, failing that, from a `.txt` file beside each image.
Every problem a sample can have — an image listed but missing, a file PIL cannot read, an empty or absent caption —
is found when the folder is scanned and reported with its path: `on_bad_sample="error"` stops there,
`"skip"` drops the sample, counts it and lists it in `bad_samples`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class BadSampleError(ValueError):
    pass


@dataclass
class Sample:
    path: Path
    text: str


@dataclass
class ScanReport:
    samples: list[Sample] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _scan(root: Path) -> ScanReport:
    report = ScanReport()
    metadata = root / "metadata.jsonl"
    if metadata.is_file():
        for lineno, line in enumerate(metadata.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                report.bad.append((f"{metadata}:{lineno}", f"invalid JSON ({err.msg})"))
                continue
            if "file_name" not in row:
                report.bad.append((f"{metadata}:{lineno}", "no file_name"))
                continue
            _check(root / row["file_name"], row.get("text"), report)
    else:
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            caption = path.with_suffix(".txt")
            _check(path, caption.read_text().strip() if caption.is_file() else None, report)
    return report


def _check(path: Path, text, report: ScanReport) -> None:
    if not isinstance(text, str) or not text.strip():
        report.bad.append((str(path), "missing caption"))
        return
    if not path.is_file():
        report.bad.append((str(path), "image file missing"))
        return
    try:
        with Image.open(path) as im:
            im.verify()  # header + structure, without decoding pixels; decode errors are caught at load time
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        report.bad.append((str(path), f"unreadable image ({err})"))
        return
    report.samples.append(Sample(path, text.strip()))


def image_transform(resolution: int, center_crop: bool = True):
    """PIL image → float tensor in [-1, 1] (what the VAE expects), resized and cropped to `resolution`."""
    return T.Compose([
        T.ToImage(),
        T.Resize(resolution, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(resolution) if center_crop else T.RandomCrop(resolution),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize([0.5], [0.5]),
    ])


class ImageCaptionFolder(Dataset):
    def __init__(self, root, resolution: int, center_crop: bool = True, random_flip: bool = False,
                 on_bad_sample: str = "error", name: str = ""):
        self.root = Path(root).expanduser()
        self.name = name or self.root.name
        if not self.root.is_dir():
            raise FileNotFoundError(f"data set {self.name!r}: no directory at {self.root}")
        report = _scan(self.root)
        self.samples, self.bad_samples = report.samples, report.bad
        if self.bad_samples:
            first = "; ".join(f"{p}: {why}" for p, why in self.bad_samples[:5])
            more = f" (and {len(self.bad_samples) - 5} more)" if len(self.bad_samples) > 5 else ""
            if on_bad_sample == "error":
                raise BadSampleError(
                    f"data set {self.name!r}: {len(self.bad_samples)} bad sample(s): {first}{more}. "
                    "Fix them, or set data.on_bad_sample=skip to train without them."
                )
            log.warning("data set %r: skipping %d bad sample(s): %s%s", self.name, len(self.bad_samples), first, more)
        if not self.samples:
            raise BadSampleError(f"data set {self.name!r}: no usable image-caption pairs in {self.root}")
        self.resolution, self.center_crop = resolution, center_crop
        # A flipped copy is an item of its own (index + N): deterministic, resumable, and cacheable.
        self.flip_variants = random_flip
        self.transform = image_transform(resolution, center_crop)

    def __len__(self) -> int:
        return len(self.samples) * (2 if self.flip_variants else 1)

    def caption(self, index: int) -> str:
        return self.samples[index % len(self.samples)].text

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index % len(self.samples)]
        try:
            with Image.open(sample.path) as im:
                image = im.convert("RGB")
        except (OSError, SyntaxError) as err:
            raise BadSampleError(f"data set {self.name!r}: cannot decode {sample.path}: {err}") from err
        pixels = self.transform(image)
        if index >= len(self.samples):
            pixels = pixels.flip(-1)
        return {"pixel_values": pixels, "text": sample.text}
