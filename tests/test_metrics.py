"""Metrics on known inputs, offline: FID/KID through torch-fidelity, CLIP score, diversity and Vendi.

A tiny random CLIP is saved to disk exactly like a real one (model + processor + hand-built tokenizer), so the
same code paths load it as would load openai/clip-vit-base-patch16 from a local directory.
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing
import socket
import string

import pytest
import torch
from PIL import Image

from style_tailoring.evaluation.metrics import MetricUnavailable, fidelity
from style_tailoring.evaluation.metrics.clip import image_embeddings, load_clip, make_clip_score
from style_tailoring.evaluation.metrics.diversity import SceneDiversity, pairwise_cosine_diversity, vendi_score
from style_tailoring.evaluation.metrics.fidelity import FolderImages, fid_kid

PROJECTION_DIM = 24  # differs from the towers' hidden size, so an unprojected (pooled) output would be caught


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*string.ascii_lowercase, *(c + "</w>" for c in string.ascii_lowercase), "re", "red</w>"]:
        vocab[token] = len(vocab)
    # transformers 5 takes the vocab/merges themselves; model_max_length's default is a huge int that breaks padding
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[("r", "e"), ("re", "d</w>")], model_max_length=77)
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": len(vocab), "max_position_embeddings": 77, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=PROJECTION_DIM)
    torch.manual_seed(0)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    base = torch.randint(60, 200, (24, 3, 32, 32), generator=g, dtype=torch.uint8)
    return base, 255 - base  # colour-inverted: a visibly different distribution


def save_pngs(images, folder):
    for i, image in enumerate(images):
        path = folder / f"part{i % 2}" / f"{i:03d}.png"  # nested: the reference is read recursively
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "part0/000.png", "text": "a red circle"}) + "\n")


def test_fid_kid_are_zero_on_identical_sets_and_grow_with_a_shift(clip_dir, images):
    base, shifted = images
    same = fid_kid(base, base.clone(), feature_extractor="clip-local", weights_path=clip_dir)
    other = fid_kid(base, shifted, feature_extractor="clip-local", weights_path=clip_dir)
    assert other["fid"] > 0 and abs(same["fid"]) <= 1e-3 * other["fid"]
    assert other["kid"] > same["kid"] and math.isfinite(other["kid_std"])


def test_kid_subset_is_clamped_to_small_sets(clip_dir, images):
    out = fid_kid(images[0][:5], images[1][:7], feature_extractor="clip-local", weights_path=clip_dir,
                  kid_subset_size=1000)
    assert all(math.isfinite(v) for v in out.values())


def test_reference_folder_is_read_recursively_and_cached(clip_dir, images, tmp_path, monkeypatch):
    base, shifted = images
    save_pngs(base, tmp_path / "ref")
    kwargs = {"feature_extractor": "clip-local", "weights_path": clip_dir, "cache_name": "ref-test",
              "cache_root": tmp_path / "cache"}
    first = fid_kid(shifted, tmp_path / "ref", **kwargs)
    assert first["fid"] == pytest.approx(fid_kid(shifted, base, feature_extractor="clip-local",
                                                 weights_path=clip_dir)["fid"], rel=1e-5)

    def no_decoding(self, i):
        raise AssertionError("a cached reference must not be decoded again")

    monkeypatch.setattr(FolderImages, "__getitem__", no_decoding)
    assert fid_kid(shifted, tmp_path / "ref", **kwargs)["fid"] == pytest.approx(first["fid"])


def test_reference_cache_name_changes_when_the_reference_or_the_weights_are_rewritten(clip_dir, tmp_path):
    """Rebuilt reference images or retrained feature weights at the same paths must not reuse cached features."""
    import os
    import shutil

    from style_tailoring.evaluation.evaluator import _cache_name

    (tmp_path / "ref").mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "ref" / "0.png")
    weights = shutil.copytree(clip_dir, tmp_path / "clip")
    name = lambda: _cache_name(str(tmp_path / "ref"), "clip-local", str(weights), 32)  # noqa: E731
    first = name()
    assert name() == first  # stable while nothing changes
    Image.new("RGB", (32, 32), (30, 200, 30)).save(tmp_path / "ref" / "0.png")
    os.utime(tmp_path / "ref" / "0.png", ns=(1, 1))
    second = name()
    assert second != first
    retrained = next(p for p in weights.rglob("*.safetensors"))
    os.utime(retrained, ns=(2, 2))
    assert name() not in (first, second)


def test_folder_images_are_resized_and_cropped_to_the_sample_size(tmp_path):
    for i, (w, h) in enumerate([(48, 40), (40, 64), (32, 32)]):
        Image.new("RGB", (w, h), (200, 30, 30)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "0.txt").write_text("a caption, not an image")
    folder = FolderImages(tmp_path, (32, 32))
    assert len(folder) == 3
    assert all(folder[i].shape == (3, 32, 32) and folder[i].dtype == torch.uint8 for i in range(3))


def test_missing_weights_name_the_key_before_torch_fidelity_runs(images, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr("torch_fidelity.calculate_metrics", no_network)
    for extractor, path in [("inception-v3-compat", None), ("inception-v3-compat", "/nonexistent/inception.pth"),
                            ("clip-local", "/nonexistent/clip")]:
        with pytest.raises(MetricUnavailable) as err:
            fid_kid(images[0], images[1], feature_extractor=extractor, weights_path=path)
        assert err.value.key == "eval.fid.weights_path"
    with pytest.raises(MetricUnavailable) as err:
        load_clip("/nonexistent/clip")
    assert err.value.key == "eval.clip.model_path"


def test_clip_local_registration_survives_a_reimport(clip_dir, images):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    importlib.reload(fidelity)  # a second registration of the name would raise
    assert FEATURE_EXTRACTORS_REGISTRY["clip-local"].__name__ == "LocalCLIPFeatures"
    out = fidelity.fid_kid(images[0][:6], images[0][6:12], feature_extractor="clip-local", weights_path=clip_dir)
    assert math.isfinite(out["fid"])  # and the registered extractor still works


def test_clip_score_runs_on_uint8_images_and_prompts(clip_dir, images):
    metric = make_clip_score(clip_dir)
    larger = torch.nn.functional.interpolate(images[0][:4].float(), size=48).to(torch.uint8)  # processor resizes
    metric.update(larger, ["one red circle", "two blue stars", "one green heart", "two yellow squares"])
    assert math.isfinite(float(metric.compute()))


def test_image_embeddings_are_normalised_projected_and_batch_independent(clip_dir, images):
    model, processor = load_clip(clip_dir)
    emb = image_embeddings(model, processor, images[0][:5], batch_size=2)
    assert emb.shape == (5, PROJECTION_DIM) and torch.allclose(emb.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(emb, image_embeddings(model, processor, images[0][:5], batch_size=5), atol=1e-5)
    text = processor(text=["one red circle"], return_tensors="pt")
    assert isinstance(model.get_text_features(**text), torch.Tensor)  # the transformers 5 output is unwrapped
    with pytest.raises(TypeError):
        image_embeddings(model, processor, images[0][:2].float() / 255)


@pytest.mark.parametrize("k", [2, 5])
def test_diversity_and_vendi_extremes(k):
    same = torch.randn(1, 1, 8).expand(3, k, 8)
    assert pairwise_cosine_diversity(same) == pytest.approx(0, abs=1e-6) and vendi_score(same) == pytest.approx(1)
    orthogonal = torch.eye(k).expand(3, k, k) * 3  # unnormalised on purpose
    assert pairwise_cosine_diversity(orthogonal) == pytest.approx(1) and vendi_score(orthogonal) == pytest.approx(k)
    random = torch.randn(3, k, 8, generator=torch.Generator().manual_seed(0))
    assert 1 <= vendi_score(random) <= k


def random_groups(n_prompts=3, k=4, dim=6):
    g = torch.Generator().manual_seed(1)
    return torch.arange(n_prompts).repeat_interleave(k), torch.randn(n_prompts * k, dim, generator=g)


def test_scene_diversity_is_independent_of_sharding_and_order():
    index, emb = random_groups()
    whole = SceneDiversity()
    whole.update(index, emb)
    shards = SceneDiversity()
    perm = torch.randperm(len(index), generator=torch.Generator().manual_seed(2))
    shards.update(index[perm[7:]], emb[perm[7:]])
    shards.update(index[perm[:7]], emb[perm[:7]])
    grouped = emb.reshape(3, 4, -1)
    expected = {"diversity": pairwise_cosine_diversity(grouped), "vendi": vendi_score(grouped)}
    assert whole.compute() == pytest.approx(expected) and shards.compute() == pytest.approx(expected)
    assert 0 < expected["diversity"] and 1 < expected["vendi"] <= 4


def _ddp_rank(rank, init_file, shard, results):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metric = SceneDiversity()
        metric.update(*shard)
        results.put((rank, metric.compute()))  # compute syncs the "cat" states across the two ranks
    except Exception as err:  # noqa: BLE001 -- reported, so the test fails at once instead of waiting on the queue
        results.put((rank, repr(err)))
    dist.destroy_process_group()


def test_scene_diversity_syncs_prompts_split_across_ddp_ranks(tmp_path):
    index, emb = random_groups()
    on_rank0 = (index == 0) | ((index == 1) & (torch.arange(len(index)) % 2 == 0))  # prompt 1 is split across ranks
    shards = [(index[on_rank0], emb[on_rank0]), (index[~on_rank0].flip(0), emb[~on_rank0].flip(0))]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_ddp_rank, args=(rank, tmp_path / "store", shards[rank], results)) for rank in (0, 1)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    expected = SceneDiversity()
    expected.update(index, emb)
    assert got[0] == pytest.approx(expected.compute()) and got[1] == pytest.approx(expected.compute())
