"""The tool commands: bench, collect, data.shards, hitl.serve, world and alpha."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from style_tailoring.config.core import REPO_ROOT


@dataclass
class BenchConfig:
    """`python -m style_tailoring.bench`: speed, as ratios against a reference run side by side in one process."""

    task: str = "train"  # train | sample | generate | animate | families
    # world (the shipped world base, `pipeline`) | tiny | sd15 (SD 1.5's shapes; needs a GPU) | world_sd3 (the
    # world's SD3-family base, `pipeline_sd3`) | tiny_sd3
    arch: str = "world"
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
    # What the world benchmarks read, from config (conf/bench.yaml): the model, its SD3-family counterpart
    # (arch=world_sd3, task=families), the student base, the training prompts and their data builder and judges
    # (task=generate), the motion UNet (or an adapter), stickers and motion judge (task=animate).
    pipeline: Optional[str] = None
    pipeline_sd3: Optional[str] = None
    student: Optional[str] = None
    prepare: Optional[dict[str, Any]] = None
    prompts: Optional[str] = None
    judges: Optional[dict[str, Any]] = None
    motion_adapter: Optional[str] = None
    unet: Optional[str] = None
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
    # The rubric shown beside the questions and written into the Label Studio configs: a YAML, JSON or markdown
    # file (hitl/rubric.py); None: conf/rubrics/stickers.yaml.
    rubric: Optional[str] = None
    # Write the round's complete ratings (ratings.csv, Label Studio tasks) and exit instead of serving.
    export_csv: Optional[str] = None
    export_label_studio: Optional[str] = None
    # Pairwise Label Studio tasks (candidates of one prompt, two by two) and pairwise_config.xml beside them;
    # pairs per prompt (None: every pair), drawn with the seed.
    export_pairwise: Optional[str] = None
    pairwise_per_prompt: Optional[int] = None
    pairwise_seed: int = 0
    # A Label Studio export of the pairwise tasks, read back into ROUND_DIR/preferences.jsonl; a task without an
    # answer is an error unless on_unrated=skip.
    import_pairwise: Optional[str] = None
    on_unrated: str = "error"


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
    # The composite term's weight in the loss (alpha's is 1), and what trains: decoder | last_blocks.
    composite_weight: float = 1.0
    trainable: str = "decoder"
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
