"""The alpha decoder's procedural transparent images (world/transparency.py, world step `alpha_sets`) and its
training options (composite_weight, trainable): the kinds are reproducible straight-alpha RGBA, the held-out kinds
draw only shape families the training mixture never does, the committed held-out sets are what the generator draws,
and bad option values are refused, naming the key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from style_tailoring.alpha.__main__ import check_alpha_settings
from style_tailoring.alpha.decoder import TRAINABLE, train_alpha_decoder, trainable_parameters
from style_tailoring.config import AlphaConfig, ConfigError, merge_into_schema
from style_tailoring.world import transparency
from style_tailoring.world.transparency import TEST_KINDS, TRAIN, Kind, draw, write_set

KINDS = {"train": TRAIN, **TEST_KINDS}


def pixels(kind: Kind, seed: int, n: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(draw(kind, rng, size)) for _ in range(n)]


@pytest.mark.parametrize("name", KINDS)
def test_each_kind_is_the_same_for_the_same_seed_and_differs_for_another(name):
    first, again, other = pixels(KINDS[name], 5, 4), pixels(KINDS[name], 5, 4), pixels(KINDS[name], 6, 4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))
    assert not np.array_equal(first[0], first[1])  # successive draws differ too


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("size", [32, 21])  # an odd size too (the texture's noise cells are cropped to it)
def test_each_kind_is_rgba_of_the_size_asked_with_transparent_and_covered_pixels(name, size):
    kind = KINDS[name]
    rng = np.random.default_rng(11)
    for _ in range(12):
        image = draw(kind, rng, size)
        assert image.mode == "RGBA" and image.size == (size, size)
        alpha = np.asarray(image)[..., 3]
        assert (alpha == 0).any() and (alpha > 0).any()  # both clear outside and something drawn
        if kind.translucent == 0:
            assert (alpha == 255).any()  # an opaque fill (or die-cut border) in every image
        elif kind.translucent == 1:
            assert alpha.max() < 255  # every fill partially transparent, shadows and glows too
    if kind.translucent == 0 and kind.feathered == 0 and "drop" not in kind.shadows and "glow" not in kind.shadows:
        alpha = np.asarray(draw(kind, rng, size))[..., 3]
        assert ((alpha == 0) | (alpha == 255)).mean() > 0.8  # hard edges: partial alpha only at the outline


def test_colour_is_straight_not_premultiplied():
    """One translucent, feathered flat ellipse: its colour is the fill's wherever alpha is well above 0, however
    transparent (premultiplied colour would darken with alpha)."""
    soft = Kind(families=("ellipse",), borders=("none",), shadows=("none",), fills=("flat",), translucent=1.0,
                feathered=1.0, max_objects=1)
    for seed in range(4):
        rgba = pixels(soft, seed, 1)[0].astype(float)
        alpha = rgba[..., 3]
        inside = alpha >= 40
        assert len(np.unique(alpha[inside])) > 3  # a range of alpha: the soft edge
        colours = rgba[..., :3][inside]
        assert np.abs(colours - colours[alpha[inside].argmax()]).max() <= 4
        assert (rgba[..., :3][alpha == 0] == 0).all()  # no colour where nothing is


def test_held_out_kinds_draw_only_families_the_training_mixture_never_draws(monkeypatch):
    for name, kind in TEST_KINDS.items():
        assert not set(kind.families) & set(TRAIN.families), name
    drawn = {}
    real = transparency._mask

    def recording(family, rng, big):
        drawn.setdefault(current, set()).add(family)
        return real(family, rng, big)

    monkeypatch.setattr(transparency, "_mask", recording)
    for current, kind in KINDS.items():
        rng = np.random.default_rng(3)
        for _ in range(40):
            draw(kind, rng)
    assert drawn["train"] == set(TRAIN.families)  # every training family is used ...
    for name, kind in TEST_KINDS.items():
        assert drawn[name] == set(kind.families)  # ... and each held-out kind draws only its own
        assert not drawn[name] & drawn["train"], name


def test_write_set_writes_the_draws_of_its_seed(tmp_path):
    folder = write_set(tmp_path / "set", TEST_KINDS["borderless"], 3, seed=9)
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"]
    assert all(np.array_equal(np.asarray(Image.open(f)), expected)
               for f, expected in zip(files, pixels(TEST_KINDS["borderless"], 9, 3)))


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         sample_size=16).eval()


def test_last_blocks_trains_only_the_decoders_last_up_block_and_output_layers(tmp_path):
    data = write_set(tmp_path / "rgba", TRAIN, 4, seed=0, size=16)
    vae = tiny_vae()
    assert len(trainable_parameters(vae, "last_blocks")) < len(trainable_parameters(vae, "decoder"))
    trained = train_alpha_decoder(vae, [data], background=(222, 224, 230), resolution=16, steps=2, batch_size=4,
                                  composite_weight=4.0, trainable="last_blocks")
    assert trained.config.out_channels == 4  # a VAE built in code (its out_channels a default) extends too
    before, after = vae.state_dict(), trained.state_dict()
    moves = ("decoder.up_blocks.1.", "decoder.conv_norm_out.", "decoder.conv_out.")
    for name, value in before.items():
        if name.startswith("decoder.conv_out."):
            assert not torch.equal(after[name][:3], value), name  # the colour rows train, the alpha row is new
        elif name.startswith(moves) and name.endswith(".weight") and "norm" not in name:
            assert not torch.equal(after[name], value), name
        elif not name.startswith(moves):
            torch.testing.assert_close(after[name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="trainable"):
        trainable_parameters(vae, "encoder")


def settings(**values):
    base = {"action": "train", "pipeline": "pipe", "data_dirs": ["rgba"], "out": "dec"}
    return merge_into_schema(AlphaConfig, OmegaConf.create({**base, **values}))


@pytest.mark.parametrize("values, refusal", [
    ({"trainable": "all"}, f"trainable: must be one of {list(TRAINABLE)}, got 'all'"),
    ({"trainable": "last_block"}, "trainable: must be one of"),
    ({"composite_weight": 0}, "composite_weight: must be a finite number > 0"),
    ({"composite_weight": -2.0}, "composite_weight: must be a finite number > 0"),
    ({"composite_weight": float("nan")}, "composite_weight: must be a finite number > 0"),
    ({"composite_weight": float("inf")}, "composite_weight: must be a finite number > 0"),
    ({"composite_weight": 4.0, "no_alpha": True}, "composite_weight: weighs the composite against the alpha term"),
    ({"action": "measure", "decoder": "d", "test": "t", "tune": "u", "data_dirs": [], "out": None,
      "trainable": "last_blocks"}, "trainable: is read by action=train only"),
])
def test_bad_training_options_are_refused_naming_the_key(values, refusal):
    with pytest.raises(ConfigError) as err:
        check_alpha_settings(settings(**values))
    assert refusal in str(err.value)


def test_a_composite_weight_that_is_no_number_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as err:
        settings(composite_weight="heavy")
    assert str(err.value).startswith("composite_weight")


def test_good_training_options_pass():
    for values in ({"trainable": "last_blocks", "composite_weight": 4.0}, {"trainable": "decoder"},
                   {"no_alpha": True, "trainable": "last_blocks"}):
        check_alpha_settings(settings(**values))


def test_the_world_step_alpha_sets_writes_them_once_and_again_with_force(tmp_path, monkeypatch):
    from style_tailoring.world import build

    monkeypatch.setattr(transparency, "TRAIN_SIZE", 5)
    monkeypatch.setattr(transparency, "VAL_SIZE", 3)
    monkeypatch.setattr(transparency, "TEST_SIZE", 2)
    data, assets = tmp_path / "data", tmp_path / "assets"
    assert build.build(data, assets, only=["alpha_sets"]) == ["alpha_sets"]
    counts = {p.name: len(list(p.glob("*.png"))) for p in [*data.iterdir(), *(assets / "alpha_test_sets").iterdir()]
              if p.is_dir()}
    assert counts == {"alpha_varied": 5, "alpha_varied_val": 3, **{kind: 2 for kind in TEST_KINDS}}
    about = assets / "alpha_test_sets" / "about.json"
    assert json.loads(about.read_text())["kinds"]["borderless"]["images"] == 2
    assert not (assets / "alpha_decoder").exists()  # the alpha step is another step, not run
    stamp = (data / "alpha_varied" / "00000.png").stat().st_mtime_ns
    build.build(data, assets, only=["alpha_sets"])
    assert (data / "alpha_varied" / "00000.png").stat().st_mtime_ns == stamp  # done: skipped
    build.build(data, assets, only=["alpha_sets"], force=True, seed=4)
    assert not np.array_equal(np.asarray(Image.open(data / "alpha_varied" / "00000.png")), pixels(TRAIN, 0, 1)[0])
    assert np.array_equal(np.asarray(Image.open(data / "alpha_varied" / "00000.png")), pixels(TRAIN, 4, 1)[0])
    assert list(build.STEPS).index("alpha_sets") < list(build.STEPS).index("alpha")


def test_the_committed_held_out_sets_are_what_the_generator_draws_and_small():
    from style_tailoring.config import REPO_ROOT

    root = REPO_ROOT / "assets" / "sticker_world" / transparency.TEST_SETS
    assert json.loads((root / "about.json").read_text()) == transparency.test_sets_about()
    for i, (kind, spec) in enumerate(TEST_KINDS.items()):
        files = sorted((root / kind).glob("*.png"))
        assert len(files) == transparency.TEST_SIZE, kind
        for f, expected in zip(files[:2], pixels(spec, transparency.TEST_SEED + i, 2)):
            assert np.array_equal(np.asarray(Image.open(f)), expected), f
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) < 2**20 / 2
