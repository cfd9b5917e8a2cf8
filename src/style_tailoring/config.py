"""Structured configs: the schema every Hydra config is merged into.

The YAML files under conf/ give values; these dataclasses give types and names. Merging the composed config into
`RunConfig` makes a typo or a wrong type fail with the key's name. Range and consistency checks that types cannot
express live beside what they check (`training/validate.py`, `evaluation/validate.py`) and all run before any work.
This module is the lowest room of the package: it imports nothing from it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.nodes import FloatNode

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
# ${repo:assets/...} points into this checkout (shipped weights), whatever the working directory.
OmegaConf.register_new_resolver("repo", lambda sub="": str(REPO_ROOT / sub), replace=True)


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the key's dotted name."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def config_path(key: str, path) -> Path:
    """The path config key `key` gives, expanded; a ConfigError naming `key` if the file system refuses the name
    itself (longer than a file name may be), which pathlib's exists/is_file raise as OSError instead of answering."""
    full = Path(path).expanduser()
    try:
        full.exists()
    except OSError as err:
        raise ConfigError(key, f"{str(path)[:80]!r}... is no usable path ({err.strerror})") from None
    return full


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

    # An imagefolder (images + metadata.jsonl or .txt captions) or a directory of streaming tar shards.
    dir: Optional[str] = None
    # The caption the source trains with: a template over the file's caption ("{text}, sks style"), or a fixed
    # prompt ("sks style", DreamBooth-style: the files then need no captions); null: the file's own caption.
    caption: Optional[str] = None


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
    name: str = "style_tailoring"
    # First timestep of the content (alignment) range; style samples get [0, t_split). Style Tailoring only.
    t_split: Optional[int] = None
    # Sources trained one after another (sequential only): names of data.sources.
    stages: list[str] = field(default_factory=lambda: ["alignment", "style"])
    # Optimizer steps per stage (sequential only); null splits trainer.max_steps evenly.
    stage_steps: Optional[list[int]] = None
    # Every batch holds exactly round(share x batch) samples of each route (largest remainder), instead of each
    # sample drawing its route by the shares; still a pure function of seed and step.
    exact_composition: bool = False
    # Each stage after the first starts with a fresh optimizer (AdamW moments cleared, warmup restarted), as
    # separate finetunes chained through model.init_unet do; false carries the moments across stages.
    fresh_optimizer: bool = False
    # strategy=custom: the stages and routes themselves.
    plan: list[StageConfig] = field(default_factory=list)
    # StyleForge / Multi-StyleForge: the rare token bound to the style ("[V]") and, Multi only, to its backgrounds
    # ("[W]"); the Aux loss weight λ (0: plain DreamBooth on StyleRef alone) and each Aux source's share of its
    # StyleRef/Aux pair in every batch.
    identifier: str = "sks"
    identifier_bg: str = "pxq"
    aux_weight: float = 1.0
    aux_share: float = 0.5
    ico: IcoConfig = field(default_factory=IcoConfig)
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


PLAIN_SAMPLER = {"_target_": "style_tailoring.sampling.samplers.PlainSampler"}


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


@dataclass
class EvaluateModelConfig:
    # An alpha decoder folder swapped in as the pipeline's VAE: samples are RGBA (see ModelConfig.alpha_decoder).
    alpha_decoder: Optional[str] = None
    # Load a pickled (.bin) pipeline or UNet (see ModelConfig.allow_pickle).
    allow_pickle: bool = False


@dataclass
class EvaluateConfig:
    """`python -m style_tailoring.evaluate`: one evaluation run of a saved pipeline, in a run directory of its own."""

    pipeline: str = "???"
    # Optional UNet directory swapped into the pipeline (e.g. RUN_DIR/stages/1-alignment/unet).
    unet: Optional[str] = None
    model: EvaluateModelConfig = field(default_factory=EvaluateModelConfig)
    run_dir: str = "outputs/eval"
    # Sampling resolution; null: the pipeline's own (UNet sample size x VAE scale factor).
    resolution: Optional[int] = None
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, Any] = field(default_factory=dict)


@dataclass
class HitlGenerateConfig:
    """How candidates are drawn: K seeds per training prompt, each (round, prompt, seed) with its own noise."""

    seeds_per_prompt: int = 8
    seed: int = 0
    # Appended to every training prompt at generation (the candidates' `text` stays the bare prompt).
    prompt_suffix: str = ""
    sample: SampleConfig = field(default_factory=SampleConfig)
    # Any sampler of the sampler hook (conf/eval/sampler/NAME.yaml), e.g. timestep_split.
    sampler: dict[str, Any] = field(default_factory=lambda: dict(PLAIN_SAMPLER))


