"""Build or load the diffusers components, encode prompts, and export a trained model as a stock pipeline.

`model=tiny` builds a small SD-shaped model from configs (offline, seeded); every other model config loads a
diffusers pipeline directory or hub id with the libraries' own `from_pretrained`. SD 1.x/2.x and SDXL layouts are
both understood: SDXL adds a second text encoder and the pooled-embedding/size conditioning of its UNet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from style_tailoring.config import ConfigError, ModelConfig, config_path
from style_tailoring.io import atomic_dir, drop_load_paths
from style_tailoring.models.lora import LORA_FILE
from style_tailoring.models.safe_load import weights_kwargs
from style_tailoring.models.tokenizer import build_word_tokenizer


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object  # the pipeline's own sampling scheduler, exported unchanged
    text_encoder_2: Optional[torch.nn.Module] = None
    tokenizer_2: Optional[object] = None
    # The VAE the exported pipeline decodes with when an alpha decoder is attached (model.alpha_decoder): same
    # encoder and latents as `vae`, which training keeps encoding with (so latent caches stay valid).
    alpha_vae: Optional[AutoencoderKL] = None

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def is_animation(self) -> bool:
        """The UNet is an animation model (a `UNetMotionModel`, model.motion)."""
        return type(self.unet).__name__ == "UNetMotionModel"


def build_tiny(cfg: ModelConfig, seed: int = 0, words=(), max_tokens: int = 77) -> Components:
    """A small SD-shaped LDM, randomly initialised with a fixed seed; the VAE downsamples by 2 per extra block."""
    tiny = cfg.tiny
    hidden = tiny.text_hidden_size
    tokenizer = build_word_tokenizer(words, model_max_length=max_tokens)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        n = len(tiny.unet_channels)
        unet = UNet2DConditionModel(
            sample_size=cfg.resolution // 2 ** (len(tiny.vae_channels) - 1),
            in_channels=tiny.latent_channels,
            out_channels=tiny.latent_channels,
            block_out_channels=tuple(tiny.unet_channels),
            layers_per_block=tiny.layers_per_block,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
            cross_attention_dim=hidden,
            attention_head_dim=max(1, tiny.unet_channels[-1] // 16),
            norm_num_groups=tiny.norm_num_groups,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(tiny.vae_channels),
            down_block_types=("DownEncoderBlock2D",) * len(tiny.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(tiny.vae_channels),
            latent_channels=tiny.latent_channels,
            norm_num_groups=min(tiny.norm_num_groups, tiny.vae_channels[0]),
            sample_size=cfg.resolution,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=hidden,
                intermediate_size=hidden * 4,
                num_hidden_layers=tiny.text_layers,
                num_attention_heads=max(1, hidden // 16),
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = DDPMScheduler(
        num_train_timesteps=tiny.num_train_timesteps,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=tiny.prediction_type,
        clip_sample=False,
        steps_offset=1,
    )
    return Components(unet, vae, text_encoder, tokenizer, scheduler)


def load_pretrained(cfg: ModelConfig) -> Components:
    """Each component with its own `from_pretrained`, as diffusers' training examples do."""
    from transformers import AutoTokenizer

    check_pretrained_exists(cfg)
    path, kw = cfg.pretrained, {"revision": cfg.revision}
    index = _model_index(path, cfg.revision)
    common = dict(kw, variant=cfg.variant)
    weights = weights_kwargs(path, cfg.allow_pickle)  # safetensors only unless model.allow_pickle
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **common, **weights)
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **common, **weights)
    text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **common, **weights)
    tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
    scheduler_cls = _scheduler_class(index.get("scheduler", [None, "DDPMScheduler"])[1])
    scheduler = scheduler_cls.from_pretrained(path, subfolder="scheduler", **kw)
    comps = Components(unet, vae, text_encoder, tokenizer, scheduler)
    if "text_encoder_2" in index and index["text_encoder_2"][0] is not None:
        comps.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2",
                                                                           **common, **weights)
        comps.tokenizer_2 = AutoTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kw)
    return comps


def build_components(cfg: ModelConfig, seed: int = 0) -> Components:
    comps = build_tiny(cfg, seed) if cfg.pretrained is None else load_pretrained(cfg)
    if cfg.prediction_type:  # what the UNet is trained to predict is what the exported pipeline must sample as
        comps.scheduler.register_to_config(prediction_type=cfg.prediction_type)
    motion = getattr(cfg, "motion", None)
    if cfg.init_unet:
        comps.unet = load_init_unet(cfg.init_unet, comps, animation=bool(motion and motion.enabled),
                                    allow_pickle=cfg.allow_pickle)
    if motion and motion.enabled and not comps.is_animation:
        from style_tailoring.models.motion import build_animation_unet

        comps.unet = build_animation_unet(comps.unet, heads=motion.heads, conditioning=motion.conditioning)
    elif motion and motion.enabled:  # continued from an animation run: it must read the sticker the same way
        config = comps.unet.config
        reads_sticker = config.in_channels != config.out_channels
        if reads_sticker != (motion.conditioning != "none"):
            raise ConfigError("model.motion.conditioning", f"{motion.conditioning!r}, but model.init_unet's UNet "
                              f"{'reads' if reads_sticker else 'has no input for'} a conditioning sticker")
    return comps


