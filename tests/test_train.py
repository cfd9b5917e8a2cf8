"""End-to-end training runs on the tiny model: every strategy, the pretrained round trip, and exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file

from conftest import make_cfg
from style_tailoring.models.components import build_tiny, make_pipeline
from style_tailoring.training.run import run


def unet_weights(path):
    return load_file(path / "unet" / "diffusion_pytorch_model.safetensors")


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def base_pipeline(data_dirs, tmp_path_factory):
    """The tiny model saved as a diffusers pipeline: the 'pretrained' weights every strategy starts from."""
    root = tmp_path_factory.mktemp("base")
    cfg = make_cfg(data_dirs, root / "unused")
    make_pipeline(build_tiny(cfg.model, seed=0)).save_pretrained(root / "pipeline")
    return root / "pipeline"


@pytest.mark.parametrize("strategy", ["base", "sequential", "mixture", "style_tailoring"])
def test_each_strategy_trains_and_writes_outputs(data_dirs, base_pipeline, tmp_path, strategy):
    run_dir = tmp_path / "run"
    cfg = make_cfg(data_dirs, run_dir, f"strategy={strategy}", "model=pretrained",
                   f"model.pretrained={base_pipeline}", "model.resolution=32", "trainer.log_every_n_steps=1")
    metrics = run(cfg)
    assert changed(unet_weights(base_pipeline), unet_weights(run_dir / "pipeline"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics)) and saved["strategy"] == strategy and saved["steps"] == 4
    assert {"t_split", "mixture", "seed", "train/loss"} <= set(saved)
    log = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert len(log) >= 5 and "train/loss" in log[0]
    if strategy == "style_tailoring":  # the split is visible in the log
        assert "train/style/t_max" in log[0] and "train/alignment/t_min" in log[0]
        assert saved["train/style/t_max"] < 500 <= saved["train/alignment/t_min"]
    if strategy == "sequential":  # each stage's weights are kept
        stages = sorted(p.name for p in (run_dir / "stages").iterdir())
        assert stages == ["1-alignment", "2-style"]
        first = UNet2DConditionModel.from_pretrained(run_dir / "stages" / "1-alignment" / "unet").state_dict()
        assert changed(first, unet_weights(run_dir / "pipeline"))
    # The exported pipeline is a stock diffusers pipeline that samples.
    pipe = StableDiffusionPipeline.from_pretrained(run_dir / "pipeline")
    image = pipe("a red circle", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (32, 32, 3)


def test_prompt_engineering_trains_nothing(data_dirs, base_pipeline, tmp_path):
    run_dir = tmp_path / "run"
    metrics = run(make_cfg(data_dirs, run_dir, "strategy=prompt_engineering", "model=pretrained",
                           f"model.pretrained={base_pipeline}", "model.resolution=32"))
    assert not changed(unet_weights(base_pipeline), unet_weights(run_dir / "pipeline"))
    assert metrics["steps"] == 0 and not (run_dir / "checkpoints").exists()
    assert json.loads((run_dir / "pipeline" / "style_tailoring.json").read_text())["style_prompt"].strip()


def _module(cfg):
    from style_tailoring.training.module import DiffusionFinetune
    from style_tailoring.training.strategies import build_plan

    comps = build_tiny(cfg.model)
    return DiffusionFinetune(comps, build_plan(cfg, 1000), cfg)


def test_v_prediction_trains_against_the_velocity_and_exports_it(data_dirs, tmp_path):
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([5, 400, 990])
    module = _module(make_cfg(data_dirs, tmp_path / "x", "model.prediction_type=v_prediction"))
    alpha_bar = module.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    velocity = alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0  # Salimans & Ho 2022
    assert torch.allclose(module.target(x0, eps, t), velocity, atol=1e-6)
    assert torch.equal(_module(make_cfg(data_dirs, tmp_path / "x")).target(x0, eps, t), eps)
    # A v-prediction finetune of an epsilon model exports a scheduler that samples it as v-prediction.
    run_dir = tmp_path / "run"
    run(make_cfg(data_dirs, run_dir, "model.prediction_type=v_prediction"))
    config = json.loads((run_dir / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction"


def test_min_snr_weights_follow_the_formula(data_dirs, tmp_path):
    t = torch.tensor([1, 100, 500, 999])
    for kind, denominator in (("epsilon", 0.0), ("v_prediction", 1.0)):
        module = _module(make_cfg(data_dirs, tmp_path / "x", "loss.snr_gamma=5.0", f"model.prediction_type={kind}"))
        alpha_bar = module.noise_scheduler.alphas_cumprod[t]
        snr = alpha_bar / (1 - alpha_bar)  # Hang et al. 2023: weight min(SNR, gamma) / SNR (epsilon)
        expected = torch.clamp(snr, max=5.0) / (snr + denominator)
        assert torch.allclose(module.snr_weights(t), expected, rtol=1e-5)
        if kind == "epsilon":  # low-noise steps are capped, high-noise steps keep weight 1
            assert expected[0] < 0.01 and expected[-1] == pytest.approx(1.0)
        pred, target = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
        mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        assert torch.allclose(module.per_sample_loss(pred, target, t), mse * expected, rtol=1e-5)


def test_noise_offset_adds_one_constant_per_sample_and_channel(data_dirs, tmp_path):
    latents = torch.zeros(64, 4, 8, 8)
    plain = _module(make_cfg(data_dirs, tmp_path / "x")).sample_noise(latents, torch.Generator().manual_seed(0))
    offset = _module(make_cfg(data_dirs, tmp_path / "x", "loss.noise_offset=0.1")).sample_noise(
        latents, torch.Generator().manual_seed(0))
    shift = offset - plain
    per_channel = shift[:, :, :1, :1]
    assert torch.allclose(shift, per_channel.expand_as(shift), atol=1e-6)  # constant over the image
    assert 0.08 < per_channel.std().item() < 0.12  # N(0, 0.1^2) per sample and channel


def test_resume_continues_exactly_where_it_stopped(data_dirs, base_pipeline, tmp_path):
    """3 steps + resume to 6 gives the same weights as 6 uninterrupted steps, stage switch included."""
    common = ["strategy=sequential", "model=pretrained", f"model.pretrained={base_pipeline}", "model.resolution=32",
              "checkpoint.every_n_steps=3", "checkpoint.keep=-1"]
    full = tmp_path / "full"
    run(make_cfg(data_dirs, full, *common, "trainer.max_steps=6"))
    checkpoint = torch.load(full / "checkpoints" / "step-000003.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert not any(k.startswith(("vae.", "text_encoder.")) for k in checkpoint["state_dict"])
    resumed = tmp_path / "resumed"  # a fresh process state, as after a crash at step 3
    metrics = run(make_cfg(data_dirs, resumed, *common, "trainer.max_steps=6",
                           f"ckpt_path={full / 'checkpoints' / 'step-000003.ckpt'}"))
    assert metrics["steps"] == 6 and not (resumed / "stages" / "1-alignment").exists()
    assert (resumed / "stages" / "2-style").exists()  # resumed inside stage 2, stage 1 was done before
    a, b = unet_weights(full / "pipeline"), unet_weights(resumed / "pipeline")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_fresh_optimizer_clears_the_moments_at_each_stage_and_resumes_exactly(data_dirs, base_pipeline, tmp_path):
    """strategy.fresh_optimizer: stage 2 starts from cleared AdamW moments (its first step is step 1 of a new
    optimizer), unlike the default that carries them; a run resumed at the stage boundary does the same."""
    common = ["strategy=sequential", "model=pretrained", f"model.pretrained={base_pipeline}", "model.resolution=32",
              "checkpoint.every_n_steps=1", "checkpoint.keep=-1", "trainer.max_steps=6", "optim.warmup_steps=2"]

    def adam_steps(run_dir, step):
        state = torch.load(run_dir / "checkpoints" / f"step-{step:06d}.ckpt", weights_only=True)
        return {float(s["step"]) for s in state["optimizer_states"][0]["state"].values()}

    fresh, carried = tmp_path / "fresh", tmp_path / "carried"
    run(make_cfg(data_dirs, fresh, *common, "strategy.fresh_optimizer=true"))
    run(make_cfg(data_dirs, carried, *common))
    assert adam_steps(fresh, 3) == adam_steps(carried, 3) == {3.0}
    assert adam_steps(fresh, 4) == {1.0} and adam_steps(carried, 4) == {4.0}
    assert changed(unet_weights(fresh / "pipeline"), unet_weights(carried / "pipeline"))
    resumed = tmp_path / "resumed"
    run(make_cfg(data_dirs, resumed, *common, "strategy.fresh_optimizer=true",
                 f"ckpt_path={fresh / 'checkpoints' / 'step-000003.ckpt'}"))
    a, b = unet_weights(fresh / "pipeline"), unet_weights(resumed / "pipeline")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_with_a_different_plan_is_refused(data_dirs, base_pipeline, tmp_path):
    common = ["model=pretrained", f"model.pretrained={base_pipeline}", "model.resolution=32"]
    run(make_cfg(data_dirs, tmp_path / "a", "strategy=style_tailoring", "strategy.t_split=300", *common))
    cfg = make_cfg(data_dirs, tmp_path / "b", "strategy=style_tailoring", "strategy.t_split=600", *common,
                   f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(ValueError, match="different plan"):
        run(cfg)


def tiny_sdxl_pipeline(path):
    """An SDXL-shaped pipeline (two text encoders, pooled + size conditioning) at 32 px."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from style_tailoring.models.tokenizer import build_word_tokenizer

    tok = build_word_tokenizer([])
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64)
    vae = AutoencoderKL(block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=8)
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                          num_hidden_layers=2, projection_dim=32, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(text), text_encoder_2=CLIPTextModelWithProjection(text), tokenizer=tok,
        tokenizer_2=tok, unet=unet, scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1),
    ).save_pretrained(path)
    return path


