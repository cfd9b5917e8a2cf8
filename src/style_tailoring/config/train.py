"""`python -m style_tailoring.train`: the run config (RunConfig) every training run is merged into, and its parts
(model, data, strategy, optimizer, evaluation, ...) that the other commands reuse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig

from style_tailoring.config.core import PLAIN_SAMPLER, ConfigError, merge_into_schema, target_settings


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
class MotionConfig:
    """Animated stickers (style_tailoring.animation): the UNet becomes diffusers' `UNetMotionModel` with motion
    modules, starting as the image model frame by frame; every sample is a clip of `frames` frames."""

    enabled: bool = False
    frames: int = 8
    # Where the conditioning sticker's latent goes: "middle" (the middle frame, zeros on the others), "all" (every
    # frame), or "none" (text-to-animation, no image input).
    conditioning: str = "middle"
    # Attention heads of each motion module (their width is the UNet block's).
    heads: int = 4
    # What trains: "motion" (the motion modules and conv_in, which reads the conditioning) or "all" (the whole UNet).
    train: str = "motion"


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
    # Start the UNet from another run instead of `pretrained`'s: RUN_DIR/pipeline, a UNet folder such as
    # RUN_DIR/stages/1-alignment/unet, or a LoRA folder (fused into the UNet). VAE and text encoders stay the base's.
    init_unet: Optional[str] = None
    # An alpha decoder folder (`python -m style_tailoring.alpha action=train`): the exported pipeline decodes RGBA
    # with it. It must have been trained behind this model's VAE encoder, on data.background.
    alpha_decoder: Optional[str] = None
    resolution: int = 32
    # Overrides the scheduler config's prediction type ("epsilon" or "v_prediction"); null keeps the model's own.
    prediction_type: Optional[str] = None
    gradient_checkpointing: bool = False
    # Train the text encoder(s) too (StyleForge, DreamBooth), at optim.text_encoder_lr; the text cache is bypassed
    # and the export carries the trained encoder.
    train_text_encoder: bool = False
    # torch.compile the UNet's forward (GPU; the first steps pay the compile time).
    compile: bool = False
    # The SD3 family only: the T5 prompt length in tokens (with T5 absent, the zero tokens its pipeline pads after
    # the CLIP tokens), used by training, recorded in the exported pipeline and passed to its every sampling call.
    # null: what the pipeline records (its style_tailoring.json), else diffusers' default, 256.
    max_sequence_length: Optional[int] = None
    # Load pickled weights (.bin) where no safetensors are given (pretrained, init_unet): unpickling runs any code
    # the file holds, so only for files you trust. false: such weights are refused, naming the directory.
    allow_pickle: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
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
class SourceConfig:
    """One named data source: `data.sources.<name>`. Any route of any strategy may read it by name."""

    # An imagefolder (images + metadata.jsonl or .txt captions), a directory of streaming tar shards, or a Hugging
    # Face `datasets` data set: parquet files (an `image` and a `text` column) or a save_to_disk folder.
    dir: Optional[str] = None
    # The caption the source trains with: a template over the file's caption ("{text}, sks style"), or a fixed
    # prompt ("sks style", DreamBooth-style: the files then need no captions); null: the file's own caption.
    caption: Optional[str] = None
    # A `datasets` source only: read its files with datasets' streaming=True (no scan up front, no arrow copy; for
    # sets too large for the caches: needs data.cache.enabled=false). Tar shards always stream.
    streaming: bool = False


# The sources with a `data.<name>_dir` shorthand (the paper's three sets).
SHORTHAND_SOURCES = ("domain", "alignment", "style")


@dataclass
class DataConfig:
    name: str = "folder"
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    # Shorthands for data.sources.{domain,alignment,style}.dir.
    domain_dir: Optional[str] = None
    alignment_dir: Optional[str] = None
    style_dir: Optional[str] = None
    eval_prompts: Optional[str] = None
    # Share of samples drawn from the style set; null lets the strategy choose (mixture: 0.5, tailoring: t_split/T).
    mixture: Optional[float] = None
    # Share of samples trained with the empty prompt, so the unconditional branch that classifier-free guidance
    # extrapolates from is trained too (diffusers' --proportion_empty_prompts); deterministic per sample.
    caption_dropout: float = 0.0
    # Transparent pixels (RGBA, LA, palette transparency) are composited onto this colour: a PIL colour name or
    # #rrggbb. White, as the paper shows stickers.
    background: str = "white"
    batch_size: int = 8
    num_workers: int = 0
    center_crop: bool = True
    random_flip: bool = False
    # What to do with a missing/corrupt image or a missing caption: "error" stops, "skip" drops it (counted, listed).
    on_bad_sample: str = "error"
    # Called before the sources are scanned (a Hydra `_target_` and its arguments), e.g. the Sticker World's data
    # set generator; null: the data is already on disk.
    prepare: Optional[dict[str, Any]] = None
    cache: CacheConfig = field(default_factory=CacheConfig)


@dataclass
class RouteConfig:
    """One route of a `strategy=custom` stage: which source, which timesteps, what share of the batch, what weight."""

    source: str = "???"
    share: float = 1.0
    t_min: int = 0
    t_max: Optional[int] = None  # null: T
    weight: float = 1.0
    # How its timesteps are drawn in [t_min, t_max): a density's name or a mapping {name, <settings>}: uniform,
    # logit_normal {logit_mean, logit_std}, mode {mode_scale}, soft_split {t_split, width, side} (data/densities.py).
    density: Any = "uniform"


@dataclass
class StageConfig:
    name: str = "stage"
    steps: Optional[int] = None  # null: an even share of what the other stages leave of trainer.max_steps
    exact: bool = False  # exact per-batch composition (see StrategyConfig.exact_composition)
    routes: list[RouteConfig] = field(default_factory=list)


@dataclass
class IcoConfig:
    """ICO: learnable per-image context vectors in the prompts of `sources`, dropped at inference."""

    enabled: bool = False
    n_ctx: int = 4
    # Words whose token embeddings initialise every image's vectors (repeated to n_ctx).
    init: str = "a picture of"
    sources: list[str] = field(default_factory=lambda: ["styleref"])
    # The vectors' learning rate (null: optim.lr).
    lr: Optional[float] = None
    # What of the UNet trains beside them: "all" (whatever the run trains) or "kv" (the cross-attention keys and
    # values only, as in the ICO paper).
    unet: str = "all"


@dataclass
class StrategyConfig:
    """What every strategy takes; each strategy is a class of style_tailoring.training.strategies that extends this
    with its own settings (the class its conf/strategy/NAME.yaml names as `_target_`), so a setting another strategy
    reads is refused by name instead of sitting unused in a union of every strategy's settings."""

    name: str = "style_tailoring"
    # Every batch holds exactly round(share x batch) samples of each route (largest remainder), instead of each
    # sample drawing its route by the shares; still a pure function of seed and step.
    exact_composition: bool = False
    ico: IcoConfig = field(default_factory=IcoConfig)
    # Appended to every prompt at sampling time (the prompt-engineering baseline uses it; others may too).
    style_prompt: str = ""


