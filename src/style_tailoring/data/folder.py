"""A folder of images with captions, in the Hugging Face imagefolder convention.

Captions come from `metadata.jsonl` (`file_name`, `text`) or, failing that, from a `.txt` file beside each image.
A source may train with another caption than the file's: a template over it ("{text}, sks style") or a fixed
prompt ("sks style", then the files need no caption at all). Every problem a sample can have — an image listed but
missing, a file PIL cannot read or that exceeds the decompression-bomb limit, an empty or absent caption, a
`file_name` that is absolute or leaves the folder — is found when the folder is scanned and reported with its path
(and the metadata line): `on_bad_sample="error"` stops there, `"skip"` drops the sample, counts it and lists it in
`bad_samples`. So are a metadata line or `.txt` caption that is not UTF-8 and a second metadata row naming a file
already listed (it would silently double the image's weight; skip keeps the first row). Captions are UTF-8 (a
leading byte-order mark is dropped); metadata lines end at a newline only (JSON Lines: a caption may hold U+2028).
A `file_name` written in another Unicode normalisation than the file's own name (NFC metadata, NFD file names
copied from macOS) finds its file.
With `frames` > 0 every sample is a clip: an animated image (WebP, GIF, APNG) resampled to `frames` frames evenly
over its duration (pixel values frames × 3 × H × W); an image with one frame is a still clip.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from style_tailoring.data.images import (
    DECODE_ERRORS,
    IMAGE_SUFFIXES,
    check_image,
    describe_decode_error,
    image_transform,
    load_clip,
    load_rgb,
)

log = logging.getLogger(__name__)
WHITE = (255, 255, 255)


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


def caption_uses_text(template: Optional[str]) -> bool:
    """Whether a caption template reads the file's caption (null, or a template with {text})."""
    return template is None or "{text}" in template


def apply_caption(template: Optional[str], text: str) -> str:
    if template is None:
        return text
    return template.format(text=text) if "{text}" in template else template


def _inside(root: Path, file_name: str) -> bool:
    """Whether `file_name` names a path inside `root`, lexically (symlinks inside the folder are the user's own)."""
    if os.path.isabs(file_name):
        return False
    full = os.path.normpath(os.path.join(root, file_name))
    return full == os.path.normpath(root) or full.startswith(os.path.normpath(root) + os.sep)


def _find(root: Path, file_name: str) -> Path:
    """The file `file_name` names in `root`, or under the same name in another Unicode normalisation (the file
    system keeps names as bytes: an NFC name does not open an NFD file)."""
    path = root / file_name
    if not path.exists():
        for form in ("NFC", "NFD"):
            other = root / unicodedata.normalize(form, file_name)
            if other.exists():
                return other
    return path


