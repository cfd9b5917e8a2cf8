"""The latent/text cache, the step's options (EMA, LoRA, min-SNR, noise offset, gradient checkpointing), the bench."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from conftest import make_cfg, write_folder
from style_tailoring.config import ConfigError
from style_tailoring.data.cache import build_cache
from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.models.components import build_tiny
from style_tailoring.training.run import run


def unet_weights(run_dir):
    return load_file(run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_cached_training_matches_uncached(data_dirs, tmp_path):
    """Same seed and step: the cached posterior and text embeddings give the uncached loss (up to fp16 storage)."""
    losses = {}
    for cache in ("true", "false"):
        metrics = run(make_cfg(data_dirs, tmp_path / f"cache-{cache}", f"data.cache.enabled={cache}",
                               "trainer.max_steps=1"))
        losses[cache] = metrics["train/loss"]
    other = run(make_cfg(data_dirs, tmp_path / "other-seed", "seed=1", "trainer.max_steps=1"))["train/loss"]
    assert abs(losses["true"] - losses["false"]) < 2e-3 * losses["false"]
    assert abs(other - losses["false"]) > 10 * abs(losses["true"] - losses["false"])


def test_two_writers_of_one_cache_directory_both_finish_with_the_same_cache(tmp_path, monkeypatch):
    """Two runs sharing a cache directory may encode the same part at once: each must rename its own file into
    place. Both writers are held after writing until the other has written too (the race, made certain)."""
    import threading

    import style_tailoring.data.cache as cache

    comps = build_tiny(make_cfg({}, tmp_path / "x").model)
    root = write_folder(tmp_path / "style", 4, 0, sticker=True)
    both_written = threading.Barrier(2, timeout=60)
    real_save = cache.save_file

    def save_then_wait(tensors, path):
        real_save(tensors, path)
        both_written.wait()

    monkeypatch.setattr(cache, "save_file", save_then_wait)
    results, errors = [], []

    def writer():
        try:
            results.append(build_cache(ImageCaptionFolder(root, resolution=32), comps, tmp_path / "cache",
                                       device="cpu", with_text=True))
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 2
    assert torch.equal(results[0].tensors["latent_mean"], results[1].tensors["latent_mean"])
    directory = next((tmp_path / "cache").iterdir())
    assert sorted(p.name for p in directory.iterdir()) == ["complete.json", "part-0000-of-0001.safetensors"]


def test_cache_keeps_flip_variants_and_notices_changed_data(tmp_path):
    comps = build_tiny(make_cfg({}, tmp_path / "x").model)
    root = write_folder(tmp_path / "style", 4, 0, sticker=True)
    source = ImageCaptionFolder(root, resolution=32, random_flip=True)
    cached = build_cache(source, comps, tmp_path / "cache", device="cpu", with_text=True)
    assert len(cached) == 8
    mean = cached.tensors["latent_mean"]
    assert mean.shape == (8, 4, 16, 16) and not torch.allclose(mean[0], mean[4])
    assert torch.equal(source[4]["pixel_values"], source[0]["pixel_values"].flip(-1))
    with torch.no_grad():  # item 4 is the flipped copy of item 0, encoded as such
        direct = comps.vae.encode(source[4]["pixel_values"][None]).latent_dist.mean[0]
    assert torch.allclose(direct, mean[4].float(), atol=2e-3)
    assert cached[5]["text"] == source[1]["text"] and cached.tensors["encoder_hidden_states"].shape[0] == 8
    write_folder(root, 4, 1, sticker=True)  # same file names, new content
    rebuilt = build_cache(ImageCaptionFolder(root, resolution=32, random_flip=True), comps, tmp_path / "cache",
                          device="cpu", with_text=True)
    assert len(list((tmp_path / "cache").iterdir())) == 2 and not torch.equal(rebuilt.tensors["latent_mean"], mean)


def test_random_crop_cannot_be_cached(data_dirs, tmp_path):
    with pytest.raises(ConfigError, match="data.cache.enabled"):
        run(make_cfg(data_dirs, tmp_path / "run", "data.center_crop=false"))


def test_lora_exports_adapters_that_diffusers_loads(data_dirs, tmp_path):
    run_dir = tmp_path / "run"
    run(make_cfg(data_dirs, run_dir, "model.lora.rank=4", "optim.lr=1e-2", "trainer.max_steps=3"))
    assert (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file()
    base = build_tiny(make_cfg(data_dirs, tmp_path / "x").model)
    from style_tailoring.models.components import make_pipeline

    make_pipeline(base).save_pretrained(tmp_path / "base")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "base")
    before = pipe("a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    pipe.load_lora_weights(run_dir / "lora")
    with_lora = pipe("a red circle", num_inference_steps=2, output_type="np",
                     generator=torch.Generator().manual_seed(0))
    fused = StableDiffusionPipeline.from_pretrained(run_dir / "pipeline")
    exported = fused("a red circle", num_inference_steps=2, output_type="np",
                     generator=torch.Generator().manual_seed(0))
    assert abs(with_lora.images - before.images).max() > 1e-4  # the adapters change the model
    assert abs(with_lora.images - exported.images).max() < 1e-3  # and the exported pipeline has them fused
    unet_keys = load_file(run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert not any("lora" in k for k in unet_keys)


def test_ema_snr_offset_and_checkpointing_train_and_resume(data_dirs, tmp_path):
    opts = ["ema.enabled=true", "ema.decay=0.5", "loss.snr_gamma=5.0", "loss.noise_offset=0.1",
            "model.gradient_checkpointing=true", "trainer.max_steps=4", "checkpoint.every_n_steps=2"]
    full = tmp_path / "full"
    run(make_cfg(data_dirs, full, *opts))
    checkpoint = torch.load(full / "checkpoints" / "step-000002.ckpt", weights_only=True)
    assert "ema" in checkpoint and checkpoint["ema"]["optimization_step"] == 2
    resumed = tmp_path / "resumed"
    run(make_cfg(data_dirs, resumed, *opts, f"ckpt_path={full / 'checkpoints' / 'step-000002.ckpt'}"))
    a, b = unet_weights(full), unet_weights(resumed)
    assert max_diff(a, b) < 1e-6  # the exported (EMA) weights match: EMA state was restored too
    raw = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert max((raw["unet." + k] - a[k]).abs().max().item() for k in a) > 0  # export used the EMA weights


def bench_settings(*overrides: str):
    """The bench command's settings as its CLI composes them (conf/bench.yaml), checked by its schema."""
    from hydra import compose, initialize_config_dir

    from style_tailoring.config import CONF_DIR, BenchConfig, merge_into_schema

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return merge_into_schema(BenchConfig, compose("bench", overrides=["paths.root_dir=.", *overrides]))


