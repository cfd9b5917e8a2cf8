"""Every check of a training run's config that types cannot express, run before any work, each naming its key.

`validate` covers the values themselves; `check_files` the files they name that exist only once the data has been
prepared (a world's generated eval prompts). Both run before a model is built or a step is taken.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import string
import typing

from omegaconf import DictConfig, OmegaConf
from omegaconf.nodes import FloatNode, IntegerNode

from style_tailoring.alpha.decoder import check_alpha_decoder
from style_tailoring.config import ConfigError, data_sources
from style_tailoring.evaluation.validate import (
    check_eval_files,
    check_eval_settings,
    check_sampling_family,
    check_target,
)
from style_tailoring.models.components import (
    has_t5,
    model_family,
    model_index,
    num_train_timesteps,
    unet_source_kind,
)
from style_tailoring.models.flow import WEIGHTING_SCHEMES
from style_tailoring.training.strategies import build_plan, check_strategy_names, strategy_class

# The numbers that may be negative, and how far: everything else counts, sizes, rates, shares, weights or seeds.
NEGATIVE_ALLOWED = {"checkpoint.keep": -1}  # -1: keep every checkpoint (Lightning's save_top_k)


def check_numbers(node, key: str = "") -> None:
    """No number of the schema is negative (but NEGATIVE_ALLOWED) or beyond the 64 bits torch and numpy hold, and
    none anywhere in the config (Lightning's settings included) is NaN or infinite: such a value would otherwise
    fail deep inside a library mid-run, or train on silently (a NaN learning rate)."""
    if node._is_none():
        return
    if OmegaConf.is_dict(node) or OmegaConf.is_list(node):
        names = node.keys() if OmegaConf.is_dict(node) else range(len(node))
        for name in names:
            check_numbers(node._get_node(name), f"{key}.{name}" if key else str(name))
        return
    value = node._value()
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value}")
    if isinstance(node, (IntegerNode, FloatNode)) and value is not None:
        if value < NEGATIVE_ALLOWED.get(key, 0):
            raise ConfigError(key, f"must be >= {NEGATIVE_ALLOWED.get(key, 0)}, got {value}")
        if isinstance(node, IntegerNode) and value >= 2**63:
            raise ConfigError(key, f"{value} is too large (at most 2**63 - 1)")


# Keyword arguments the run passes to lightning.Trainer itself.
TRAINER_SET_BY_RUN = ("default_root_dir", "logger", "callbacks")


def _fits(value, hint) -> bool:
    """Whether a plain config value (None, bool, int, float, str, list, dict) has the annotated type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(_fits(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(item, args[1]) for item in value.values())
    if hint is int:  # a bool is an int to Python, not to Lightning
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):  # no config value is an Accelerator or a timedelta
        return isinstance(value, hint)
    return True  # another typing construct: Lightning's own to check


def check_trainer(trainer) -> None:
    """`trainer.*` are lightning.Trainer's keyword arguments: each must be one it takes (and not one the run sets),
    of the type it declares, so a typo or a wrong type fails here and not once the model is built."""
    import lightning as L

    from style_tailoring.runtime.launch import device_count

    parameters = inspect.signature(L.Trainer.__init__).parameters
    hints = typing.get_type_hints(L.Trainer.__init__)
    for name, value in OmegaConf.to_container(trainer, resolve=True).items():
        key = f"trainer.{name}"
        if name not in parameters or name == "self":
            raise ConfigError(key, "is not an argument of lightning.Trainer")
        if name in TRAINER_SET_BY_RUN:
            raise ConfigError(key, "is set by the run itself")
        if name in hints and not _fits(value, hints[name]):
            raise ConfigError(key, f"{value!r} does not fit lightning.Trainer's type for it, {hints[name]}")
    try:
        devices = device_count(trainer)
    except ValueError:
        devices = 0
    if devices < 1:
        raise ConfigError("trainer.devices", f"{trainer.get('devices')!r} is not a device count, a list of device "
                          "indices, 'auto' or -1")
    for name in ("num_nodes", "accumulate_grad_batches"):
        if trainer.get(name, 1) < 1:
            raise ConfigError(f"trainer.{name}", f"must be >= 1, got {trainer.get(name)}")


def check_paths(paths) -> None:
    """`paths.*` are directories the run reads and writes (data, caches)."""
    for name, value in paths.items():
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"paths.{name}", f"must be a directory path, got {value!r}")


def check_caption_template(key: str, template) -> None:
    """A caption is a fixed prompt or a template whose only field is {text}."""
    if template is None:
        return
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ConfigError(key, f"{template!r} is not a valid template ({err}); use {{text}} for the file's caption")
    if fields - {"text"}:
        raise ConfigError(key, f"{template!r} has fields {sorted(fields - {'text'})}; the only one is {{text}}")


