"""The alpha decoder: transparent renders, the paper's initialisation, decoder-only training, attaching it to runs
and evaluations, RGBA samples in stock diffusers, and the alpha metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_cfg
from style_tailoring.alpha.decoder import (
    attach_alpha_decoder,
    encoder_digest,
    extend_decoder,
    save_alpha_decoder,
    train_alpha_decoder,
)
from style_tailoring.alpha.matte import (
    RGBAFolder,
    alpha_iou,
    boundary_f,
    composite,
    split_rgba,
    threshold_matte,
)
from style_tailoring.config import ConfigError
from style_tailoring.models.components import build_tiny
from style_tailoring.world.grammar import all_contents
from style_tailoring.world.render import render, sample_layout
from test_cli import assert_help_and_unknown_key, cli, command

STICKER_BACKGROUND = (222, 224, 230)


def rgba_folder(root, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    contents = all_contents()
    for i in range(n):
        render(contents[int(rng.integers(len(contents)))], "rgba", rng).save(root / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_alpha(data_dirs, tmp_path_factory):
    """An alpha decoder trained for a few steps behind the tiny model's VAE (seed 0), on white."""
    root = tmp_path_factory.mktemp("alpha")
    vae = build_tiny(make_cfg(data_dirs, root / "x").model, seed=0).vae
    data = rgba_folder(root / "rgba", 8)
    trained = train_alpha_decoder(vae, [data], background=(255, 255, 255), resolution=32, steps=3, batch_size=4)
    save_alpha_decoder(trained, root / "decoder", background=(255, 255, 255), source_digest=encoder_digest(vae),
                       about={"steps": 3})
    return {"vae": vae, "trained": trained, "dir": root / "decoder", "data": data, "root": root}


def test_the_transparent_render_is_the_sticker_cut_out():
    for i, content in enumerate(all_contents()[::9][:12]):
        layout = sample_layout(content, np.random.default_rng(50 + i))
        sticker = np.asarray(render(content, "sticker", np.random.default_rng(i), layout=layout)).astype(float)
        rgba = np.asarray(render(content, "rgba", np.random.default_rng(i), layout=layout)).astype(float)
        assert rgba.shape == (32, 32, 4)
        alpha = rgba[..., 3:] / 255
        over = rgba[..., :3] * alpha + np.array(STICKER_BACKGROUND) * (1 - alpha)
        assert np.abs(over - sticker).mean() < 3  # the same sticker (area vs Lanczos downsampling aside)
        assert alpha[0, 0, 0] == 0 and alpha.max() == 1  # corners are cut away; the die-cut is opaque
        assert 0.1 < (alpha >= 0.5).mean() < 0.9


