"""Build or load the diffusers components, encode prompts, and export a trained model as a stock pipeline.

`model=tiny` builds a small SD-shaped model from configs (offline, seeded); every other model config loads a
diffusers pipeline directory or hub id with the libraries' own `from_pretrained`. Two families, each dispatched on in
one place per concern (loading: `load_pretrained`, prompts: `encode_prompts`, the pipeline: `make_pipeline`):

- `unet`: SD 1.x/2.x and SDXL, a UNet on a DDPM noise schedule; SDXL adds a second text encoder and the
  pooled-embedding/size conditioning of its UNet.
- `sd3`: Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline`), an MMDiT transformer trained by flow matching
  (models/flow.py), two CLIP text encoders with projection and an optional T5. Its prompts are encoded by the
  pipeline's own `encode_prompt`, so training conditions exactly as sampling does. With T5 absent the pipeline pads
  `max_sequence_length` zero tokens after the CLIP tokens; that length is part of the model (`Components.
  max_sequence_length`), recorded in the exported pipeline's style_tailoring.json and passed to every pipeline call
  this package makes (`sampling_kwargs`).
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

# Where an exported pipeline records what this package knows of it (strategy, style prompt, and for the SD3 family
# the prompt length it was trained with).
METADATA_FILE = "style_tailoring.json"
# StableDiffusion3Pipeline's own default T5 length (its __call__ and encode_prompt): what an SD3 model that records
# no length of its own is trained with, so that a stock call of its pipeline conditions as training did.
SD3_DEFAULT_SEQUENCE_LENGTH = 256
# What an SD3 pipeline's model_index.json says of its transformer.
SD3_TRANSFORMER = "SD3Transformer2DModel"


@dataclass
class Components:
    unet: Optional[UNet2DConditionModel]  # the UNet family's denoiser (None for the SD3 family)
    vae: AutoencoderKL
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object  # the pipeline's own sampling scheduler, exported unchanged
    text_encoder_2: Optional[torch.nn.Module] = None
    tokenizer_2: Optional[object] = None
    # The VAE the exported pipeline decodes with when an alpha decoder is attached (model.alpha_decoder): same
    # encoder and latents as `vae`, which training keeps encoding with (so latent caches stay valid).
    alpha_vae: Optional[AutoencoderKL] = None
    # The SD3 family: its denoiser (an SD3Transformer2DModel), the optional T5 pair, and the T5 prompt length (with
    # T5 absent: how many zero tokens the pipeline pads after the CLIP tokens).
    transformer: Optional[torch.nn.Module] = None
    text_encoder_3: Optional[torch.nn.Module] = None
    tokenizer_3: Optional[object] = None
    max_sequence_length: Optional[int] = None

    @property
    def is_flow(self) -> bool:
        """The SD3 family: a transformer trained by flow matching (models/flow.py), not a UNet on a DDPM schedule."""
        return self.transformer is not None

    @property
    def denoiser(self) -> torch.nn.Module:
        """What trains: the UNet, or the SD3 family's transformer."""
        return self.transformer if self.is_flow else self.unet

    @property
    def denoiser_name(self) -> str:
        """The denoiser's name in the pipeline (its subfolder, its LoRA prefix): `unet` or `transformer`."""
        return "transformer" if self.is_flow else "unet"

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None and not self.is_flow

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


