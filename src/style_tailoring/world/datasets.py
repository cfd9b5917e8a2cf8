"""The Sticker World's data sets, written as imagefolders (PNG + metadata.jsonl), like real data.

pretrain   photo renderings of all content — what the base model learns from (the "photo" LDM's world)
domain     sticker-like, weakly labelled: uneven sticker quality, and a quarter of the captions wrong or partial
           (the paper's millions of weakly supervised sticker-like images)
alignment  exact captions over diverse content, imperfect style (the HITL Alignment set)
style      perfect sticker style but narrow content: single red or yellow circles, hearts, stars (the Style set)
eval_prompts.jsonl  combinations of attributes held out from domain, alignment and style
Each split is written to `<split>.tmp` and renamed, and skipped on a later call if its parameters match.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from style_tailoring.io import atomic_write_text, write_json
from style_tailoring.world.grammar import (
    ATTRIBUTES, COLOURS, COUNTS, SUBJECTS, Content, all_contents, caption, held_out_contents,
)
from style_tailoring.world.render import render

log = logging.getLogger(__name__)
STYLE_SUBJECTS = ("circle", "heart", "star")
STYLE_COLOURS = ("red", "yellow")


@dataclass(frozen=True)
class SplitSpec:
    name: str
    size: int
    style: str
    quality: tuple[float, float] = (1.0, 1.0)
    weak_labels: float = 0.0  # share of captions corrupted
    contents: str = "train"  # "all", "train" (held-out combinations removed) or "style" (narrow)


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 0
    resolution: int = 32
    splits: tuple[SplitSpec, ...] = field(default_factory=lambda: (
        SplitSpec("pretrain", 8000, "photo", contents="all"),
        SplitSpec("domain", 4000, "sticker", quality=(0.2, 1.0), weak_labels=0.25),
        SplitSpec("alignment", 1500, "sticker", quality=(0.2, 0.6)),
        SplitSpec("style", 400, "sticker", contents="style"),
    ))

    def scaled(self, factor: float) -> "WorldSpec":
        """The same world with every split `factor` times as large (tests use small ones)."""
        return WorldSpec(self.seed, self.resolution, tuple(
            SplitSpec(s.name, max(8, int(s.size * factor)), s.style, s.quality, s.weak_labels, s.contents)
            for s in self.splits))


def contents_for(kind: str) -> list[Content]:
    if kind == "all":
        return all_contents()
    held_out = set(held_out_contents())
    train = [c for c in all_contents() if c not in held_out]
    if kind == "train":
        return train
    if kind == "style":
        return [c for c in train if c.subject in STYLE_SUBJECTS and c.colour in STYLE_COLOURS and c.count == "one"]
    raise ValueError(kind)


def weak_caption(content: Content, rng: np.random.Generator) -> str:
    """A caption as weak supervision produces it: one attribute wrong, or some missing."""
    if rng.random() < 0.5:
        attribute = str(rng.choice(list(ATTRIBUTES)))
        values = [v for v in ATTRIBUTES[attribute] if v != getattr(content, attribute)]
        wrong = Content(**{**content.as_dict(), attribute: str(rng.choice(values))})
        return caption(wrong)
    noun = content.subject + ("s" if content.count != "one" else "")
    return str(rng.choice([f"{content.colour} {noun}", noun, f"a sticker of {content.colour} {noun}"]))


def write_split(spec: SplitSpec, out_dir: Path, seed: int, resolution: int) -> Path:
    rng = np.random.default_rng((seed, sum(map(ord, spec.name))))
    pool = contents_for(spec.contents)
    tmp = out_dir / f"{spec.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    for i in range(spec.size):
        content = pool[int(rng.integers(len(pool)))]
        quality = float(rng.uniform(*spec.quality))
        image = render(content, spec.style, rng, size=resolution, quality=quality)
        name = f"{i:06d}.png"
        image.save(tmp / name)
        weak = rng.random() < spec.weak_labels
        rows.append({"file_name": name, "text": weak_caption(content, rng) if weak else caption(content),
                     **content.as_dict(), "style": spec.style, "quality": round(quality, 3), "weak_label": weak})
    atomic_write_text(tmp / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    final = out_dir / spec.name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def write_eval_prompts(path: Path) -> Path:
    rows = [{"prompt": caption(c), **c.as_dict()} for c in held_out_contents()]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_datasets(out_dir, seed: int = 0, spec: WorldSpec | None = None) -> Path:
    """Write every split that is missing or was made with other parameters; idempotent."""
    spec = spec or WorldSpec(seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "world.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for split in spec.splits:
        params = {"seed": spec.seed, "resolution": spec.resolution, **split.__dict__}
        params["quality"] = list(split.quality)
        if manifest.get(split.name) == params and (out_dir / split.name / "metadata.jsonl").is_file():
            continue
        log.info("writing Sticker World split %r (%d images) into %s", split.name, split.size, out_dir)
        write_split(split, out_dir, spec.seed, spec.resolution)
        manifest[split.name] = params
        write_json(manifest_path, manifest)
    write_eval_prompts(out_dir / "eval_prompts.jsonl")
    manifest["attributes"] = {"count": COUNTS, "colour": COLOURS, "subject": SUBJECTS}
    write_json(manifest_path, manifest)
    return out_dir