def test_sdxl_layout_trains_and_exports(data_dirs, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    base = tiny_sdxl_pipeline(tmp_path / "sdxl")
    run_dir = tmp_path / "run"
    run(make_cfg(data_dirs, run_dir, "model=pretrained", f"model.pretrained={base}", "model.resolution=32"))
    assert changed(unet_weights(base), unet_weights(run_dir / "pipeline"))
    pipe = StableDiffusionXLPipeline.from_pretrained(run_dir / "pipeline")
    out = pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="np").images
    assert out.shape == (1, 32, 32, 3)


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    # A SLURM requeue (hpc_ckpt_*.ckpt) or ckpt_path resume must not open a second wandb run for the same training.
    from omegaconf import OmegaConf

    from style_tailoring.config import RunConfig
    from style_tailoring.runtime.loggers import build_logger

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = OmegaConf.structured(RunConfig)
    cfg.logger.name = "wandb"
    first = build_logger(cfg, tmp_path).version
    assert build_logger(cfg, tmp_path).version != first  # a fresh start in the same directory is a new run
    latest = (tmp_path / "wandb_run_id").read_text().strip()
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"")
    resumed = build_logger(cfg, tmp_path)
    assert resumed.version == latest and resumed._wandb_init["resume"] == "allow"


def test_a_trained_text_encoder_learns_at_its_own_rate_is_checkpointed_resumes_and_is_exported(
        data_dirs, base_pipeline, tmp_path):
    """model.train_text_encoder (StyleForge): the text cache is bypassed, the encoder trains in its own optimizer
    group, its weights are in the checkpoints (so a resumed run continues them exactly) and in the export."""
    common = ["strategy=styleforge", f"data.sources.styleref.dir={data_dirs['style']}",
              f"data.sources.aux.dir={data_dirs['alignment']}", "model=pretrained",
              f"model.pretrained={base_pipeline}", "model.resolution=32", "model.train_text_encoder=true",
              "optim.text_encoder_lr=1e-3", "checkpoint.every_n_steps=2", "checkpoint.keep=-1", "trainer.max_steps=4"]
    full = tmp_path / "full"
    run(make_cfg(data_dirs, full, *common))
    text = lambda path: load_file(path / "text_encoder" / "model.safetensors")  # noqa: E731
    assert changed(text(base_pipeline), text(full / "pipeline"))
    checkpoint = torch.load(full / "checkpoints" / "step-000002.ckpt", weights_only=True)
    assert any(k.startswith("text_encoder.") for k in checkpoint["state_dict"])
    assert not any(k.startswith("vae.") for k in checkpoint["state_dict"])
    assert [g["lr"] for g in checkpoint["optimizer_states"][0]["param_groups"]] == [1e-4, 1e-3]
    resumed = tmp_path / "resumed"
    run(make_cfg(data_dirs, resumed, *common, f"ckpt_path={full / 'checkpoints' / 'step-000002.ckpt'}"))
    for weights in (text, unet_weights):
        a, b = weights(full / "pipeline"), weights(resumed / "pipeline")
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the frozen default keeps the base's encoder byte for byte
    frozen = tmp_path / "frozen"
    run(make_cfg(data_dirs, frozen, *[o for o in common if "text_encoder" not in o], "trainer.max_steps=2"))
    assert not changed(text(base_pipeline), text(frozen / "pipeline"))


