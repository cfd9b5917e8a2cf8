"""The Sticker World: renderer, grammar, data sets, and the shipped judges and base model."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from style_tailoring.config import REPO_ROOT
from style_tailoring.world.datasets import WorldSpec, build_datasets, contents_for
from style_tailoring.world.grammar import Content, all_contents, caption, held_out_contents, parse_caption
from style_tailoring.world.render import render

ASSETS = REPO_ROOT / "assets" / "sticker_world"


def test_renderer_is_deterministic_by_seed():
    content = Content("two", "blue", "star")
    a = np.asarray(render(content, "sticker", np.random.default_rng(3)))
    b = np.asarray(render(content, "sticker", np.random.default_rng(3)))
    c = np.asarray(render(content, "sticker", np.random.default_rng(4)))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_sticker_has_a_white_outline_and_plain_background_photo_has_neither():
    content = Content("one", "red", "square")
    sticker = np.asarray(render(content, "sticker", np.random.default_rng(0), quality=1.0)).astype(int)
    photo = np.asarray(render(content, "photo", np.random.default_rng(0))).astype(int)
    white = lambda im: (im.min(-1) > 235).mean()  # noqa: E731
    assert white(sticker) > 0.08 and white(photo) < 0.01
    corner = lambda im: im[:4, :4].reshape(-1, 3)  # noqa: E731
    assert corner(sticker).std(0).max() < 4 and corner(photo).std(0).max() > 4


def test_caption_round_trip_and_weak_captions():
    for content in all_contents():
        assert parse_caption(caption(content)) == content
        assert parse_caption(caption(content) + ", sticker, white border") == content
    assert parse_caption("red stars") is None and parse_caption("one red stars") is None


def test_datasets_are_imagefolders_with_held_out_eval_prompts(tmp_path):
    spec = WorldSpec().scaled(0.004)
    root = build_datasets(tmp_path / "world", spec=spec)
    held_out = {caption(c) for c in held_out_contents()}
    for split in spec.splits:
        rows = [json.loads(line) for line in (root / split.name / "metadata.jsonl").read_text().splitlines()]
        assert len(rows) == split.size and all((root / split.name / r["file_name"]).is_file() for r in rows)
        truth = {caption(Content(r["count"], r["colour"], r["subject"])) for r in rows}
        if split.name != "pretrain":
            assert not truth & held_out
    style = {(r["colour"], r["subject"], r["count"]) for r in map(json.loads, (root / "style" / "metadata.jsonl")
                                                                  .read_text().splitlines())}
    assert len(style) <= len(contents_for("style")) < len(contents_for("train")) / 5  # narrow
    prompts = [json.loads(line)["prompt"] for line in (root / "eval_prompts.jsonl").read_text().splitlines()]
    assert set(prompts) == held_out
    stamp = os.stat(root / "domain" / "metadata.jsonl").st_mtime_ns
    build_datasets(tmp_path / "world", spec=spec)  # cached: nothing rewritten
    assert os.stat(root / "domain" / "metadata.jsonl").st_mtime_ns == stamp


@pytest.mark.skipif(not (ASSETS / "judges" / "accuracy.json").is_file(), reason="judges not built")
def test_shipped_judges_score_fresh_renders():
    from style_tailoring.world.judges import load_judges, measure, render_pool

    judges = load_judges(ASSETS / "judges")
    accuracy = measure(judges, render_pool(300, seed=12345))
    assert min(accuracy[f"attribute/{a}"] for a in ("count", "colour", "subject")) >= 0.95
    assert accuracy["style"] >= 0.95
    pool = render_pool(64, seed=777)
    alignment = judges.prompt_alignment(pool["images"], pool["captions"])
    assert alignment["alignment"] >= 0.9
    wrong = judges.prompt_alignment(pool["images"], [caption(Content("one", "red", "heart"))] * 64)
    assert wrong["alignment"] < 0.3


@pytest.mark.skipif(not (ASSETS / "base" / "model_index.json").is_file(), reason="base model not built")
def test_shipped_base_model_is_a_stock_pipeline():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(ASSETS / "base")
    out = pipe("one red circle", num_inference_steps=4, output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 32, 32, 3)
