"""Samplers: small objects that draw images from a stock diffusers pipeline, chosen by `eval/sampler=NAME`.

A sampler calls the pipeline — diffusers' own denoising loop, never a hand-written one — and may change the
pipeline while it denoises: through `callback_on_step_end` (e.g. swap `pipe.unet`, or switch a LoRA adapter, once
the next timestep falls below a switch point) and through attention processors installed in `prepare`. It restores
the pipeline after every call, and `describe()` is what `metrics.json` records of it.

To add one: subclass `Sampler`, give it a `name`, take its settings as keyword arguments (checked in `__init__`,
before any work; weights are loaded in `prepare`), and add `conf/eval/sampler/<name>.yaml` with its `_target_`.
"""

from __future__ import annotations

from typing import Any


class Sampler:
    name = "sampler"

    def settings(self) -> dict[str, Any]:
        """The sampler's settings as recorded in metrics.json (paths, switch points, strengths)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings()}

    def prepare(self, pipe) -> None:
        """Once per pipeline, before the first call: load extra weights, install attention processors."""

    def begin(self, pipe) -> None:
        """Before each pipeline call."""

    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """diffusers' `callback_on_step_end`: runs after denoising step `step` (at `timestep`); the pipeline's next
        step sees whatever this changes. Only passed to the pipeline when a subclass overrides it."""
        return callback_kwargs

    def end(self, pipe) -> None:
        """After each pipeline call, also when it failed: put the pipeline back as `prepare` left it."""

    def __call__(self, pipe, **kwargs):
        self.begin(pipe)
        try:
            if type(self).on_step_end is not Sampler.on_step_end:
                kwargs["callback_on_step_end"] = self.on_step_end
            return pipe(**kwargs)
        finally:
            self.end(pipe)


class PlainSampler(Sampler):
    """The pipeline's call as it is (`eval/sampler=plain`, the default)."""

    name = "plain"
