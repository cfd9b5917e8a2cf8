"""Hugging Face `datasets` as sources: parquet files in the Hub's layout, or a `save_to_disk` folder.

A source directory (`data.sources.<name>.dir`) is read through the `datasets` library when it holds

- parquet files in the `datasets` layout: an `image` column of `{bytes, path}` (the `datasets.Image` feature) and a
  `text` column, e.g. `data/train-00000-of-00001.parquet` (the train split's files: those named `train*` when any
  are, else every `*.parquet` up to three folders down), read with `load_dataset("parquet", data_files=...)`;
- or a `Dataset.save_to_disk` folder (`dataset_info.json`, `state.json` and arrow files; a `DatasetDict`'s
  `train` split), read with `load_from_disk`.

It is the imagefolder's twin (`data/folder.py`): the same bad-sample scan before any model is built, each bad row
named by its file and row index (`.../train-00000-of-00001.parquet row 2: unreadable image (...)`), undecodable
image bytes and a missing or blank caption alike, `data.on_bad_sample=error|skip`; the same caption templates, the
same decoding (EXIF orientation, transparency composited onto `data.background`), flipped copies as items of their
own, the latent cache (keyed by the data files' names, sizes and modification times and every row's caption, so it
changes with the data) and exact resume.

`data.sources.<name>.streaming=true` reads the files with datasets' `streaming=True` instead, one file after the
other, for sets too large to copy into datasets' arrow cache or the latent cache (`data.cache.enabled=false`): no
scan up front; each (rank, data-loader worker) reads its own files, as for tar shards (`data/shards.py`), a bad row
fails (or is skipped and counted) when it is met, named by file and row, and a resumed run skips what each had read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from style_tailoring.config import ConfigError
from style_tailoring.data.folder import (
    WHITE,
    BadSampleError,
    CaptionedImages,
    ScanReport,
    caption_problem,
    caption_uses_text,
    report_bad_samples,
)
from style_tailoring.data.images import (
    check_image,
    image_transform,
)
from style_tailoring.data.shards import ShardStream

log = logging.getLogger(__name__)
IMAGE, TEXT = "image", "text"
SAVED = ("dataset_info.json", "state.json")  # what Dataset.save_to_disk writes beside its arrow files


def _parquet_files(root: Path) -> list[Path]:
    found = sorted({p for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet") for p in root.glob(pattern)})
    train = [p for p in found if p.name.startswith("train") or p.parent.name == "train"]
    return train or found


def is_datasets_dir(path) -> bool:
    """Whether `path` holds a `datasets` data set: a save_to_disk folder (or DatasetDict) or parquet files."""
    root = Path(path).expanduser()
    return root.is_dir() and (all((root / f).is_file() for f in SAVED) or (root / "dataset_dict.json").is_file()
                              or bool(_parquet_files(root)))


def layout(root: Path, name: str) -> tuple[str, Path, list[Path]]:
    """("arrow" | "parquet", the folder to load, the train split's data files in row order)."""
    key = f"data.sources.{name}.dir"
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        if "train" not in splits:
            raise ConfigError(key, f"{root} is a DatasetDict without a train split (splits: {splits})")
        root = root / "train"
    if all((root / f).is_file() for f in SAVED):
        files = [root / f["filename"] for f in json.loads((root / "state.json").read_text())["_data_files"]]
        return "arrow", root, files
    files = _parquet_files(root)
    if not files:
        raise ConfigError(key, f"{root} holds no parquet files and is no save_to_disk folder")
    return "parquet", root, files


def _row_counts(kind: str, files: list[Path]) -> list[int]:
    """Rows per data file (from the files' own metadata), so a row of the whole set can be named by file and row."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        return [pq.ParquetFile(f).metadata.num_rows for f in files]
    from datasets import Dataset as HFDataset

    return [len(HFDataset.from_file(str(f))) for f in files]


def _check_columns(features, root: Path, name: str, needs_text: bool) -> None:
    columns = list(features)
    if IMAGE not in columns:
        raise ConfigError(f"data.sources.{name}.dir", f"{root} has no {IMAGE!r} column (columns: {columns})")
    if needs_text and TEXT not in columns:
        raise ConfigError(f"data.sources.{name}.dir", f"{root} has no {TEXT!r} column (columns: {columns}); give "
                          f"data.sources.{name}.caption a fixed prompt to train without captions")


def _image_bytes(cell, root: Path) -> tuple[Optional[bytes], Optional[str]]:
    """(bytes, None) of an image cell ({bytes, path}: bytes, else the file `path` names, relative to the data set's
    folder), or (None, why not)."""
    cell = cell or {}
    if cell.get("bytes") is not None:
        return cell["bytes"], None
    if cell.get("path"):
        path = Path(cell["path"]) if Path(cell["path"]).is_absolute() else root / cell["path"]
        return (path.read_bytes(), None) if path.is_file() else (None, f"image file missing ({cell['path']})")
    return None, "no image (neither bytes nor a path)"


@dataclass
class Row:
    path: str  # where it is: "FILE row N"
    text: str
    row: int  # its index in the data set


class DatasetsSource(CaptionedImages):
    """A `datasets` data set (parquet or save_to_disk) as a random-access source, scanned like a folder."""

    def __init__(self, root, resolution: int, center_crop: bool = True, random_flip: bool = False,
                 on_bad_sample: str = "error", name: str = "", caption: Optional[str] = None,
                 background: tuple[int, int, int] = WHITE, frames: int = 0):
        import datasets

        self.root = Path(root).expanduser()
        self.name, self.frames = name or self.root.name, int(frames)
        self.caption_template, self.background = caption, tuple(background)
        self.format, folder, self.files = layout(self.root, self.name)
        self.kind = "save_to_disk (datasets)" if self.format == "arrow" else "parquet (datasets)"
        if self.format == "arrow":
            dataset = datasets.load_from_disk(str(folder))
        else:
            dataset = datasets.load_dataset("parquet", data_files=[str(f) for f in self.files], split="train")
        needs_text = caption_uses_text(caption)
        _check_columns(dataset.features, self.root, self.name, needs_text)
        self.dataset = dataset.cast_column(IMAGE, datasets.Image(decode=False))
        self.folder = folder
        report = self._scan(needs_text)
        self.samples, self.bad_samples = report.samples, report.bad
        report_bad_samples(self.name, self.bad_samples, on_bad_sample)
        if not self.samples:
            raise BadSampleError(f"data set {self.name!r}: no usable image-caption rows in {self.root}")
        self.resolution, self.center_crop, self.flip_variants = resolution, center_crop, random_flip
        self.transform = image_transform(resolution, center_crop)

    def _where(self) -> list[str]:
        return [f"{file} row {row}" for file, count in zip(self.files, _row_counts(self.format, self.files))
                for row in range(count)]

    def _scan(self, needs_text: bool, batch: int = 256) -> ScanReport:
        report, where = ScanReport(), self._where()
        texts = self.dataset[TEXT] if TEXT in self.dataset.column_names else [None] * len(self.dataset)
        images = self.dataset.select_columns([IMAGE])
        for start in range(0, len(self.dataset), batch):
            cells = images[start:start + batch][IMAGE]
            for i, cell in enumerate(cells, start):
                text = texts[i]
                problem = caption_problem(text) if needs_text else None
                data = None
                if problem is None:
                    data, problem = _image_bytes(cell, self.folder)
                if problem is None:
                    problem = check_image(io.BytesIO(data))
                if problem:
                    report.bad.append((where[i], problem))
                else:
                    report.samples.append(Row(where[i], text.strip() if isinstance(text, str) else "", i))
        return report

    def content_digest(self) -> str:
        """What the latent cache key hashes of the data: the data files (name, size, modification time) and every
        row that trains, with the caption it trains with."""
        digest = hashlib.sha1()
        for file in self.files:
            stat = file.stat()
            digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        for index, sample in enumerate(self.samples):
            digest.update(f"{sample.row}|{self.caption(index)}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def _open(self, sample):
        data, _ = _image_bytes(self.dataset[sample.row][IMAGE], self.folder)
        return io.BytesIO(data)


class DatasetsStream(ShardStream):
    """A `datasets` data set read with `streaming=True`, file by file: each data file is a shard of ShardStream's
    reading order (rank × worker subsets, reshuffled per pass, resumed by skipping)."""

    def __init__(self, root, resolution: int, center_crop: bool = True, random_flip: bool = False,
                 on_bad_sample: str = "error", name: str = "", caption=None, background=WHITE):
        self.root = Path(root).expanduser()
        self.name = name or self.root.name
        self.caption_template, self.background = caption, tuple(background)
        self.format, self.folder, files = layout(self.root, self.name)
        self.kind = f"{'save_to_disk' if self.format == 'arrow' else 'parquet'} (datasets, streaming)"
        self.shards = list(zip(files, _row_counts(self.format, files)))
        self.total = sum(count for _, count in self.shards)
        self.random_flip, self.on_bad_sample = random_flip, on_bad_sample
        self.transform = image_transform(resolution, center_crop)
        self.skipped_bad = 0
        self.needs_text = caption_uses_text(caption)

    def _pairs(self, path: Path, lazy: bool):
        """(key "row N", image bytes, caption) of each row of one data file, streamed by datasets."""
        import datasets

        stream = datasets.load_dataset(self.format, data_files=[str(path)], split="train", streaming=True)
        _check_columns(stream.features or {IMAGE: None, TEXT: None}, self.root, self.name, self.needs_text)
        stream = stream.cast_column(IMAGE, datasets.Image(decode=False))
        for row, example in enumerate(stream):
            data, _ = _image_bytes(example[IMAGE], self.folder)
            text = example.get(TEXT)
            yield f"row {row}", data or b"", text.strip() if isinstance(text, str) else ""