def test_the_extended_decoder_starts_as_the_old_one_with_alpha_the_mean_of_rgb(tiny_alpha):
    vae = tiny_alpha["vae"]
    extended = extend_decoder(vae)
    latents = torch.randn(2, vae.config.latent_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        old, new = vae.decode(latents).sample, extended.decode(latents).sample
    assert new.shape[1] == 4
    torch.testing.assert_close(new[:, :3], old)
    torch.testing.assert_close(new[:, 3], old.mean(1), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="RGB"):
        extend_decoder(extended)


def test_training_moves_only_the_decoder(tiny_alpha):
    vae, trained = tiny_alpha["vae"], tiny_alpha["trained"]
    assert encoder_digest(trained) == encoder_digest(vae)
    before, after = vae.state_dict(), trained.state_dict()
    for name in before:
        if not name.startswith("decoder."):
            torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert not torch.equal(after["decoder.conv_out.weight"][:3], before["decoder.conv_out.weight"])


def test_attaching_checks_encoder_and_background(tiny_alpha, data_dirs, tmp_path):
    vae = tiny_alpha["vae"]
    attached = attach_alpha_decoder(vae, tiny_alpha["dir"], background=(255, 255, 255))
    assert attached.config.out_channels == 4
    with pytest.raises(ConfigError, match="model.alpha_decoder.*background"):
        attach_alpha_decoder(vae, tiny_alpha["dir"], background=STICKER_BACKGROUND)
    other = build_tiny(make_cfg(data_dirs, tmp_path / "x").model, seed=1).vae
    with pytest.raises(ConfigError, match="model.alpha_decoder.*another VAE encoder"):
        attach_alpha_decoder(other, tiny_alpha["dir"])
    with pytest.raises(ConfigError, match="model.alpha_decoder.*not an alpha decoder folder"):
        attach_alpha_decoder(vae, tmp_path)


def test_matte_metrics_on_known_masks():
    square = torch.zeros(1, 1, 16, 16)
    square[..., 4:12, 4:12] = 1
    shifted = torch.roll(square, 2, dims=-1)
    assert alpha_iou(square, square).item() == 1 and boundary_f(square, square).item() == 1
    assert alpha_iou(shifted, square).item() == pytest.approx(48 / 80)
    assert boundary_f(torch.roll(square, 1, dims=-1), square).item() == 1  # within the 1-pixel tolerance
    assert boundary_f(shifted, square).item() < 0.7
    # the baseline cuts an opaque square out of a known background exactly, and misses a translucent shadow
    colour = torch.full((1, 3, 16, 16), 0.2)
    alpha = square.clone()
    alpha[..., 12:14, 6:14] = 0.3  # the shadow: translucent, outside the die-cut
    image = composite(colour, alpha, (255, 255, 255))
    thresholded = threshold_matte(image, (255, 255, 255), tau=10)
    assert alpha_iou(thresholded, square).item() == pytest.approx(64 / 80)
    assert alpha_iou(threshold_matte(image, (255, 255, 255), tau=200), square).item() == 1


def test_rgba_samples_are_split_into_rgba_and_the_composite_for_the_metrics():
    rgba = np.zeros((1, 2, 2, 4), np.uint8)
    rgba[0, 0, 0] = (255, 0, 0, 255)
    rgba[0, 1, 1] = (0, 0, 0, 128)
    rgb, kept = split_rgba(rgba, (200, 100, 50))
    assert kept is rgba
    assert rgb[0, 0, 0].tolist() == [255, 0, 0] and rgb[0, 0, 1].tolist() == [200, 100, 50]
    assert rgb[0, 1, 1].tolist() == [100, 50, 25]
    three = np.zeros((1, 2, 2, 3), np.uint8)
    assert split_rgba(three, (0, 0, 0))[1] is None


def test_rgba_folder_reads_alpha_and_names_a_bad_file(tmp_path):
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "opaque.png")
    Image.new("RGBA", (64, 64), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    data = RGBAFolder(tmp_path, 32)
    assert [p.name for p in data.paths] == ["clear.png", "opaque.png"]
    assert data[0].shape == (4, 32, 32) and data[0][3].max() == 0 and data[1][3].min() == 1
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        RGBAFolder(tmp_path, 32)[0]


def test_a_run_with_an_alpha_decoder_exports_rgba_stickers_to_stock_diffusers(tiny_alpha, data_dirs, tmp_path):
    from diffusers import StableDiffusionPipeline

    from style_tailoring.training.run import run

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\na blue circle\n")
    run_dir = tmp_path / "run"
    run(make_cfg(data_dirs, run_dir, f"model.alpha_decoder={tiny_alpha['dir']}", "data.background=white",
                 "trainer.max_steps=2", "eval.enabled=true", f"eval.prompts={prompts}", "eval.seeds_per_prompt=2",
                 "eval.sample.num_inference_steps=2", "eval.fid.enabled=false"))
    samples = run_dir / "samples" / "final"
    names = sorted(p.name for p in samples.glob("*.png"))
    assert len(names) == 4
    for name in names:
        rgba, rgb = Image.open(samples / "rgba" / name), Image.open(samples / name)
        assert rgba.mode == "RGBA" and rgb.mode == "RGB"
        a = np.asarray(rgba).astype(float)
        expected = a[..., :3] * a[..., 3:] / 255 + 255 * (1 - a[..., 3:] / 255)
        assert np.abs(np.asarray(rgb).astype(float) - expected).max() <= 1
    assert json.loads((run_dir / "pipeline" / "vae" / "config.json").read_text())["out_channels"] == 4
    pipe = StableDiffusionPipeline.from_pretrained(run_dir / "pipeline")
    image = pipe("a red square", num_inference_steps=2, height=32, width=32,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.mode == "RGBA" and image.size == (32, 32)
    # and a wrong background is refused before any work, naming the key
    with pytest.raises(ConfigError, match="model.alpha_decoder"):
        run(make_cfg(data_dirs, tmp_path / "bad", f"model.alpha_decoder={tiny_alpha['dir']}",
                     "data.background=black"))


@pytest.mark.slow
def test_the_alpha_command_trains_measures_and_evaluate_attaches(tiny_alpha, data_dirs, tmp_path):
    from style_tailoring.models.components import make_pipeline

    root = tiny_alpha["root"]
    make_pipeline(build_tiny(make_cfg(data_dirs, tmp_path / "x").model, seed=0)).save_pretrained(tmp_path / "pipe")
    cli("style_tailoring.alpha", "action=train", f"pipeline={tmp_path / 'pipe'}", f"data_dirs={tiny_alpha['data']}",
        "background='#dee0e6'", "steps=2", "batch_size=4", f"out={tmp_path / 'dec'}", cwd=tmp_path)
    info = json.loads((tmp_path / "dec" / "alpha.json").read_text())
    assert info["background"] == list(STICKER_BACKGROUND) and info["steps"] == 2
    assert info["command"].startswith("python -m style_tailoring.alpha action=train ")
    cli("style_tailoring.alpha", "action=train", "no_alpha=true", f"pipeline={tmp_path / 'pipe'}",
        f"data_dirs=[{tiny_alpha['data']}]", "background='#dee0e6'", "steps=2", "batch_size=4",
        f"out={tmp_path / 'control'}", cwd=tmp_path)
    assert json.loads((tmp_path / "control" / "config.json").read_text())["out_channels"] == 3
    test_dir = rgba_folder(root / "test", 6, seed=1)
    cli("style_tailoring.alpha", "action=measure", f"decoder={tmp_path / 'dec'}", f"pipeline={tmp_path / 'pipe'}",
        f"test={test_dir}", f"tune={tiny_alpha['data']}", f"control={tmp_path / 'control'}",
        f"out={tmp_path / 'm.json'}", cwd=tmp_path)
    measured = json.loads((tmp_path / "m.json").read_text())
    assert measured["n_test"] == 6 and len(measured["per_image"]["alpha_decoder/alpha_iou"]) == 6
    assert measured["psnr_drop_vs_finetuned_db"] == pytest.approx(
        measured["rgb_finetuned/psnr_composite"] - measured["alpha_decoder/psnr_composite"])
    assert 0 <= measured["threshold_baseline/alpha_iou"] <= 1
    (tmp_path / "prompts.txt").write_text("a red square\n")
    cli("style_tailoring.evaluate", f"pipeline={tmp_path / 'pipe'}", f"model.alpha_decoder={tmp_path / 'dec'}",
        "data=folder", "data.background='#dee0e6'", f"eval.prompts={tmp_path / 'prompts.txt'}",
        "eval.seeds_per_prompt=2", "eval.sample.num_inference_steps=2", "eval.fid.enabled=false",
        "hydra.run.dir=ev", cwd=tmp_path)
    assert len(list((tmp_path / "ev" / "samples" / "final" / "rgba").glob("*.png"))) == 2
    bad = subprocess.run([sys.executable, "-m", "style_tailoring.evaluate", f"pipeline={tmp_path / 'pipe'}",
                          f"model.alpha_decoder={tmp_path / 'dec'}", "data=folder",
                          f"eval.prompts={tmp_path / 'prompts.txt'}", "hydra.run.dir=bad"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "model.alpha_decoder" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad" / "samples").exists()  # refused before any work


def test_the_alpha_command_lists_its_settings_and_refuses_unknown_or_misplaced_ones(tmp_path):
    train = ["action=train", "pipeline=pipe", "data_dirs=rgba", "out=dec"]
    assert_help_and_unknown_key("style_tailoring.alpha", header="alpha decoder", setting="num_inference_steps",
                                args=train, typo="batch-size=4", cwd=tmp_path)
    for args, refusal in [
        (["action=trian", "pipeline=pipe"], "error: action: unknown action 'trian'"),
        (["action=grid", "pipeline=pipe", "decoder=dec", "prompts=p.txt", "out=g.png", "steps=3"],
         "error: steps: is read by action=train only"),
        (["action=measure", "pipeline=pipe", "decoder=dec", "test=t"], "error: tune: is required for action=measure"),
        (["action=train", "pipeline=pipe", "out=dec"], "error: data_dirs: is required for action=train"),
        ([*train, "background=nocolour"], "error: background: unknown color"),
        (["action=train"], "error: pipeline: is required"),
    ]:
        refused = command("style_tailoring.alpha", *args, cwd=tmp_path)
        assert refused.returncode == 1 and refusal in refused.stderr, (args, refused.stderr[-2000:])
    assert list(tmp_path.iterdir()) == []  # all refused before any work


def test_transparent_candidates_are_read_over_the_background(tmp_path):
    from style_tailoring.sampling.generate import read_images

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2] = (200, 10, 10, 255)  # opaque red top half, fully transparent bottom half (colour left black)
    Image.fromarray(rgba).save(tmp_path / "c.png")
    pixels = read_images(tmp_path, ["c.png"], background=STICKER_BACKGROUND)
    assert pixels.shape == (1, 3, 4, 4)
    assert pixels[0, :, 0, 0].tolist() == [200, 10, 10] and pixels[0, :, 3, 3].tolist() == list(STICKER_BACKGROUND)