def _not_utf8(err: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"


def _scan(root: Path, needs_text: bool) -> ScanReport:
    report = ScanReport()
    metadata = root / "metadata.jsonl"
    if metadata.is_file():
        listed: dict[str, int] = {}  # the file each row resolved to → its line
        # Split on newlines only: str.splitlines would also split inside a caption holding U+2028 or U+0085.
        for lineno, raw in enumerate(metadata.read_bytes().split(b"\n"), 1):
            where = f"{metadata}:{lineno}"
            try:
                line = raw.decode("utf-8-sig")
            except UnicodeDecodeError as err:
                report.bad.append((where, _not_utf8(err)))
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                report.bad.append((where, f"invalid JSON ({err.msg})"))
                continue
            if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
                report.bad.append((where, "no file_name: a row is a JSON object with a string file_name"))
                continue
            if not _inside(root, row["file_name"]):
                report.bad.append((where, f"file_name {row['file_name']!r} is absolute or leaves the data folder"))
                continue
            path = _find(root, row["file_name"])
            first = listed.setdefault(os.path.normpath(path), lineno)
            if first != lineno:
                report.bad.append((where, f"file_name {row['file_name']!r} names the file of line {first} again"))
                continue
            _check(path, row.get("text"), report, needs_text)
    else:
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            caption = path.with_suffix(".txt")
            try:
                text = caption.read_bytes().decode("utf-8-sig") if needs_text and caption.is_file() else None
            except UnicodeDecodeError as err:
                report.bad.append((str(caption), f"caption {_not_utf8(err)}"))
                continue
            _check(path, text, report, needs_text)
    return report


def caption_problem(text) -> Optional[str]:
    """Why a caption cannot train (not a string, blank, not valid Unicode), or None."""
    if text is not None and not isinstance(text, str):
        return f"caption is not a string ({type(text).__name__})"
    if not (text or "").strip():
        return "missing caption"
    try:
        text.encode("utf-8")  # what the tokenizer does first
    except UnicodeEncodeError:
        return "caption is not valid Unicode (a lone surrogate, such as a \\udcff escape in the JSON)"
    return None


def _check(path: Path, text, report: ScanReport, needs_text: bool) -> None:
    problem = caption_problem(text) if needs_text else None
    if problem:
        report.bad.append((str(path), problem))
        return
    if not path.is_file():
        report.bad.append((str(path), "image file missing"))
        return
    problem = check_image(path)
    if problem:
        report.bad.append((str(path), problem))
        return
    report.samples.append(Sample(path, text.strip() if isinstance(text, str) else ""))


def report_bad_samples(name: str, bad: list[tuple[str, str]], on_bad_sample: str) -> None:
    """A scan's bad samples ((where, why), the first five named): BadSampleError with on_bad_sample="error", one
    warning listing them with "skip"."""
    if not bad:
        return
    first = "; ".join(f"{p}: {why}" for p, why in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    if on_bad_sample == "error":
        raise BadSampleError(f"data set {name!r}: {len(bad)} bad sample(s): {first}{more}. "
                             "Fix them, or set data.on_bad_sample=skip to train without them.")
    log.warning("data set %r: skipping %d bad sample(s): %s%s", name, len(bad), first, more)


class CaptionedImages(Dataset):
    """What every random-access source's items are: sample i (its caption template applied), and with random_flip
    its mirror image as item i + N. A subclass scans its samples and says how to open one (`_open`)."""

    samples: list
    caption_template: Optional[str]
    background: tuple[int, int, int]
    frames: int
    flip_variants: bool

    def _open(self, sample):
        """The file (a path or a file object) sample's image is read from."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.samples) * (2 if self.flip_variants else 1)

    def caption(self, index: int) -> str:
        """The caption item `index` trains with (the source's template applied)."""
        return apply_caption(self.caption_template, self.samples[index % len(self.samples)].text)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index % len(self.samples)]
        source = self._open(sample)
        try:
            if self.frames:
                pixels = torch.stack([self.transform(f) for f in load_clip(source, self.background, self.frames)])
            else:
                pixels = self.transform(load_rgb(source, self.background))
        except DECODE_ERRORS as err:
            raise BadSampleError(f"data set {self.name!r}: cannot decode {sample.path}: "
                                 f"{describe_decode_error(err)}") from err
        if index >= len(self.samples):
            pixels = pixels.flip(-1)
        return {"pixel_values": pixels, "text": self.caption(index)}


class ImageCaptionFolder(CaptionedImages):
    kind = "imagefolder"

    def __init__(self, root, resolution: int, center_crop: bool = True, random_flip: bool = False,
                 on_bad_sample: str = "error", name: str = "", caption: Optional[str] = None,
                 background: tuple[int, int, int] = WHITE, frames: int = 0):
        self.root = Path(root).expanduser()
        self.frames = int(frames)
        self.name = name or self.root.name
        if not self.root.is_dir():
            raise FileNotFoundError(f"data set {self.name!r}: no directory at {self.root}")
        self.caption_template, self.background = caption, tuple(background)
        report = _scan(self.root, needs_text=caption_uses_text(caption))
        self.samples, self.bad_samples = report.samples, report.bad
        report_bad_samples(self.name, self.bad_samples, on_bad_sample)
        if not self.samples:
            raise BadSampleError(f"data set {self.name!r}: no usable image-caption pairs in {self.root}")
        self.resolution, self.center_crop = resolution, center_crop
        # A flipped copy is an item of its own (index + N): deterministic, resumable, and cacheable.
        self.flip_variants = random_flip
        self.transform = image_transform(resolution, center_crop)

    def _open(self, sample):
        return sample.path