def check_data(data) -> None:
    from style_tailoring.data.images import parse_background

    if data.mixture is not None and not 0.0 <= data.mixture <= 1.0:
        raise ConfigError("data.mixture", f"must lie in [0, 1], got {data.mixture}")
    if not 0.0 <= data.caption_dropout < 1.0:
        raise ConfigError("data.caption_dropout", f"must lie in [0, 1), got {data.caption_dropout}")
    if data.on_bad_sample not in ("error", "skip"):
        raise ConfigError("data.on_bad_sample", f"must be 'error' or 'skip', got {data.on_bad_sample!r}")
    if data.batch_size < 1:
        raise ConfigError("data.batch_size", "must be >= 1")
    if data.num_workers < 0:
        raise ConfigError("data.num_workers", "must be >= 0")
    if data.cache.batch_size < 1:
        raise ConfigError("data.cache.batch_size", f"must be >= 1, got {data.cache.batch_size}")
    try:
        parse_background(data.background)
    except ValueError:
        raise ConfigError("data.background", f"{data.background!r} is not a colour PIL knows (a name such as "
                          "'white', or '#rrggbb')") from None
    if data.cache.enabled and not data.center_crop:
        raise ConfigError("data.cache.enabled", "random crops change pixels every epoch and cannot be cached; "
                          "set data.cache.enabled=false to train with data.center_crop=false")
    for name, source in data_sources(data).items():
        check_caption_template(f"data.sources.{name}.caption", source["caption"])
    check_target("data.prepare", data.prepare)


def check_model(model) -> None:
    if model.prediction_type not in (None, "epsilon", "v_prediction"):
        raise ConfigError("model.prediction_type", "must be epsilon, v_prediction or null")
    if model.resolution < 8 or model.resolution % 8:
        raise ConfigError("model.resolution", f"must be a positive multiple of 8, got {model.resolution}")
    if model.lora.rank < 0:
        raise ConfigError("model.lora.rank", "must be >= 0")
    if model.pretrained is None and model.tiny.num_train_timesteps < 2:
        raise ConfigError("model.tiny.num_train_timesteps", f"must be >= 2, got {model.tiny.num_train_timesteps}")
    if model.pretrained is None and model.tiny.prediction_type not in ("epsilon", "v_prediction"):
        raise ConfigError("model.tiny.prediction_type", f"must be epsilon or v_prediction, got "
                          f"{model.tiny.prediction_type!r}")
    if model.init_unet:
        unet_source_kind(model.init_unet)
    check_motion(model)


def check_motion(model) -> None:
    """model.motion: its settings, and the options an animation model does not combine with (yet)."""
    from style_tailoring.models.motion import CONDITIONING

    motion = model.get("motion")
    if not motion or not motion.enabled:
        return
    if motion.frames < 2:
        raise ConfigError("model.motion.frames", f"must be >= 2, got {motion.frames}")
    if motion.conditioning not in CONDITIONING:
        raise ConfigError("model.motion.conditioning", f"must be one of {CONDITIONING}, got {motion.conditioning!r}")
    if motion.heads < 1:
        raise ConfigError("model.motion.heads", f"must be >= 1, got {motion.heads}")
    if motion.train not in ("motion", "all"):
        raise ConfigError("model.motion.train", f"must be motion or all, got {motion.train!r}")
    if model.lora.rank > 0:
        raise ConfigError("model.lora.rank", "LoRA is not wired for animation models: set model.lora.rank=0 "
                          "(model.motion.train=motion trains the motion modules alone)")
    if model.train_text_encoder:
        raise ConfigError("model.train_text_encoder", "an animation model trains its UNet only")


# The precisions Lightning's ModelParallelStrategy takes (16-mixed's gradient scaler is not among them), and the
# old spellings Lightning still reads.
FSDP_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-true")
PRECISION_SPELLINGS = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "64": "64-true"}


