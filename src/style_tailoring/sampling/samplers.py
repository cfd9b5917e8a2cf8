"""Samplers: small objects that draw images from a stock diffusers pipeline, chosen by `eval/sampler=NAME`.

A sampler calls the pipeline — diffusers' own denoising loop, never a hand-written one — and may change the
pipeline while it denoises: through `callback_on_step_end` (e.g. swap `pipe.unet`, or switch a LoRA adapter, once
the next timestep falls below a switch point) and through attention processors installed in `prepare`. It restores
the pipeline after every call, and `describe()` is what `metrics.json` records of it.

To add one: subclass `Sampler`, give it a `name`, take its settings as keyword arguments (checked in `__init__`,
before any work; weights are loaded in `prepare`), and add `conf/eval/sampler/<name>.yaml` with its `_target_`.

- `plain`: the pipeline's call as it is.
- `timestep_split`: Style Tailoring's premise at sampling time, with no joint training: denoising steps at
  t >= t_switch run the evaluated pipeline's UNet (content), steps at t < t_switch a late UNet (style) — another
  run's UNet swapped in between steps, or a LoRA adapter switched on. On an SD3-family pipeline the same with its
  transformer, t_switch in the routes' timestep scale (models/flow.py: a step is late when its noise level is below
  σ(t_switch), as a split at t_split trained it).
- `dci`: DCI's early-step integration (Jin et al., ECCV 2024): while t > t_end a concept branch (the prompt) and an
  auxiliary branch (the prompt without the concept words) denoise side by side, and in every chosen cross-attention
  layer the concept branch takes the auxiliary branch's output where its pixels attend to context words rather than
  to the concept; then the auxiliary branch is dropped and the concept branch finishes alone.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from style_tailoring.config import ConfigError
from style_tailoring.models.components import denoiser_name, unet_folder, unet_source_kind
from style_tailoring.models.flow import switch_timestep
from style_tailoring.models.safe_load import weights_kwargs
from style_tailoring.provenance import portable


class Sampler:
    name = "sampler"
    # The model families whose pipelines it samples (checked before any work: evaluation/validate.py).
    families = ("unet", "sd3")

    def settings(self) -> dict[str, Any]:
        """The sampler's settings as recorded in metrics.json (paths, switch points, strengths)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings()}

    def prepare(self, pipe) -> None:
        """Once per pipeline, before the first call: load extra weights, install attention processors."""

    def release(self, pipe) -> None:
        """Undo `prepare` (unload adapters, restore processors): the pipeline's modules outlive the evaluation
        (training evaluates its in-memory UNet every N steps)."""

    def begin(self, pipe, kwargs: dict) -> dict:
        """Before each pipeline call; returns the call's keyword arguments (a sampler may change them)."""
        return kwargs

    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """diffusers' `callback_on_step_end`: runs after denoising step `step` (at `timestep`); the pipeline's next
        step sees whatever this changes. Only passed to the pipeline when a subclass overrides it."""
        return callback_kwargs

    def finish(self, output):
        """The pipeline's output, as the caller gets it."""
        return output

    def end(self, pipe) -> None:
        """After each pipeline call, also when it failed: put the pipeline back as `prepare` left it."""

    def __call__(self, pipe, **kwargs):
        try:
            kwargs = self.begin(pipe, kwargs)
            if type(self).on_step_end is not Sampler.on_step_end:
                kwargs["callback_on_step_end"] = self.on_step_end
            return self.finish(pipe(**kwargs))
        finally:
            self.end(pipe)


class PlainSampler(Sampler):
    """The pipeline's call as it is (`eval/sampler=plain`, the default)."""

    name = "plain"


def planned_timesteps(pipe, num_inference_steps: int) -> list:
    """The timesteps the pipeline's scheduler will denoise at, computed on a copy (the pipeline's is untouched):
    integers for DDPM-family schedulers, the σ·T floats themselves for flow-matching ones (whose switch points lie
    between integers: models/flow.py)."""
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(num_inference_steps)
    as_number = float if type(scheduler).__name__.startswith("FlowMatch") else int
    return [as_number(t) for t in scheduler.timesteps]


