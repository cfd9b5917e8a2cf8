"""The Sticker World's judges, trained on renderer ground truth and shipped in assets/sticker_world/judges.

- attributes.safetensors: a small CNN with one head per attribute (count, colour, shape, scene) → prompt alignment
  (GenEval-style: a sample counts only if every prompted attribute is right; the scene only when the prompt names
  it) and per-attribute accuracy; and one head per composition class (position, scale, rotation, arrangement) →
  the layout judge behind `layout_diversity`, scene diversity as the renderer knows it;
- style.safetensors: the same CNN with one logit → style score, P(sticker): trained to tell stickers (quality
  ≥ 0.5) from photos and rough sticker-like images;
- clip/: a real `transformers.CLIPModel` + `CLIPProcessor` (tiny ViT, world vocabulary), trained contrastively on
  (render, caption + ", sticker" or ", photo") pairs, so its image features see the style as well as the content;
  evaluation loads it like any CLIP on disk (CLIP score, FID/KID features, CLIP diversity).
Renders are augmented with blur and noise so the judges hold up on imperfect model samples; how they hold up on
VAE-decoded images is measured by the `ceiling` build step.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from style_tailoring.io import write_json
from style_tailoring.world.grammar import (
    ATTRIBUTES,
    LAYOUT,
    SCENES,
    SUBJECTS,
    Content,
    all_contents,
    caption,
    parse_caption,
    sample_content,
    vocabulary,
)
from style_tailoring.world.judgenet import WIDTH, JudgeNet, load_networks, save_networks
from style_tailoring.world.render import RENDER_VERSIONS, render, sample_layout

log = logging.getLogger(__name__)
LABELS = {**ATTRIBUTES, **LAYOUT}  # everything the attribute judge predicts
ATTRIBUTE_HEADS = {name: len(values) for name, values in LABELS.items()}
STYLE_HEADS = {"sticker": 1}


# -- training data --------------------------------------------------------------------------------------------------
def render_pool(n: int, seed: int) -> dict:
    """n random renders (half photo, half sticker of random quality; one in eight in the fixed composition of the
    style sets) with their labels, as uint8 tensors, and captions."""
    rng = np.random.default_rng(seed)
    wording = np.random.default_rng((seed, 1))  # captions' omissions: a stream of their own, renders unchanged
    images, labels, styles, captions = [], {k: [] for k in LABELS}, [], []
    for _ in range(n):
        content = sample_content(rng)
        sticker = rng.random() < 0.5
        quality = float(rng.uniform(0, 1)) if sticker else 0.0
        layout = sample_layout(content, rng, fixed=rng.random() < 0.125)
        images.append(np.asarray(render(content, "sticker" if sticker else "photo", rng, quality=quality,
                                        layout=layout)))
        drawn = {**content.as_dict(), **layout.as_dict()}
        for name, values in LABELS.items():
            labels[name].append(values.index(drawn[name]))
        styles.append(quality if sticker else 0.0)
        # Like alt-text, a caption names the drawn scene and the style only sometimes, so bare prompts (CLIP score,
        # the retrieval rater) are in distribution too.
        named = Content(content.count, content.colour, content.subject,
                        layout.scene if wording.random() < 0.5 else None)
        style_word = (", sticker" if quality >= 0.5 else ", photo") if wording.random() < 0.5 else ""
        captions.append(caption(named) + style_word)
    return {
        "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        "labels": {k: torch.tensor(v) for k, v in labels.items()},
        "style": torch.tensor(styles, dtype=torch.float32),
        "captions": captions,
    }


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur and noise, each on half the batch: what imperfect samples of a tiny LDM look like. Any channel count
    (a clip's frames stacked as channels are blurred alike)."""
    x = images.float()
    n, channels = x.shape[:2]
    blur = torch.rand(n, generator=generator) < 0.5
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :] / 16).expand(channels, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
    noisy = torch.rand(n, generator=generator) < 0.5
    x[noisy] += torch.randn(x[noisy].shape, generator=generator) * 12
    return x.clamp(0, 255).round().to(torch.uint8)


def _fit(module: nn.Module, batch_loss, n: int, steps: int, seed: int, lr: float, what: str) -> nn.Module:
    """AdamW + one-cycle over random batches of 128 pool indices; `batch_loss(indices, generator)` → loss."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    module.train()
    for step in range(steps):
        loss = batch_loss(torch.randint(0, n, (128,), generator=generator), generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if (step + 1) % 200 == 0:
            log.info("%s step %d/%d loss %.4f", what, step + 1, steps, loss.item())
    return module.eval()


def train_classifier(net: JudgeNet, pool: dict, loss_fn, steps: int, seed: int, lr: float = 2e-3) -> JudgeNet:
    return _fit(net, lambda idx, g: loss_fn(net(augment(pool["images"][idx], g)), idx), len(pool["captions"]),
                steps, seed, lr, "judge")


def build_clip(max_tokens: int = 16):
    """A tiny CLIP over the world vocabulary; 16 positions fit its 3-word prompts (the shipped judges/clip)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from style_tailoring.models.tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(vocabulary(), model_max_length=max_tokens)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=max_tokens, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        # v3: wider and deeper than v2's 64 × 3 layers, which placed small rotated objects among 360 captions
        # right only 69% of the time
        vision_config=dict(image_size=32, patch_size=4, hidden_size=96, intermediate_size=384, num_hidden_layers=4,
                           num_attention_heads=4),
        projection_dim=64,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(config), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def train_clip(pool: dict, steps: int, seed: int, lr: float = 2e-3):
    torch.manual_seed(seed)
    model, processor = build_clip()
    captions = sorted(set(pool["captions"]))
    text = processor.tokenizer(captions, padding="max_length", return_tensors="pt")
    caption_index = torch.tensor([captions.index(c) for c in pool["captions"]])

    def batch_loss(idx, generator):
        pixels = processor.image_processor(list(augment(pool["images"][idx], generator)), return_tensors="pt")
        # Every caption is a candidate (they repeat within a batch, so pairwise InfoNCE would mislabel duplicates).
        image_emb = F.normalize(_features(model.get_image_features(pixel_values=pixels.pixel_values)), dim=-1)
        text_emb = F.normalize(_features(model.get_text_features(**text)), dim=-1)
        return F.cross_entropy(model.logit_scale.exp() * image_emb @ text_emb.T, caption_index[idx])

    _fit(model, batch_loss, len(caption_index), steps, seed, lr, "clip")
    return model, processor


def _features(output):
    return getattr(output, "pooler_output", output)


# -- the judges ---------------------------------------------------------------------------------------------------
class Judges:
    def __init__(self, attributes: JudgeNet, style: JudgeNet, clip_dir: Optional[Path]):
        # clip_dir None: judges without a CLIP of their own (the raters' judges: they rate, never evaluate)
        self.attributes, self.style, self.clip_dir = attributes.eval(), style.eval(), clip_dir

    @torch.no_grad()
    def predict_attributes(self, images: torch.Tensor) -> dict[str, list[str]]:
        """Each image's predicted attributes and composition classes, {name: [value per image]}."""
        logits = {k: [] for k in LABELS}
        for chunk in images.split(256):
            for name, value in self.attributes(chunk).items():
                logits[name].append(value.argmax(-1))
        return {name: [LABELS[name][i] for i in torch.cat(v).tolist()] for name, v in logits.items()}

    def alignment_per_sample(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Per image: 1.0 if every prompted attribute is right (GenEval-style), and each attribute's correctness;
        NaN for a prompt that is not a full world caption, and for the scene where the prompt leaves it open."""
        predicted = self.predict_attributes(images)
        asked = [parse_caption(p) for p in prompts]
        nan = float("nan")
        result, all_right = {}, torch.tensor([nan if c is None else 1.0 for c in asked], dtype=torch.float64)
        for name in ATTRIBUTES:
            right = torch.tensor([nan if content is None or getattr(content, name) is None
                                  else float(predicted[name][i] == getattr(content, name))
                                  for i, content in enumerate(asked)], dtype=torch.float64)
            result[f"alignment/{name}"] = right
            all_right = all_right * torch.where(torch.isnan(right) & ~torch.isnan(all_right), 1.0, right)
        result["alignment"] = all_right
        return result

    def prompt_attributes(self, prompt: str):
        """What a prompt asks for, {attribute: value} (None for a prompt that is not a full world caption; a scene
        left open is not listed): the optional part of the judge protocol that curation's per-attribute yields
        use."""
        content = parse_caption(prompt)
        return {k: v for k, v in content.as_dict().items() if v is not None} if content else None

    def diversity(self, images: torch.Tensor, prompts: list[str], per_prompt: int) -> dict[str, float]:
        """Scene diversity as the renderer knows it, the optional part of the judge protocol (see
        `layout_diversity`)."""
        return layout_diversity(self.predict_attributes(images), prompts, per_prompt)

    def labels(self, images: torch.Tensor) -> dict[str, list[str]]:
        """Each image's predicted count and composition classes, the optional part of the judge protocol that
        evaluation keeps beside the per-sample scores (`judge_scores.jsonl`), so set-level measures such as
        `layout_diversity` can be recomputed and bootstrapped from the committed scores."""
        predicted = self.predict_attributes(images)
        return {name: predicted[name] for name in ("count", *LAYOUT, "scene")}

    def prompt_alignment(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        """Share of samples whose every prompted attribute is right, and per-attribute accuracy."""
        from style_tailoring.evaluation.judges import mean_scores

        return mean_scores(self.alignment_per_sample(images, prompts))

    def score(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The judge protocol of style_tailoring.evaluation.judges: per-image alignment and style score."""
        return {**self.alignment_per_sample(images, prompts), "style_score": self.style_score(images).double()}

    @torch.no_grad()
    def style_score(self, images: torch.Tensor) -> torch.Tensor:
        """P(the target style): the style judge's one logit (P(sticker), or a look judge's, see load_judges)."""
        return torch.cat([torch.sigmoid(next(iter(self.style(chunk).values()))[:, 0]) for chunk in images.split(256)])


def drawn_classes(content: Content) -> dict[str, tuple[str, ...]]:
    """The classes of each composition label the renderer draws for a prompt's content (labels with one class are
    left out)."""
    positions = LAYOUT["position"]
    classes = {"scale": LAYOUT["scale"]}
    if content.subject != "circle":  # a circle has no tilt
        classes["rotation"] = LAYOUT["rotation"]
    if content.count == "one":
        classes["position"] = positions
    else:  # horizontal pairs move up/down, vertical ones left/right, diagonal ones stay: 5 positions in all
        classes["position"] = tuple(p for p in positions if p.endswith("-centre") or p.startswith("middle-"))
        classes["arrangement"] = ("horizontal", "vertical", "diagonal")
    if content.scene is None:
        classes["scene"] = SCENES
    return classes


def layout_diversity(labels: dict[str, list[str]], prompts: list[str], per_prompt: int) -> dict[str, float]:
    """Layout diversity of each prompt's consecutive `per_prompt` samples from their predicted classes (`labels`:
    {name: [class per sample]}, as `Judges.labels` gives), bounded by the renderer's own variety.

    Per prompt, only samples the count judge sees with the prompted count are scored, and of each composition label
    only predictions among the classes the renderer draws for that content: the label's entropy over them divided
    by the log of how many there are. A sample of the wrong count (a pair prompt drawn as one object, placed on any
    of 9 positions) is not more varied content of that prompt, so it adds nothing; normalising by the judge's own
    class count instead would still let such samples score above the renders. In [0, 1]: 0 when every scored
    sample is composed alike (or fewer than two are scored), 1 for a uniform spread over the renderer's classes.
    The mean over labels and prompts is `layout_diversity`; `layout_diversity/<label>` per label, and
    `layout_diversity/scored` the share of samples that showed the prompted count."""
    per_label = {name: [] for name in (*LAYOUT, "scene")}
    scored, total = 0, 0
    for start in range(0, len(prompts), per_prompt):
        content = parse_caption(prompts[start])
        if content is None:
            continue
        rows = range(start, min(start + per_prompt, len(prompts)))
        right_count = [i for i in rows if labels["count"][i] == content.count]
        scored, total = scored + len(right_count), total + len(rows)
        for name, options in drawn_classes(content).items():
            values = [labels[name][i] for i in right_count if labels[name][i] in options]
            per_label[name].append(normalised_entropy(values, len(options)))
    result = {f"layout_diversity/{name}": float(np.mean(v)) for name, v in per_label.items() if v}
    if result:
        result["layout_diversity"] = float(np.mean(list(result.values())))
        result["layout_diversity/scored"] = scored / total
    return result


def normalised_entropy(values: list[str], classes: int) -> float:
    """Shannon entropy of `values` over `classes` possible classes, divided by log(classes): in [0, 1]; 0 for fewer
    than two values."""
    if len(values) < 2:
        return 0.0
    shares = np.unique(values, return_counts=True)[1] / len(values)
    return float(min(1.0, -(shares * np.log(shares)).sum() / np.log(classes)))  # 1 + 2e-16 for a uniform spread


def load_judges(path, style=None) -> Judges:
    """The shipped judges in `path` (`eval.judges: {_target_: style_tailoring.world.judges.load_judges, path: ...}`);
    `style`: a look's judges (e.g. assets/sticker_world/judges_hatched, the StyleForge benchmark's target style):
    their P(look) replaces P(sticker) as the style score, and their attribute judge, which reads the look too,
    replaces this one; the CLIP stays."""
    from style_tailoring.evaluation.metrics import MetricUnavailable

    directory = Path(path)
    if not (directory / "judges.json").is_file():
        raise MetricUnavailable("eval.judges.path", f"no Sticker World judges in {directory}")
    clip = directory / "clip" if (directory / "clip").is_dir() else None
    if style is None:
        nets = load_networks(directory)
        return Judges(nets["attributes"], nets["style"], clip)
    if not (Path(style) / "judges.json").is_file():
        raise MetricUnavailable("eval.judges.style", f"no look judge in {style} (python -m style_tailoring.world "
                                "only=styleforge)")
    nets = load_networks(style)  # the look's judges replace both CNNs: only the CLIP is read from `path`
    return Judges(nets["attributes"], nets["look"], clip)


def measure(judges: Judges, pool: dict) -> dict[str, float]:
    """Held-out accuracies: each attribute, style (photo vs sticker of quality ≥ 0.5), CLIP caption retrieval."""
    images = pool["images"]
    predicted = judges.predict_attributes(images)
    result = {}
    observable = pool["labels"]["subject"] != SUBJECTS.index("circle")  # a circle's rotation cannot be seen
    for name, values in LABELS.items():
        right = torch.tensor([values.index(p) == t for p, t in zip(predicted[name], pool["labels"][name].tolist())])
        kind = "attribute" if name in ATTRIBUTES else "layout"
        result[f"{kind}/{name}"] = float(right[observable if name == "rotation" else slice(None)].float().mean())
    score = judges.style_score(images)
    # Clear cases: photos and stickers of quality ≥ 0.5 vs < 0.4 (near the 0.5 boundary the label is a coin flip).
    clear = (pool["style"] >= 0.5) | (pool["style"] < 0.4)
    result["style"] = float(((score > 0.5) == (pool["style"] >= 0.5))[clear].float().mean())
    if judges.clip_dir is None:
        return result
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(judges.clip_dir, use_safetensors=True)
    processor = CLIPProcessor.from_pretrained(judges.clip_dir)
    contents = all_contents()
    captions = [caption(c) for c in contents]
    with torch.no_grad():
        pixels = processor.image_processor(list(images), return_tensors="pt").pixel_values
        image = F.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)

        def text(prompts):
            return F.normalize(_features(model.get_text_features(
                **processor.tokenizer(prompts, padding="max_length", return_tensors="pt"))), dim=-1)

        best = (image @ text(captions).T).argmax(-1).tolist()
        truth = [parse_caption(c).base() for c in pool["captions"]]
        # Content retrieval among the 60 bare captions (as the retrieval rater and CLIP score use them) ...
        result["clip_retrieval"] = float(np.mean([contents[b] == t for b, t in zip(best, truth)]))
        # ... and style: for the true content, ", sticker" vs ", photo" (clear cases, as for the style judge).
        sticker = text([captions[contents.index(t)] + ", sticker" for t in truth])
        photo = text([captions[contents.index(t)] + ", photo" for t in truth])
        says_sticker = ((image * sticker).sum(-1) > (image * photo).sum(-1))
    result["clip_retrieval/style"] = float((says_sticker == (pool["style"] >= 0.5))[clear].float().mean())
    return result


def train_judges(out_dir, seed: int = 0, pool_size: int = 8000, steps: int = 1000, attribute_steps: int = 2000,
                 clip_steps: int = 2500, command: str = "python -m style_tailoring.world only=judges force=true"
                 ) -> dict:
    """Train the three judges, measure them on held-out renders and swap them into `out_dir` at once.
    `clip_steps=0`: the two CNNs without a CLIP (the raters' judges: world.build.step_rater_judges).

    Each finished judge waits in `.<out_dir>.partial` beside it until the swap, so a build that is interrupted (it
    takes 25-50 min on a busy 2-core machine) resumes after the last finished judge instead of starting over.
    """
    from style_tailoring.io import atomic_dir

    # sized for the project's 2-core CPU budget (OMP_NUM_THREADS=1 leaves a core to another job)
    torch.set_num_threads(min(2, int(os.environ.get("OMP_NUM_THREADS") or 2), os.cpu_count() or 1))
    out_dir, started = Path(out_dir), time.time()
    settings = {"seed": seed, "pool_size": pool_size, "steps": steps, "attribute_steps": attribute_steps,
                "clip_steps": clip_steps, "width": WIDTH, "render_versions": RENDER_VERSIONS}
    work = out_dir.parent / f".{out_dir.name}.partial"
    if not (work / "settings.json").is_file() or json.loads((work / "settings.json").read_text()) != settings:
        shutil.rmtree(work, ignore_errors=True)
        write_json(work / "settings.json", settings)
    pool = render_pool(pool_size, seed)
    log.info("rendered %d judge training images in %.0f s", pool_size, time.time() - started)

    def classifier(name: str, heads: dict[str, int], loss_fn, steps: int) -> JudgeNet:
        path = work / f"{name}.safetensors"
        torch.manual_seed(seed)  # per judge, so a resumed build trains exactly what an uninterrupted one would
        net = JudgeNet(heads, WIDTH)
        if path.is_file():
            net.load_state_dict(load_file(path))
            return net.eval()
        net = train_classifier(net, pool, loss_fn, steps, seed)
        save_file(net.state_dict(), work / f"{name}.tmp")
        os.replace(work / f"{name}.tmp", path)
        return net

    # A circle's rotation cannot be seen: its rotation label is left out of the loss (ignore_index).
    rotation = pool["labels"]["rotation"].masked_fill(pool["labels"]["subject"] == SUBJECTS.index("circle"), -100)
    targets = {**pool["labels"], "rotation": rotation}
    attributes = classifier("attributes", ATTRIBUTE_HEADS, lambda out, idx: sum(
        F.cross_entropy(out[k], targets[k][idx], ignore_index=-100) for k in LABELS), attribute_steps)
    is_sticker = (pool["style"] >= 0.5).float()
    style = classifier("style", STYLE_HEADS, lambda out, idx: F.binary_cross_entropy_with_logits(
        out["sticker"][:, 0], is_sticker[idx]), steps)
    if clip_steps and not (work / "clip" / "config.json").is_file():
        clip, processor = train_clip(pool, clip_steps, seed)
        shutil.rmtree(work / "clip.tmp", ignore_errors=True)
        clip.save_pretrained(work / "clip.tmp")
        processor.save_pretrained(work / "clip.tmp")
        os.replace(work / "clip.tmp", work / "clip")
    with atomic_dir(out_dir) as tmp:
        save_networks(tmp, {"attributes": attributes, "style": style}, seed=seed)
        if clip_steps:
            shutil.copytree(work / "clip", tmp / "clip")
        accuracy = measure(Judges(attributes, style, tmp / "clip" if clip_steps else None),
                           render_pool(2000, seed + 1))
        write_json(tmp / "accuracy.json", {
            **accuracy, "held_out_renders": 2000,
            **({"clip_retrieval_candidates": len(all_contents())} if clip_steps else {}),
            "train_seconds": round(time.time() - started), "threads": torch.get_num_threads(),
            "command": command})
    shutil.rmtree(work, ignore_errors=True)
    log.info("judge accuracy on held-out renders: %s", accuracy)
    return accuracy