def check_fsdp(cfg: DictConfig) -> None:
    """trainer=fsdp (runtime/fsdp.py): at least two ranks, and none of the options that train or keep weights
    outside the sharded denoiser, or that would need its weights whole, which it only has after training."""
    from style_tailoring.runtime.launch import FSDP, world_size

    name = str(cfg.trainer.get("strategy", "auto"))
    if name.startswith(FSDP) and name != FSDP:
        raise ConfigError("trainer.strategy", f"{name!r} is Lightning's FSDPStrategy (torch's FSDP1, CUDA only); "
                          "this repository's sharded training is trainer.strategy=fsdp (trainer=fsdp: FSDP2, on GPUs "
                          "and CPUs)")
    if name != FSDP:
        return
    if world_size(cfg.trainer) < 2:
        raise ConfigError("trainer.devices", "trainer=fsdp shards the denoiser across ranks and one rank has nothing "
                          "to share it with: set trainer.devices (or trainer.num_nodes) so there are at least 2 ranks, "
                          "or train on one device with trainer=cpu / trainer=gpu")
    precision = str(cfg.trainer.get("precision", "32-true"))
    if PRECISION_SPELLINGS.get(precision, precision) not in FSDP_PRECISIONS:
        raise ConfigError("trainer.precision", f"{precision!r} is not one Lightning's ModelParallelStrategy (FSDP2) "
                          f"takes: one of {', '.join(FSDP_PRECISIONS)} (bf16-mixed on GPUs)")
    refused = [
        (cfg.model.lora.rank > 0, "model.lora.rank", "LoRA is not wired for trainer=fsdp: its adapters are saved and "
         "fused into the base weights, which a sharded run does not hold whole. The frozen base is most of the "
         "memory and FSDP would not train it: use trainer=ddp for LoRA"),
        (cfg.ema.enabled, "ema.enabled", "EMA is not wired for trainer=fsdp: diffusers' EMAModel keeps a whole copy of "
         "the trained weights on every rank (the memory sharding saves) and cannot step it from sharded ones; set "
         "ema.enabled=false"),
        (cfg.model.train_text_encoder, "model.train_text_encoder", "trainer=fsdp shards the denoiser and exchanges its "
         "gradients alone; a trained text encoder, whole on every rank, would drift apart rank by rank: use "
         "trainer=ddp"),
        ((cfg.strategy.get("ico") or {}).get("enabled"), "strategy.ico.enabled", "per-image contexts train outside "
         "the sharded denoiser, and trainer=fsdp exchanges the denoiser's gradients alone: use trainer=ddp"),
        (cfg.model.compile, "model.compile", "torch.compile is not tested with FSDP's sharded blocks here: set "
         "model.compile=false (or train with trainer=ddp)"),
        (cfg.model.motion.enabled, "model.motion.enabled", "animation models are not tested with trainer=fsdp: use "
         "trainer=ddp"),
        (cfg.optim.name == "adamw8bit", "optim.name", "bitsandbytes' 8-bit AdamW takes plain tensors, and a sharded "
         "denoiser's parameters are DTensors: use optim.name=adamw"),
    ]
    for on, key, why in refused:
        if on:
            raise ConfigError(key, why)


# diffusers' StableDiffusion3Pipeline refuses a longer T5 prompt (check_inputs).
MAX_SEQUENCE_LENGTH = 512


def check_family(cfg: DictConfig) -> str:
    """The settings of the model's family, and the options the other family's settings make no sense for; returns
    the family (`unet` or `sd3`, from the model's config files)."""
    model, loss = cfg.model, cfg.loss
    family = model_family(model)
    if loss.weighting_scheme not in WEIGHTING_SCHEMES:
        raise ConfigError("loss.weighting_scheme", f"must be one of {list(WEIGHTING_SCHEMES)}, got "
                          f"{loss.weighting_scheme!r}")
    if family == "unet":
        if model.max_sequence_length is not None:
            raise ConfigError("model.max_sequence_length", "is the SD3 family's T5 prompt length; this is a UNet "
                              "model (its prompts are its tokenizer's length): set it to null")
        if loss.weighting_scheme != "none":
            raise ConfigError("loss.weighting_scheme", "weights the SD3 family's flow-matching loss; a UNet model's "
                              "loss weight is loss.snr_gamma: set it to none")
        return family
    if model.prediction_type is not None:
        raise ConfigError("model.prediction_type", "an SD3-family model is trained by flow matching (it predicts "
                          "the velocity): set it to null")
    if loss.snr_gamma is not None:
        raise ConfigError("loss.snr_gamma", "min-SNR weights a DDPM schedule; the SD3 family's loss weight over "
                          "noise levels is loss.weighting_scheme: set it to null")
    if model.motion.enabled:
        raise ConfigError("model.motion.enabled", "animation models are UNet models (UNetMotionModel); this is an "
                          "SD3-family model")
    if (cfg.strategy.get("ico") or {}).get("enabled"):
        raise ConfigError("strategy.ico.enabled", "per-image contexts are implemented for one CLIP text encoder "
                          "(SD 1.x/2.x); this is an SD3-family model")
    length = model.max_sequence_length
    if length is not None:
        shortest = 1 if has_t5(model_index(model.pretrained, model.revision)) else 0  # T5-less: 0, no padding
        if not shortest <= length <= MAX_SEQUENCE_LENGTH:
            raise ConfigError("model.max_sequence_length", f"must lie in [{shortest}, {MAX_SEQUENCE_LENGTH}] "
                              f"(tokens{' of T5' if shortest else ', zeros in place of T5'}), got {length}")
    return family