DEFAULT_STRATEGY = {"_target_": "style_tailoring.training.strategies.StyleTailoring", "name": "style_tailoring",
                    "t_split": 500}


@dataclass
class LossConfig:
    # Min-SNR-gamma weighting (Hang et al. 2023; 5.0 is the usual value); null: plain MSE.
    snr_gamma: Optional[float] = None
    # Offset noise strength (0.05-0.1 helps very dark/bright images); 0 disables.
    noise_offset: float = 0.0
    # The SD3 family's loss weight over noise levels, diffusers' compute_loss_weighting_for_sd3: none (the plain
    # velocity MSE), sigma_sqrt, cosmap. The UNet family's is loss.snr_gamma.
    weighting_scheme: str = "none"


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
    # The text encoder's learning rate when model.train_text_encoder (null: optim.lr).
    text_encoder_lr: Optional[float] = None
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 0


@dataclass
class CheckpointConfig:
    every_n_steps: int = 500
    keep: int = 2  # checkpoints kept besides last.ckpt; -1: all of them (Lightning's save_top_k)


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
    # More reference folders, each reported as eval/fid_<name>, eval/kid_<name> (the world: the style set, beside
    # the matched-content reference as eval/fid); null drops an inherited one.
    references: dict[str, Optional[str]] = field(default_factory=dict)


