"""Metrics on known inputs: FID/KID through torch-fidelity, CLIP score, diversity and Vendi."""

from __future__ import annotations

import math

import pytest
import torch

from style_tailoring.metrics import MetricUnavailable
from style_tailoring.metrics.clip import image_embeddings, load_clip, make_clip_score
from style_tailoring.metrics.diversity import SceneDiversity, pairwise_cosine_diversity, vendi_score
from style_tailoring.metrics.fidelity import fid_kid


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP saved like a real one (model + processor with an offline tokenizer)."""
    from style_tailoring.world.judges import build_clip

    torch.manual_seed(0)
    model, processor = build_clip()
    path = tmp_path_factory.mktemp("clip")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    base = torch.randint(60, 200, (24, 3, 32, 32), generator=g, dtype=torch.uint8)
    shifted = (255 - base).clamp(0, 255)  # colour-inverted: a visibly different distribution
    return base, shifted


def test_fid_kid_order_sets_correctly(clip_dir, images, tmp_path):
    base, shifted = images
    same = fid_kid(base, base.clone(), feature_extractor="clip-local", weights_path=clip_dir, kid_subset_size=1000)
    other = fid_kid(base, shifted, feature_extractor="clip-local", weights_path=clip_dir)
    assert other["fid"] > 0 and abs(same["fid"]) <= 1e-3 * other["fid"]
    assert other["kid"] > same["kid"] and math.isfinite(other["kid_std"])


def test_reference_folder_is_loaded_and_cached(clip_dir, images, tmp_path):
    from PIL import Image

    base, shifted = images
    for i, image in enumerate(shifted):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    (tmp_path / "metadata.jsonl").write_text("")
    first = fid_kid(base, tmp_path, feature_extractor="clip-local", weights_path=clip_dir, cache_name="ref-test",
                    cache_root=tmp_path / "cache")
    again = fid_kid(base, tmp_path, feature_extractor="clip-local", weights_path=clip_dir, cache_name="ref-test",
                    cache_root=tmp_path / "cache")
    assert first["fid"] == pytest.approx(again["fid"]) and any((tmp_path / "cache").rglob("*ref-test*"))


def test_missing_weights_name_the_key_and_download_nothing(images, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", "/nonexistent")  # a download attempt would fail loudly, not be skipped
    with pytest.raises(MetricUnavailable) as err:
        fid_kid(images[0], images[1], feature_extractor="inception-v3-compat", weights_path=None)
    assert err.value.key == "eval.fid.weights_path"
    with pytest.raises(MetricUnavailable) as err:
        load_clip("/nonexistent/clip")
    assert err.value.key == "eval.clip.model_path"


def test_clip_score_and_embeddings(clip_dir, images):
    metric = make_clip_score(clip_dir)
    metric.update(images[0][:4], ["one red circle", "two blue stars", "one green heart", "two yellow squares"])
    assert math.isfinite(float(metric.compute()))
    model, processor = load_clip(clip_dir)
    emb = image_embeddings(model, processor, images[0][:5], batch_size=2)
    assert emb.shape[0] == 5 and torch.allclose(emb.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_diversity_and_vendi_extremes():
    same = torch.ones(3, 4, 8)
    assert pairwise_cosine_diversity(same) == pytest.approx(0, abs=1e-6) and vendi_score(same) == pytest.approx(1)
    orthogonal = torch.eye(4).expand(3, 4, 4)
    assert pairwise_cosine_diversity(orthogonal) == pytest.approx(1) and vendi_score(orthogonal) == pytest.approx(4)


def test_scene_diversity_is_order_and_shard_independent():
    g = torch.Generator().manual_seed(1)
    emb, index = torch.randn(12, 6, generator=g), torch.arange(3).repeat_interleave(4)
    whole = SceneDiversity()
    whole.update(index, emb)
    shards = SceneDiversity()
    perm = torch.randperm(12, generator=g)
    shards.update(index[perm[6:]], emb[perm[6:]])
    shards.update(index[perm[:6]], emb[perm[:6]])
    a, b = whole.compute(), shards.compute()
    assert a == pytest.approx(b) and 0 < a["diversity"] and 1 < a["vendi"] <= 4
