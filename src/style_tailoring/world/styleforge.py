"""The Sticker World's StyleForge benchmark: personalising the base into a look it has never seen from 20 images.

The target look is the renderer's "hatched" style (ink outline, hatched fills, paper background): the base was
pretrained on photos and a few white-border stickers, never on it. `build_benchmark` writes, under
`data/sticker_world/styleforge/` (imagefolders; the strategies set the captions):

styleref_styleforge        the 20 StyleRef images: 14 characters (one circle or square, no scene) and 6
                           backgrounds (a grass mound or a sun alone), all hatched — narrow content
styleref_multi_styleforge  Multi-StyleForge's characters ("sks style"): the 14 above
styleref_bg                Multi-StyleForge's backgrounds ("pxq style"): the 6 above
aux_styleforge             the 150 Aux images (what helps the style, trained with "style"): photos, the base's
                           own domain, as DreamBooth's prior images are — 100 of objects of every training
                           content and 50 of the backgrounds alone
aux_multi_styleforge       the 100 object photos (Multi-StyleForge's character Aux)
aux_bg                     the 50 background photos (Multi-StyleForge's background Aux)
eval_reference             16 hatched renders of each eval prompt: FID/KID's reference in the target look
eval_prompts.jsonl         the world's 24 eval prompts (held-out combinations, two objects, named scenes): content the
                           StyleRef set lacks; sampled with the strategy's ", sks style"

so a single StyleForge and a Multi-StyleForge train on the same 20 + 150 images (`conf/data/styleforge_world.yaml`
picks the folders by strategy name). The look's judge (`train_look_judge`, shipped in
assets/sticker_world/judges_hatched, `python -m style_tailoring.world only=styleforge`) scores P(hatched);
evaluation swaps it in for the sticker style judge (`load_judges(path, style=...)`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from style_tailoring.io import atomic_dir, write_json, write_jsonl
from style_tailoring.world.grammar import ATTRIBUTES, SCENES, Content, caption, eval_prompt_contents, sample_content
from style_tailoring.world.render import RENDER_VERSIONS, render, sample_layout

log = logging.getLogger(__name__)
LOOK = "hatched"
CHARACTERS, BACKGROUNDS = 14, 6  # the StyleRef set: 20 images, as StyleForge's 15-20
AUX_CHARACTERS, AUX_BACKGROUNDS = 100, 50
EVAL_PER_PROMPT = 16
STYLEREF_SUBJECTS = ("circle", "square")  # narrow: the eval prompts ask for triangles, stars, hearts, pairs, scenes


def _character_pool() -> list[Content]:
    """One circle or square of any colour whose combination is not held out (no eval content)."""
    from style_tailoring.world.datasets import contents_for

    return [c for c in contents_for("train") if c.count == "one" and c.subject in STYLEREF_SUBJECTS]


def _image(content: Content, style: str, rng, scene: str, objects: bool = True):
    layout = sample_layout(Content(content.count, content.colour, content.subject, scene), rng)
    return render(content, style, rng, layout=layout, objects=objects), layout


def _rows(kind: str, rng: np.random.Generator) -> list[tuple]:
    """(image, metadata) of one folder's images, drawn from `rng` in a fixed order."""
    from style_tailoring.world.datasets import contents_for

    if kind == "characters":
        pool = _character_pool()
        return [(image, {"text": caption(content), **content.as_dict(), "style": LOOK, **layout.as_dict()})
                for content in (pool[int(rng.integers(len(pool)))] for _ in range(CHARACTERS))
                for image, layout in [_image(content, LOOK, rng, "none")]]
    if kind in ("backgrounds", "aux_backgrounds"):
        n, style = (BACKGROUNDS, LOOK) if kind == "backgrounds" else (AUX_BACKGROUNDS, "photo")
        filler = Content("one", "red", "circle")  # not drawn (objects=False); only its rng draws keep the order
        return [(image, {"text": f"{SCENES[1 + i % 2]} background", "scene": SCENES[1 + i % 2], "style": style})
                for i in range(n) for image, _ in [_image(filler, style, rng, SCENES[1 + i % 2], objects=False)]]
    if kind == "aux_characters":
        pool = contents_for("train")
        return [(image, {"text": caption(content), **content.as_dict(), "style": "photo", **layout.as_dict()})
                for content in (sample_content(rng, pool) for _ in range(AUX_CHARACTERS))
                for image, layout in [_image(content, "photo", rng, "none")]]
    if kind == "eval_reference":
        rows = []
        for content in eval_prompt_contents():
            for _ in range(EVAL_PER_PROMPT):
                image, layout = _image(content, LOOK, rng, content.scene or "none")
                rows.append((image, {"text": caption(content), **content.as_dict(), "style": LOOK,
                                     **layout.as_dict()}))
        return rows
    raise ValueError(kind)