@dataclass
class ClipConfig:
    # A local transformers CLIP directory (CLIPModel + CLIPProcessor); also the embedding for scene diversity.
    model_path: Optional[str] = None


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
    # The sampler (config group eval/sampler): a `_target_` class of style_tailoring.sampling.samplers (or your
    # own) and its settings. `plain` is diffusers' pipeline call as it is.
    sampler: dict[str, Any] = field(default_factory=lambda: dict(PLAIN_SAMPLER))
    fid: FidConfig = field(default_factory=FidConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    # Judges of a data set that has them (a `_target_` returning an object with `score(images, prompts)`, e.g. the
    # Sticker World's): per-sample prompt alignment and style score.
    judges: Optional[dict[str, Any]] = None
    # Saved as PNGs (with their prompt and seed) under RUN_DIR/samples[/step-N].
    save_samples: bool = True


@dataclass
class LoggerConfig:
    name: str = "csv"
    project: str = "style-tailoring"
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LaunchConfig:
    """How the ranks of a DDP run watch each other (runtime/launch.py)."""

    # The collective timeout (torch.distributed's, 30 minutes by default): a rank that hangs (alive, not answering)
    # ends the run this many seconds after its peers started waiting for it, with an error naming it. Longer than
    # any step or checkpoint save of the run, or a slow rank is taken for a hung one.
    timeout_s: float = 300.0


@dataclass
class RunConfig:
    seed: int = 0
    run_dir: str = "outputs/run"
    ckpt_path: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # A strategy's node: its `_target_` class and that class's settings (checked by to_run_config).
    strategy: Any = field(default_factory=lambda: dict(DEFAULT_STRATEGY))
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    # Passed as keyword arguments to lightning.Trainer (plus `strategy`, `devices`, `num_nodes` as Lightning names).
    trainer: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)


def to_run_config(cfg: DictConfig) -> DictConfig:
    """A composed training config merged into RunConfig, its strategy node into its strategy's class."""
    run = merge_into_schema(RunConfig, cfg)
    # The composed node replaces the default one rather than merging into it: merged, Style Tailoring's default
    # t_split would land in every other strategy's node and be refused there as not its setting.
    node = cfg.get("strategy") if "strategy" in cfg else None
    run.strategy = target_settings(node if node is not None else run.strategy, "strategy")
    return run


def data_sources(data) -> dict[str, dict]:
    """Every named source as {"dir", "caption", "streaming"}: `data.sources` with the `data.<name>_dir` shorthands
    merged in."""
    sources = {name: {"dir": source.get("dir"), "caption": source.get("caption"),
                      "streaming": bool(source.get("streaming", False))}
               for name, source in (data.get("sources") or {}).items()}
    for name in SHORTHAND_SOURCES:
        short = data.get(f"{name}_dir")
        if not short:
            continue
        entry = sources.setdefault(name, {"dir": None, "caption": None, "streaming": False})
        if entry["dir"] and entry["dir"] != short:
            raise ConfigError(f"data.sources.{name}.dir", f"is {entry['dir']!r} but data.{name}_dir is {short!r}; "
                              "set one of them")
        entry["dir"] = short
    return sources


def encodes_text_live(cfg) -> bool:
    """Whether a run encodes its prompts every step instead of reading the text cache: its text encoder trains
    (model.train_text_encoder), or ICO inserts per-image contexts into them (strategy.ico.enabled)."""
    return bool(cfg.model.get("train_text_encoder")) or bool((cfg.strategy.get("ico") or {}).get("enabled"))
