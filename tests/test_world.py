"""The Sticker World: renderer, grammar, data sets, and the shipped judges and base model."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from style_tailoring.config import REPO_ROOT
from style_tailoring.world.datasets import WorldSpec, build_datasets, contents_for
from style_tailoring.world.grammar import (
    ATTRIBUTES, Content, all_contents, caption, held_out_contents, parse_caption, sample_content, vocabulary,
)
from style_tailoring.world.render import render

ASSETS = REPO_ROOT / "assets" / "sticker_world"
WHITE = 235  # a pixel whose every channel is above this counts as white


def _rows(split_dir):
    return [json.loads(line) for line in (split_dir / "metadata.jsonl").read_text().splitlines()]


def _content(row) -> Content:
    return Content(**{name: row[name] for name in ATTRIBUTES})


def test_renderer_is_deterministic_by_seed():
    content = Content("two", "blue", "star")
    for style in ("photo", "sticker"):
        a = np.asarray(render(content, style, np.random.default_rng(3)))
        b = np.asarray(render(content, style, np.random.default_rng(3)))
        c = np.asarray(render(content, style, np.random.default_rng(4)))
        assert a.shape == (32, 32, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert render(content, "sticker", np.random.default_rng(0), size=48).size == (48, 48)


def test_sticker_has_a_white_outline_and_plain_background_photo_has_neither():
    content = Content("one", "red", "square")
    sticker = np.asarray(render(content, "sticker", np.random.default_rng(0), quality=1.0)).astype(int)
    photo = np.asarray(render(content, "photo", np.random.default_rng(0))).astype(int)
    white = lambda im: (im.min(-1) > WHITE).mean()  # noqa: E731
    assert white(sticker) > 0.08 and white(photo) < 0.01
    corner = lambda im: im[:4, :4].reshape(-1, 3)  # noqa: E731
    assert corner(sticker).std(0).max() < 4 and corner(photo).std(0).max() > 4
    # Lower quality: a thinner outline and a textured background, between the two.
    rough = np.asarray(render(content, "sticker", np.random.default_rng(0), quality=0.5)).astype(int)
    assert white(photo) < white(rough) < white(sticker)
    assert corner(rough).std(0).max() > corner(sticker).std(0).max()


def test_sticker_die_cut_stays_inside_the_frame():
    rng = np.random.default_rng(0)
    for content in [c for c in all_contents() if c.count == "two"]:
        image = np.asarray(render(content, "sticker", rng, quality=1.0)).astype(int)
        frame = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert (frame.min(-1) > WHITE).sum() == 0, content


def test_caption_round_trip_and_strict_parse():
    words = set(vocabulary())
    for content in all_contents():
        assert parse_caption(caption(content)) == content
        assert parse_caption(caption(content) + ", sticker, white border") == content
        assert set(caption(content).split()) <= words
    assert len(all_contents()) == np.prod([len(v) for v in ATTRIBUTES.values()])
    for text in ("red stars", "one red stars", "two red star", "three red stars", "one pink star", ""):
        assert parse_caption(text) is None, text
    allowed = held_out_contents()[:2]
    rng = np.random.default_rng(0)
    assert {sample_content(rng, allowed) for _ in range(20)} == set(allowed)


def test_datasets_are_imagefolders_with_held_out_eval_prompts(tmp_path):
    from style_tailoring.data.folder import ImageCaptionFolder

    spec = WorldSpec().scaled(0.004)
    root = build_datasets(tmp_path / "world", spec=spec)
    held_out = set(held_out_contents())
    rows = {}
    for split in spec.splits:
        rows[split.name] = _rows(root / split.name)
        assert len(rows[split.name]) == split.size
        assert len(ImageCaptionFolder(root / split.name, resolution=32)) == split.size  # the project's own reader
        if split.name != "pretrain":
            assert not {_content(r) for r in rows[split.name]} & held_out
    # Weak labels: exactly the flagged captions disagree with the content; elsewhere captions are exact.
    for split_rows in rows.values():
        assert all((r["text"] != caption(_content(r))) == r["weak_label"] for r in split_rows)
    assert {r["style"] for r in rows["pretrain"]} == {"photo"}
    assert all(r["quality"] == 1.0 for r in rows["style"]) and max(r["quality"] for r in rows["alignment"]) < 1
    style = {_content(r) for r in rows["style"]}
    assert style <= set(contents_for("style")) and len(contents_for("style")) < len(contents_for("train")) / 5
    assert {c.count for c in style} == {"one"}
    eval_rows = [json.loads(line) for line in (root / "eval_prompts.jsonl").read_text().splitlines()]
    assert {parse_caption(r["prompt"]) for r in eval_rows} == {_content(r) for r in eval_rows} == held_out
    assert json.loads((root / "world.json").read_text())["style"]["seed"] == 0


def test_datasets_are_cached_and_rebuilt_when_parameters_change(tmp_path):
    spec = WorldSpec().scaled(0.002)
    root = build_datasets(tmp_path / "world", spec=spec)
    stamps = {s.name: os.stat(root / s.name / "metadata.jsonl").st_mtime_ns for s in spec.splits}
    build_datasets(tmp_path / "world", spec=spec)  # cached: nothing rewritten
    assert {s.name: os.stat(root / s.name / "metadata.jsonl").st_mtime_ns for s in spec.splits} == stamps
    build_datasets(tmp_path / "world", spec=spec, sizes={"style": 12})
    assert len(_rows(root / "style")) == 12
    assert os.stat(root / "domain" / "metadata.jsonl").st_mtime_ns == stamps["domain"]
    assert not list(root.glob("*.tmp")) and not list(root.glob("*.old"))
    with pytest.raises(ValueError):
        build_datasets(tmp_path / "world", spec=spec, sizes={"no_such_split": 1})


def test_shipped_judges_score_fresh_renders():
    from transformers import CLIPModel, CLIPProcessor

    from style_tailoring.world.judges import load_judges, measure, render_pool

    judges = load_judges(ASSETS / "judges")
    accuracy = measure(judges, render_pool(300, seed=12345))  # seeds never used in training
    assert min(accuracy[f"attribute/{a}"] for a in ATTRIBUTES) >= 0.95
    assert accuracy["style"] >= 0.95 and accuracy["clip_retrieval"] >= 0.9
    pool = render_pool(64, seed=777)
    alignment = judges.prompt_alignment(pool["images"], pool["captions"])
    assert alignment["alignment"] >= 0.9 and set(alignment) == {"alignment", *(f"alignment/{a}" for a in ATTRIBUTES)}
    wrong = judges.prompt_alignment(pool["images"], [caption(Content("one", "red", "heart"))] * 64)
    assert wrong["alignment"] < 0.3
    # Style score: perfect stickers high, photos low.
    rng = np.random.default_rng(4242)
    as_tensor = lambda image: torch.from_numpy(np.array(image)).permute(2, 0, 1)  # noqa: E731
    renders = {style: torch.stack([as_tensor(render(sample_content(rng), style, rng)) for _ in range(16)])
               for style in ("photo", "sticker")}
    assert judges.style_score(renders["sticker"]).min() > 0.8 > 0.2 > judges.style_score(renders["photo"]).max()
    # The CLIP loads with stock transformers classes, like a real CLIP on disk.
    model, processor = CLIPModel.from_pretrained(judges.clip_dir), CLIPProcessor.from_pretrained(judges.clip_dir)
    assert processor.tokenizer.model_max_length == model.config.text_config.max_position_embeddings
    assert model.config.vision_config.image_size == 32
    assert sum(f.stat().st_size for f in (ASSETS / "judges").rglob("*") if f.is_file()) < 5 * 2**20


@pytest.mark.skipif(not (ASSETS / "base" / "model_index.json").is_file(), reason="base model not built")
def test_shipped_base_model_is_a_stock_pipeline():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(ASSETS / "base")
    out = pipe("one red circle", num_inference_steps=4, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 32, 32, 3)


def test_shipped_student_base_is_the_base_with_a_narrower_unet():
    from diffusers import StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(ASSETS / "base")
    student = StableDiffusionPipeline.from_pretrained(ASSETS / "student")
    for name in ("vae", "text_encoder"):  # the same latent space and prompts: a student can learn from teachers
        a, b = getattr(base, name).state_dict(), getattr(student, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(student.unet) < 0.3 * count(base.unet)
    out = student("one red circle", num_inference_steps=4, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 32, 32, 3)
