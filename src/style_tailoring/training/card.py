"""The model card: `README.md` of every exported pipeline, written with huggingface_hub's `ModelCard` (offline).

It says what the model is and how it was made — base model, strategy and plan, the data sources and their sizes,
steps, seed, the repository commit (`provenance.repository_state`), the command (Hydra's overrides) — and, once the
run has evaluated, its final `eval/*` numbers (also as the card's `model-index`, which the Hub renders), and how to
load it: the pipeline with `from_pretrained`, a LoRA run's adapters with `load_lora_weights` (the diffusers file, or
the kohya-ss file that AUTOMATIC1111 and ComfyUI read). The run writes it after the export and again after the
evaluation, atomically each time; the weights' digests leave it out (`provenance.IGNORED_FILES`), so rewriting it
changes no recorded digest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from style_tailoring.io import atomic_write_text
from style_tailoring.models.components import pipeline_load_kwargs, recorded_sequence_length
from style_tailoring.models.lora import KOHYA_FILE, LORA_FILE
from style_tailoring.provenance import portable, repository_state

CARD_FILE = "README.md"


def command_overrides(run_dir) -> Optional[list[str]]:
    """The overrides the run was started with: Hydra's own (HydraConfig, in the Hydra job), else the run
    directory's `.hydra/overrides.yaml` (a DDP worker, a run resumed from its directory); None when neither
    exists (run() called from Python)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    # Only the train command's own Hydra job: a command that runs training in-process (the world build) is another
    # command, and its overrides would not make this run
    if HydraConfig.initialized() and HydraConfig.get().job.config_name == "train":
        overrides = HydraConfig.get().overrides
        return [*overrides.task, *(o for o in overrides.hydra if o.startswith("hydra.run.dir="))]
    saved = Path(run_dir) / ".hydra" / "overrides.yaml"
    if saved.is_file():
        return [str(o) for o in OmegaConf.load(saved)]
    return None


def _quoted(override: str) -> str:
    """One override as a shell word (quoted when it holds what a shell would split or expand)."""
    import shlex

    return shlex.quote(override)


def _is_hub_id(name: Optional[str]) -> bool:
    return bool(name) and name.count("/") == 1 and not Path(name).expanduser().exists() \
        and not name.startswith((".", "/", "~"))


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith("eval/")
            and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def _density(route) -> str:
    """A route's timestep density after its window, when it is not the uniform one."""
    return "" if route.density.name == "uniform" else f" {route.density.label()}"