class TimestepSplitSampler(Sampler):
    """Steps at t >= t_switch with the pipeline's own UNet, steps at t < t_switch with `late_unet` (a swap between
    steps through callback_on_step_end: the two UNets stay loaded, nothing is reloaded per image). A LoRA folder as
    the late model is loaded once as an adapter and switched on at the switch point. An SD3-family pipeline swaps
    its transformer (`late_unet`: another run's transformer, pipeline or LoRA folder) where its steps' noise falls
    below the routes' σ(t_switch): `threshold`, in the pipeline's own timesteps (σ·T).

    Identities (tests): a late model equal to the early one samples exactly as `plain`; t_switch above the first
    timestep samples with the late model alone, t_switch 0 with the early one alone. `handoff: sdxl` uses SDXL's own
    base + refiner mechanism instead (`denoising_end` on the pipeline, `denoising_start` on an img2img pipeline
    sharing its components with the late UNet).
    """

    name = "timestep_split"

    def __init__(self, t_switch: int = 500, late_unet: str | None = None, handoff: str = "swap"):
        if not isinstance(t_switch, int) or t_switch < 0:
            raise ConfigError("eval.sampler.t_switch", f"must be an integer >= 0, got {t_switch!r}")
        if not late_unet:
            raise ConfigError("eval.sampler.late_unet", "the late (style) model is required: RUN/stages/2-style/unet, "
                              "a pipeline directory or a LoRA folder")
        if handoff not in ("swap", "sdxl"):
            raise ConfigError("eval.sampler.handoff", f"swap or sdxl, got {handoff!r}")
        self.t_switch, self.late_path = t_switch, str(late_unet)
        self.kind = unet_source_kind(late_unet, "eval.sampler.late_unet")
        self.handoff, self.late = handoff, None
        if handoff == "sdxl" and self.kind == "lora":
            raise ConfigError("eval.sampler.handoff", "the SDXL hand-off needs a late UNet, not a LoRA folder")

    def settings(self) -> dict[str, Any]:
        return {"t_switch": self.t_switch, "late_unet": portable(self.late_path), "handoff": self.handoff}

    def prepare(self, pipe) -> None:
        T = pipe.scheduler.config.num_train_timesteps
        if self.t_switch > T:
            raise ConfigError("eval.sampler.t_switch", f"must lie in [0, {T}] (T={T}), got {self.t_switch}")
        if self.handoff == "sdxl" and not (0 < self.t_switch < T and "add_time_ids" in pipe._callback_tensor_inputs):
            raise ConfigError("eval.sampler.handoff", f"sdxl needs an SDXL pipeline and 0 < t_switch < {T}")
        self.component = denoiser_name(pipe)
        flow = self.component == "transformer"
        self.threshold = switch_timestep(pipe.scheduler.config, self.t_switch) if flow else self.t_switch
        folder = unet_folder(self.late_path, self.kind)
        weights = weights_kwargs(folder, key="eval.sampler.late_unet", switch=None)  # safetensors only
        if self.kind == "lora":
            pipe.load_lora_weights(self.late_path, adapter_name="late", **weights)
            getattr(pipe, self.component).disable_adapters()
            return
        from diffusers import SD3Transformer2DModel, UNet2DConditionModel

        cls, key = (SD3Transformer2DModel, "joint_attention_dim") if flow else (UNet2DConditionModel,
                                                                                "cross_attention_dim")
        late, early = cls.from_pretrained(folder, **weights), getattr(pipe, self.component)
        if late.config.get(key) != early.config.get(key):
            raise ConfigError("eval.sampler.late_unet", f"{self.late_path} was made for another model "
                              f"({key} {late.config.get(key)}, the pipeline's {early.config.get(key)})")
        self.late = late.to(pipe.device, early.dtype).eval()

    def release(self, pipe) -> None:
        if self.kind == "lora":  # (adapters disabled while deleted stay disabled for the next ones loaded)
            getattr(pipe, self.component).enable_adapters()
            pipe.delete_adapters("late")
        self.late = None

    def __call__(self, pipe, **kwargs):
        if self.handoff == "swap":
            return super().__call__(pipe, **kwargs)
        # diffusers' own base + refiner hand-off (SDXL): the base pipeline denoises down to the switch point and
        # returns latents, an img2img pipeline sharing its components but the late UNet finishes from there.
        from diffusers import StableDiffusionXLImg2ImgPipeline

        fraction = 1 - self.t_switch / pipe.scheduler.config.num_train_timesteps
        latents = pipe(**dict(kwargs, denoising_end=fraction, output_type="latent")).images
        refiner = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe, unet=self.late)
        refiner.set_progress_bar_config(disable=True)
        return refiner(prompt=kwargs["prompt"], image=latents, denoising_start=fraction,
                       num_inference_steps=kwargs["num_inference_steps"], guidance_scale=kwargs["guidance_scale"],
                       generator=kwargs.get("generator"), output_type=kwargs.get("output_type", "pil"))

    def _use_late(self, pipe, late: bool) -> None:
        if self.kind == "lora":
            denoiser = getattr(pipe, self.component)
            (denoiser.enable_adapters if late else denoiser.disable_adapters)()
        else:
            setattr(pipe, self.component, self.late if late else self.early)

    def begin(self, pipe, kwargs: dict) -> dict:
        self.early = getattr(pipe, self.component)
        self.timesteps = planned_timesteps(pipe, kwargs["num_inference_steps"])
        self._use_late(pipe, self.timesteps[0] < self.threshold)
        return kwargs

    def on_step_end(self, pipe, step, timestep, callback_kwargs):
        if step + 1 < len(self.timesteps):  # the model of the next step
            self._use_late(pipe, self.timesteps[step + 1] < self.threshold)
        return callback_kwargs

    def end(self, pipe) -> None:
        if hasattr(self, "early"):
            self._use_late(pipe, False)