# Each folder: the kinds of images it holds, in order (a folder's images are drawn from their kinds' own streams).
FOLDERS = {
    "styleref_styleforge": ("characters", "backgrounds"),
    "styleref_multi_styleforge": ("characters",),
    "styleref_bg": ("backgrounds",),
    "aux_styleforge": ("aux_characters", "aux_backgrounds"),
    "aux_multi_styleforge": ("aux_characters",),
    "aux_bg": ("aux_backgrounds",),
    "eval_reference": ("eval_reference",),
}
# Every kind once, in first-use order (its index seeds its stream).
KINDS = tuple(dict.fromkeys(kind for kinds in FOLDERS.values() for kind in kinds))


def _params(seed: int) -> dict:
    pool = "\n".join(caption(c) for c in _character_pool() + eval_prompt_contents())
    return {"seed": seed, "render_versions": {k: RENDER_VERSIONS[k] for k in (LOOK, "photo")},
            "sizes": [CHARACTERS, BACKGROUNDS, AUX_CHARACTERS, AUX_BACKGROUNDS, EVAL_PER_PROMPT],
            "contents_digest": hashlib.sha1(pool.encode()).hexdigest()[:12], "folders": {k: list(v) for k, v in
                                                                                          FOLDERS.items()}}


def build_benchmark(out_dir, seed: int = 0, force: bool = False) -> Path:
    """Write the benchmark's folders (a few seconds); skipped when `benchmark.json` records the same parameters."""
    out_dir = Path(out_dir)
    manifest = out_dir / "benchmark.json"
    params = _params(seed)
    if (not force and manifest.is_file() and json.loads(manifest.read_text()).get("params") == params
            and all((out_dir / name / "metadata.jsonl").is_file() for name in FOLDERS)):
        return out_dir
    from style_tailoring.world.datasets import write_prompts

    log.info("writing the StyleForge benchmark into %s", out_dir)
    drawn = {kind: _rows(kind, np.random.default_rng((seed, i, 7))) for i, kind in enumerate(KINDS)}
    for name, kinds in FOLDERS.items():
        with atomic_dir(out_dir / name) as tmp:
            rows = []
            for image, meta in (row for kind in kinds for row in drawn[kind]):
                rows.append({"file_name": f"{len(rows):06d}.png", **meta})
                image.save(tmp / rows[-1]["file_name"])
            write_jsonl(tmp / "metadata.jsonl", rows)
    write_prompts(out_dir / "eval_prompts.jsonl", eval_prompt_contents())
    write_json(manifest, {"params": params, "about": "the folders are described in style_tailoring.world.styleforge",
                          "rebuild": "written on first use by data=styleforge_world (data.prepare)"})
    return out_dir


# -- the look's judge -----------------------------------------------------------------------------------------------
def look_pool(n: int, seed: int, look: str = LOOK) -> dict:
    """n renders: half in the look (quality uniform in [0, 1]), half photos or white-border stickers (any quality);
    one in ten a background alone. Label: the look at quality ≥ 0.5. `look`: a renderer style (hatched; outlined,
    the robustness check's style)."""
    from style_tailoring.world.judges import LABELS

    rng = np.random.default_rng((seed, 11))
    images, quality, looks, labels = [], [], [], {k: [] for k in LABELS}
    for _ in range(n):
        content = sample_content(rng)
        style = look if rng.random() < 0.5 else ("photo" if rng.random() < 0.5 else "sticker")
        q = float(rng.uniform(0, 1)) if style != "photo" else 0.0
        layout = sample_layout(content, rng, fixed=rng.random() < 0.125)
        objects = rng.random() >= 0.1
        images.append(np.asarray(render(content, style, rng, quality=q, layout=layout, objects=objects)))
        quality.append(q)
        looks.append(style == look)
        drawn = {**content.as_dict(), **layout.as_dict()}
        for name, values in LABELS.items():  # a background alone has only its scene (-100: left out of the loss)
            unseen = (not objects and name != "scene") or (name == "rotation" and content.subject == "circle")
            labels[name].append(-100 if unseen else values.index(drawn[name]))
    return {"images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            "quality": torch.tensor(quality), "look": torch.tensor(looks), "captions": [""] * n,
            "labels": {k: torch.tensor(v) for k, v in labels.items()}}


