"""`python -m style_tailoring.recipe`: the paper's pipeline, chained."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecipeConfig:
    # Only these steps (names as in recipe.json: prompt_engineering, domain, hitl, final/<strategy>, collect);
    # null: all, in order.
    steps: list[str] | None = None
    dry_run: bool = False
    # Overrides of every training step, of the domain finetune only, of the final finetunes only.
    train_overrides: list[str] = field(default_factory=list)
    domain_overrides: list[str] = field(default_factory=list)
    final_overrides: list[str] = field(default_factory=list)
    final_strategies: list[str] = field(default_factory=lambda: ["sequential", "mixture", "style_tailoring"])
    # Overrides of `python -m style_tailoring.hitl` (its train_overrides get recipe.train_overrides first).
    hitl_overrides: list[str] = field(default_factory=list)
    # The final runs train on curated sets (data.style_dir); FID keeps comparing against the data set's own Style
    # set, as in the HITL rounds (null: against the curated Style set).
    fid_reference: str | None = None


@dataclass
class RecipeRunConfig:
    seed: int = 0
    run_dir: str = "outputs/recipe"
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    strategy: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