LAYER_GROUPS = ("all", "down", "mid", "up")


class DCIState:
    """What the DCI attention processors read: on or off, the batch layout, the token masks and the strength."""

    active = False
    batch = 0  # B: images asked for; the UNet batch holds [concept B, auxiliary B] (x2 with guidance)
    guidance = False
    strength = 1.0
    concept_mask: torch.Tensor | None = None  # (B, tokens): the concept's tokens in each concept prompt
    context_mask: torch.Tensor | None = None  # (B, tokens): every other word token


class DCICrossAttnProcessor:
    """Wraps a cross-attention layer's processor. While DCI is active, the concept rows' output becomes
    out_c + strength · (1 − w) · (out_a − out_c), with w the per-pixel share of attention (concept rows, averaged
    over heads) that falls on the concept's tokens rather than on the prompt's other words: pixels that look at the
    context take the auxiliary branch's output. Attention weights are computed explicitly only here and only then;
    every other step runs the wrapped (SDPA) processor unchanged."""

    def __init__(self, inner, state: DCIState):
        self.inner, self.state = inner, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        state = self.state
        if not state.active or encoder_hidden_states is None or hidden_states.ndim != 3:
            return out
        b = state.batch
        first = 2 * b if state.guidance else 0  # the conditional pair: [concept, auxiliary] after the unconditional
        concept, aux = slice(first, first + b), slice(first + b, first + 2 * b)
        context = encoder_hidden_states[concept]
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states[concept]))
        key = attn.head_to_batch_dim(attn.to_k(context))
        probs = attn.get_attention_scores(query, key, None)  # (B·heads, pixels, tokens)
        probs = probs.view(b, attn.heads, *probs.shape[1:]).mean(1).float()
        on_concept = (probs * state.concept_mask[:, None, :]).sum(-1)
        on_context = (probs * state.context_mask[:, None, :]).sum(-1)
        w = (on_concept / (on_concept + on_context).clamp_min(1e-8)).unsqueeze(-1).to(out.dtype)
        out = out.clone()
        out[concept] = out[concept] + state.strength * (1 - w) * (out[aux] - out[concept])
        return out


def _remove_words(prompt: str, concept: str) -> str:
    """The auxiliary prompt: the concept phrase taken out, with the commas and spaces around it tidied."""
    rest = prompt.replace(concept, " ")
    parts = [p.strip() for p in rest.split(",")]
    return ", ".join(p for p in parts if p).strip()