def build_sd3(tokenizer, vae: AutoencoderKL, *, resolution: int, layers: int, heads: int, head_dim: int,
              text_hidden_size: int, text_layers: int, shift: float = 1.0, num_train_timesteps: int = 1000,
              max_sequence_length: int = 0, seed: int = 0) -> Components:
    """A small SD3-family model over `tokenizer` and a trained `vae`, randomly initialised with a fixed seed: an
    `SD3Transformer2DModel` (`layers` joint blocks, `heads` × `head_dim` wide, patch 2), two CLIP text encoders with
    projection (`text_hidden_size` wide, `text_layers` deep), no T5 (`max_sequence_length` zero tokens in its place)
    and a `FlowMatchEulerDiscreteScheduler` with `shift`. The transformer reads the two encoders' hidden states side
    by side (joint_attention_dim = 2 × text_hidden_size, as the pipeline concatenates them) and their two pooled
    projections (pooled_projection_dim = 2 × text_hidden_size)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    _default_shift_factor(vae)
    latent_size = resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=latent_size, patch_size=2, in_channels=vae.config.latent_channels,
            out_channels=vae.config.latent_channels, num_layers=layers, attention_head_dim=head_dim,
            num_attention_heads=heads, joint_attention_dim=2 * text_hidden_size,
            caption_projection_dim=heads * head_dim, pooled_projection_dim=2 * text_hidden_size,
            pos_embed_max_size=latent_size,  # in patches: up to twice the training resolution
        )
        encoders = [CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=text_hidden_size, intermediate_size=text_hidden_size * 4,
            num_hidden_layers=text_layers, num_attention_heads=max(1, text_hidden_size // 16),
            max_position_embeddings=tokenizer.model_max_length, projection_dim=text_hidden_size,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)) for _ in range(2)]
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    return Components(None, vae, encoders[0], tokenizer, scheduler, text_encoder_2=encoders[1], tokenizer_2=tokenizer,
                      transformer=transformer, max_sequence_length=max_sequence_length)


def _default_shift_factor(vae: AutoencoderKL) -> None:
    """SD3's pipeline adds the VAE's shift_factor when it decodes; a VAE without one (None: no shift, which is how
    training reads it too) says 0 so that it can."""
    if vae.config.get("shift_factor") is None:
        vae.register_to_config(shift_factor=0.0)


def load_pretrained(cfg: ModelConfig) -> Components:
    """Each component with its own `from_pretrained`, as diffusers' training examples do."""
    from transformers import AutoTokenizer

    check_pretrained_exists(cfg)
    path, kw = cfg.pretrained, {"revision": cfg.revision}
    index = model_index(path, cfg.revision)
    common = dict(kw, variant=cfg.variant)
    weights = weights_kwargs(path, cfg.allow_pickle)  # safetensors only unless model.allow_pickle
    if pipeline_family(index, path) == "sd3":
        return _load_sd3(cfg, index, common, weights)
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


def _load_sd3(cfg: ModelConfig, index: dict, common: dict, weights: dict) -> Components:
    """An SD3 / SD3.5 pipeline folder, component by component; T5 (text_encoder_3) only where the folder has it."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import AutoTokenizer, T5EncoderModel

    path, kw = cfg.pretrained, {"revision": cfg.revision}
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **common, **weights)
    _default_shift_factor(vae)
    scheduler_cls = _scheduler_class(index["scheduler"][1], FlowMatchEulerDiscreteScheduler)
    comps = Components(
        None, vae, CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder", **common, **weights),
        AutoTokenizer.from_pretrained(path, subfolder="tokenizer", **kw),
        scheduler_cls.from_pretrained(path, subfolder="scheduler", **kw),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", **common,
                                                                   **weights),
        tokenizer_2=AutoTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kw),
        transformer=SD3Transformer2DModel.from_pretrained(path, subfolder="transformer", **common, **weights),
        max_sequence_length=sequence_length(cfg),
    )
    if has_t5(index):
        comps.text_encoder_3 = T5EncoderModel.from_pretrained(path, subfolder="text_encoder_3", **common, **weights)
        comps.tokenizer_3 = AutoTokenizer.from_pretrained(path, subfolder="tokenizer_3", **kw)
    return comps


def pipeline_family(index: dict, where, key: str = "model.pretrained") -> str:
    """The family of a pipeline from its model_index.json: `unet` (SD 1.x/2.x, SDXL, ...) or `sd3` (SD3, SD3.5);
    ConfigError(key) for a layout this package does not train (Flux, PixArt, ...)."""
    if (index.get("unet") or [None])[0] is not None:
        return "unet"
    if (index.get("transformer") or [None, None])[1] == SD3_TRANSFORMER:
        return "sd3"
    raise ConfigError(key, f"{where} holds a {index.get('_class_name')} (no unet, no {SD3_TRANSFORMER}): this "
                      "package trains UNet pipelines (SD 1.x/2.x, SDXL) and StableDiffusion3Pipeline (SD3, SD3.5)")


def has_t5(index: dict) -> bool:
    return (index.get("text_encoder_3") or [None])[0] is not None


def model_family(model: ModelConfig) -> str:
    """The family of the configured model, from its config files alone (no weights are loaded)."""
    if model.pretrained is None:
        return "unet"
    check_pretrained_exists(model)
    return pipeline_family(model_index(model.pretrained, model.revision), model.pretrained)


def recorded_sequence_length(folder) -> Optional[int]:
    """The T5 prompt length an exported SD3 pipeline was trained with (its style_tailoring.json), or None."""
    meta = Path(folder).expanduser() / METADATA_FILE
    if not meta.is_file():
        return None
    value = json.loads(meta.read_text()).get("max_sequence_length")
    return int(value) if value is not None else None


def sequence_length(model: ModelConfig) -> int:
    """The SD3 model's T5 prompt length: model.max_sequence_length, else what its pipeline records, else the
    pipeline's own default (SD3_DEFAULT_SEQUENCE_LENGTH)."""
    if model.max_sequence_length is not None:
        return int(model.max_sequence_length)
    recorded = recorded_sequence_length(config_path("model.pretrained", model.pretrained))
    return SD3_DEFAULT_SEQUENCE_LENGTH if recorded is None else recorded