@pytest.mark.parametrize("arch, reference", [("tiny", "train_text_to_image.py"),
                                             ("world_sd3", "train_dreambooth_lora_sd3.py")])
def test_bench_runs_every_part_and_ends_with_the_script_lines(capsys, arch, reference):
    # Not a timing test: the numbers depend on the machine. It checks the benchmark still runs end to end (reference
    # loop, cached Lightning step for both plans, FLOP count, profile) and keeps its machine-readable last lines, for
    # a UNet and for the world's SD3-family base (its pipeline reached through conf/bench.yaml).
    from style_tailoring.bench.__main__ import run

    result = run(bench_settings(f"arch={arch}", "steps=4", "warmup=1", "repeats=1", "images=32", "batch_size=8"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert reference in lines[0]  # the family's own diffusers example is the reference
    assert re.fullmatch(r"speedup vs reference: \d+\.\d\dx", lines[-2])
    assert re.fullmatch(r"style_tailoring/base step time: \d+\.\d{3}", lines[-1])
    assert float(lines[-2].split()[-1][:-1]) == pytest.approx(result["speedup"], abs=0.006)
    assert 0 < result["encode_share"] < 1 and result["tflops"] > 0
    assert all(op.startswith("aten::") for op, _ in result["top_ops"])
    assert all(result["peak_memory_mb"][name] > 0 for name in ("reference", "base", "style_tailoring"))


def test_bench_sd15_model_is_stable_diffusion_1_5_sized(capsys):
    # Built on the meta device (shapes only, no memory): the parameter counts are SD 1.5's UNet and VAE exactly, so
    # the GPU benchmark times the real architecture, not an approximation of it.
    from style_tailoring.bench.__main__ import run
    from style_tailoring.bench.common import bench_config, build_bench_model

    args = argparse.Namespace(arch="sd15", resolution=512, batch_size=1, steps=1)
    with torch.device("meta"):
        comps = build_bench_model(bench_config(args, Path("unused")), "sd15")
    assert sum(p.numel() for p in comps.unet.parameters()) == 859_520_964
    assert sum(p.numel() for p in comps.vae.parameters()) == 83_653_863
    assert comps.text_encoder.config.hidden_size == 768 and comps.text_encoder.config.num_hidden_layers == 12
    if not torch.cuda.is_available():  # and without a GPU it refuses up front instead of running out of memory
        from style_tailoring.config import ConfigError

        with pytest.raises(ConfigError, match="arch: arch=sd15 needs a CUDA GPU"):
            run(bench_settings("arch=sd15"))


@pytest.mark.parametrize("arch", ["tiny", "tiny_sd3"])
def test_the_reference_loop_and_our_step_give_the_same_loss_on_the_same_batch(arch):
    # Both loops must time the same objective: on one batch (images, posterior sample, prompts, noise, timesteps) the
    # reference's loss (diffusers' example for the family) is our step's. The flow reference draws its timesteps as
    # the SD3 script does, scheduler.timesteps[index]; our routes' timestep for that noise level is T - 1 - index.
    from style_tailoring.bench.common import bench_config, build_bench_model
    from style_tailoring.bench.train import reference_objective
    from style_tailoring.models.components import encode_prompts
    from style_tailoring.training.module import DiffusionFinetune
    from style_tailoring.training.strategies import build_plan

    args = bench_settings(f"arch={arch}", "resolution=32", "batch_size=4")
    cfg = bench_config(args, Path("unused"))
    comps = build_bench_model(cfg, arch)
    if comps.is_flow:  # SD3's own VAE shift, so that both loops' shifting of the latents is compared too
        comps.vae.register_to_config(shift_factor=0.0609)
    T = comps.scheduler.config.num_train_timesteps
    module = DiffusionFinetune(comps, build_plan(cfg, T), cfg, cached_latents=True, cached_text=True)
    reference = reference_objective(comps)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    cond = encode_prompts(comps, ["a sticker of a cat", "a red circle", "", "two blue squares"], "cpu", 32)
    indices = torch.tensor([0, 1, 500, T - 1])  # the reference's draw: pure noise, ..., the least noise trained
    route_t = T - 1 - indices if comps.is_flow else indices
    with torch.no_grad():
        posterior = comps.vae.encode(pixels).latent_dist
        torch.manual_seed(1)  # the reference samples the posterior from the global generator
        reference_latents = reference.latents(comps.vae, pixels)
        ours_latents = module.latents({"latent_mean": posterior.mean, "latent_std": posterior.std},
                                      torch.Generator().manual_seed(1))
        noise = torch.randn(reference_latents.shape, generator=gen)
        reference_t = reference.scheduler.timesteps[indices] if comps.is_flow else indices
        reference_loss = reference.loss(comps.denoiser, reference_latents, cond, noise, reference_t)
        noisy, model_t, target = module.noised(ours_latents, noise, route_t)
        ours_loss = module.per_sample_loss(module.denoiser(noisy, timestep=model_t, **cond).sample, target,
                                           route_t).mean()
    torch.testing.assert_close(ours_latents, reference_latents, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_loss, reference_loss, rtol=1e-6, atol=0)


def test_bench_families_times_the_flow_family_against_the_unet_at_matched_parameters(capsys):
    from style_tailoring.bench.__main__ import run

    result = run(bench_settings("task=families", "arch=tiny", "steps=3", "warmup=1", "repeats=1", "images=16",
                                "batch_size=4"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"flow/unet step time: \d+\.\d{3}", lines[-2])
    assert re.fullmatch(r"flow \(parameter-matched\)/unet step time: \d+\.\d{3}", lines[-1])
    assert float(lines[-1].split()[-1]) == pytest.approx(result["matched_ratio"], abs=6e-4)
    parameters, flops = result["parameters"], result["flops"]
    unet, flow, matched = "tiny", "tiny_sd3", "tiny_sd3 (parameter-matched)"
    # a joint block of this width is ~4% of the UNet's count: the closest depth lies within half of one
    assert abs(parameters[matched] - parameters[unet]) < 0.03 * parameters[unet]
    assert parameters[matched] > 4 * parameters[flow] and all(value > 0 for value in flops.values())


@pytest.mark.parametrize("overrides, message", [
    (("task=sample", "arch=world_sd3"), "arch=world_sd3 \\(the SD3 family\\) is benchmarked by task=train"),
    (("task=families", "arch=tiny_sd3"), "task=families times a UNet arch against its flow-family counterpart"),
])
def test_bench_refuses_what_it_cannot_time_naming_the_key(overrides, message):
    from style_tailoring.bench.__main__ import run

    with pytest.raises(ConfigError, match=f"arch: {message}"):
        run(bench_settings(*overrides))


def test_cache_key_follows_the_caption_a_source_trains_with(tmp_path):
    comps = build_tiny(make_cfg({}, tmp_path / "x").model)
    root = write_folder(tmp_path / "style", 4, 0, sticker=True)
    plain = build_cache(ImageCaptionFolder(root, resolution=32), comps, tmp_path / "cache", device="cpu",
                        with_text=True)
    templated = build_cache(ImageCaptionFolder(root, resolution=32, caption="{text}, sks style"), comps,
                            tmp_path / "cache", device="cpu", with_text=True)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # a second key, not the first caption's embeddings
    assert templated[0]["text"].endswith(", sks style")
    assert not torch.equal(plain.tensors["encoder_hidden_states"], templated.tensors["encoder_hidden_states"])
    assert torch.equal(plain.tensors["latent_mean"], templated.tensors["latent_mean"])