class DCISampler(Sampler):
    """DCI's Divide, Conquer, then Integrate at sampling time (see the module doc and DCICrossAttnProcessor).

    `concept`: the words of the prompt that carry the concept (a rare token such as "sks", or a style phrase such
    as "sticker"); every prompt must contain them (eval.prompt_suffix can add them). `t_end`: the integration runs
    while the timestep is above it (700 of 1000 in the authors' code: the first ~30% of steps). `strength` scales
    the blend (0: the concept branch alone). `layers`: which cross-attention layers take part: all, down, mid, up,
    or a list of substrings of their module names. Works on any SD-family UNet through its attention processors.
    """

    name = "dci"
    families = ("unet",)  # it reads a UNet's cross-attention layers (attn2)

    def __init__(self, concept: str = "", t_end: int = 700, strength: float = 1.0, layers: Any = "all"):
        if not isinstance(concept, str) or not concept.strip():
            raise ConfigError("eval.sampler.concept", "the concept word(s) are required, e.g. sks or sticker")
        if not isinstance(t_end, int) or t_end < 0:
            raise ConfigError("eval.sampler.t_end", f"must be an integer >= 0, got {t_end!r}")
        if not 0 <= float(strength) <= 1:
            raise ConfigError("eval.sampler.strength", f"must lie in [0, 1], got {strength}")
        if isinstance(layers, str) and layers not in LAYER_GROUPS:
            raise ConfigError("eval.sampler.layers", f"one of {list(LAYER_GROUPS)} or a list of module-name parts, "
                              f"got {layers!r}")
        self.concept, self.t_end, self.strength = concept.strip(), t_end, float(strength)
        self.layers = layers if isinstance(layers, str) else [str(x) for x in layers]
        self.state = DCIState()

    def settings(self) -> dict[str, Any]:
        return {"concept": self.concept, "t_end": self.t_end, "strength": self.strength, "layers": self.layers}

    def _takes_part(self, name: str) -> bool:
        if ".attn2." not in name:
            return False
        if isinstance(self.layers, str):
            return self.layers == "all" or name.startswith(f"{self.layers}_block")
        return any(part in name for part in self.layers)

    def prepare(self, pipe) -> None:
        processors = pipe.unet.attn_processors
        chosen = [name for name in processors if self._takes_part(name)]
        if not chosen:
            raise ConfigError("eval.sampler.layers", f"{self.layers!r} selects no cross-attention layer")
        self.original = processors
        pipe.unet.set_attn_processor({name: DCICrossAttnProcessor(p, self.state) if name in chosen else p
                                      for name, p in processors.items()})

    def release(self, pipe) -> None:
        pipe.unet.set_attn_processor(self.original)

    def _token_masks(self, pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokenizer = pipe.tokenizer
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        concept_ids = tokenizer(self.concept, add_special_tokens=False).input_ids
        special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        words = ~torch.isin(ids, special)
        concept = torch.zeros_like(words)
        n = len(concept_ids)
        for row, prompt_ids in enumerate(ids.tolist()):
            for start in range(len(prompt_ids) - n + 1):
                if prompt_ids[start:start + n] == concept_ids:
                    concept[row, start:start + n] = True
            if not concept[row].any():
                raise ValueError(f"eval.sampler.concept: {self.concept!r} is not in the prompt {prompts[row]!r} "
                                 "(after tokenization); add it, e.g. with eval.prompt_suffix")
        return concept.float(), (words & ~concept).float()

    def begin(self, pipe, kwargs: dict) -> dict:
        self.timesteps = planned_timesteps(pipe, kwargs["num_inference_steps"])
        self.asked = len(kwargs["prompt"])
        self.state.active = self.timesteps[0] > self.t_end
        if not self.state.active:  # no step above t_end: the concept branch alone, i.e. plain sampling
            return kwargs
        prompts, generators = list(kwargs["prompt"]), list(kwargs["generator"])
        concept_mask, context_mask = self._token_masks(pipe, prompts)
        device = pipe.device
        self.state.batch, self.state.strength = len(prompts), self.strength
        self.state.guidance = kwargs.get("guidance_scale", 1.0) > 1.0
        self.state.concept_mask, self.state.context_mask = concept_mask.to(device), context_mask.to(device)
        # Both branches start from the same noise: the auxiliary branch gets copies of the concept's generators.
        aux_generators = [torch.Generator(g.device).manual_seed(g.initial_seed()) for g in generators]
        inputs = ["latents", "prompt_embeds"]
        if "add_text_embeds" in pipe._callback_tensor_inputs:  # SDXL's pooled and size conditioning, batched too
            inputs += ["add_text_embeds", "add_time_ids"]
        return dict(kwargs, prompt=prompts + [_remove_words(p, self.concept) for p in prompts],
                    generator=generators + aux_generators, callback_on_step_end_tensor_inputs=inputs)

    def on_step_end(self, pipe, step, timestep, callback_kwargs):
        last = step + 1 >= len(self.timesteps)
        if not self.state.active or (not last and self.timesteps[step + 1] > self.t_end):
            return callback_kwargs
        # Integration is over: drop the auxiliary branch (latents and its rows of every batched conditioning).
        b, halves = self.state.batch, 2 if self.state.guidance else 1
        self.state.active = False
        out = {"latents": callback_kwargs["latents"][:b]}
        for key in ("prompt_embeds", "add_text_embeds", "add_time_ids"):
            if key in callback_kwargs:
                rows = callback_kwargs[key]
                out[key] = torch.cat([rows[h * 2 * b:h * 2 * b + b] for h in range(halves)])
        return out

    def finish(self, output):
        output.images = output.images[: self.asked]  # the concept branch's images (the auxiliary ones, if the
        return output                                # integration ran to the last step, are dropped here)

    def end(self, pipe) -> None:
        self.state.active = False