def validate(cfg: DictConfig) -> int:
    """Range and consistency checks of a training run. Returns T, the number of training timesteps."""
    check_numbers(cfg)
    check_trainer(cfg.trainer)
    check_fsdp(cfg)
    check_paths(cfg.paths)
    if cfg.logger.name not in (None, "none", "csv", "wandb"):
        raise ConfigError("logger.name", f"unknown logger {cfg.logger.name!r} (csv, wandb or none)")
    if cfg.seed >= 2**32:
        raise ConfigError("seed", f"must be below 2**32 (numpy's seeds), got {cfg.seed}")
    strategy = cfg.strategy  # its class and settings were checked by to_run_config
    check_strategy_names("strategy.name", [strategy.name])
    check_model(cfg.model)
    family = check_family(cfg)
    check_data(cfg.data)
    check_alpha_decoder(cfg.model.alpha_decoder, cfg.data.background)
    if cfg.optim.name not in ("adamw", "adamw8bit"):
        raise ConfigError("optim.name", f"must be adamw or adamw8bit, got {cfg.optim.name!r}")
    if cfg.optim.name == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("optim.name", "adamw8bit needs bitsandbytes (pip install bitsandbytes); use adamw")
    if len(cfg.optim.betas) != 2 or not all(0 <= beta < 1 for beta in cfg.optim.betas):
        raise ConfigError("optim.betas", f"must be two numbers in [0, 1), got {list(cfg.optim.betas)}")
    if cfg.loss.snr_gamma is not None and cfg.loss.snr_gamma <= 0:
        raise ConfigError("loss.snr_gamma", "must be > 0 (or null)")
    if cfg.ema.enabled and not 0.0 < cfg.ema.decay < 1.0:
        raise ConfigError("ema.decay", "must lie in (0, 1)")
    if not cfg.launch.timeout_s > 0:
        raise ConfigError("launch.timeout_s", f"must be > 0 seconds, got {cfg.launch.timeout_s}")
    if cfg.checkpoint.every_n_steps < 1:
        raise ConfigError("checkpoint.every_n_steps", "must be >= 1")
    check_eval_settings(cfg.eval)
    check_sampling_family(cfg.eval, flow=family == "sd3")
    if cfg.optim.text_encoder_lr is not None and cfg.optim.text_encoder_lr <= 0:
        raise ConfigError("optim.text_encoder_lr", f"must be > 0 (or null), got {cfg.optim.text_encoder_lr}")
    T = num_train_timesteps(cfg.model)
    strategy_class(cfg).check(cfg, T)
    check_ico(cfg, T)
    if cfg.model.get("motion") and cfg.model.motion.enabled:
        if not cfg.data.center_crop:
            raise ConfigError("data.center_crop", "a random crop would cut each frame of a clip differently: "
                              "animation models train with data.center_crop=true")
        if (strategy.get("ico") or {}).get("enabled"):
            raise ConfigError("strategy.ico.enabled", "per-image contexts are not wired for animation models")
        if cfg.eval.enabled:
            raise ConfigError("eval.enabled", "an animation model is evaluated on stickers + prompts, by "
                              "python -m style_tailoring.animation.evaluate pipeline=RUN/pipeline: set "
                              "eval.enabled=false")
    return T


def check_ico(cfg: DictConfig, T: int) -> None:
    """strategy.ico: its settings, and that its sources are sources the plan reads."""
    ico = cfg.strategy.get("ico")
    if not ico or not ico.enabled:
        return
    if ico.n_ctx < 1:
        raise ConfigError("strategy.ico.n_ctx", f"must be >= 1, got {ico.n_ctx}")
    if ico.lr is not None and ico.lr <= 0:
        raise ConfigError("strategy.ico.lr", f"must be > 0 (or null), got {ico.lr}")
    if ico.unet not in ("all", "kv"):
        raise ConfigError("strategy.ico.unet", f"must be all or kv, got {ico.unet!r}")
    if ico.unet == "kv" and cfg.model.lora.rank > 0:
        raise ConfigError("strategy.ico.unet", "kv trains a full UNet's cross-attention keys and values; with "
                          "model.lora.rank > 0 the LoRA adapters train: set strategy.ico.unet=all")
    if not str(ico.init).strip():
        raise ConfigError("strategy.ico.init", "needs at least one word (the contexts' initial value)")
    read = build_plan(cfg, T).sources
    unknown = [s for s in ico.sources if s not in read]
    if not ico.sources or unknown:
        raise ConfigError("strategy.ico.sources", f"must name sources the plan reads ({list(read)}), got "
                          f"{list(ico.sources)}")


def check_files(cfg: DictConfig) -> None:
    """Checks of files the config names that may only exist after `data.prepare` ran."""
    if cfg.eval.enabled:
        check_eval_files(cfg.eval)