def build_components(cfg: ModelConfig, seed: int = 0) -> Components:
    comps = build_tiny(cfg, seed) if cfg.pretrained is None else load_pretrained(cfg)
    if cfg.prediction_type:  # what the UNet is trained to predict is what the exported pipeline must sample as
        comps.scheduler.register_to_config(prediction_type=cfg.prediction_type)
    motion = getattr(cfg, "motion", None)
    if cfg.init_unet:
        setattr(comps, comps.denoiser_name, load_init_unet(cfg.init_unet, comps, allow_pickle=cfg.allow_pickle,
                                                           animation=bool(motion and motion.enabled)))
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
    """What a UNet path points at: "pipeline" (RUN_DIR/pipeline), "unet" (a denoiser folder such as
    RUN_DIR/stages/1-alignment/unet, or an SD3 run's .../transformer) or "lora" (RUN_DIR/lora,
    RUN_DIR/stages/k-name/lora); ConfigError(key) else."""
    root = config_path(key, path)
    if any((root / name / "config.json").is_file() for name in ("unet", "transformer")):
        return "pipeline"
    if (root / "config.json").is_file():
        return "unet"
    if (root / LORA_FILE).is_file():
        return "lora"
    raise ConfigError(key, f"{str(path)!r} is not a pipeline directory (with unet/), a UNet folder (with "
                      f"config.json) or a LoRA folder (with {LORA_FILE})")


def unet_folder(path, kind: str) -> Path:
    """The folder holding a UNet source's config and weights: PIPELINE/unet (an SD3 pipeline's
    PIPELINE/transformer), else the denoiser or LoRA folder itself (`kind` from unet_source_kind)."""
    root = Path(path).expanduser()
    if kind != "pipeline":
        return root
    return root / "unet" if (root / "unet" / "config.json").is_file() else root / "transformer"


def load_init_unet(path, comps: Components, animation: bool = False, allow_pickle: bool = False) -> torch.nn.Module:
    """The UNet (an SD3 model's transformer) of another run, in place of the base's (safetensors only, unless
    `allow_pickle`); LoRA adapters are fused into the base's. It must fit the base's VAE latents and text encoders:
    the same class, and the same values of the config keys that say so. An animation run
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
        denoiser = comps.denoiser
        denoiser.load_lora_adapter(str(folder), weight_name=LORA_FILE, prefix=comps.denoiser_name,
                                   adapter_name="init", **weights)
        denoiser.fuse_lora()
        denoiser.unload_lora()
        return denoiser
    if comps.is_flow:
        from diffusers import SD3Transformer2DModel

        cls, keys = SD3Transformer2DModel, ("in_channels", "out_channels", "joint_attention_dim",
                                            "pooled_projection_dim", "patch_size")
    else:
        cls, keys = UNet2DConditionModel, ("in_channels", "out_channels", "cross_attention_dim",
                                           "addition_embed_type")
    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    if name != cls.__name__:
        raise ConfigError("model.init_unet", f"{path} holds a {name}, but the base model's denoiser is a "
                          f"{cls.__name__}: it was trained on another model")
    denoiser = cls.from_pretrained(folder, **weights)
    base = comps.denoiser.config
    for key in keys:
        if denoiser.config.get(key) != base.get(key):
            raise ConfigError("model.init_unet", f"its {'transformer' if comps.is_flow else 'UNet'} has "
                              f"{key}={denoiser.config.get(key)!r} "
                              f"but the base model's has {base.get(key)!r}: it was trained on another model")
    return denoiser


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


def training_scheduler(comps: Components, prediction_type: Optional[str]):
    """The model's training noise scale: the UNet family's DDPM schedule (what `add_noise` and the targets need),
    prediction type overridable; the SD3 family's `FlowMatchEulerDiscreteScheduler`, fresh from the pipeline
    scheduler's config, whose `sigmas` / `timesteps` the routes' timesteps index (models/flow.py)."""
    if comps.is_flow:
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(comps.scheduler.config)
    overrides = {"prediction_type": prediction_type} if prediction_type else {}
    return DDPMScheduler.from_config(comps.scheduler.config, **overrides)


def model_index(path: str, revision) -> dict:
    """A pipeline's model_index.json: its class and each component's library and class."""
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.load_config(path, revision=revision)


def _scheduler_class(name: str, default=DDPMScheduler):
    import diffusers

    return getattr(diffusers, name, default)


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
    """The denoiser's conditioning for `prompts`, as keyword arguments of its forward: `encoder_hidden_states`, plus
    `added_cond_kwargs` for SDXL, `pooled_projections` for the SD3 family. Without gradients unless `grad` (a text
    encoder that trains)."""
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        if comps.is_flow:
            return _encode_sd3(comps, prompts, device)
        return _encode_prompts(comps, prompts, device, resolution)


def _encode_sd3(comps: Components, prompts: list[str], device) -> dict:
    """The SD3 pipeline's own `encode_prompt` (no guidance: one row per prompt), at the model's T5 length: the
    CLIP penultimate hidden states side by side, padded to the joint width, then the T5 tokens (zeros without T5);
    the two pooled projections side by side. What the pipeline computes when it samples, by construction."""
    embeds, _, pooled, _ = make_pipeline(comps).encode_prompt(
        prompts, None, None, device=device, do_classifier_free_guidance=False,
        max_sequence_length=comps.max_sequence_length)
    return {"encoder_hidden_states": embeds, "pooled_projections": pooled}


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


def make_pipeline(comps: Components, denoiser=None):
    """A stock diffusers pipeline around the components (the trained UNet or transformer by default). An SD3-family
    pipeline carries `max_sequence_length`, the T5 length its model was trained with (`sampling_kwargs`)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    vae = comps.alpha_vae or comps.vae
    if comps.is_flow:
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline(
            transformer=denoiser or comps.transformer, scheduler=comps.scheduler, vae=vae,
            text_encoder=comps.text_encoder, tokenizer=comps.tokenizer, text_encoder_2=comps.text_encoder_2,
            tokenizer_2=comps.tokenizer_2, text_encoder_3=comps.text_encoder_3, tokenizer_3=comps.tokenizer_3,
        )
        pipe.max_sequence_length = comps.max_sequence_length
        return pipe
    unet = denoiser or comps.unet
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