def num_train_timesteps(model: ModelConfig) -> int:
    """T of the model's noise schedule, from the scheduler config file alone (no weights are loaded)."""
    if model.pretrained is None:
        return model.tiny.num_train_timesteps
    check_pretrained_exists(model)
    config = DDPMScheduler.load_config(model.pretrained, subfolder="scheduler", revision=model.revision)
    return int(config["num_train_timesteps"])


def check_pretrained_exists(model: ModelConfig) -> None:
    path, local = model.pretrained, config_path("model.pretrained", model.pretrained)
    looks_local = path.startswith(("/", ".", "~")) or local.exists() or path.count("/") != 1
    if looks_local and not local.is_dir():
        raise ConfigError("model.pretrained", f"no diffusers pipeline directory at {path!r}")
    if looks_local and not (local / "model_index.json").is_file():
        raise ConfigError("model.pretrained", f"{path!r} has no model_index.json; is it a diffusers pipeline dir?")


def unet_source_kind(path, key: str = "model.init_unet") -> str:
    """What a UNet path points at: "pipeline" (RUN_DIR/pipeline), "unet" (a UNet folder such as
    RUN_DIR/stages/1-alignment/unet) or "lora" (RUN_DIR/lora, RUN_DIR/stages/k-name/lora); ConfigError(key) else."""
    root = config_path(key, path)
    if (root / "unet" / "config.json").is_file():
        return "pipeline"
    if (root / "config.json").is_file():
        return "unet"
    if (root / LORA_FILE).is_file():
        return "lora"
    raise ConfigError(key, f"{str(path)!r} is not a pipeline directory (with unet/), a UNet folder (with "
                      f"config.json) or a LoRA folder (with {LORA_FILE})")


def unet_folder(path, kind: str) -> Path:
    """The folder holding a UNet source's config and weights: PIPELINE/unet, else the UNet or LoRA folder itself
    (`kind` from unet_source_kind)."""
    root = Path(path).expanduser()
    return root / "unet" if kind == "pipeline" else root


def load_init_unet(path, comps: Components, animation: bool = False,
                   allow_pickle: bool = False) -> UNet2DConditionModel:
    """The UNet of another run, in place of the base's (safetensors only, unless `allow_pickle`); LoRA adapters
    are fused into a copy of the base UNet. It must fit the base's VAE latents and text encoder. An animation run
    (`animation`) may start from an image UNet (it gets fresh motion modules) or from another animation run's
    `UNetMotionModel`."""
    kind = unet_source_kind(path)
    folder = unet_folder(path, kind)
    weights = weights_kwargs(folder, allow_pickle, key="model.init_unet")
    if kind != "lora" and json.loads((folder / "config.json").read_text()).get("_class_name") == "UNetMotionModel":
        if not animation:
            raise ConfigError("model.init_unet", f"{path} holds an animation UNet (UNetMotionModel): set "
                              "model.motion.enabled=true to continue it")
        from diffusers import UNetMotionModel

        unet = UNetMotionModel.from_pretrained(folder, **weights)
        if unet.config.cross_attention_dim != comps.unet.config.cross_attention_dim:
            raise ConfigError("model.init_unet", "its UNet was trained on another model (cross_attention_dim "
                              f"{unet.config.cross_attention_dim} vs {comps.unet.config.cross_attention_dim})")
        return unet
    if kind == "lora":
        unet = comps.unet
        unet.load_lora_adapter(str(folder), weight_name=LORA_FILE, prefix="unet", adapter_name="init", **weights)
        unet.fuse_lora()
        unet.unload_lora()
        return unet
    unet = UNet2DConditionModel.from_pretrained(folder, **weights)
    base = comps.unet.config
    for key in ("in_channels", "out_channels", "cross_attention_dim", "addition_embed_type"):
        if unet.config.get(key) != base.get(key):
            raise ConfigError("model.init_unet", f"its UNet has {key}={unet.config.get(key)!r} but the base model's "
                              f"has {base.get(key)!r}: it was trained on another model")
    return unet


