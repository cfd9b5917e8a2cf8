"""Streaming tar shards for data sets too big for a folder scan (the million-image domain set).

Layout (webdataset-compatible): `shard-000000.tar`, ... each holding `<key>.<png|jpg|...>` + `<key>.txt` pairs,
plus `shards.json` with the sample count of every shard. Convert an imagefolder with

    python -m style_tailoring.data.shards folder=FOLDER out_dir=OUT_DIR [shard_size=1000]

and point a source at OUT_DIR (e.g. `data.domain_dir=OUT_DIR`). Shards are read sequentially. Each (rank,
data-loader worker) reads its own subset of the shards, reshuffled every pass, so no two consumers read the same
sample in a pass; with fewer shards than consumers, consumers share shards and take every k-th sample instead.
A resumed run skips, without decoding, the samples each consumer had already read.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterator

import hydra
import numpy as np
from omegaconf import DictConfig

from style_tailoring.config import ConfigError, ShardsConfig, merge_into_schema
from style_tailoring.data.folder import WHITE, BadSampleError, ImageCaptionFolder, apply_caption
from style_tailoring.data.images import DECODE_ERRORS, IMAGE_SUFFIXES, describe_decode_error, image_transform, load_rgb
from style_tailoring.io import write_json

INDEX = "shards.json"


def is_shard_dir(path) -> bool:
    return (Path(path) / INDEX).is_file()


def write_shards(folder, out_dir, shard_size: int = 1000) -> Path:
    """Pack an imagefolder (validated by the folder scan, so bad samples fail here) into tar shards."""
    source = ImageCaptionFolder(folder, resolution=8)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, len(source.samples), shard_size):
        chunk = source.samples[start:start + shard_size]
        name = f"shard-{len(shards):06d}.tar"
        tmp = out_dir / f".{name}.tmp"
        with tarfile.open(tmp, "w") as tar:
            for offset, sample in enumerate(chunk):
                key = f"{start + offset:09d}"
                tar.add(sample.path, arcname=key + sample.path.suffix.lower())
                caption = sample.text.encode()
                info = tarfile.TarInfo(key + ".txt")
                info.size = len(caption)
                tar.addfile(info, io.BytesIO(caption))
        tmp.replace(out_dir / name)
        shards.append({"name": name, "count": len(chunk)})
    write_json(out_dir / INDEX, {"shards": shards, "total": sum(s["count"] for s in shards)})
    return out_dir


class ShardStream:
    """A source whose items arrive in order: `iterate(...)` instead of random access."""

    streaming = True
    kind = "tar shards (streaming)"

    def __init__(self, root, resolution: int, center_crop: bool = True, random_flip: bool = False,
                 on_bad_sample: str = "error", name: str = "", caption=None, background=WHITE):
        self.root, self.name = Path(root), name or Path(root).name
        self.caption_template, self.background = caption, tuple(background)
        index = json.loads((self.root / INDEX).read_text())
        self.shards = [(self.root / s["name"], s["count"]) for s in index["shards"]]
        self.total = index["total"]
        self.random_flip, self.on_bad_sample = random_flip, on_bad_sample
        self.transform = image_transform(resolution, center_crop)
        self.skipped_bad = 0

    def __len__(self) -> int:
        return self.total

    def iterate(self, seed: int, consumer: int, consumers: int, skip: int = 0) -> Iterator[dict]:
        """Items for consumer `consumer` of `consumers` (rank × workers), pass after pass, after `skip` items."""
        rng_flip = np.random.default_rng((seed, consumer, 1))
        epoch = 0
        while True:
            order = np.random.default_rng((seed, epoch)).permutation(len(self.shards))
            if len(self.shards) >= consumers:
                mine, stride, phase = order[consumer::consumers], 1, 0
            else:
                mine, stride, phase = order, consumers, consumer
            for shard_index in mine:
                path = self.shards[shard_index][0]
                for position, (key, image_bytes, caption) in enumerate(self._pairs(path, lazy=skip > 0)):
                    if position % stride != phase:
                        continue
                    if skip > 0:
                        skip -= 1
                        continue
                    item = self._decode(path, key, image_bytes, caption)
                    if item is not None:
                        if self.random_flip and rng_flip.random() < 0.5:
                            item["pixel_values"] = item["pixel_values"].flip(-1)
                        yield item
            epoch += 1

    def _pairs(self, path: Path, lazy: bool):
        """(key, image bytes, caption) per sample; with lazy=True image bytes are read only when asked for."""
        with tarfile.open(path) as tar:
            pending: dict[str, dict] = {}
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                entry = pending.setdefault(key, {})
                entry[ext] = member
                if "txt" in entry and any("." + e in IMAGE_SUFFIXES for e in entry):
                    image_member = next(m for e, m in entry.items() if e != "txt")
                    caption = tar.extractfile(entry["txt"]).read().decode().strip()
                    data = (lambda m=image_member: tar.extractfile(m).read()) if lazy else \
                        tar.extractfile(image_member).read()
                    del pending[key]
                    yield key, data, caption

    def _decode(self, path, key, image_bytes, caption):
        if callable(image_bytes):
            image_bytes = image_bytes()
        try:
            if not caption and "{text}" in (self.caption_template or "{text}"):
                raise ValueError("missing caption")
            image = load_rgb(io.BytesIO(image_bytes), self.background)
        except DECODE_ERRORS as err:
            if self.on_bad_sample == "error":
                why = str(err) if type(err) is ValueError else describe_decode_error(err)
                raise BadSampleError(f"data set {self.name!r}: {path}:{key}: {why}") from err
            self.skipped_bad += 1
            return None
        return {"pixel_values": self.transform(image), "text": apply_caption(self.caption_template, caption)}


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="shards")
def main(cfg: DictConfig) -> None:
    try:
        cfg = merge_into_schema(ShardsConfig, cfg)
        if cfg.shard_size < 1:
            raise ConfigError("shard_size", f"must be >= 1, got {cfg.shard_size}")
    except ConfigError as err:  # a wrong setting: one line naming it, no traceback
        raise SystemExit(f"error: {err}") from None
    out = write_shards(cfg.folder, cfg.out_dir, cfg.shard_size)
    print(f"wrote {json.loads((out / INDEX).read_text())['total']} samples into {out}")


if __name__ == "__main__":
    main()
