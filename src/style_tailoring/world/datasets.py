"""The Sticker World's data sets, written as imagefolders (PNG + metadata.jsonl), like real data.

pretrain   photo renderings of all content — what the base model learns from (the "photo" LDM's world)
domain     sticker-like, weakly labelled: uneven sticker quality, and a quarter of the captions wrong or partial
           (the paper's millions of weakly supervised sticker-like images)
alignment  exact captions over diverse content, imperfect style (the HITL Alignment set)
style      perfect sticker style but narrow content: single red or yellow hearts and stars (the Style set)
eval_prompts.jsonl  combinations of attributes held out from domain, alignment and style
train_prompts.jsonl every other combination: the training prompts the HITL loop generates candidates for
Each split is written to `<split>.tmp` and renamed, and skipped on a later call if its parameters match — sizes,
seed, quality, the content pool (a digest, so a grammar or hold-out change counts) and the renderer's version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from style_tailoring.io import atomic_write_text, write_json, write_jsonl
from style_tailoring.world.grammar import (
    ATTRIBUTES, Content, all_contents, caption, held_out_contents,
)
from style_tailoring.world.render import RENDER_VERSIONS, render

log = logging.getLogger(__name__)
# The Style set's narrow content (one red/yellow heart/star): what a small expert-curated set looks like.
STYLE_SUBJECTS = ("heart", "star")
STYLE_COLOURS = ("red", "yellow")


@dataclass(frozen=True)
class SplitSpec:
    name: str
    size: int
    style: str
    quality: tuple[float, float] = (1.0, 1.0)
    weak_labels: float = 0.0  # share of captions corrupted
    contents: str = "train"  # "all", "train" (held-out combinations removed) or "style" (narrow)
    description: str = ""


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 0
    resolution: int = 32
    splits: tuple[SplitSpec, ...] = field(default_factory=lambda: (
        SplitSpec("pretrain", 8000, "photo", contents="all",
                  description="photo renderings of all content: the base model's pretraining data"),
        SplitSpec("domain", 4000, "sticker", quality=(0.2, 1.0), weak_labels=0.25,
                  description="sticker-like, uneven quality, a quarter of the captions wrong or partial"),
        SplitSpec("alignment", 1500, "sticker", quality=(0.2, 0.6),
                  description="exact captions over diverse content, imperfect sticker style"),
        SplitSpec("style", 400, "sticker", contents="style",
                  description="perfect sticker style, narrow content: single red or yellow hearts and stars"),
    ))

    def scaled(self, factor: float) -> "WorldSpec":
        """The same world with every split `factor` times as large (tests use small ones)."""
        return WorldSpec(self.seed, self.resolution, tuple(
            replace(s, size=max(8, int(s.size * factor))) for s in self.splits))

    def resized(self, sizes: dict[str, int]) -> "WorldSpec":
        """The same world with the named splits at the given sizes."""
        unknown = set(sizes) - {s.name for s in self.splits}
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}")
        return WorldSpec(self.seed, self.resolution, tuple(
            replace(s, size=int(sizes.get(s.name, s.size))) for s in self.splits))


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
    write_jsonl(tmp / "metadata.jsonl", rows)
    final, old = out_dir / spec.name, out_dir / f"{spec.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():  # two renames: the split is missing only for an instant, never half-written
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def split_params(spec: SplitSpec, world: "WorldSpec") -> dict:
    """Everything that determines a split's files: a split is rewritten when any of it changes."""
    pool = sorted(caption(c) for c in contents_for(spec.contents))
    params = {k: v for k, v in asdict(spec).items() if k != "description"}
    return {**params, "quality": list(spec.quality), "seed": world.seed, "resolution": world.resolution,
            "render_version": RENDER_VERSIONS[spec.style],
            "contents_digest": hashlib.sha1("\n".join(pool).encode()).hexdigest()[:12]}


def write_prompts(path: Path, contents: list[Content]) -> Path:
    rows = [{"prompt": caption(c), **c.as_dict()} for c in contents]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def build_datasets(out_dir, seed: int = 0, sizes: dict[str, int] | None = None,
                   spec: WorldSpec | None = None, force: bool = False) -> Path:
    """Write every split that is missing or was made with other parameters (every split if `force`); idempotent."""
    spec = (spec or WorldSpec(seed=seed)).resized(sizes or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "world.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for split in spec.splits:
        params = split_params(split, spec)
        if not force and manifest.get(split.name) == params and (out_dir / split.name / "metadata.jsonl").is_file():
            continue
        log.info("writing Sticker World split %r (%d images) into %s", split.name, split.size, out_dir)
        write_split(split, out_dir, spec.seed, spec.resolution)
        manifest[split.name] = params
        write_json(manifest_path, manifest)
    write_prompts(out_dir / "eval_prompts.jsonl", held_out_contents())
    write_prompts(out_dir / "train_prompts.jsonl", contents_for("train"))
    readme = {
        "attributes": {name: list(values) for name, values in ATTRIBUTES.items()},
        "about": {**{s.name: s.description for s in spec.splits},
                  "eval_prompts.jsonl": f"{len(held_out_contents())} attribute combinations held out from "
                                        "domain, alignment and style",
                  "train_prompts.jsonl": "every other combination: the HITL loop's training prompts",
                  "rebuild": "python -m style_tailoring.world build --only datasets"},
    }
    if any(manifest.get(k) != v for k, v in readme.items()):
        write_json(manifest_path, {**manifest, **readme})
    return out_dir
