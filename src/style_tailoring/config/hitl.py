"""`python -m style_tailoring.hitl`: HITL rounds (generate, rate, curate, finetune)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from style_tailoring.config.core import PLAIN_SAMPLER
from style_tailoring.config.train import DataConfig, EvalConfig, SampleConfig


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
    # Rounds after the first generate from this strategy's previous-round model (null: the first of strategies),
    # or, with "domain", every round from hitl.model (the control: do rounds gain from a better generator?).
    generate_with: Optional[str] = None
    # Extra overrides for every finetune's `python -m style_tailoring.train` (e.g. trainer.max_steps=300).
    train_overrides: list[str] = field(default_factory=list)
    # Extra overrides for one strategy's finetunes, {strategy: [overrides]} (e.g. style_tailoring:
    # ['strategy.t_split=750'], mixture: ['data.mixture=0.75']), after train_overrides.
    strategy_overrides: Optional[dict[str, list[str]]] = None
    # Candidates no person rated: error (naming file and row) or skip them.
    on_unrated: str = "error"
    # Generate from pickled (.bin) pipelines or LoRA weights (see ModelConfig.allow_pickle).
    allow_pickle: bool = False
    generate: HitlGenerateConfig = field(default_factory=HitlGenerateConfig)
    # Who rates the candidates: a rater's `_target_` and settings (conf/hitl/rater/NAME.yaml, `hitl/rater=NAME`).
    rater: Any = field(default_factory=lambda: {"_target_": "style_tailoring.hitl.raters.JudgesRater"})
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