def denoiser_name(pipe) -> str:
    """A pipeline's denoiser attribute: `transformer` (the SD3 family) or `unet`."""
    return "transformer" if getattr(pipe, "transformer", None) is not None else "unet"


def sampling_kwargs(pipe) -> dict:
    """What every call of `pipe` is given besides the prompt, so that it conditions as its model was trained: an
    SD3-family pipeline's `max_sequence_length` (set by `make_pipeline`, or by `open_pipeline` from the pipeline's
    style_tailoring.json); nothing for other pipelines."""
    length = getattr(pipe, "max_sequence_length", None)
    return {} if length is None else {"max_sequence_length": length}


def pipeline_load_kwargs(path) -> dict:
    """What stock `from_pretrained` of a pipeline folder needs besides its path: an SD3 pipeline saved without T5
    loads with `text_encoder_3=None, tokenizer_3=None` (diffusers' documented way to drop T5)."""
    index = json.loads((Path(path).expanduser() / "model_index.json").read_text())
    if "text_encoder_3" in index and not has_t5(index):
        return {"text_encoder_3": None, "tokenizer_3": None}
    return {}


def open_pipeline(path, allow_pickle: bool = False, key: str = "pipeline", switch: Optional[str] = None,
                  **components):
    """A saved pipeline with stock `DiffusionPipeline.from_pretrained`, safetensors only unless `allow_pickle`
    (weights_kwargs: `key`, `switch` name the setting in its error), with `components` swapped in; T5-less SD3
    folders included, its trained T5 length attached (`sampling_kwargs`)."""
    from diffusers import DiffusionPipeline

    weights = weights_kwargs(path, allow_pickle, key=key, switch=switch)
    pipe = DiffusionPipeline.from_pretrained(path, **pipeline_load_kwargs(path), **components, **weights)
    if hasattr(pipe, "text_encoder_3"):  # the SD3 family
        recorded = recorded_sequence_length(path)
        pipe.max_sequence_length = SD3_DEFAULT_SEQUENCE_LENGTH if recorded is None else recorded
    return pipe


def export_pipeline(comps: Components, out_dir: Path, metadata: Optional[dict] = None, denoiser=None) -> Path:
    """Save a pipeline that stock `from_pretrained` loads; written to a temp dir and renamed into place. An
    SD3-family pipeline records its T5 length in its metadata (style_tailoring.json)."""
    pipe = make_pipeline(comps, denoiser)
    if comps.is_flow:
        metadata = {**(metadata or {}), "max_sequence_length": comps.max_sequence_length}
    try:
        with atomic_dir(out_dir) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
            drop_load_paths(tmp)
            if metadata:
                (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    except OSError as err:  # a full disk, most often: say what is left
        kept = "the previous one is intact" if Path(out_dir).exists() else "nothing of it was kept"
        raise OSError(err.errno, f"could not write the pipeline {out_dir} ({err.strerror or err}); {kept}") from err
    return out_dir
