"""Structured configs: the schema every Hydra config is merged into, and the checks that run before any work.

The YAML files under conf/ give values; these dataclasses give types and names. Merging the composed config into
`RunConfig` makes a typo or a wrong type fail with the key's name; `validate` adds the range checks that types
cannot express (they need the scheduler's number of timesteps, read from its config file without loading weights).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf


REPO_ROOT = Path(__file__).resolve().parents[2]
# ${repo:assets/...} points into this checkout (shipped weights), whatever the working directory.
OmegaConf.register_new_resolver("repo", lambda sub="": str(REPO_ROOT / sub), replace=True)


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the key's dotted name."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass
class TinyModelConfig:
    """Sizes of the randomly initialised `model=tiny` components (diffusers' own test-model shapes, a bit wider)."""

    unet_channels: list[int] = field(default_factory=lambda: [32, 64])
    layers_per_block: int = 1
    vae_channels: list[int] = field(default_factory=lambda: [16, 32])
    latent_channels: int = 4
    text_hidden_size: int = 32
    text_layers: int = 2
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    prediction_type: str = "epsilon"


@dataclass
class LoraConfig:
    """LoRA on the UNet's attention projections through peft; rank 0 means full finetuning."""

    rank: int = 0
    alpha: Optional[float] = None  # null: = rank
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class ModelConfig:
    name: str = "tiny"
    # A diffusers pipeline directory or hub id (loaded with from_pretrained); null builds the tiny model.
    pretrained: Optional[str] = None
    revision: Optional[str] = None
    variant: Optional[str] = None
    resolution: int = 32
    # Overrides the scheduler config's prediction type ("epsilon" or "v_prediction"); null keeps the model's own.
    prediction_type: Optional[str] = None
    gradient_checkpointing: bool = False
    # torch.compile the UNet's forward (GPU; the first steps pay the compile time).
    compile: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class CacheConfig:
    """Encode VAE posteriors (mean, std) and text embeddings once, keyed by model, resolution and data."""

    enabled: bool = True
    # null: paths.cache_dir/latents
    dir: Optional[str] = None
    text: bool = True
    batch_size: int = 64


@dataclass
class DataConfig:
    name: str = "folder"
    domain_dir: Optional[str] = None
    alignment_dir: Optional[str] = None
    style_dir: Optional[str] = None
    eval_prompts: Optional[str] = None
    # Share of samples drawn from the style set; null lets the strategy choose (mixture: 0.5, tailoring: t_split/T).
    mixture: Optional[float] = None
    batch_size: int = 8
    num_workers: int = 0
    center_crop: bool = True
    random_flip: bool = False
    # What to do with a missing/corrupt image or a missing caption: "error" stops, "skip" drops it (counted, listed).
    on_bad_sample: str = "error"
    # Generate the Sticker World data sets into these dirs first when they are missing (data=sticker_world).
    build_world: bool = False
    cache: CacheConfig = field(default_factory=CacheConfig)


@dataclass
class StrategyConfig:
    name: str = "style_tailoring"
    # First timestep of the content (alignment) range; style samples get [0, t_split). Style Tailoring only.
    t_split: Optional[int] = None
    # Sources trained one after another (sequential only); any of domain, alignment, style.
    stages: list[str] = field(default_factory=lambda: ["alignment", "style"])
    # Optimizer steps per stage (sequential only); null splits trainer.max_steps evenly.
    stage_steps: Optional[list[int]] = None
    # Appended to every prompt at sampling time (the prompt-engineering baseline uses it; others may too).
    style_prompt: str = ""


@dataclass
class LossConfig:
    # Min-SNR-gamma weighting (Hang et al. 2023; 5.0 is the usual value); null: plain MSE.
    snr_gamma: Optional[float] = None
    # Offset noise strength (0.05-0.1 helps very dark/bright images); 0 disables.
    noise_offset: float = 0.0


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.9999
    update_after_step: int = 0


@dataclass
class OptimConfig:
    # adamw, or adamw8bit (bitsandbytes, when installed)
    name: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 0


@dataclass
class CheckpointConfig:
    every_n_steps: int = 500
    keep: int = 2


@dataclass
class SampleConfig:
    """How evaluation samples are drawn from a pipeline (diffusers' own sampling loop)."""

    num_inference_steps: int = 25
    guidance_scale: float = 5.0
    # A diffusers scheduler class name; null keeps the pipeline's own.
    scheduler: Optional[str] = "DDIMScheduler"
    batch_size: int = 16


@dataclass
class FidConfig:
    enabled: bool = True
    # Reference images (any folder; an imagefolder works): the style set by default.
    reference: Optional[str] = None
    # torch-fidelity extractor: inception-v3-compat (needs weights_path, a local Inception state dict) or
    # clip-local (weights_path = a CLIP model directory, e.g. the Sticker World's).
    feature_extractor: str = "inception-v3-compat"
    weights_path: Optional[str] = None
    kid_subset_size: int = 1000
    # Reference features are cached under this name (default: derived from the reference path and extractor).
    cache_name: Optional[str] = None


@dataclass
class ClipConfig:
    # A local transformers CLIP directory (CLIPModel + CLIPProcessor); also the embedding for scene diversity.
    model_path: Optional[str] = None


@dataclass
class JudgesConfig:
    # Attribute/style judges of a data set that has them (the Sticker World's): prompt alignment and style score.
    path: Optional[str] = None


@dataclass
class EvalConfig:
    enabled: bool = True
    # Also evaluate every N optimizer steps during training (null: only at the end).
    every_n_steps: Optional[int] = None
    # Eval prompts: a .jsonl file ({"prompt": ...} per line) or a .txt file (one prompt per line).
    prompts: Optional[str] = None
    # Appended to every prompt (the prompt-engineering baseline's style phrase); null: the pipeline's own
    # style_tailoring.json `style_prompt`, if any.
    prompt_suffix: Optional[str] = ""
    seeds_per_prompt: int = 4
    seed: int = 0
    max_prompts: Optional[int] = None
    sample: SampleConfig = field(default_factory=SampleConfig)
    fid: FidConfig = field(default_factory=FidConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    # Saved as PNGs (with their prompt and seed) under RUN_DIR/samples[/step-N].
    save_samples: bool = True


@dataclass
class LoggerConfig:
    name: str = "csv"
    project: str = "style-tailoring"
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    seed: int = 0
    run_dir: str = "outputs/run"
    ckpt_path: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # Passed as keyword arguments to lightning.Trainer (plus `strategy`, `devices`, `num_nodes` as Lightning names).
    trainer: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)


SOURCES = ("domain", "alignment", "style")


def merge_into_schema(schema_cls, cfg: DictConfig) -> DictConfig:
    """Merge a composed config into a schema: missing required values, unknown keys and wrong types fail, named."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError(missing[0], "is required (set it on the command line, e.g. model.pretrained=/path)")
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    try:
        return OmegaConf.merge(OmegaConf.structured(schema_cls), plain)
    except Exception as err:  # omegaconf's errors carry the full key; keep them but give one error type
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(str(key), str(err).splitlines()[0]) from None


def to_run_config(cfg: DictConfig) -> DictConfig:
    return merge_into_schema(RunConfig, cfg)


def num_train_timesteps(model: ModelConfig) -> int:
    """T of the model's noise schedule, from the scheduler config file alone (no weights are loaded)."""
    if model.pretrained is None:
        return model.tiny.num_train_timesteps
    from diffusers import DDPMScheduler

    check_pretrained_exists(model)
    config = DDPMScheduler.load_config(model.pretrained, subfolder="scheduler", revision=model.revision)
    return int(config["num_train_timesteps"])


def check_pretrained_exists(model: ModelConfig) -> None:
    path = model.pretrained
    looks_local = path.startswith(("/", ".", "~")) or Path(path).exists() or path.count("/") != 1
    if looks_local and not Path(path).expanduser().is_dir():
        raise ConfigError("model.pretrained", f"no diffusers pipeline directory at {path!r}")
    if looks_local and not (Path(path).expanduser() / "model_index.json").is_file():
        raise ConfigError("model.pretrained", f"{path!r} has no model_index.json; is it a diffusers pipeline dir?")


def validate(cfg: DictConfig) -> int:
    """Range and consistency checks that types cannot express. Returns T, the number of training timesteps."""
    from style_tailoring.strategies import STRATEGIES

    strategy = cfg.strategy
    if strategy.name not in STRATEGIES:
        raise ConfigError("strategy.name", f"unknown strategy {strategy.name!r}; one of {sorted(STRATEGIES)}")
    if cfg.model.prediction_type not in (None, "epsilon", "v_prediction"):
        raise ConfigError("model.prediction_type", "must be epsilon, v_prediction or null")
    if cfg.model.resolution < 8 or cfg.model.resolution % 8:
        raise ConfigError("model.resolution", f"must be a positive multiple of 8, got {cfg.model.resolution}")
    if cfg.data.mixture is not None and not 0.0 <= cfg.data.mixture <= 1.0:
        raise ConfigError("data.mixture", f"must lie in [0, 1], got {cfg.data.mixture}")
    if cfg.data.on_bad_sample not in ("error", "skip"):
        raise ConfigError("data.on_bad_sample", f"must be 'error' or 'skip', got {cfg.data.on_bad_sample!r}")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size", "must be >= 1")
    if cfg.data.cache.enabled and not cfg.data.center_crop:
        raise ConfigError("data.cache.enabled", "random crops change pixels every epoch and cannot be cached; "
                          "set data.cache.enabled=false to train with data.center_crop=false")
    if cfg.optim.name not in ("adamw", "adamw8bit"):
        raise ConfigError("optim.name", f"must be adamw or adamw8bit, got {cfg.optim.name!r}")
    if cfg.optim.name == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("optim.name", "adamw8bit needs bitsandbytes (pip install bitsandbytes); use adamw")
    if cfg.loss.snr_gamma is not None and cfg.loss.snr_gamma <= 0:
        raise ConfigError("loss.snr_gamma", "must be > 0 (or null)")
    if cfg.model.lora.rank < 0:
        raise ConfigError("model.lora.rank", "must be >= 0")
    if cfg.ema.enabled and not 0.0 < cfg.ema.decay < 1.0:
        raise ConfigError("ema.decay", "must lie in (0, 1)")
    T = num_train_timesteps(cfg.model)
    STRATEGIES[strategy.name].check(cfg, T)
    return T