def card_text(cfg, run_dir, plan, metrics: dict, sources: dict[str, dict]) -> str:
    """The card's text (YAML metadata + Markdown). `sources`: {name: {"dir", "kind", "samples"}} of what trained."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    run_dir = Path(run_dir)
    model, strategy = cfg.model, cfg.strategy.name
    state = repository_state()
    lora = model.lora.rank > 0
    motion = model.motion.enabled
    base = model.pretrained or f"tiny (built from model.tiny, seed {cfg.seed})"
    numbers = _numbers(metrics)
    prompts = cfg.eval.prompts
    results = [EvalResult(task_type="text-to-image", dataset_type="eval-prompts",
                          dataset_name=Path(prompts).name if prompts else "eval prompts",
                          metric_type=name.removeprefix("eval/"), metric_value=value)
               for name, value in numbers.items() if not name.endswith("_samples")]  # counts are no scores
    data = ModelCardData(
        library_name="diffusers", pipeline_tag="text-to-video" if motion else "text-to-image",
        base_model=model.pretrained if _is_hub_id(model.pretrained) else None,
        tags=["style-tailoring", f"strategy:{strategy}", "text-to-image", "diffusers", *(["lora"] if lora else [])],
        model_name=run_dir.name, eval_results=results or None,
        style_tailoring={"strategy": strategy, "seed": int(cfg.seed), "steps": int(metrics.get("steps") or 0),
                         "commit": state["commit"], "dirty": state["dirty"], "status": metrics.get("status")},
    )
    denoiser = "transformer" if recorded_sequence_length(run_dir / "pipeline") is not None else "UNet"
    adapters = f"rank {model.lora.rank}, alpha {model.lora.alpha or model.lora.rank}" if lora else \
        f"no (full {denoiser})"
    overrides = command_overrides(run_dir)
    command = ("python -m style_tailoring.train " + " ".join(_quoted(o) for o in overrides)) if overrides is not None \
        else f"(run() called from Python; the resolved config is in {run_dir.name}/.hydra/config.yaml or metrics.json)"
    commit = state["commit"] or "not a git checkout"
    lines = [
        f"# {run_dir.name}",
        "",
        f"A {'LoRA-' if lora else ''}finetuned {'animation ' if motion else ''}text-to-image latent diffusion model, "
        f"trained with [style-tailoring](https://arxiv.org/abs/2311.10794)'s `{strategy}` strategy.",
        "",
        "| | |", "|---|---|",
        f"| base model | `{portable(base) if model.pretrained and not _is_hub_id(base) else base}` |",
        *([f"| {denoiser} started from | `{portable(model.init_unet)}` |"] if model.init_unet else []),
        f"| strategy | `{strategy}` |",
        f"| steps | {metrics.get('steps')} |",
        f"| seed | {cfg.seed} |",
        f"| commit | `{commit}`{' (with uncommitted changes)' if state['dirty'] else ''} |",
        f"| resolution | {model.resolution} |",
        f"| LoRA | {adapters} |",
        f"| status | {metrics.get('status')} |",
        "",
        "## Plan",
        "",
        "| stage | steps | source | timesteps | share | weight |", "|---|---|---|---|---|---|",
        *(f"| {stage.name} | {stage.steps} | {r.source} | [{r.t_min}, {r.t_max}){_density(r)} | {r.share:g} | "
          f"{r.weight:g} |" for stage in plan.stages for r in stage.routes),
        "",
        "## Data",
        "",
        "| source | where | kind | samples |", "|---|---|---|---|",
        *(f"| {name} | `{portable(s['dir'])}` | {s['kind']} | {s['samples']} |" for name, s in sources.items()),
        "",
        "## Results",
        "",
        *(["| metric | value |", "|---|---|", *(f"| `{k}` | {v:.6g} |" for k, v in numbers.items())]
          if numbers else ["Not evaluated (yet): the card is written again with the numbers after the evaluation."]),
        *(["", f"Sampled with: `{json.dumps(metrics['eval/settings'], sort_keys=True)}`"]
          if numbers and metrics.get("eval/settings") else []),
        "",
        "## How it was made",
        "",
        "```bash", command, "```",
        "",
        "## How to load",
        "",
        "```python",
        *_load_lines(run_dir, model, lora, motion),
        "```",
        "",
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def _load_lines(run_dir: Path, model, lora: bool, motion: bool) -> list[str]:
    pipeline = f"{run_dir}/pipeline"
    if motion:
        return ["from diffusers import AnimateDiffPipeline", "",
                f"pipe = AnimateDiffPipeline.from_pretrained({pipeline!r}, motion_adapter=None)",
                "# style_tailoring.animation.sample.animate(pipe, sticker, prompt) samples it from a sticker"]
    length = recorded_sequence_length(run_dir / "pipeline")
    if length is not None:  # the SD3 family: sampled at the T5 length it was trained with
        return _sd3_load_lines(run_dir, model, lora, length)
    cls = "StableDiffusionXLPipeline" if model.name.startswith("sdxl") else "StableDiffusionPipeline"
    lines = [f"from diffusers import {cls}", "", f"pipe = {cls}.from_pretrained({pipeline!r})",
             "image = pipe(\"a sticker of a red fox\").images[0]"]
    if lora:
        base = (f"pipe = {cls}.from_pretrained({model.pretrained!r})" if model.pretrained else
                "pipe = make_pipeline(build_tiny(...))  # the tiny base: style_tailoring.models.components")
        lines += ["", "# or the base model with the LoRA adapters, in diffusers' format or the kohya-ss one",
                  "# (the kohya file also loads in AUTOMATIC1111 and ComfyUI)", base,
                  f"pipe.load_lora_weights({str(run_dir / 'lora')!r}, weight_name={LORA_FILE!r})",
                  f"# or: pipe.load_lora_weights({str(run_dir / 'lora' / KOHYA_FILE)!r})"]
    return lines


def _sd3_load_lines(run_dir: Path, model, lora: bool, length: int) -> list[str]:
    def load(path) -> str:
        extra = "".join(f", {k}=None" for k in pipeline_load_kwargs(path)) if Path(path).is_dir() else ""
        return f"pipe = StableDiffusion3Pipeline.from_pretrained({str(path)!r}{extra})"

    lines = ["from diffusers import StableDiffusion3Pipeline", "", load(run_dir / "pipeline"),
             "# max_sequence_length: the T5 prompt length it was trained with (without T5: the zero tokens after the "
             "CLIP tokens)",
             f"image = pipe(\"a sticker of a red fox\", max_sequence_length={length}).images[0]"]
    if lora:
        lines += ["", "# or the base model with the LoRA adapters (diffusers' format)", load(model.pretrained),
                  f"pipe.load_lora_weights({str(run_dir / 'lora')!r}, weight_name={LORA_FILE!r})"]
    return lines


def write_model_card(cfg, run_dir, plan, metrics: dict, sources: dict[str, dict]) -> Path:
    """RUN/pipeline/README.md, atomically."""
    path = Path(run_dir) / "pipeline" / CARD_FILE
    atomic_write_text(path, card_text(cfg, run_dir, plan, metrics, sources))
    return path
