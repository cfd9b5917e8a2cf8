"""The Sticker World's judges, trained on renderer ground truth and shipped in assets/sticker_world/judges.

- attributes.safetensors: a small CNN with one head per attribute → prompt alignment (GenEval-style: a sample
  counts only if every prompted attribute is right) and per-attribute accuracy;
- style.safetensors: the same CNN with one logit → style score, P(sticker), trained with the sticker quality as a
  soft label, so imperfect stickers score in between;
- clip/: a real `transformers.CLIPModel` + `CLIPProcessor` (tiny ViT, world vocabulary), trained contrastively on
  (render, caption) pairs; evaluation loads it like any CLIP on disk (CLIP score, FID/KID features, diversity).
Renders are augmented with blur and noise so the judges hold up on imperfect model samples.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from style_tailoring.io import write_json
from style_tailoring.world.grammar import ATTRIBUTES, all_contents, caption, parse_caption, sample_content, vocabulary
from style_tailoring.world.render import RENDER_VERSIONS, render

log = logging.getLogger(__name__)
ATTRIBUTE_HEADS = {name: len(values) for name, values in ATTRIBUTES.items()}
STYLE_HEADS = {"sticker": 1}
WIDTH = 32  # CNN judges' base channel count


class JudgeNet(nn.Module):
    def __init__(self, heads: dict[str, int], width: int = WIDTH):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.GELU(),
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(4 * w, n) for name, n in heads.items()})

    def forward(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images_uint8.float() / 127.5 - 1
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        features = self.body(x)
        return {name: head(features) for name, head in self.heads.items()}


# -- training data --------------------------------------------------------------------------------------------------
def render_pool(n: int, seed: int) -> dict:
    """n random renders (half photo, half sticker of random quality) with their labels, as uint8 tensors."""
    rng = np.random.default_rng(seed)
    images, labels, styles, captions = [], {k: [] for k in ATTRIBUTES}, [], []
    for _ in range(n):
        content = sample_content(rng)
        sticker = rng.random() < 0.5
        quality = float(rng.uniform(0, 1)) if sticker else 0.0
        images.append(np.asarray(render(content, "sticker" if sticker else "photo", rng, quality=quality)))
        for name, values in ATTRIBUTES.items():
            labels[name].append(values.index(getattr(content, name)))
        styles.append(quality if sticker else 0.0)
        captions.append(caption(content))
    return {
        "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        "labels": {k: torch.tensor(v) for k, v in labels.items()},
        "style": torch.tensor(styles, dtype=torch.float32),
        "captions": captions,
    }


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur and noise, each on half the batch: what imperfect samples of a tiny LDM look like."""
    x = images.float()
    n = x.shape[0]
    blur = torch.rand(n, generator=generator) < 0.5
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
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
        vision_config=dict(image_size=32, patch_size=4, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
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
    def __init__(self, attributes: JudgeNet, style: JudgeNet, clip_dir: Path):
        self.attributes, self.style, self.clip_dir = attributes.eval(), style.eval(), clip_dir

    @torch.no_grad()
    def predict_attributes(self, images: torch.Tensor) -> dict[str, list[str]]:
        logits = {k: [] for k in ATTRIBUTES}
        for chunk in images.split(256):
            for name, value in self.attributes(chunk).items():
                logits[name].append(value.argmax(-1))
        return {name: [ATTRIBUTES[name][i] for i in torch.cat(v).tolist()] for name, v in logits.items()}

    def alignment_per_sample(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Per image: 1.0 if every prompted attribute is right (GenEval-style), and each attribute's correctness;
        NaN for a prompt that is not a full world caption."""
        predicted = self.predict_attributes(images)
        asked = [parse_caption(p) for p in prompts]
        result, all_right = {}, torch.ones(len(prompts), dtype=torch.float64)
        for name in ATTRIBUTES:
            right = torch.tensor([float("nan") if content is None
                                  else float(predicted[name][i] == getattr(content, name))
                                  for i, content in enumerate(asked)], dtype=torch.float64)
            result[f"alignment/{name}"] = right
            all_right = all_right * right
        result["alignment"] = all_right
        return result

    def prompt_attributes(self, prompt: str):
        """What a prompt asks for, {attribute: value} (None for a prompt that is not a full world caption): the
        optional part of the judge protocol that curation's per-attribute yields use."""
        content = parse_caption(prompt)
        return content.as_dict() if content else None

    def prompt_alignment(self, images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
        """Share of samples whose every prompted attribute is right, and per-attribute accuracy."""
        from style_tailoring.evaluation.judges import mean_scores

        return mean_scores(self.alignment_per_sample(images, prompts))

    def score(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The judge protocol of style_tailoring.evaluation.judges: per-image alignment and style score."""
        return {**self.alignment_per_sample(images, prompts), "style_score": self.style_score(images).double()}

    @torch.no_grad()
    def style_score(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sigmoid(self.style(chunk)["sticker"][:, 0]) for chunk in images.split(256)])


def load_judges(path) -> Judges:
    """The shipped judges in `path` (`eval.judges: {_target_: style_tailoring.world.judges.load_judges, path: ...}`)."""
    directory = Path(path)
    if not (directory / "attributes.safetensors").is_file():
        from style_tailoring.evaluation.metrics import MetricUnavailable

        raise MetricUnavailable("eval.judges.path", f"no Sticker World judges in {directory}")
    config = json.loads((directory / "judges.json").read_text())
    nets = {}
    for name, heads in config["heads"].items():
        net = JudgeNet(heads, width=config["width"])
        net.load_state_dict(load_file(directory / f"{name}.safetensors"))
        nets[name] = net
    return Judges(nets["attributes"], nets["style"], directory / "clip")


def measure(judges: Judges, pool: dict) -> dict[str, float]:
    """Held-out accuracies: each attribute, style (photo vs sticker of quality ≥ 0.5), CLIP caption retrieval."""
    images = pool["images"]
    predicted = judges.predict_attributes(images)
    result = {}
    for name, values in ATTRIBUTES.items():
        truth = pool["labels"][name].tolist()
        result[f"attribute/{name}"] = float(np.mean([values.index(p) == t for p, t in zip(predicted[name], truth)]))
    score = judges.style_score(images)
    clear = (pool["style"] == 0) | (pool["style"] >= 0.5)
    result["style"] = float(((score > 0.5) == (pool["style"] >= 0.5))[clear].float().mean())
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(judges.clip_dir), CLIPProcessor.from_pretrained(judges.clip_dir)
    captions = [caption(c) for c in all_contents()]
    with torch.no_grad():
        text = F.normalize(_features(model.get_text_features(
            **processor.tokenizer(captions, padding="max_length", return_tensors="pt"))), dim=-1)
        pixels = processor.image_processor(list(images), return_tensors="pt").pixel_values
        image = F.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)
    best = (image @ text.T).argmax(-1).tolist()
    result["clip_retrieval"] = float(np.mean([captions[b] == c for b, c in zip(best, pool["captions"])]))
    return result


def train_judges(out_dir, seed: int = 0, pool_size: int = 6000, steps: int = 600, clip_steps: int = 1500) -> dict:
    """Train the three judges, measure them on held-out renders and swap them into `out_dir` at once.

    Each finished judge waits in `.<out_dir>.partial` beside it until the swap, so a build that is interrupted (it
    takes 10-25 min on a busy 2-core machine) resumes after the last finished judge instead of starting over.
    """
    from style_tailoring.io import atomic_dir

    torch.set_num_threads(min(2, os.cpu_count() or 1))  # sized for the project's 2-core CPU budget
    out_dir, started = Path(out_dir), time.time()
    settings = {"seed": seed, "pool_size": pool_size, "steps": steps, "clip_steps": clip_steps, "width": WIDTH,
                "render_versions": RENDER_VERSIONS}
    work = out_dir.parent / f".{out_dir.name}.partial"
    if not (work / "settings.json").is_file() or json.loads((work / "settings.json").read_text()) != settings:
        shutil.rmtree(work, ignore_errors=True)
        write_json(work / "settings.json", settings)
    pool = render_pool(pool_size, seed)
    log.info("rendered %d judge training images in %.0f s", pool_size, time.time() - started)

    def classifier(name: str, heads: dict[str, int], loss_fn) -> JudgeNet:
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

    attributes = classifier("attributes", ATTRIBUTE_HEADS, lambda out, idx: sum(
        F.cross_entropy(out[k], pool["labels"][k][idx]) for k in ATTRIBUTES))
    style = classifier("style", STYLE_HEADS, lambda out, idx: F.binary_cross_entropy_with_logits(
        out["sticker"][:, 0], pool["style"][idx]))
    if not (work / "clip" / "config.json").is_file():
        clip, processor = train_clip(pool, clip_steps, seed)
        shutil.rmtree(work / "clip.tmp", ignore_errors=True)
        clip.save_pretrained(work / "clip.tmp")
        processor.save_pretrained(work / "clip.tmp")
        os.replace(work / "clip.tmp", work / "clip")
    with atomic_dir(out_dir) as tmp:
        for name in ("attributes", "style"):
            shutil.copy(work / f"{name}.safetensors", tmp / f"{name}.safetensors")
        shutil.copytree(work / "clip", tmp / "clip")
        write_json(tmp / "judges.json", {"width": WIDTH, "heads": {"attributes": ATTRIBUTE_HEADS, "style": STYLE_HEADS},
                                         "seed": seed})
        accuracy = measure(Judges(attributes, style, tmp / "clip"), render_pool(2000, seed + 1))
        write_json(tmp / "accuracy.json", {
            **accuracy, "held_out_renders": 2000, "clip_retrieval_candidates": len(all_contents()),
            "train_seconds": round(time.time() - started), "threads": torch.get_num_threads(),
            "command": "python -m style_tailoring.world build --only judges --force"})
    shutil.rmtree(work, ignore_errors=True)
    log.info("judge accuracy on held-out renders: %s", accuracy)
    return accuracy