@dataclass
class HitlRaterConfig:
    # judges: the data set's judges (eval.judges); clip_retrieval: aligned = the world CLIP retrieves the prompt,
    # style from the judges' style head; noisy: `raters` simulated people flipping the judges' ratings with
    # probability `flip`; people: ratings from the app (hitl.serve) or imported files (`files`).
    name: str = "judges"
    flip: float = 0.1
    raters: int = 3
    # people: ratings files (ratings.csv or Label Studio JSON export), several raters merged; empty: the app's database.
    files: list[str] = field(default_factory=list)
    # Merging several raters: aligned by majority; style by `mean` (rounded) or `median`.
    style_merge: str = "mean"


@dataclass
class HitlCurationConfig:
    per_prompt_cap: int = 4
    style_min: int = 4


@dataclass
class TeacherConfig:
    name: str = "???"
    # A pipeline directory (RUN_DIR/pipeline), or with `lora`: LoRA weights loaded onto hitl.model's UNet.
    model: Optional[str] = None
    lora: Optional[str] = None


@dataclass
class StudentConfig:
    # The pipeline the student starts from (its UNet learns the kept set; strategy base); null: no student.
    base: Optional[str] = None
    # Also train a control student on as many samples kept from the best single teacher alone.
    control: bool = True


@dataclass
class HitlConfig:
    rounds: int = 1
    # The model the first round generates from (the domain finetune's RUN_DIR/pipeline).
    model: str = "???"
    # Training prompts (.jsonl or .txt); must not overlap eval.prompts.
    prompts: Optional[str] = None
    # Finetunes per round (strategies), from the domain model or the previous round's same strategy.
    strategies: list[str] = field(default_factory=lambda: ["sequential", "style_tailoring"])
    finetune_from: str = "domain"
    # false: the last round curates but does not finetune (the recipe's final step trains on its sets instead).
    finetune_last_round: bool = True
    # Rounds after the first generate from this strategy's previous-round model (null: the first of strategies).
    generate_with: Optional[str] = None
    # Extra overrides for every finetune's `python -m style_tailoring.train` (e.g. trainer.max_steps=300).
    train_overrides: list[str] = field(default_factory=list)
    # Candidates no person rated: error (naming file and row) or skip them.
    on_unrated: str = "error"
    # Generate from pickled (.bin) pipelines or LoRA weights (see ModelConfig.allow_pickle).
    allow_pickle: bool = False
    generate: HitlGenerateConfig = field(default_factory=HitlGenerateConfig)
    rater: HitlRaterConfig = field(default_factory=HitlRaterConfig)
    curation: HitlCurationConfig = field(default_factory=HitlCurationConfig)
    # Ensemble of teachers: candidates from each, one keep rule across them, a student trained on what is kept.
    teachers: list[TeacherConfig] = field(default_factory=list)
    student: StudentConfig = field(default_factory=StudentConfig)


@dataclass
class HitlRunConfig:
    """`python -m style_tailoring.hitl`: HITL rounds (generate → rate → curate → finetune) in one run directory."""

    seed: int = 0
    run_dir: str = "outputs/hitl"
    hitl: HitlConfig = field(default_factory=HitlConfig)
    strategy: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnimationSettings:
    """The settings every animation command shares (animate, animation.evaluate, hitl.teachers); the world's
    defaults come from conf/animation/sticker_world.yaml."""

    # An exported animation pipeline (RUN/pipeline), or an image pipeline a motion adapter goes on.
    pipeline: str = MISSING
    steps: int = 8
    guidance_scale: float = 3.0
    seed: int = 0
    scheduler: Optional[str] = "DPMSolverMultistepScheduler"
    # Transparent stickers are composited onto this colour.
    background: str = "white"
    # Load pickled (.bin) pipelines and motion adapters: unpickling runs any code the file holds.
    allow_pickle: bool = False
    paths: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnimateConfig(AnimationSettings):
    """`python -m style_tailoring.animate`: a sticker and a prompt become an animated sticker."""

    image: str = MISSING
    prompt: str = MISSING
    # A motion adapter (RUN/motion_adapter) for an image pipeline; ignored for an exported animation pipeline.
    motion_adapter: Optional[str] = None
    out: str = "animation.webp"
    fps: int = 8
    device: str = "cpu"


@dataclass
class AnimationEvalConfig(AnimationSettings):
    """`python -m style_tailoring.animation.evaluate`: animate a folder of stickers and prompts, score the clips."""

    motion_adapter: Optional[str] = None
    # metadata.jsonl rows (file_name, prompt) of conditioning stickers.
    eval_dir: str = MISSING
    out: str = "animation_eval"
    seeds_per_prompt: int = 4
    # Judges as `_target_` nodes: a motion judge (motions(clips), prompt_motion(prompt)) and image judges
    # (predict_attributes, style_score, alignment_per_sample); a local CLIP directory for frame-to-frame similarity.
    motion_judge: Optional[dict[str, Any]] = None
    judges: Optional[dict[str, Any]] = None
    clip: Optional[str] = None
    # A `_target_` that puts eval_dir on disk first (the animated world's builder).
    prepare: Optional[dict[str, Any]] = None