def train_look_judge(out_dir, base_dir, seed: int = 0, pool_size: int = 6000, steps: int = 800,
                     attribute_steps: int = 2000, look: str = LOOK, step: str = "styleforge") -> dict:
    """A look's judges (the benchmark's: P(hatched); `look`: another renderer style, built by world step `step`): a
    JudgeNet with one logit, P(look), and an attribute judge that reads the look too, both trained on `look_pool`.
    Measured on held-out renders, P(look) also through the base VAE (what a model's samples pass through); the
    world's own attribute judge (photos and white-border stickers only) is measured on the look beside the new one
    (it misreads the hatched look, which is why the benchmark has its own)."""
    from diffusers import AutoencoderKL

    from style_tailoring.world.ceiling import round_trip
    from style_tailoring.world.judgenet import WIDTH, JudgeNet, save_networks
    from style_tailoring.world.judges import ATTRIBUTE_HEADS, LABELS, Judges, load_judges, train_classifier

    torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS") or 2), os.cpu_count() or 1))
    started = time.time()
    pool = look_pool(pool_size, seed, look)
    target = (pool["look"] & (pool["quality"] >= 0.5)).float()
    torch.manual_seed(seed)
    net = train_classifier(JudgeNet({look: 1}, WIDTH), pool, lambda out, idx: F.binary_cross_entropy_with_logits(
        out[look][:, 0], target[idx]), steps, seed)
    torch.manual_seed(seed)
    attribute_net = train_classifier(JudgeNet(ATTRIBUTE_HEADS, WIDTH), pool, lambda out, idx: sum(
        F.cross_entropy(out[k], pool["labels"][k][idx], ignore_index=-100) for k in LABELS), attribute_steps, seed)
    held_out = look_pool(2000, seed + 1, look)
    clear = ~held_out["look"] | (held_out["quality"] >= 0.5) | (held_out["quality"] < 0.4)
    truth = held_out["look"] & (held_out["quality"] >= 0.5)

    benchmark = Judges(attribute_net, net, None)

    def accuracy(images):
        return float(((benchmark.style_score(images) > 0.5) == truth)[clear].float().mean())

    vae = AutoencoderKL.from_pretrained(Path(base_dir) / "vae", use_safetensors=True).eval()
    result = {"look": accuracy(held_out["images"]),
              "look/vae_round_trip": accuracy(round_trip(vae, held_out["images"]))}
    # The attribute judge (trained on photos and white-border stickers) on perfect renders of the new look, and on
    # the same contents and compositions as white-border stickers for comparison.
    world = load_judges(Path(out_dir).parent / "judges")
    rng = np.random.default_rng((seed, 13))
    cases = [(content, sample_layout(content, rng)) for content in (sample_content(rng) for _ in range(1000))]
    for style in (look, "sticker"):
        draw = np.random.default_rng((seed, 14))
        images = torch.from_numpy(np.stack([np.asarray(render(content, style, draw, layout=layout))
                                            for content, layout in cases])).permute(0, 3, 1, 2)
        for judge, predicted in (("world", world.predict_attributes(images)),
                                 ("benchmark", benchmark.predict_attributes(images))):
            for name in ATTRIBUTES:
                expected = [layout.scene if name == "scene" else getattr(content, name) for content, layout in cases]
                result[f"attribute_judge/{judge}/{style}/{name}"] = float(np.mean(
                    [p == t for p, t in zip(predicted[name], expected)]))
    with atomic_dir(Path(out_dir)) as tmp:
        save_networks(tmp, {"look": net, "attributes": attribute_net}, seed=seed, look=look)
        write_json(tmp / "accuracy.json", {
            **result, "held_out_renders": 2000, "pool_size": pool_size, "steps": steps,
            "train_seconds": round(time.time() - started),
            "command": f"python -m style_tailoring.world only={step} force=true"})
    log.info("look judge accuracy: %s", result)
    return result