def encode_posterior(vae, pixels: torch.Tensor):
    """The VAE posterior of images (B, 3, H, W) or clips (B, F, 3, H, W); a clip's latents come back in the
    animation UNet's layout (B, C, F, h, w)."""
    if pixels.ndim == 4:
        return vae.encode(pixels).latent_dist
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    frames = pixels.shape[1]
    dist = vae.encode(pixels.flatten(0, 1)).latent_dist
    to_clips = lambda x: x.unflatten(0, (-1, frames)).transpose(1, 2)  # noqa: E731
    return DiagonalGaussianDistribution(torch.cat([to_clips(dist.mean), to_clips(dist.logvar)], dim=1))


def training_scheduler(comps: Components, prediction_type: Optional[str]) -> DDPMScheduler:
    """The DDPM noise schedule of the model (what `add_noise` and the targets need), prediction type overridable."""
    overrides = {"prediction_type": prediction_type} if prediction_type else {}
    return DDPMScheduler.from_config(comps.scheduler.config, **overrides)


def _model_index(path: str, revision) -> dict:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.load_config(path, revision=revision)


def _scheduler_class(name: str):
    import diffusers

    return getattr(diffusers, name, DDPMScheduler)


def freeze(*modules) -> None:
    for module in modules:
        if module is not None:
            module.requires_grad_(False)
            module.eval()


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_prompts(comps: Components, prompts: list[str], device, resolution: int, grad: bool = False) -> dict:
    """UNet conditioning for `prompts`: `encoder_hidden_states`, plus `added_cond_kwargs` for SDXL. Without
    gradients unless `grad` (a text encoder that trains)."""
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return _encode_prompts(comps, prompts, device, resolution)


def _encode_prompts(comps: Components, prompts: list[str], device, resolution: int) -> dict:
    ids = tokenize(comps.tokenizer, prompts).to(device)
    if not comps.is_sdxl:
        return {"encoder_hidden_states": comps.text_encoder(ids)[0]}
    # SDXL: penultimate hidden states of both encoders side by side, pooled projection of the second, and the
    # size/crop conditioning of an uncropped square image at the training resolution.
    first = comps.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    ids_2 = tokenize(comps.tokenizer_2, prompts).to(device)
    out_2 = comps.text_encoder_2(ids_2, output_hidden_states=True)
    return {
        "encoder_hidden_states": torch.cat([first, out_2.hidden_states[-2]], dim=-1),
        "added_cond_kwargs": {"text_embeds": out_2.text_embeds,
                              "time_ids": sdxl_time_ids(resolution, len(prompts), device)},
    }


def sdxl_time_ids(resolution: int, n: int, device) -> torch.Tensor:
    """SDXL's size conditioning for an uncropped square image: (orig h, w, crop top, left, target h, w)."""
    size = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], device=device, dtype=torch.float32)
    return size.expand(n, -1)


def make_pipeline(comps: Components, unet=None):
    """A stock diffusers pipeline around the components (the trained UNet by default)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    unet = unet or comps.unet
    vae = comps.alpha_vae or comps.vae
    if type(unet).__name__ == "UNetMotionModel":
        # diffusers' AnimateDiff pipeline holds the animation UNet whole (motion modules and the widened conv_in
        # that reads the conditioning sticker); style_tailoring.animation samples it with the sticker.
        from diffusers import AnimateDiffPipeline

        return AnimateDiffPipeline(vae=vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, unet=unet,
                                   motion_adapter=None, scheduler=comps.scheduler)
    if comps.is_sdxl:
        # add_watermarker=False: the invisible watermark (when installed) assumes 3 channels, and an alpha
        # decoder's images have 4
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=comps.text_encoder,
            text_encoder_2=comps.text_encoder_2,
            tokenizer=comps.tokenizer,
            tokenizer_2=comps.tokenizer_2,
            unet=unet,
            scheduler=comps.scheduler,
            add_watermarker=False if comps.alpha_vae is not None else None,
        )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=comps.text_encoder,
        tokenizer=comps.tokenizer,
        unet=unet,
        scheduler=comps.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def export_pipeline(comps: Components, out_dir: Path, metadata: Optional[dict] = None, unet=None) -> Path:
    """Save a pipeline that stock `from_pretrained` loads; written to a temp dir and renamed into place."""
    pipe = make_pipeline(comps, unet)
    try:
        with atomic_dir(out_dir) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
            drop_load_paths(tmp)
            if metadata:
                (tmp / "style_tailoring.json").write_text(json.dumps(metadata, indent=2, default=str))
    except OSError as err:  # a full disk, most often: say what is left
        kept = "the previous one is intact" if Path(out_dir).exists() else "nothing of it was kept"
        raise OSError(err.errno, f"could not write the pipeline {out_dir} ({err.strerror or err}); {kept}") from err
    return out_dir