@dataclass
class TeachersConfig(AnimationSettings):
    """`python -m style_tailoring.hitl.teachers`: the ensemble of teachers animates the training stickers, raters
    keep the best clip of each (`pipeline`: the image pipeline motion-adapter teachers go on)."""

    teachers: list[str] = field(default_factory=list)
    # metadata.jsonl rows (file_name, prompt) of the training stickers.
    prompts_dir: str = MISSING
    out: str = "teachers"
    k: int = 2
    motion_judge: Optional[dict[str, Any]] = None
    # Above the image model frame by frame (8.9 dB on the world): the sticker is kept. Model clips are blurred by the
    # VAE and few steps, so a render-level bar (20 dB: the same sticker vs another) kept 1 of 720 teacher clips.
    min_fidelity: float = 12.0
    ratings: Optional[str] = None
    prepare: Optional[dict[str, Any]] = None


@dataclass
class BenchConfig:
    """`python -m style_tailoring.bench`: speed, as ratios against a reference run side by side in one process."""

    task: str = "train"  # train | sample | generate | animate
    arch: str = "world"  # world (the shipped world base, `pipeline`) | tiny | sd15 (SD 1.5's shapes; needs a GPU)
    resolution: Optional[int] = None  # null: 512 for sd15, 32 otherwise
    batch_size: Optional[int] = None  # null: 4 for sd15 (the fp32 reference), 32 otherwise
    steps: int = 30
    warmup: int = 5
    repeats: int = 3
    images: int = 256
    sample_steps: int = 25
    # The device's dense peak for our run's precision (TFLOP/s): bf16 on a GPU not in the built-in table, fp32 on a
    # CPU (cores x clock x FLOP/cycle).
    peak_tflops: Optional[float] = None
    # What the world benchmarks read, from config (conf/bench.yaml): the model, the student base, the training
    # prompts and their data builder and judges (task=generate), the motion adapter, stickers and motion judge
    # (task=animate).
    pipeline: Optional[str] = None
    student: Optional[str] = None
    prepare: Optional[dict[str, Any]] = None
    prompts: Optional[str] = None
    judges: Optional[dict[str, Any]] = None
    motion_adapter: Optional[str] = None
    animation_prepare: Optional[dict[str, Any]] = None
    eval_dir: Optional[str] = None
    motion_judge: Optional[dict[str, Any]] = None
    background: str = "white"
    paths: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- the other commands
# One schema per command, each beside its primary config conf/<name>.yaml, which says what every setting means.


@dataclass
class CollectConfig:
    """`python -m style_tailoring.collect` (conf/collect.yaml): one tidy table of every run under a directory."""

    # A multirun directory or any parent of runs; null with wandb_project.
    sweep_dir: Optional[str] = None
    # The CSV written (parquet beside it when pyarrow is installed); null: SWEEP_DIR/table.csv.
    out: Optional[str] = None
    # ENTITY/PROJECT: read wandb runs instead of a directory.
    wandb_project: Optional[str] = None


@dataclass
class ShardsConfig:
    """`python -m style_tailoring.data.shards` (conf/shards.yaml): an imagefolder packed into tar shards."""

    folder: str = "???"
    out_dir: str = "???"
    # Samples per shard (>= 1).
    shard_size: int = 1000


@dataclass
class ServeConfig:
    """`python -m style_tailoring.hitl.serve` (conf/serve.yaml): the rating app over one HITL round."""

    round_dir: str = "???"
    # This machine only unless set: the app has no login.
    host: str = "127.0.0.1"
    port: int = 8765
    # Write the round's complete ratings (ratings.csv, Label Studio tasks) and exit instead of serving.
    export_csv: Optional[str] = None
    export_label_studio: Optional[str] = None


@dataclass
class WorldConfig:
    """`python -m style_tailoring.world` (conf/world.yaml): the Sticker World's artifacts, each step skipped when
    done."""

    # Steps to build (a name or a list, always run in build order); null: every step.
    only: Optional[list[str]] = None
    force: bool = False
    seed: int = 0
    data_dir: str = str(REPO_ROOT / "data" / "sticker_world")
    assets_dir: str = str(REPO_ROOT / "assets" / "sticker_world")
    # List the steps that would run, run none.
    dry_run: bool = False


