"""The Sticker World's data sets, written as imagefolders (PNG + metadata.jsonl), like real data.

pretrain       photo renderings of all content in varied compositions — what the base model learns from (the
               "photo" LDM's world) — plus a small share of stereotyped stickers captioned "..., sticker" (few
               contents, one look), as a web-trained photo model has seen some; so prompt engineering works a little
domain         sticker-like, weakly labelled: uneven sticker quality, a quarter of the captions wrong or partial, broad
               in content and composition (the paper's millions of weakly supervised sticker-like images)
alignment      exact captions over diverse content and compositions, imperfect style (the HITL Alignment set)
style          perfect sticker style, narrow in composition and subject: one large upright heart or star in the
               middle, any colour (the small expert-curated Style set)
style_colour   the named variant narrow in colour instead: one red or yellow heart or star, same composition
style_outline  a style set whose only cue is high-frequency: the photo look with a thin ink outline, same
               composition (the robustness check; its judge: assets/sticker_world/judges_outline)
eval_reference perfect stickers of the eval prompts' content in the renderer's own variety of compositions: FID/KID's
               matched-content reference in the target style
alpha          transparent stickers (RGBA: straight colour, the die-cut shape as matte): the alpha decoder's data
alpha_eval     held-out transparent stickers of the eval prompts' content: the alpha metrics' test set
eval_prompts.jsonl  24 prompts over the attribute combinations held out from every finetuning set, each with the scene
                    left open and with a named scene
train_prompts.jsonl every other combination: the training prompts the HITL loop generates candidates for
Captions name the drawn scene half of the time and leave it open otherwise, as real captions skip details.
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
    ATTRIBUTES,
    CONTENT_ATTRIBUTES,
    Content,
    all_contents,
    caption,
    eval_prompt_contents,
    held_out_contents,
)
from style_tailoring.world.render import RENDER_VERSIONS, render, sample_layout

log = logging.getLogger(__name__)
# The Style set's narrow subjects (one heart or star, any colour): what a small expert-curated set looks like; the
# `style_colour` variant narrows the colour too (red or yellow), the world's earlier Style set.
STYLE_SUBJECTS = ("heart", "star")
STYLE_COLOURS = ("red", "yellow")
# The stereotyped stickers a photo model has seen: a few contents, always the same look.
STEREOTYPED = (Content("one", "red", "heart"), Content("one", "yellow", "star"), Content("one", "blue", "circle"),
               Content("one", "green", "square"))
STYLE_PHRASES = (", sticker", ", sticker, white border")


@dataclass(frozen=True)
class SplitSpec:
    name: str
    size: int
    style: str
    quality: tuple[float, float] = (1.0, 1.0)
    weak_labels: float = 0.0  # share of captions corrupted
    contents: str = "train"  # see contents_for
    layout: str = "varied"  # "varied" (sample_layout) or "fixed" (one large upright object in the middle)
    stereotyped: float = 0.0  # share of stereotyped stickers captioned "..., sticker" (pretrain only)
    per_content: int = 0  # > 0: exactly this many images per content of the pool, in order (size is ignored)
    description: str = ""


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 0
    resolution: int = 32
    splits: tuple[SplitSpec, ...] = field(default_factory=lambda: (
        SplitSpec("pretrain", 8000, "photo", contents="all", stereotyped=0.08,
                  description="photo renderings of all content in varied compositions, and 8% stereotyped "
                              "stickers (4 contents, one look) captioned '..., sticker': the base model's "
                              "pretraining data"),
        SplitSpec("domain", 4000, "sticker", quality=(0.2, 1.0), weak_labels=0.25,
                  description="sticker-like, uneven quality, a quarter of the captions wrong or partial, broad in "
                              "content and composition"),
        SplitSpec("alignment", 1500, "sticker", quality=(0.2, 0.6),
                  description="exact captions over diverse content and compositions, imperfect sticker style"),
        SplitSpec("style", 400, "sticker", contents="style", layout="fixed",
                  description="perfect sticker style, narrow in composition and subject: one large upright heart "
                              "or star in the middle, any colour"),
        SplitSpec("style_colour", 400, "sticker", contents="style_colour", layout="fixed",
                  description="variant narrow in colour: one red or yellow heart or star, same composition"),
        SplitSpec("style_outline", 400, "outlined", contents="style", layout="fixed",
                  description="variant whose only style cue is high-frequency: photos of one large upright heart or "
                              "star with a thin ink outline (background unchanged)"),
        SplitSpec("eval_reference", 0, "sticker", contents="eval", per_content=16,
                  description="16 perfect stickers per eval prompt in the renderer's variety of compositions: "
                              "FID/KID's matched-content reference"),
        SplitSpec("alpha", 2000, "rgba",
                  description="transparent stickers (RGBA PNGs, the die-cut shape as matte, the shadow translucent) "
                              "over the training content: the alpha decoder's training set"),
        SplitSpec("alpha_eval", 0, "rgba", contents="eval", per_content=8,
                  description="8 transparent stickers per eval prompt: the alpha decoder's held-out test set"),
    ))

    def scaled(self, factor: float) -> "WorldSpec":
        """The same world with every split `factor` times as large (tests use small ones)."""
        return WorldSpec(self.seed, self.resolution, tuple(
            replace(s, size=max(8, int(s.size * factor)), per_content=min(s.per_content, 2))
            for s in self.splits))

    def resized(self, sizes: dict[str, int]) -> "WorldSpec":
        """The same world with the named splits at the given sizes."""
        unknown = set(sizes) - {s.name for s in self.splits}
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}")
        return WorldSpec(self.seed, self.resolution, tuple(
            replace(s, size=int(sizes.get(s.name, s.size))) for s in self.splits))


def contents_for(kind: str) -> list[Content]:
    """A split's content pool: "all", "train" (held-out combinations removed), "style" (one heart or star),
    "style_colour" (one red or yellow heart or star), "eval" (the eval prompts) or "stereotyped"."""
    if kind == "all":
        return all_contents()
    if kind == "eval":
        return eval_prompt_contents()
    if kind == "stereotyped":
        return list(STEREOTYPED)
    held_out = set(held_out_contents())
    train = [c for c in all_contents() if c not in held_out]
    if kind == "train":
        return train
    style = [c for c in train if c.subject in STYLE_SUBJECTS and c.count == "one"]
    if kind == "style":
        return style
    if kind == "style_colour":
        return [c for c in style if c.colour in STYLE_COLOURS]
    raise ValueError(kind)


def weak_caption(content: Content, rng: np.random.Generator) -> str:
    """A caption as weak supervision produces it: one attribute wrong, or some missing."""
    if rng.random() < 0.5:
        attribute = str(rng.choice(list(CONTENT_ATTRIBUTES)))
        values = [v for v in ATTRIBUTES[attribute] if v != getattr(content, attribute)]
        wrong = Content(**{**content.base().as_dict(), attribute: str(rng.choice(values))})
        return caption(wrong)
    noun = content.subject + ("s" if content.count != "one" else "")
    return str(rng.choice([f"{content.colour} {noun}", noun, f"a sticker of {content.colour} {noun}"]))


def _draw(spec: SplitSpec, pool: list[Content], i: int, rng: np.random.Generator):
    """(content, style, quality, fixed layout?, style phrase) of image i of a split."""
    if spec.per_content:
        return pool[i // spec.per_content], spec.style, float(rng.uniform(*spec.quality)), spec.layout == "fixed", ""
    if spec.stereotyped and rng.random() < spec.stereotyped:
        content = STEREOTYPED[int(rng.integers(len(STEREOTYPED)))]
        return content, "sticker", 1.0, True, STYLE_PHRASES[int(rng.integers(len(STYLE_PHRASES)))]
    content = pool[int(rng.integers(len(pool)))]
    return content, spec.style, float(rng.uniform(*spec.quality)), spec.layout == "fixed", ""


def write_split(spec: SplitSpec, out_dir: Path, seed: int, resolution: int) -> Path:
    rng = np.random.default_rng((seed, sum(map(ord, spec.name))))
    pool = contents_for(spec.contents)
    tmp = out_dir / f"{spec.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    for i in range(spec.per_content * len(pool) if spec.per_content else spec.size):
        content, style, quality, fixed, phrase = _draw(spec, pool, i, rng)
        layout = sample_layout(content, rng, fixed=fixed)
        image = render(content, style, rng, size=resolution, quality=quality, layout=layout)
        name = f"{i:06d}.png"
        image.save(tmp / name)
        # A caption names the drawn scene half of the time (a prompt's scene is always named); the matched-content
        # reference is captioned with its eval prompt.
        named = content.scene is not None or (layout.scene != "none" and rng.random() < 0.5)
        stated = content if spec.per_content else Content(content.count, content.colour, content.subject,
                                                           layout.scene if named else None)
        weak = rng.random() < spec.weak_labels
        rows.append({"file_name": name, "text": (weak_caption(content, rng) if weak else caption(stated)) + phrase,
                     **{**content.as_dict(), **layout.as_dict()}, "style": style, "quality": round(quality, 3),
                     "weak_label": weak, "stereotyped": bool(phrase)})
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
        count = split.per_content * len(contents_for(split.contents)) if split.per_content else split.size
        log.info("writing Sticker World split %r (%d images) into %s", split.name, count, out_dir)
        write_split(split, out_dir, spec.seed, spec.resolution)
        manifest[split.name] = params
        write_json(manifest_path, manifest)
    write_prompts(out_dir / "eval_prompts.jsonl", eval_prompt_contents())
    write_prompts(out_dir / "train_prompts.jsonl", contents_for("train"))
    readme = {
        "attributes": {name: list(values) for name, values in ATTRIBUTES.items()},
        "about": {**{s.name: s.description for s in spec.splits},
                  "eval_prompts.jsonl": f"{len(eval_prompt_contents())} prompts over the "
                                        f"{len(held_out_contents())} attribute combinations held out from every "
                                        "finetuning set, scene left open or named",
                  "train_prompts.jsonl": "every other combination: the HITL loop's training prompts",
                  "rebuild": "python -m style_tailoring.world only=datasets"},
    }
    if any(manifest.get(k) != v for k, v in readme.items()):
        write_json(manifest_path, {**manifest, **readme})
    return out_dir