def test_placeholders_go_after_the_start_token_and_keep_the_end_token():
    from style_tailoring.training.contexts import insert_placeholders

    ids = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 5, 6, 7, 8, 2]])
    out, mask = insert_placeholders(ids, torch.tensor([True, True]), n_ctx=2, placeholder=1, eos=2)
    assert out.tolist() == [[1, 1, 1, 5, 6, 2], [1, 1, 1, 5, 6, 2]]  # the second prompt's tail is cut, not its end
    assert mask[:, 1:3].all() and mask.sum() == 4
    untouched, none = insert_placeholders(ids, torch.tensor([False, False]), 2, 1, 2)
    assert torch.equal(untouched, ids) and not none.any()


def test_contexts_enter_only_the_marked_prompts(data_dirs, tmp_path):
    from style_tailoring.training.contexts import encode_with_contexts

    comps = build_tiny(make_cfg(data_dirs, tmp_path / "x").model, seed=0)
    texts = ["a red square", "sks style", "sks style"]
    plain = comps.text_encoder(comps.tokenizer(texts, padding="max_length", truncation=True,
                                               max_length=comps.tokenizer.model_max_length,
                                               return_tensors="pt").input_ids)[0]
    vectors = torch.randn(1, 2, plain.shape[-1], requires_grad=True)
    with_contexts = encode_with_contexts(comps, texts, torch.tensor([False, True, False]), vectors, "cpu")
    assert torch.allclose(with_contexts[0], plain[0]) and torch.allclose(with_contexts[2], plain[2])
    assert not torch.allclose(with_contexts[1], plain[1])
    with_contexts[1].sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0