@dataclass
class AlphaConfig:
    """`python -m style_tailoring.alpha` (conf/alpha.yaml): train, measure or show an alpha decoder; `action`
    chooses; a setting only another action reads is refused (style_tailoring.alpha.__main__ checks)."""

    action: str = "???"
    pipeline: str = "???"
    decoder: Optional[str] = None
    out: Optional[str] = None
    background: Optional[str] = None
    allow_pickle: bool = False
    seed: int = 0
    # train (not `data`: that name is the data config group's)
    data_dirs: list[str] = field(default_factory=list)
    resolution: Optional[int] = None
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-4
    no_alpha: bool = False
    # measure
    test: Optional[str] = None
    tune: Optional[str] = None
    control: Optional[str] = None
    # grid
    prompts: Optional[str] = None
    n: int = 8
    suffix: str = ""
    guidance: float = 3.0
    num_inference_steps: int = 25
    zoom: int = 3


def _sampler_by_name(plain: dict) -> None:
    """`eval.sampler=NAME` on the command line sets a string where the group `eval/sampler=NAME` sets the node:
    accept both by reading conf/eval/sampler/NAME.yaml (settings then go through eval.sampler.KEY=...)."""
    ev = plain.get("eval")
    if not isinstance(ev, dict) or not isinstance(ev.get("sampler"), str):
        return
    name = ev["sampler"]
    path = CONF_DIR / "eval" / "sampler" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError("eval.sampler", f"unknown sampler {name!r}; one of {known}")
    ev["sampler"] = OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _check_float(value, key: str) -> None:
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        raise ConfigError(key, f"an integer of {len(str(abs(value)))} digits is too large for a float")


def _check_shapes(schema, value, key: str = "") -> None:
    """What OmegaConf's merge gets wrong: a mapping where the schema has a list (or the reverse) fails naming no key,
    a list or mapping inside a list of numbers or strings is taken as it is, and an integer too large for a float
    fails naming no key. Unknown keys and wrong scalar types are the merge's to name."""
    if value is None:
        return
    if OmegaConf.is_list(schema):
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {type(value).__name__}")
        element = schema._metadata.element_type
        for i, item in enumerate(value):
            if element in (int, float, bool, str) and isinstance(item, (list, dict)):
                raise ConfigError(f"{key}.{i}", f"is a {type(item).__name__} in a list of {element.__name__}")
            if element is float:
                _check_float(item, f"{key}.{i}")
    elif OmegaConf.is_dict(schema):
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
        if schema._is_none():  # an optional mapping the schema leaves open (data.prepare)
            return
        for name, item in value.items():
            if name in schema:
                _check_shapes(schema._get_node(name), item, f"{key}.{name}" if key else str(name))
    elif isinstance(schema, FloatNode):
        _check_float(value, key)


def merge_into_schema(schema_cls, cfg: DictConfig) -> DictConfig:
    """Merge a composed config into a schema: missing required values, unknown keys and wrong types fail, named."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError(missing[0], f"is required (set it on the command line: {missing[0]}=...)")
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    _sampler_by_name(plain)
    schema = OmegaConf.structured(schema_cls)
    _check_shapes(schema, plain)
    try:
        return OmegaConf.merge(schema, plain)
    except Exception as err:  # omegaconf's errors carry the full key; keep them but give one error type
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(str(key), str(err).splitlines()[0]) from None


def build_target(spec):
    """A `_target_` node (a judge, a data builder: how the world and a user's own pieces plug in) instantiated with
    its arguments; None stays None."""
    if spec is None:
        return None
    from hydra.utils import instantiate

    plain = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)
    return instantiate(plain, _convert_="all")


def to_run_config(cfg: DictConfig) -> DictConfig:
    return merge_into_schema(RunConfig, cfg)


def data_sources(data) -> dict[str, dict]:
    """Every named source as {"dir", "caption"}: `data.sources` with the `data.<name>_dir` shorthands merged in."""
    sources = {name: {"dir": source.get("dir"), "caption": source.get("caption")}
               for name, source in (data.get("sources") or {}).items()}
    for name in SHORTHAND_SOURCES:
        short = data.get(f"{name}_dir")
        if not short:
            continue
        entry = sources.setdefault(name, {"dir": None, "caption": None})
        if entry["dir"] and entry["dir"] != short:
            raise ConfigError(f"data.sources.{name}.dir", f"is {entry['dir']!r} but data.{name}_dir is {short!r}; "
                              "set one of them")
        entry["dir"] = short
    return sources


def encodes_text_live(cfg) -> bool:
    """Whether a run encodes its prompts every step instead of reading the text cache: its text encoder trains
    (model.train_text_encoder), or ICO inserts per-image contexts into them (strategy.ico.enabled)."""
    return bool(cfg.model.get("train_text_encoder")) or bool((cfg.strategy.get("ico") or {}).get("enabled"))