def test_ico_learns_one_context_per_image_beside_a_frozen_text_encoder(data_dirs, base_pipeline, tmp_path):
    """strategy.ico: per-image vectors enter only the context sources' prompts, train (and resume) with the run, are
    saved with the file each belongs to, and leave the exported text encoder untouched; `kv` trains only the
    UNet's cross-attention keys and values beside them."""
    from safetensors.torch import load_file as load

    common = ["strategy=styleforge", f"data.sources.styleref.dir={data_dirs['style']}",
              f"data.sources.aux.dir={data_dirs['alignment']}", "model=pretrained",
              f"model.pretrained={base_pipeline}", "model.resolution=32", "strategy.ico.enabled=true",
              "strategy.ico.n_ctx=3", "strategy.ico.lr=1e-2", "checkpoint.every_n_steps=2", "checkpoint.keep=-1",
              "trainer.max_steps=4"]
    full = tmp_path / "full"
    run(make_cfg(data_dirs, full, *common))
    vectors = load(str(full / "ico" / "ico_contexts.safetensors"))["styleref"]
    rows = json.loads((full / "ico" / "ico_contexts.json").read_text())
    assert vectors.shape[:2] == (16, 3) and len(rows["rows"]["styleref"]) == 16 and rows["n_ctx"] == 3
    assert rows["rows"]["styleref"][0].endswith("0000.png")
    text = lambda path: load_file(path / "text_encoder" / "model.safetensors")  # noqa: E731
    assert not changed(text(base_pipeline), text(full / "pipeline"))
    # the images the batches drew moved away from the template all started from
    assert len({tuple(v.flatten().tolist()) for v in vectors}) > 1
    resumed = tmp_path / "resumed"
    run(make_cfg(data_dirs, resumed, *common, f"ckpt_path={full / 'checkpoints' / 'step-000002.ckpt'}"))
    again = load(str(resumed / "ico" / "ico_contexts.safetensors"))["styleref"]
    assert torch.allclose(vectors, again, atol=1e-6)
    kv = tmp_path / "kv"
    run(make_cfg(data_dirs, kv, *common[:-1], "trainer.max_steps=2", "strategy.ico.unet=kv"))
    before, after = unet_weights(base_pipeline), unet_weights(kv / "pipeline")
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in moved)


def test_ico_settings_are_checked_naming_the_key(data_dirs, tmp_path):
    from style_tailoring.config import ConfigError

    common = ["strategy=styleforge", f"data.sources.styleref.dir={data_dirs['style']}",
              f"data.sources.aux.dir={data_dirs['alignment']}", "strategy.ico.enabled=true"]
    for override, key in [("strategy.ico.sources=[domain]", "strategy.ico.sources"),
                          ("strategy.ico.n_ctx=0", "strategy.ico.n_ctx"), ("strategy.ico.unet=q", "strategy.ico.unet")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            run(make_cfg(data_dirs, tmp_path / "x", *common, override))
